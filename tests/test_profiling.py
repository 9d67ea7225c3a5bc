"""profiling.profile / info: structure, and a missing device reported in one line."""

from __future__ import annotations

import json

import pytest

from test_runtime import BOTTLE, small_models

STAGES = {"decode", "preprocess", "backbone", "search", "postprocess", "total"}


@pytest.fixture(scope="module")
def small_images(bottle_dir, tmp_path_factory):
    """Three real bottle images at a third of the size (each new input size costs a compile)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("imgs")
    for p in sorted((BOTTLE / "test" / "good").glob("*.png"))[:3]:
        Image.open(p).convert("RGB").resize((300, 300)).save(d / p.name)
    return d


def test_profile_structure(small_images, tmp_path):
    from npad_edge.profiling import profile

    model = small_models("fp32")["fp32"]
    out = tmp_path / "profile.json"
    r = profile(model, small_images, ("CPU", "GPU", "NPU9"), n=3, warmup=1, threads=2, requests=2,
                json_out=out)
    assert r["precision"] == "fp32" and r["kind"] == "exported"
    cpu = r["devices"]["CPU"]
    assert set(cpu["stages"]) == STAGES
    for s in cpu["stages"].values():
        assert {"median_ms", "p90_ms", "p99_ms"} <= set(s)
        assert s["median_ms"] <= s["p90_ms"] <= s["p99_ms"]
    assert cpu["stages"]["preprocess"]["median_ms"] > 0 and cpu["stages"]["backbone"]["median_ms"] > 0
    assert cpu["sync"]["throughput_ips"] > 0 and cpu["async"]["throughput_ips"] > 0
    assert cpu["async"]["requests"] == 2 and cpu["inference_precision"] == "f32"
    # Missing devices: one line each, no traceback.
    if "GPU" not in r["devices"]:
        assert r["unavailable"]["GPU"].startswith("GPU: not available (available: ")
        assert "\n" not in r["unavailable"]["GPU"]
    assert r["unavailable"]["NPU9"] == "NPU9: not available (available: " + \
        ", ".join(r["info"]["openvino_devices"]) + ")"
    assert r["unavailable"]["NPU9"] in r["report"]
    assert json.loads(out.read_text())["devices"]["CPU"]["stages"]["total"]["median_ms"] == \
        cpu["stages"]["total"]["median_ms"]


def test_profile_refuses_bad_arguments(small_images, tmp_path):
    from npad_edge.errors import DataError, InvalidInputError
    from npad_edge.profiling import profile

    model = small_models("fp32")["fp32"]
    with pytest.raises(InvalidInputError):
        profile(model, small_images, n=0)
    with pytest.raises(DataError):
        profile(model, tmp_path)


def test_info():
    from npad_edge.profiling import info

    d = info()
    assert d["npad_edge"] and d["versions"]["numpy"] and d["versions"]["openvino"]
    assert "CPU" in d["openvino_devices"]
    assert d["search"]["isa"] in d["search"]["available_isas"]
    from npad_edge import search

    assert d["search"]["cpu_features"] == search.cpu_features()
    json.dumps(d)


def test_profile_cuda_path_structure(tmp_path, monkeypatch):
    """``profile(..., ("CUDA",), batch_sizes=...)`` through the device pipeline, run here on CPU
    tensors (the CUDA check answers "cpu"): stage times from the pipeline's clock, batch rounds,
    the precision that ran; without a GPU, plain "CUDA" is one line in ``unavailable``."""
    torch = pytest.importorskip("torch")
    from test_cuda import _images
    from npad_edge.pipeline import fit_model
    from npad_edge.profiling import profile
    from npad_edge.runtime import _torch

    paths = _images(tmp_path / "train", n=6)
    model = fit_model(tmp_path / "train", tmp_path / "m", method="patchcore", method_settings={"coreset": 0.5},
                      backbone="efficientnet_lite0", image_size=64, taps=["stage3"], weights="random",
                      train_paths=paths, holdout=2, progress=False, threads=1)
    if not torch.cuda.is_available():
        r = profile(model, tmp_path / "train", ("CUDA",), n=2, warmup=1)
        assert r["devices"] == {} and r["unavailable"]["CUDA"].startswith("CUDA: not available (torch ")
    monkeypatch.setattr(_torch, "check_cuda_request",
                        lambda m, d, p=None: ("cpu", _torch.device_precision(m, p)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # profile's own availability check
    r = profile(model, tmp_path / "train", ("CUDA",), n=4, warmup=1, batch_sizes=(1, 3),
                inference_precision="bf16", json_out=tmp_path / "p.json")
    d = r["devices"]["CUDA"]
    assert d["backend"] == "torch" and d["precision"] == "bf16" and d["inference_precision"] == "bf16"
    assert d["timer"] == "perf_counter" and d["gpu"] is None
    assert set(d["stages"]) == STAGES and d["stages"]["search"]["median_ms"] > 0
    b3 = d["batches"]["3"]
    assert b3["batch"] == 3 and b3["rounds"] == 2 and b3["images"] == 6 and b3["throughput_ips"] > 0
    assert set(b3["stages"]) == STAGES - {"decode"}
    assert b3["batch_latency_ms"]["median_ms"] == pytest.approx(3 * b3["stages"]["total"]["median_ms"], rel=0.35)
    assert any(line.startswith("CUDA batch 3: ") for line in r["report"])
    assert json.loads((tmp_path / "p.json").read_text())["devices"]["CUDA"]["batches"]["1"]["rounds"] == 4
    from npad_edge.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="batch_sizes"):
        profile(model, tmp_path / "train", ("CUDA",), n=2, batch_sizes=(0,))
