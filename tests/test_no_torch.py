"""The edge runtime works where torch and NNCF cannot be imported (a subprocess blocks them).

Runs on a clean checkout: the exported model is the frozen tiny one in tests/data/models
(random-weight backbone, IR inside), the fitted model is written here from its manifest with
numpy only, the image is generated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "models" / "v1_exported_tiny"

_SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        # As if torch and nncf were not installed.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "nncf", "torchvision"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    exported, fitted, image = sys.argv[1:4]
    from npad_edge import Detector, NpadError
    from npad_edge.profiling import info

    det = Detector.load(exported, "CPU", threads=1)
    p = det(image)
    out = {"score": p.score, "shape": list(p.anomaly_map.shape), "is_anomalous": p.is_anomalous}
    futures = det.predict_async([image, image])
    out["async"] = [f.result().score for f in futures]
    out["info_devices"] = list(info()["openvino_devices"])
    try:
        Detector.load(fitted)
        out["fitted_error"] = None
    except NpadError as e:
        out["fitted_error"] = str(e)
    out["torch_loaded"] = "torch" in sys.modules
    out["nncf_loaded"] = "nncf" in sys.modules
    print(json.dumps(out))
""")


def _fitted_twin(dest: Path) -> Path:
    """The frozen exported model as a kind "fitted" model (no IR), written without torch."""
    from npad_edge.artifact import load_model, write_model

    lm = load_model(TINY)
    d = lm.manifest.to_dict()
    for key in ("files", "arrays", "created"):
        d.pop(key, None)
    d.update(kind="fitted", precision="fp32", calibration=None)
    return write_model(dest, d, {k: np.array(v) for k, v in lm.arrays.items()})


def test_runtime_without_torch(tmp_path):
    from PIL import Image

    image = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(image)
    fitted = _fitted_twin(tmp_path / "fitted")
    r = subprocess.run([sys.executable, "-c", _SCRIPT, str(TINY), str(fitted), str(image)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["shape"] == [90, 120]
    assert out["async"] == [out["score"], out["score"]]
    assert "CPU" in out["info_devices"]
    assert out["fitted_error"] is not None and "fitted model needs torch; export it" in out["fitted_error"]
    assert out["torch_loaded"] is False and out["nncf_loaded"] is False
