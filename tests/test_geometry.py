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
    # explicit (H, W) is used as given
    path = fit_model(None, tmp_path / "e", train_paths=train, image_size=(96, 64), holdout=0, progress=False,
                     weights="random", method_settings={"coreset": 0.2}, aspect_rule="letterbox")
    m = artifact.read_manifest(path)
    assert m.preprocess.image_size == [96, 64] and m.preprocess.size_derivation["rule"] == "explicit"
    assert m.preprocess.aspect_rule == "letterbox"
    with pytest.raises(InvalidInputError):
        fit_model(None, tmp_path / "x", train_paths=train, image_size=(96, 64), aspect_rule="pad")
