"""The README's Python API example runs as written (camera, reject and log stubbed)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_runtime import small_models

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API for camera software", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README has no python block under 'Python API for camera software'"
    return m.group(1)


def test_readme_api_example_runs(bottle_dir, tmp_path, monkeypatch):
    from npad_edge.data import read_image

    models = small_models("int8")
    (tmp_path / "models").mkdir()
    shutil.copytree(models["int8"], tmp_path / "models" / "bottle-int8")
    monkeypatch.chdir(tmp_path)

    frames = [read_image(p) for p in sorted((bottle_dir / "test" / "broken_large").glob("*.png"))[:2]]
    frames += [read_image(p) for p in sorted((bottle_dir / "test" / "good").glob("*.png"))[:1]]
    seen: dict[str, list] = {"reject": [], "log": [], "callback": []}

    def reject(amap, mask):
        assert amap.dtype == np.float32 and mask.dtype == bool and amap.shape == mask.shape
        seen["reject"].append(amap.shape)

    ns = {
        "camera": frames,
        "frames": frames,
        "reject": reject,
        "log": lambda t: seen["log"].append(t),
        "callback": lambda pred, userdata: seen["callback"].append((pred.score, userdata)),
        "userdata": "frame-0",
    }
    exec(compile(_api_snippet(), str(README), "exec"), ns)

    assert len(seen["log"]) == len(frames) and all("total" in t for t in seen["log"])
    assert [f.result().score for f in ns["futures"]] == pytest.approx(
        [ns["det"](f).score for f in frames], rel=1e-6)
    assert seen["callback"] and seen["callback"][0][1] == "frame-0"
    ns["det"].close()
