"""Input geometry: input-size derivation, manifest record, letterbox, CLI parsing (unit level).

End-to-end non-square models (fit -> export -> Detector -> eval on real images) are in
tests/test_geometry_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from npad_edge import artifact
from npad_edge.data import geometry
from npad_edge.data.geometry import (Placement, Tiling, derive_input_size, letterbox, letterbox_box, merge_tiles,
                                     parse_image_size, tile_grid)
from npad_edge.errors import InvalidInputError, ModelFormatError

FROZEN_V1 = Path(__file__).parent / "data" / "models" / "v1_minimal"


# ----------------------------------------------------------------------------- derivation
def test_square_images_give_the_old_square_input():
    assert derive_input_size([(900, 900)] * 5, 256, 16) == (256, 256)
    assert derive_input_size([(900, 900)], 128, 32) == (128, 128)


def test_long_side_from_the_median_aspect_rounded_to_the_stride():
    # H/W = 2.5 (tall): W = 256, H = 256 + round(1.5 * 256 / 16) * 16 = 640
    assert derive_input_size([(1250, 500)] * 3, 256, 16) == (640, 256)
    # W/H = 2.5 (wide): H is the short side
    assert derive_input_size([(500, 1250)] * 3, 256, 16) == (256, 640)
    # 1.3 * 64 = 83.2 -> extra 19.2 -> rounds to 16 (multiple 16) -> 80; to 32 -> 96? no: round(0.6) = 1 -> 96
    assert derive_input_size([(130, 100)], 64, 16) == (80, 64)
    assert derive_input_size([(130, 100)], 64, 32) == (96, 64)
    # the long side minus the short side is always a multiple, even for a short side that is not
    h, w = derive_input_size([(300, 100)], 100, 16)
    assert w == 100 and (h - 100) % 16 == 0 and abs(h - 300) <= 8


def test_median_not_mean_and_mixed_orientation():
    # one extreme outlier does not move the median
    sizes = [(200, 100)] * 4 + [(100, 2000)]
    assert derive_input_size(sizes, 64, 16) == (128, 64)
    # mostly wide images -> a wide input
    sizes = [(100, 200), (100, 210), (100, 190), (300, 100)]
    h, w = derive_input_size(sizes, 64, 16)
    assert h == 64 and w == 128


def test_derivation_bad_arguments():
    for bad in ([], [(0, 10)], [(10,)]):
        with pytest.raises(InvalidInputError):
            derive_input_size(bad, 64, 16)
    with pytest.raises(InvalidInputError):
        derive_input_size([(10, 10)], 0, 16)
    with pytest.raises(InvalidInputError):
        derive_input_size([(10, 10)], 64, True)


def test_header_sizes_match_decoded_sizes(tmp_path):
    from PIL import Image

    from npad_edge.data import read_image

    paths = []
    for i, (h, w) in enumerate([(40, 90), (77, 33)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(p)
        paths.append(p)
    assert geometry.image_sizes(paths) == [read_image(p).shape[:2] for p in paths] == [(40, 90), (77, 33)]


@pytest.mark.parametrize("text,expected", [("256", 256), ("640x256", (640, 256)), (" 64X96 ", (64, 96)),
                                           (128, 128), ((96, 64), (96, 64)), ([64, 64], (64, 64))])
def test_parse_image_size(text, expected):
    assert parse_image_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "0", "31", "640x", "x256", "640x256x3", "64x16", "-64", "6.5",
                                  True, 3.0, (64,), (64, 64, 64), None])
def test_parse_image_size_refuses(text):
    with pytest.raises(InvalidInputError, match="HxW"):
        parse_image_size(text)


# ----------------------------------------------------------------------------- manifest
def _manifest(**pp):
    return artifact.Manifest(
        kind="fitted", backbone=artifact.Backbone(name="b", taps=["t"]),
        preprocess=artifact.Preprocess(image_size=[640, 256], mean=[0.5] * 3, std=[0.5] * 3, **pp),
        method=artifact.Method(name="patchcore"), threshold=artifact.Threshold(value=1.0))


def test_manifest_round_trip_of_the_geometry_fields(tmp_path):
    deriv = {"rule": "short side + median aspect", "short_side": 256, "median_aspect_hw": 2.5, "n_images": 3}
    path = artifact.write_model(tmp_path / "m", _manifest(aspect_rule="letterbox", letterbox_fill="edge",
                                                          size_derivation=deriv),
                                {"bank": np.zeros((2, 3), np.float32)})
    raw = json.loads((path / "manifest.json").read_text())
    assert raw["preprocess"]["aspect_rule"] == "letterbox" and raw["preprocess"]["size_derivation"] == deriv
    m = artifact.read_manifest(path)
    assert m.preprocess.image_size == [640, 256]
    assert (m.preprocess.aspect_rule, m.preprocess.letterbox_fill) == ("letterbox", "edge")
    assert m.preprocess.size_derivation == deriv


def test_manifest_refuses_an_unknown_aspect_rule():
    d = _manifest().to_dict()
    d["preprocess"]["aspect_rule"] = "crop"
    with pytest.raises(ModelFormatError, match="aspect_rule"):
        artifact.Manifest.for_writing(d)


def test_old_manifests_without_the_fields_read_as_resize(tmp_path):
    m = artifact.read_manifest(FROZEN_V1)
    assert m.preprocess.aspect_rule == "resize" and m.preprocess.size_derivation is None
    # a manifest written before the fields existed (keys absent) is the square resize model
    path = artifact.write_model(tmp_path / "m", _manifest(), {"bank": np.zeros((2, 3), np.float32)})
    raw = json.loads((path / "manifest.json").read_text())
    for k in ("aspect_rule", "letterbox_fill", "size_derivation"):
        del raw["preprocess"][k]
    (path / "manifest.json").write_text(json.dumps(raw))
    m = artifact.read_manifest(path)
    assert (m.preprocess.aspect_rule, m.preprocess.letterbox_fill, m.preprocess.size_derivation) == \
        ("resize", "mean", None)


# ----------------------------------------------------------------------------- letterbox
def test_letterbox_box_pads_one_axis_centred():
    assert letterbox_box((100, 100), (640, 256)) == Placement((100, 100), (250, 100), 75, 0)
    assert letterbox_box((100, 400), (256, 256)) == Placement((100, 400), (400, 400), 150, 0)
    assert letterbox_box((300, 100), (256, 256)) == Placement((300, 100), (300, 300), 0, 100)
    # already the model's aspect ratio (any scale): nothing to pad
    assert not letterbox_box((1280, 512), (640, 256)).padded


@pytest.mark.parametrize("fill", ["mean", "edge"])
def test_letterbox_pixels_and_crop(fill):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 90, 3), dtype=np.uint8)
    mean = (0.485, 0.456, 0.406)
    out, place = letterbox(img, (64, 64), fill=fill, mean=mean)
    assert out.shape == (90, 90, 3) and out.flags.c_contiguous and place.padded_hw == (90, 90)
    assert np.array_equal(out[place.top:place.top + 30], img)
    top = out[:place.top]
    if fill == "mean":
        assert (top == np.array([124, 116, 104], np.uint8)).all()
    else:
        assert np.array_equal(top, np.broadcast_to(img[:1], top.shape))
    amap = np.arange(90 * 90, dtype=np.float32).reshape(90, 90)
    assert np.array_equal(place.crop(amap), amap[place.top:place.top + 30])
    # no padding: the same array comes back, not a copy
    same, p = letterbox(img, (30, 90), fill=fill)
    assert same is img and not p.padded and p.crop(amap) is amap


def test_letterbox_bad_fill():
    with pytest.raises(InvalidInputError):
        letterbox(np.zeros((4, 8, 3), np.uint8), (8, 8), fill="zero")


# ----------------------------------------------------------------------------- tiling
def test_tile_grid_covers_the_frame_with_the_overlap():
    tiles = tile_grid((3000, 4000), (1024, 1024), 0.25)
    cover = np.zeros((3000, 4000), np.int32)
    for y, x, h, w in tiles:
        assert (h, w) == (1024, 1024) and y + h <= 3000 and x + w <= 4000
        cover[y:y + h, x:x + w] += 1
    assert cover.min() >= 1
    ys = sorted({t[0] for t in tiles})
    xs = sorted({t[1] for t in tiles})
    assert ys[0] == 0 and ys[-1] == 3000 - 1024 and xs[-1] == 4000 - 1024
    assert all(b - a <= 0.75 * 1024 + 1 for a, b in zip(xs, xs[1:]))
    # a frame within one tile is one tile: the frame
    assert tile_grid((500, 700), (1024, 1024), 0.25) == [(0, 0, 500, 700)]
    # one axis tiled, the other clipped
    assert {t[2:] for t in tile_grid((500, 3000), (1024, 1024), 0.5)} == {(500, 1024)}


def test_merge_tiles_max_and_mean():
    tiles = [(0, 0, 2, 3), (0, 2, 2, 3)]
    a = np.ones((2, 3), np.float32)
    b = np.full((2, 3), 3.0, np.float32)
    mx = merge_tiles((2, 5), tiles, [a, b], "max")
    mn = merge_tiles((2, 5), tiles, [a, b], "mean")
    assert np.array_equal(mx[0], [1, 1, 3, 3, 3])
    assert np.array_equal(mn[0], [1, 1, 2, 3, 3])
    one = merge_tiles((2, 3), [(0, 0, 2, 3)], [a], "max")
    assert np.array_equal(one, a)


@pytest.mark.parametrize("kw", [dict(size=(8, 8)), dict(scale=0.1), dict(scale=None), dict(overlap=0.95),
                                dict(merge="min"), dict(overlap=True)])
def test_tiling_settings_checked(kw):
    with pytest.raises(InvalidInputError):
        Tiling(**kw)


def test_tiling_tile_size():
    assert Tiling(scale=4.0).tile_hw((256, 640)) == (1024, 2560)
    assert Tiling(size=(500, 600)).tile_hw((256, 640)) == (500, 600)


# ----------------------------------------------------------------------------- fit records it
def test_fit_derives_and_records_the_input_size(tmp_path):
    pytest.importorskip("torch")
    from conftest import SHARED

    from npad_edge.pipeline import fit_model

    train = sorted((SHARED / "data" / "magnetic_tile" / "train" / "good").glob("*.jpg"))[:7]
    if not train:
        pytest.skip("magnetic_tile data not found")
    sizes = geometry.image_sizes(train)
    path = fit_model(None, tmp_path / "m", train_paths=train, image_size=64, holdout=2, progress=False,
                     weights="random", method_settings={"coreset": 0.2})
    m = artifact.read_manifest(path)
    expected = derive_input_size(sizes, 64, 16)   # random-weight Lite0, default taps: strides 8, 16
    assert m.preprocess.image_size == list(expected) and expected != (64, 64)
    d = m.preprocess.size_derivation
    assert d["short_side"] == 64 and d["n_images"] == 7 and d["multiple"] == 16
    assert d["median_aspect_hw"] == pytest.approx(np.median([h / w for h, w in sizes]), abs=1e-6)
    assert m.preprocess.aspect_rule == "resize"
    assert m.backbone.config["image_size"] == list(expected)
    h, w = expected
    assert m.extra["feature_shape"][1:] == [h // 8, w // 8]
    with pytest.raises(InvalidInputError):
        fit_model(None, tmp_path / "x", train_paths=train, image_size=(96, 64), aspect_rule="pad")


# ============================================================================= end to end
# A non-square model on small real subsets of both categories: fit -> FittedScorer, export FP32
# and INT8 -> Detector -> eval; mixed sizes come back at their own size.
def _mini(root: Path, n_train: int, per_type: int, types: tuple[str, ...]):
    from npad_edge.data import load_dataset

    ds = load_dataset(root)
    test = [s for s in ds.test if s.label == 0][:2]
    for t in types:
        test += [s for s in ds.test if s.defect_type == t][:per_type]
    import dataclasses

    return dataclasses.replace(ds, train=ds.train[:n_train], test=test)


@pytest.fixture(scope="module")
def tile_ds():
    from conftest import SHARED

    root = SHARED / "data" / "magnetic_tile"
    if not root.is_dir():
        pytest.skip("magnetic_tile data not found")
    return _mini(root, 10, 2, ("crack", "blowhole"))


@pytest.fixture(scope="module")
def bottle_ds(bottle_dir):
    return _mini(bottle_dir, 8, 2, ("broken_large",))


class _Models:
    """Models built on first use and kept for the module: ``models[cat, kind]`` with kind in
    "fitted", "fp32", "int8". magnetic_tile: derived from a 64 short side, letterboxed; bottle
    (square images): an explicit 64 x 96, letterboxed (its images are padded to 2:3). INT8 is
    calibrated on 4 training images."""

    def __init__(self, root: Path, sets: dict):
        self.root, self.sets, self.paths = root, sets, {}

    def __getitem__(self, key):
        cat, kind = key
        if key in self.paths:
            return self.paths[key]
        from npad_edge.export import export_model
        from npad_edge.pipeline import fit_model

        ds = self.sets[cat]()
        if kind == "fitted":
            size = 64 if cat == "magnetic_tile" else (64, 96)
            path = fit_model(ds, self.root / f"{cat}-fitted", image_size=size, aspect_rule="letterbox", holdout=2,
                             method_settings={"coreset": 0.1}, progress=False)
        elif kind == "fp32":
            path = export_model(self[cat, "fitted"], self.root / f"{cat}-fp32", progress=False)
        else:
            calib = self.root / f"{cat}-calib"
            calib.mkdir(exist_ok=True)
            for p in ds.train[:4]:
                (calib / Path(p).name).symlink_to(p)
            path = export_model(self[cat, "fitted"], self.root / f"{cat}-int8", precision="int8", calib=calib,
                                subset=4, progress=False)
        self.paths[key] = path
        return path


@pytest.fixture(scope="module")
def e2e_models(request, tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("openvino")
    return _Models(tmp_path_factory.mktemp("geom"), {"magnetic_tile": lambda: request.getfixturevalue("tile_ds"),
                                                     "bottle": lambda: request.getfixturevalue("bottle_ds")})


# The magnetic_tile FP32 path runs by default (about half a minute on 2 cores); bottle and INT8
# (NNCF's full bias correction) are behind the slow marker.
_CATS = ["magnetic_tile", pytest.param("bottle", marks=pytest.mark.slow)]
_PRECS = ["fp32", pytest.param("int8", marks=pytest.mark.slow)]


@pytest.mark.slow
def test_e2e_manifests_carry_the_geometry(e2e_models, tile_ds):
    pytest.importorskip("nncf")
    m = artifact.read_manifest(e2e_models["magnetic_tile", "int8"])
    h, w = m.preprocess.image_size
    assert (h, w) == derive_input_size(geometry.image_sizes(tile_ds.train), 64, 16) and h != w
    assert m.preprocess.aspect_rule == "letterbox" and m.preprocess.size_derivation["n_images"] == 10
    assert m.calibration["aspect_rule"] == "letterbox"
    b = artifact.read_manifest(e2e_models["bottle", "fp32"])
    assert b.preprocess.image_size == [64, 96] and b.preprocess.size_derivation["rule"] == "explicit"


@pytest.mark.parametrize("cat", _CATS)
def test_e2e_torch_scorer_and_exported_detector_agree(e2e_models, cat, request):
    from npad_edge import Detector
    from npad_edge.data import read_image
    from npad_edge.evaluation import FittedScorer

    ds = request.getfixturevalue("tile_ds" if cat == "magnetic_tile" else "bottle_ds")
    scorer = FittedScorer(e2e_models[cat, "fitted"])
    det = Detector.load(e2e_models[cat, "fp32"], threads=2)
    det_torch = Detector.load(e2e_models[cat, "fitted"], threads=2)   # the runtime's torch path
    for s in ds.test[:3]:
        img = read_image(s.path)
        a, b, c = scorer.predict(img), det(img), det_torch(img)
        assert a.anomaly_map.shape == b.anomaly_map.shape == c.anomaly_map.shape == img.shape[:2]
        assert b.score == pytest.approx(a.score, rel=2e-3)
        assert c.score == pytest.approx(a.score, rel=1e-5)
        span = float(a.anomaly_map.max() - a.anomaly_map.min())
        assert np.abs(b.anomaly_map - a.anomaly_map).max() <= 5e-3 * span + 1e-6
        np.testing.assert_allclose(c.anomaly_map, a.anomaly_map, rtol=1e-4, atol=1e-5 * span)


@pytest.mark.parametrize("precision", _PRECS)
def test_e2e_mixed_sizes_come_back_at_their_own_size(e2e_models, tile_ds, precision):
    from npad_edge import Detector
    from npad_edge.data import read_image

    det = Detector.load(e2e_models["magnetic_tile", precision], threads=2)
    imgs = [read_image(s.path) for s in tile_ds.test]
    assert len({im.shape for im in imgs}) > 2            # really mixed
    preds = det.predict_batch(imgs)
    single = [det(im) for im in imgs[:2]]
    futs = [f.result() for f in det.predict_async(imgs[:2])]
    for im, p in zip(imgs, preds):
        assert p.anomaly_map.shape == p.mask.shape == im.shape[:2] and np.isfinite(p.anomaly_map).all()
    for a, b, c in zip(preds, single, futs):
        assert a.score == pytest.approx(b.score, rel=1e-5) == pytest.approx(c.score, rel=1e-5)
        np.testing.assert_allclose(a.anomaly_map, c.anomaly_map, rtol=1e-5, atol=1e-6)
    # same-size batch (one backbone call over letterboxed frames) equals single calls
    same = [imgs[0], imgs[0].copy()]
    bp = det.predict_batch(same)
    np.testing.assert_allclose(bp[1].anomaly_map, single[0].anomaly_map, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cat,precision", [("magnetic_tile", "fp32"),
                                           pytest.param("magnetic_tile", "int8", marks=pytest.mark.slow),
                                           pytest.param("bottle", "int8", marks=pytest.mark.slow)])
def test_e2e_eval_and_report(e2e_models, cat, precision, request, tmp_path):
    from npad_edge.evaluation import evaluate_model
    from npad_edge.report import collect_overlays, write_html_report

    ds = request.getfixturevalue("tile_ds" if cat == "magnetic_tile" else "bottle_ds")
    res = {p: evaluate_model(e2e_models[cat, p], ds, progress=False) for p in ("fitted", precision)}
    for r in res.values():
        m = r.metrics
        assert 0 <= m["image_auroc"] <= 1 and 0 <= m["pixel_auroc"] <= 1 and 0 <= m["pro"] <= 1
        assert m["aspect_rule"] == "letterbox"
        if cat == "magnetic_tile":     # mixed sizes: each image's own size
            assert m["eval_resolution"] == "native" and m["eval_size_rule"].startswith("auto: native")
        else:                          # one size: the model input, as before
            assert m["eval_resolution"] == [64, 96] and m["model_input_size"] == [64, 96]
    forced = evaluate_model(e2e_models[cat, "fitted"], ds, progress=False, eval_size="model")
    assert forced.metrics["eval_resolution"] == forced.metrics["model_input_size"]
    overlays = collect_overlays(res[precision], e2e_models[cat, precision], k=1)
    html = write_html_report(res[precision], tmp_path / "r.html", overlays=overlays).read_text()
    assert "Model input (H x W)" in html and "letterbox" in html and len(overlays) == 2


def test_eval_size_argument_checked(tile_ds):
    from npad_edge.evaluation import _eval_resolution

    class S:
        input_size = (64, 96)

    paths = [s.path for s in tile_ds.test]
    assert _eval_resolution("native", S(), paths) == (None, "native")
    assert _eval_resolution("model", S(), paths) == ((64, 96), "model")
    assert _eval_resolution(32, S(), paths) == ((32, 32), "explicit")
    assert _eval_resolution((32, 48), S(), paths) == ((32, 48), "explicit")
    assert _eval_resolution(None, S(), paths)[0] is None
    assert _eval_resolution(None, S(), paths[:1])[0] == (64, 96)
    for bad in ("big", 0, (1, 2, 3), True):
        with pytest.raises(InvalidInputError):
            _eval_resolution(bad, S(), paths)


# ----------------------------------------------------------------------------- old square models
def test_square_resize_model_unchanged_without_the_new_fields(bottle_ds, tmp_path):
    """A square model (the old default) gives the same result with and without the new manifest
    fields (as written before them), and equals the pre-geometry computation done by hand."""
    pytest.importorskip("torch")
    import shutil

    from npad_edge import Detector
    from npad_edge.data import read_image
    from npad_edge.methods import method_class
    from npad_edge.pipeline import TorchBackend, fit_model
    from npad_edge.postprocess import anomaly_maps

    # the old default also resized in the graph (resize_on="core" became the default with issue 10)
    path = fit_model(bottle_ds, tmp_path / "sq", image_size=64, holdout=2, method_settings={"coreset": 0.1},
                     progress=False, resize_on="graph")
    assert artifact.read_manifest(path).preprocess.image_size == [64, 64]
    old = tmp_path / "old"
    shutil.copytree(path, old)
    raw = json.loads((old / "manifest.json").read_text())
    for k in ("aspect_rule", "letterbox_fill", "size_derivation"):
        del raw["preprocess"][k]
    (old / "manifest.json").write_text(json.dumps(raw, indent=2))
    new_det, old_det = Detector.load(path, threads=2), Detector.load(old, threads=2)
    loaded = artifact.load_model(old)
    from npad_edge.backbones import FeatureExtractor

    be = TorchBackend(FeatureExtractor.from_config(loaded.manifest.backbone.config))
    method = method_class("patchcore").from_state(loaded.manifest.method.settings, loaded.arrays)
    img = np.ascontiguousarray(read_image(bottle_ds.test[-1].path)[::2, ::3])   # 450 x 300: not square
    a, b = new_det(img), old_det(img)
    patch, score = method.score(be.extract(img[None]))
    ref = anomaly_maps(patch, (64, 64), img.shape[:2], 4.0)[0]
    assert a.score == b.score == pytest.approx(float(score[0]), rel=1e-6)
    assert np.array_equal(a.anomaly_map, b.anomaly_map)
    np.testing.assert_allclose(a.anomaly_map, ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("value", ["abc", "16", "640x", "640x256x3", "0x64"])
def test_cli_fit_refuses_bad_image_sizes(value, tmp_path, capsys, bottle_dir):
    from npad_edge import cli

    rc = cli.main(["fit", "--data", str(bottle_dir), "--out", str(tmp_path / "m"), "--image-size", value])
    assert rc == 2 and "--image-size" in capsys.readouterr().err and not (tmp_path / "m").exists()


@pytest.mark.parametrize("value", ["huge", "4", "64x"])
def test_cli_eval_refuses_bad_eval_sizes(value, tmp_path, capsys, bottle_dir):
    from npad_edge import cli

    rc = cli.main(["eval", "--model", str(FROZEN_V1), "--data", str(bottle_dir), "--eval-size", value])
    assert rc == 2 and "--eval-size" in capsys.readouterr().err


def test_cli_fit_explicit_size_and_letterbox(tile_ds, tmp_path, capsys):
    pytest.importorskip("torch")
    from npad_edge import cli

    data = tmp_path / "data" / "train" / "good"
    data.mkdir(parents=True)
    for p in tile_ds.train[:6]:
        (data / Path(p).name).symlink_to(p)
    rc = cli.main(["fit", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--image-size", "96x64",
                   "--aspect-rule", "letterbox", "--letterbox-fill", "edge", "--weights", "random",
                   "--coreset", "0.1", "-q"])
    assert rc == 0, capsys.readouterr().err
    m = artifact.read_manifest(tmp_path / "m")
    assert m.preprocess.image_size == [96, 64] and m.preprocess.size_derivation["rule"] == "explicit"
    assert (m.preprocess.aspect_rule, m.preprocess.letterbox_fill) == ("letterbox", "edge")


def test_default_short_side_is_one_value_everywhere():
    """fit_model, the CLI's fit and fit-many, and the fleet settings share DEFAULT_SHORT_SIDE."""
    import inspect

    from npad_edge import cli
    from npad_edge.data.geometry import DEFAULT_SHORT_SIDE
    from npad_edge.fleet.fit import FitSettings
    from npad_edge.pipeline import fit_model

    assert DEFAULT_SHORT_SIDE == 320
    assert inspect.signature(fit_model).parameters["image_size"].default == DEFAULT_SHORT_SIDE
    assert FitSettings().image_size == DEFAULT_SHORT_SIDE
    parser = cli.build_parser()
    for cmd in (["fit", "--data", "d", "--out", "o"], ["fit-many", "--data", "d", "--out", "o"]):
        assert parser.parse_args(cmd).image_size == str(DEFAULT_SHORT_SIDE)


def test_default_resize_is_one_value_everywhere():
    """fit_model and the CLI's fit share DEFAULT_RESIZE_ON (the CLI keeps a literal so that it
    does not import numpy at start-up)."""
    import inspect

    from npad_edge import cli
    from npad_edge.data.geometry import DEFAULT_RESIZE_ON
    from npad_edge.pipeline import fit_model

    from npad_edge.fleet.fit import FitSettings

    assert DEFAULT_RESIZE_ON == "core"
    assert inspect.signature(fit_model).parameters["resize_on"].default == DEFAULT_RESIZE_ON
    assert FitSettings().resize_on == DEFAULT_RESIZE_ON
    parser = cli.build_parser()
    for cmd in (["fit", "--data", "d", "--out", "o"], ["fit-many", "--data", "d", "--out", "o"]):
        assert parser.parse_args(cmd).resize_on == DEFAULT_RESIZE_ON
    with pytest.raises(InvalidInputError):
        FitSettings(resize_on="gpu")
