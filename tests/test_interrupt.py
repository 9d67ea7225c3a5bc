"""Nothing lost: ``fit`` and ``export`` interrupted midway (Ctrl-C to a real CLI process, or
an exception / KeyboardInterrupt at the worst moment) leave no half-written model at the
destination, never destroy the model already there, and leave no temporary folders behind.

The artifact layer's own guarantees (failure between the renames, the manifest written last,
a destination appearing meanwhile) are in test_artifact.py; this file checks them end to end
through the pipeline, the exporter and the CLI.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from npad_edge import artifact, cli
from test_runtime import bottle_images, small_models

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]


def old_model(dest: Path) -> bytes:
    """A small valid model at ``dest`` (what an interrupted overwrite must leave intact);
    returns its manifest bytes."""
    artifact.write_model(dest, {
        "kind": "fitted",
        "backbone": {"name": "efficientnet_lite0", "taps": ["a"]},
        "preprocess": {"image_size": [64, 64], "mean": [0.5] * 3, "std": [0.2] * 3},
        "method": {"name": "patchcore", "settings": {}},
        "threshold": {"value": 1.0, "method": "fixed"},
        "extra": {"marker": "the old model"},
    }, {"bank": np.arange(12, dtype=np.float32).reshape(3, 4)})
    return (dest / "manifest.json").read_bytes()


def assert_intact(dest: Path, manifest: bytes) -> None:
    assert (dest / "manifest.json").read_bytes() == manifest
    assert artifact.load_model(dest).manifest.extra["marker"] == "the old model"  # every hash checks


def leftovers(parent: Path, keep: set[str]) -> list[str]:
    """Anything next to the destination that is not expected: temp dirs, half models."""
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


@pytest.fixture(scope="module")
def mini(tmp_path_factory, bottle_dir) -> Path:
    """4 real bottle train images (MVTec layout): a fit takes about a second at 64 px."""
    root = tmp_path_factory.mktemp("mini") / "bottle"
    (root / "train" / "good").mkdir(parents=True)
    for p in bottle_images("train/good", 4):
        shutil.copy(p, root / "train" / "good" / p.name)
    return root


def _fit_argv(data: Path, out: Path, *extra) -> list[str]:
    return ["fit", "--data", str(data), "--out", str(out), "--image-size", "64", "--coreset", "0.1", *extra]


# --------------------------------------------------------------------------- Ctrl-C to a real process


def test_sigint_to_cli_fit_keeps_the_old_model(bottle_dir, tmp_path):
    """``npad-edge fit --overwrite`` over an existing model, Ctrl-C once it is extracting
    features: exit 130, the old model untouched (every hash), nothing else left beside it."""
    dest = tmp_path / "models" / "bottle"
    before = old_model(dest)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    # The whole bottle train set (209 images) so that the fit is still running when we signal.
    proc = subprocess.Popen([sys.executable, "-m", "npad_edge.cli", *_fit_argv(bottle_dir, dest, "--overwrite")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(tmp_path))
    err = bytearray()
    started = threading.Event()

    def read_stderr():
        while True:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                return
            err.extend(chunk)
            if b"features" in err:  # the progress bar of the feature extraction
                started.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert started.wait(120), f"fit never showed progress; stderr:\n{err.decode(errors='replace')}"
        time.sleep(0.3)  # well inside the extraction: 209 images take several seconds
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    text = err.decode(errors="replace")
    assert rc == 130, text
    assert text.rstrip().endswith("npad-edge: interrupted"), text
    assert "Traceback" not in text
    assert_intact(dest, before)
    assert leftovers(dest.parent, {"bottle"}) == []


# --------------------------------------------------------------------------- exceptions at the worst moment


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_fit_interrupted_while_writing(mini, tmp_path, monkeypatch, capsys, exc):
    """The interrupt comes after every file is written into the temporary folder, just before
    it is renamed into place: the worst moment. Ctrl-C over an existing model (--overwrite):
    untouched, exit 130. An exception with a new destination: nothing appears, exit 1 with one
    line. No temporary folder is left either way."""
    from npad_edge.artifact import store

    def boom(tmp, dest, overwrite):
        assert (tmp / "manifest.json").is_file()  # really everything was written
        raise exc("simulated interrupt")

    kept = tmp_path / "m_old"
    before = old_model(kept)
    monkeypatch.setattr(store, "_install", boom)
    if exc is KeyboardInterrupt:
        rc = cli.main(_fit_argv(mini, kept, "-q", "--overwrite"))
        assert rc == 130 and "interrupted" in capsys.readouterr().err
    else:
        rc = cli.main(_fit_argv(mini, tmp_path / "m_new", "-q"))
        err = capsys.readouterr().err
        assert rc == 1 and len(err.strip().splitlines()) == 1 and "simulated interrupt" in err, err
        assert not (tmp_path / "m_new").exists()
    assert_intact(kept, before)
    assert leftovers(tmp_path, {"m_old"}) == []


def test_overwrite_needs_the_flag_and_then_replaces(mini, tmp_path, capsys):
    """Through the CLI: an existing model is refused without --overwrite (before any work),
    replaced with it; no temporary folder is left either way."""
    dest = tmp_path / "m"
    before = old_model(dest)
    rc = cli.main(_fit_argv(mini, dest, "-q"))
    err = capsys.readouterr().err
    assert rc == 1 and "--overwrite" in err
    assert_intact(dest, before)
    assert cli.main(_fit_argv(mini, dest, "-q", "--overwrite")) == 0
    m = artifact.load_model(dest).manifest
    assert m.method.name == "patchcore" and "marker" not in m.extra
    assert leftovers(tmp_path, {"m"}) == []


def test_export_interrupted_midway(bottle_dir, tmp_path, monkeypatch, capsys):
    """``npad-edge export --overwrite`` interrupted while the model folder is being written:
    the IR is saved in export's temporary folder and the .bin half copied into the model's
    temporary folder. Exit 130, the old model at --out untouched, and neither temporary
    folder (``.npad-export-*``, ``.edge.tmp-*``) left behind."""
    from npad_edge.artifact import store

    fitted = small_models()["fitted"]
    out = tmp_path / "edge"
    before = old_model(out)
    real_copy = shutil.copyfile
    seen = []

    def copy(src, dst, *a, **k):
        if str(dst).endswith("backbone.bin"):
            seen.extend(sorted(p.name for p in tmp_path.iterdir()))
            with open(src, "rb") as f, open(dst, "wb") as g:
                g.write(f.read(1000))
            raise KeyboardInterrupt
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(store.shutil, "copyfile", copy)
    rc = cli.main(["export", "--model", str(fitted), "--out", str(out), "--overwrite", "-q"])
    assert rc == 130, capsys.readouterr().err
    assert any(n.startswith(".npad-export-") for n in seen) and any(n.startswith(".edge.tmp-") for n in seen), seen
    assert_intact(out, before)
    assert leftovers(tmp_path, {"edge"}) == []
