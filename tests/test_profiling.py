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
    json.dumps(d)
