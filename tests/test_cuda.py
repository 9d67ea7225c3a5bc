"""The CUDA device path (runtime/_torch.py): routing, device errors, INT8 refusal, results equal
to the CPU path, no OpenVINO needed, and no upward import of the fit-time pipeline.

Everything but the ``cuda``-marked tests runs on a CPU-only machine: the device pipeline is
device-agnostic, so it is checked on CPU tensors (the Detector's CUDA check is replaced by one
that answers "cpu"). The ``cuda`` tests run the same comparisons on a real GPU and are skipped
with a reason where torch sees none (tools/device_check.sh runs them on a GPU machine).
Models are tiny and built from nothing (random-weight backbone, generated images): no
../shared data, no downloaded weights.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from npad_edge.errors import DeviceError, InvalidInputError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason=f"torch {torch.__version__} sees no CUDA GPU on this machine")
STAGES = {"decode", "preprocess", "backbone", "search", "postprocess", "total"}


def _images(root: Path, n: int = 8, size: int = 48, seed: int = 0) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for i in range(n):
        img = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1) + rng.integers(0, 40, (size, size, 3))
        p = root / f"{i:03d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Fitted PatchCore (max and reweighted) and N-pad models: Lite0 cut after stage3, random
    weights, 64x64 input (8x8 grid), 8 generated images."""
    from npad_edge.pipeline import fit_model

    root = tmp_path_factory.mktemp("cuda_tiny")
    paths = _images(root / "train")
    common = dict(backbone="efficientnet_lite0", image_size=64, taps=["stage3"], weights="random",
                  train_paths=paths, holdout=2, progress=False, threads=1)
    models = {
        "patchcore": fit_model(root / "train", root / "pc", method="patchcore",
                               method_settings={"coreset": 0.5}, **common),
        "npad": fit_model(root / "train", root / "npad", method="npad",
                          method_settings={"feature_dim": 16, "n_centroids": 16}, **common),
    }
    # the same bank scored with the paper's reweighting: a setting in the (unhashed) manifest
    shutil.copytree(models["patchcore"], root / "pcr")
    man = json.loads((root / "pcr" / "manifest.json").read_text())
    man["method"]["settings"]["image_score"] = "reweighted"
    (root / "pcr" / "manifest.json").write_text(json.dumps(man))
    models["reweighted"] = root / "pcr"
    models["root"] = root
    return models


def _sample(seed=1, hw=(50, 70)):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    img[10:20, 10:30] = 255   # a bright block: something to score
    return img


@pytest.fixture
def on_cpu(monkeypatch):
    """Detector(..., device="CUDA") builds its device pipeline on CPU tensors."""
    from npad_edge.runtime import _torch

    real = _torch.check_cuda_request

    def fake(manifest, device, inference_precision=None):
        precision = _torch.device_precision(manifest, inference_precision)  # INT8 still refused
        return "cpu", precision

    monkeypatch.setattr(_torch, "check_cuda_request", fake)
    return real


def _compare(a, b, thr: float, rel=1e-5):
    assert a.anomaly_map.shape == b.anomaly_map.shape and a.anomaly_map.dtype == np.float32
    scale = max(float(np.abs(b.anomaly_map).max()), 1e-6)
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=0, atol=rel * scale)
    assert a.score == pytest.approx(b.score, rel=rel, abs=rel)
    assert a.is_anomalous == b.is_anomalous or abs(b.score - thr) <= rel * max(abs(thr), 1.0)
    assert a.mask.dtype == np.bool_
    # masks equal except at pixels within the map tolerance of the threshold
    near = np.abs(b.anomaly_map - thr) <= rel * scale
    assert ((a.mask == b.mask) | near).all()


# ------------------------------------------------------------------ results equal the CPU path

@pytest.mark.parametrize("name", ["patchcore", "reweighted", "npad"])
def test_device_pipeline_equals_cpu_path(tiny, on_cpu, name):
    from npad_edge import Detector

    ref = Detector.load(tiny[name], "CPU", threads=1)
    dev = Detector.load(tiny[name], "CUDA")
    assert dev._device_pipeline is not None and ref._device_pipeline is None
    assert dev.precision == "fp32" and dev.device == "CPU"   # the fake routes to CPU tensors
    for img in (_sample(1), _sample(2, (64, 64)), _sample(3, (33, 90))):
        a, b = dev(img), ref(img)
        _compare(a, b, ref.pixel_threshold)
        assert set(a.timings) == STAGES and all(v >= 0 for v in a.timings.values())
        np.testing.assert_array_equal(a.mask, a.anomaly_map >= dev.pixel_threshold)
    batch = np.stack([_sample(s) for s in (4, 5, 6)])
    for a, b in zip(dev.predict_batch(batch), ref.predict_batch(batch)):
        _compare(a, b, ref.pixel_threshold)
    mixed = [_sample(7), _sample(8, (40, 41))]
    for a, b in zip(dev.predict_batch(mixed), [ref(m) for m in mixed]):
        _compare(a, b, ref.pixel_threshold)
    futures = dev.predict_async([_sample(1), _sample(2)])
    assert [f.result().score for f in futures] == pytest.approx([dev(_sample(1)).score, dev(_sample(2)).score])
    dev.close()


def test_device_pipeline_finds_the_defect(tiny, on_cpu):
    """Not only equal to the CPU path: the bright block scores above a clean image."""
    from npad_edge import Detector

    det = Detector.load(tiny["patchcore"], "CUDA")
    clean = np.full((50, 70, 3), 128, np.uint8)
    bad = clean.copy()
    bad[10:25, 10:30] = 255
    assert det(bad).score > det(clean).score


@pytest.mark.parametrize("hint", ["bf16", "f16"])
def test_low_precision_on_cpu_tensors(tiny, on_cpu, hint):
    """Half precision runs (autocast + low-precision first pass + fp32 re-rank) and reports
    the precision it ran; scores stay near fp32 (backbone rounding, not search error)."""
    from npad_edge import Detector

    det = Detector.load(tiny["patchcore"], "CUDA", inference_precision=hint)
    ref = Detector.load(tiny["patchcore"], "CUDA")
    assert det.precision == {"bf16": "bf16", "f16": "fp16"}[hint]
    assert det.backbone.inference_precision == hint
    a, b = det(_sample(1)), ref(_sample(1))
    assert a.score == pytest.approx(b.score, rel=0.1)
    assert np.corrcoef(a.anomaly_map.ravel(), b.anomaly_map.ravel())[0, 1] > 0.95


def test_scorer_search_is_fp32_exact_after_rerank(tiny):
    """With the backbone's features fixed, the fp16 search path gives the fp32 patch scores
    (first pass in fp16, exact re-rank): the tolerance is float32's, not float16's."""
    from npad_edge import artifact
    from npad_edge.runtime import _torch
    from npad_edge.runtime.detector import _build_method

    loaded = artifact.load_model(tiny["patchcore"])
    method = _build_method(loaded.manifest, loaded.arrays, loaded.root)
    feats = np.random.default_rng(0).standard_normal((3, method.feature_dim, 8, 8)).astype(np.float32)
    p_ref, i_ref = method.score(feats)
    for dtype in ("float32", "float16", "bfloat16"):
        sc = _torch.make_scorer(method, "cpu", dtype, bank_block=5)
        with torch.inference_mode():
            p, i = sc.score(torch.from_numpy(feats))
        np.testing.assert_allclose(p.numpy(), p_ref, rtol=2e-6, atol=2e-6)
        np.testing.assert_allclose(i.numpy(), i_ref, rtol=2e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_npad_knn_scores_on_device_equal_the_numpy_method(dtype):
    """N-pad's second reading (gaussian="knn") on a torch device: the same patch and image
    scores as the numpy method (which runs the core's LocalGaussianBank)."""
    from npad_edge.methods import get_method
    from npad_edge.runtime import _torch

    rng = np.random.default_rng(0)
    f = rng.standard_normal((12, 8, 5, 6)).astype(np.float32)
    m = get_method("npad", gaussian="knn", knn_k=6, n_centroids=4, feature_dim=5, precision=dtype).fit(f)
    test = rng.standard_normal((3, 8, 5, 6)).astype(np.float32)
    p_ref, i_ref = m.score(test)
    sc = _torch.make_scorer(m, "cpu")
    with torch.inference_mode():
        p, i = sc.score(torch.from_numpy(test))
    np.testing.assert_allclose(p.numpy(), p_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(i.numpy(), i_ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ dispatch and device errors

@pytest.fixture(scope="module")
def int8_model(tiny):
    """A real INT8 export (NNCF, 4 calibration images) of the tiny PatchCore model."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from npad_edge.export import export_model

    return export_model(tiny["patchcore"], tiny["root"] / "int8", precision="int8", calib=tiny["root"] / "train",
                        subset=4, int8_options={"fast_bias_correction": True}, progress=False)


def test_int8_model_refused_on_cuda(int8_model):
    """An INT8 export on CUDA used to run the fp32 torch network while reporting int8; now it is
    refused with the reason, before the GPU is even looked for (so also on this machine)."""
    from npad_edge import Detector
    from npad_edge import artifact
    from npad_edge.runtime import _torch

    model = int8_model
    assert Detector.load(model, "CPU", threads=1).precision == "int8"   # a real INT8 model
    for dev in ("CUDA", "cuda:0", "CUDA:1"):
        with pytest.raises(DeviceError, match="cannot run an INT8 model") as e:
            Detector.load(model, dev)
        assert "OpenVINO" in str(e.value) and "inference_precision='f16'" in str(e.value)
    with pytest.raises(DeviceError, match="INT8"):
        _torch.device_precision(artifact.read_manifest(model), "f32")


def test_device_precision_rules(tiny):
    import dataclasses

    from npad_edge import artifact
    from npad_edge.runtime import _torch

    fitted = artifact.read_manifest(tiny["patchcore"])
    fp16 = dataclasses.replace(fitted, kind="exported", precision="fp16")
    assert _torch.device_precision(fitted, None) == "fp32"
    assert _torch.device_precision(fp16, None) == "fp16"
    assert _torch.device_precision(fp16, "f32") == "fp32"
    assert _torch.device_precision(fitted, "bf16") == "bf16"
    assert _torch.device_precision(fitted, "fp16") == "fp16"
    with pytest.raises(InvalidInputError, match="'f32', 'f16', 'bf16'"):
        _torch.device_precision(fitted, "int4")


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without a CUDA GPU")
def test_cuda_without_gpu_is_a_clear_error(tiny):
    from npad_edge import Detector

    with pytest.raises(DeviceError, match=r"sees no CUDA GPU; available: CPU"):
        Detector.load(tiny["patchcore"], "CUDA")
    with pytest.raises(DeviceError, match="sees no CUDA GPU"):
        Detector.load(tiny["npad"], "cuda:0")


def test_cuda_index_and_name_errors_list_available(tiny, monkeypatch):
    """A GPU index that does not exist lists the ones that do (a 2-GPU machine simulated)."""
    from npad_edge import artifact
    from npad_edge.runtime import _torch

    man = artifact.read_manifest(tiny["patchcore"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _torch.check_cuda_request(man, "CUDA") == ("cuda:0", "fp32")
    assert _torch.check_cuda_request(man, "cuda:1", "f16") == ("cuda:1", "fp16")
    assert _torch.cuda_devices() == ["CUDA:0", "CUDA:1"]
    with pytest.raises(DeviceError, match=r"'CUDA:2' is not available; available: CPU, CUDA:0, CUDA:1"):
        _torch.check_cuda_request(man, "CUDA:2")
    with pytest.raises(DeviceError, match="not a CUDA device name"):
        _torch.check_cuda_request(man, "CUDA:x")


def test_fitted_model_unknown_device_lists_available(tiny):
    from npad_edge import Detector

    with pytest.raises(DeviceError, match=r"not available for a fitted \(torch\) model; available: CPU"):
        Detector.load(tiny["patchcore"], "GPU")


# ------------------------------------------------------------------ dependencies

def _imports(path: Path) -> set[str]:
    """Absolute names of the npad_edge modules a runtime file imports (relative ones resolved)."""
    tree = ast.parse(path.read_text())
    pkg = "npad_edge.runtime"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_runtime_imports_nothing_from_fit_time_modules():
    """runtime/ sits below the fit pipeline: it must not import pipeline, evaluation, cli,
    demo or export (the CUDA/torch path used to import pipeline.TorchBackend)."""
    above = ("npad_edge.pipeline", "npad_edge.evaluation", "npad_edge.cli", "npad_edge.demo", "npad_edge.export")
    bad = {}
    for f in sorted((REPO / "npad_edge" / "runtime").glob("*.py")):
        hits = sorted(m for m in _imports(f) if m.startswith(above))
        if hits:
            bad[f.name] = hits
    assert bad == {}
    from npad_edge import pipeline
    from npad_edge.runtime import _torch

    assert pipeline.TorchBackend is _torch.TorchBackend  # still importable where fit code expects it


_NO_OPENVINO = textwrap.dedent("""
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        # As on the GPU machine: torch present; OpenVINO, NNCF and hnswlib not installed.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("openvino", "nncf", "hnswlib"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    fitted, image = sys.argv[1:3]
    import numpy as np
    from PIL import Image
    from npad_edge import Detector, DeviceError
    from npad_edge.runtime import _torch
    from npad_edge.profiling import info
    from npad_edge.profiling.profile import _unavailable

    img = np.asarray(Image.open(image).convert("RGB"))
    out = {}
    cpu = Detector.load(fitted, "CPU", threads=1)
    out["cpu_score"] = cpu(img).score
    out["pipeline_loaded"] = "npad_edge.pipeline" in sys.modules
    try:
        out["cuda_score"] = Detector.load(fitted, "CUDA")(img).score
    except DeviceError as e:
        out["cuda_error"] = str(e)
    _torch.check_cuda_request = lambda m, d, p=None: ("cpu", _torch.device_precision(m, p))
    out["device_path_score"] = Detector.load(fitted, "CUDA")(img).score
    out["info_versions_openvino"] = info()["versions"]["openvino"]
    out["cpu_reason"] = _unavailable("CPU")
    out["loaded"] = sorted(m for m in ("openvino", "nncf", "hnswlib") if m in sys.modules)
    print(json.dumps(out))
""")


def test_cuda_path_needs_no_openvino(tiny):
    """The fitted/CUDA path imports neither OpenVINO, NNCF nor hnswlib (absent on the GPU
    machine), nor the fit-time pipeline."""
    image = next((tiny["root"] / "train").glob("*.png"))
    r = subprocess.run([sys.executable, "-c", _NO_OPENVINO, str(tiny["patchcore"]), str(image)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [] and out["pipeline_loaded"] is False
    # torch's CPU convolutions round differently with 1 thread (CPU Detector) and the default
    assert out["device_path_score"] == pytest.approx(out["cpu_score"], rel=1e-4)
    if CUDA:
        assert out["cuda_score"] == pytest.approx(out["cpu_score"], rel=1e-3)
    else:
        assert "sees no CUDA GPU" in out["cuda_error"]
    assert out["cpu_reason"] == "CPU: not available (openvino is not installed)"


# ------------------------------------------------------------------ on a real GPU

@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", ["patchcore", "reweighted", "npad"])
def test_cuda_detector_equals_cpu_path(tiny, name):
    from npad_edge import Detector

    ref = Detector.load(tiny[name], "CPU", threads=1)
    dev = Detector.load(tiny[name], "CUDA")
    assert dev.device == "CUDA:0" and dev.precision == "fp32"
    assert dev._device_pipeline.extractor.parameters().__next__().is_cuda
    for img in (_sample(1), _sample(3, (33, 90))):
        # cuDNN and the CPU sum convolutions in other orders (fp32 both, TF32 off)
        _compare(dev(img), ref(img), ref.pixel_threshold, rel=1e-3)
    batch = np.stack([_sample(s) for s in (4, 5, 6)])
    for a, b in zip(dev.predict_batch(batch), ref.predict_batch(batch)):
        _compare(a, b, ref.pixel_threshold, rel=1e-3)
    a = dev(_sample(1))
    assert set(a.timings) == STAGES and a.timings["backbone"] > 0 and a.timings["search"] > 0
    assert [f.result().score for f in dev.predict_async([_sample(1)] * 3)] == pytest.approx([a.score] * 3, rel=1e-5)
    dev.close()


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("hint", ["f16", "bf16"])
def test_cuda_half_precision_close_to_fp32(tiny, hint):
    from npad_edge import Detector

    half = Detector.load(tiny["patchcore"], "CUDA", inference_precision=hint)
    full = Detector.load(tiny["patchcore"], "CUDA")
    a, b = half(_sample(1)), full(_sample(1))
    assert half.precision == {"f16": "fp16", "bf16": "bf16"}[hint]
    assert a.score == pytest.approx(b.score, rel=0.1)
    assert np.corrcoef(a.anomaly_map.ravel(), b.anomaly_map.ravel())[0, 1] > 0.95


@pytest.mark.cuda
@needs_cuda
def test_cuda_profile_uses_cuda_events(tiny, tmp_path):
    from npad_edge.profiling import profile

    imgs = tmp_path / "imgs"
    _images(imgs, n=4, size=80, seed=3)
    r = profile(tiny["patchcore"], imgs, ("CUDA",), n=4, warmup=1, batch_sizes=(4,))
    d = r["devices"]["CUDA"]
    assert d["timer"] == "cuda_events" and d["gpu"] and d["backend"] == "torch"
    assert d["batches"]["4"]["throughput_ips"] > 0
