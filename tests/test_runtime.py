"""Detector: FP32 export parity with the torch path, predictions, bad input, devices.

The small real-bottle models are built once per session by ``small_models()`` (shared with
test_export, test_concurrency, test_profiling, test_no_torch through this module).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from npad_edge.errors import (
    DeviceError,
    ImageDecodeError,
    InvalidInputError,
    ModelFormatError,
    ModelVersionError,
    NpadError,
)

REPO = Path(__file__).resolve().parents[1]
BOTTLE = Path(__import__("conftest").BOTTLE)

# Small on purpose: the default suite must stay fast on a shared 2-core machine.
IMAGE_SIZE = 128
N_TRAIN = 10

_lock = threading.Lock()
_models: dict = {}


def bottle_images(split: str, n: int) -> list[Path]:
    return sorted((BOTTLE / split).glob("*.png"))[:n]


def _fit_small(out: Path) -> Path:
    """A PatchCore model of ``N_TRAIN`` real bottle train images at ``IMAGE_SIZE`` (kind fitted)."""
    from npad_edge.pipeline import fit_model

    return fit_model(BOTTLE, out, image_size=IMAGE_SIZE, train_paths=bottle_images("train/good", N_TRAIN),
                     holdout=2, progress=False, threads=2)


def small_models(*precisions: str) -> dict[str, Path]:
    """``{"fitted": path, "fp32": path, ...}``: built once per process, removed at exit."""
    from npad_edge.export import export_model

    with _lock:
        if "root" not in _models:
            root = Path(tempfile.mkdtemp(prefix="npad_rt_test_"))
            atexit.register(shutil.rmtree, root, True)
            _models["root"] = root
            _models["fitted"] = _fit_small(root / "fitted")
        root = _models["root"]
        for p in precisions:
            if p not in _models:
                # Fast bias correction: the round trip is what is tested here, accuracy is in
                # tools/precision_table.py; full bias correction costs ~20 s more.
                _models[p] = export_model(_models["fitted"], root / p, precision=p, progress=False,
                                          calib=BOTTLE / "train" / "good" if p == "int8" else None, subset=8,
                                          int8_options={"fast_bias_correction": True} if p == "int8" else None)
        return {k: v for k, v in _models.items() if k != "root"}


@pytest.fixture(scope="module")
def models(bottle_dir):
    return small_models("fp32")


@pytest.fixture(scope="module")
def det(models):
    from npad_edge import Detector

    return Detector.load(models["fp32"], "CPU", threads=2)


@pytest.fixture(scope="module")
def test_images(bottle_dir):
    from npad_edge.data import read_image

    paths = bottle_images("test/broken_large", 2) + bottle_images("test/good", 2)
    return [read_image(p) for p in paths]


# --------------------------------------------------------------------------- parity


def test_fp32_export_matches_torch_path(models, det, test_images):
    """The exported FP32 Detector and the fitted (torch) Detector agree on maps and scores."""
    from npad_edge import Detector

    torch_det = Detector.load(models["fitted"], "CPU", threads=2)
    assert torch_det.kind == "fitted" and det.kind == "exported"
    for img in test_images[:3]:
        a, b = det(img), torch_det(img)
        assert a.anomaly_map.shape == b.anomaly_map.shape == img.shape[:2]
        # Tolerance: OpenVINO and torch sum convolutions in different orders (f32 both);
        # features differ by ~1e-5 relative, distances by less than 1e-3 relative.
        scale = float(b.anomaly_map.max())
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=0, atol=2e-3 * scale)
        assert a.score == pytest.approx(b.score, rel=1e-3)
        assert a.is_anomalous == b.is_anomalous


def test_compiled_in_f32_explicitly(det):
    props = det.backbone.properties()
    assert "f32" in props["INFERENCE_PRECISION_HINT"] or "float32" in props["INFERENCE_PRECISION_HINT"]
    assert props["INFERENCE_NUM_THREADS"] == "2"


# --------------------------------------------------------------------------- predictions


def test_prediction_fields(det, test_images):
    from npad_edge import Prediction

    img = test_images[0]
    p = det.predict(img)
    assert isinstance(p, Prediction)
    assert isinstance(p.score, float) and isinstance(p.is_anomalous, bool)
    assert p.anomaly_map.shape == img.shape[:2] and p.anomaly_map.dtype == np.float32
    assert p.mask.shape == img.shape[:2] and p.mask.dtype == np.bool_
    assert set(p.timings) == {"decode", "preprocess", "backbone", "search", "postprocess", "total"}
    assert all(v >= 0 for v in p.timings.values())
    assert p.is_anomalous == (p.score >= det.threshold)
    np.testing.assert_array_equal(p.mask, p.anomaly_map >= det.pixel_threshold)
    # The defect image scores above the good ones.
    goods = [det(im).score for im in test_images[2:]]
    assert p.score > max(goods)


def test_path_input_is_decoded(det, bottle_dir):
    from npad_edge.data import read_image

    path = bottle_images("test/broken_small", 1)[0]
    a, b = det(path), det(read_image(path))
    assert a.score == b.score
    assert a.timings["decode"] > 0 and b.timings["decode"] == 0


def test_any_input_size(det, test_images):
    img = np.ascontiguousarray(test_images[0][100:451, 50:600])
    p = det(img)
    assert p.anomaly_map.shape == (351, 550)


def test_predict_batch_equals_predict(det, test_images):
    single = [det(im) for im in test_images]
    batch = det.predict_batch(test_images)
    stacked = det.predict_batch(np.stack(test_images))
    for s, b, c in zip(single, batch, stacked):
        assert b.score == pytest.approx(s.score, rel=1e-5)
        np.testing.assert_allclose(b.anomaly_map, s.anomaly_map, rtol=1e-5, atol=1e-5)
        assert c.score == b.score
    mixed = det.predict_batch([test_images[0], test_images[1][:400, :500].copy()])
    assert mixed[1].anomaly_map.shape == (400, 500)
    assert det.predict_batch([]) == []


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad, words", [
    (np.zeros((64, 64, 3), np.float32), "uint8"),
    (np.zeros((64, 64), np.uint8), "(H, W, 3)"),
    (np.zeros((64, 64, 4), np.uint8), "3 channels"),
    (np.zeros((0, 64, 3), np.uint8), "zero size"),
    ([[1, 2, 3]], "numpy array"),
])
def test_bad_arrays(det, bad, words):
    with pytest.raises(InvalidInputError, match=None) as e:
        det(bad)
    assert words in str(e.value)


def test_bad_image_files(det, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes((BOTTLE / "test/good/000.png").read_bytes()[:500])
    for f in (empty, corrupt):
        with pytest.raises(ImageDecodeError) as e:
            det(f)
        assert f.name in str(e.value)
    with pytest.raises(ImageDecodeError):
        det(tmp_path / "missing.png")


def test_not_a_model(tmp_path):
    from npad_edge import Detector

    with pytest.raises(ModelFormatError, match="not an npad_edge model"):
        Detector.load(tmp_path)
    with pytest.raises(ModelFormatError, match="not an npad_edge model"):
        Detector.load(tmp_path / "nothing")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_newer_format_version(models, tmp_path):
    from npad_edge import Detector

    m = _copy(models["fp32"], tmp_path / "m")
    data = json.loads((m / "manifest.json").read_text())
    data["format_version"] = 999
    (m / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelVersionError, match="newer"):
        Detector.load(m)


def test_missing_ir_file(models, tmp_path):
    from npad_edge import Detector

    m = _copy(models["fp32"], tmp_path / "m")
    (m / "backbone.bin").unlink()
    with pytest.raises(ModelFormatError, match="backbone.bin"):
        Detector.load(m)


def test_corrupt_ir_file(models, tmp_path):
    from npad_edge import Detector

    m = _copy(models["fp32"], tmp_path / "m")
    data = bytearray((m / "backbone.xml").read_bytes())
    data[100:110] = b"XXXXXXXXXX"
    (m / "backbone.xml").write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="sha256"):
        Detector.load(m)


def test_unknown_device_lists_available(models):
    import openvino as ov

    from npad_edge import Detector

    with pytest.raises(DeviceError) as e:
        Detector.load(models["fp32"], "NPU7")
    for d in ov.Core().available_devices:
        assert d in str(e.value)
    assert "NPU7" in str(e.value)
    with pytest.raises(DeviceError):
        Detector.load(models["fp32"], "MULTI:CPU,NPU7")
    with pytest.raises(DeviceError):
        Detector.load(models["fitted"], "GPU")


def test_bad_arguments(models):
    from npad_edge import Detector

    with pytest.raises(InvalidInputError):
        Detector.load(models["fp32"], threads=0)
    with pytest.raises(InvalidInputError):
        Detector.load(models["fp32"], hint="fast")
    with pytest.raises(NpadError):
        Detector.load(models["fp32"], inference_precision="f64")


# --------------------------------------------------------------------------- process-wide effects

TINY = REPO / "tests" / "data" / "models" / "v1_exported_tiny"


def test_blas_threads_of_each_detector_apply(monkeypatch):
    # Process-wide on purpose (one BLAS pool per process), but never sticky: the last
    # Detector that asks sets it.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from npad_edge import Detector

    def blas():
        return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}

    if not blas():
        pytest.skip("numpy has no BLAS pool threadpoolctl can see")
    with threadpoolctl.threadpool_limits(limits=None):  # restores the pool afterwards
        Detector.load(TINY, "CPU", threads=1, blas_threads=1)
        assert blas() == {1}
        Detector.load(TINY, "CPU", threads=1, blas_threads=2)
        assert blas() == {2}
        Detector.load(TINY, "CPU", threads=1, blas_threads=None)
        assert blas() == {2}


def test_exported_detector_leaves_omp_wait_policy_alone(monkeypatch):
    from npad_edge import Detector

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    Detector.load(TINY, "CPU", threads=1)(np.zeros((40, 48, 3), np.uint8))
    assert "OMP_WAIT_POLICY" not in os.environ
