"""Heat-map overlays: shapes, colours, contours and a fixed (not per-image) colour range."""

from __future__ import annotations

import numpy as np
import pytest

from npad_edge.errors import InvalidInputError
from npad_edge.viz import COLORMAPS, apply_colormap, map_range, mask_contour, overlay, resize_map, to_png_bytes


def _image(h=48, w=64, value=128):
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_luts_are_256_rgb_and_inferno_gets_brighter():
    for lut in COLORMAPS.values():
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
    lum = COLORMAPS["inferno"].astype(float) @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(lum) >= -1.0), "inferno must be (near) monotonic in luminance"
    assert lum[0] < 10 and lum[-1] > 230


def test_overlay_shape_dtype_and_colours():
    img = _image()
    amap = np.zeros(img.shape[:2], np.float32)
    amap[10:20, 10:20] = 10.0  # saturated
    out = overlay(img, amap, None, vmin=1.0, vmax=3.0, alpha=0.5)
    assert out.shape == img.shape and out.dtype == np.uint8
    top = COLORMAPS["inferno"][-1].astype(float)
    np.testing.assert_allclose(out[15, 15], 0.5 * 128 + 0.5 * top, atol=1)
    # Below vmin: darkest colour at the lowest opacity (alpha * 0.2), the part stays visible.
    low = COLORMAPS["inferno"][0].astype(float)
    np.testing.assert_allclose(out[40, 50], (1 - 0.1) * 128 + 0.1 * low, atol=1)


def test_normalisation_is_fixed_not_per_image():
    """A good image with small scores must not be stretched to full red like a defective one."""
    img = _image()
    vmin, vmax = map_range(2.0)
    good = np.full(img.shape[:2], 0.9, np.float32)
    good[5, 5] = 1.0  # its own max: per-image min-max would paint this pixel as saturated
    bad = good.copy()
    bad[20:30, 20:30] = 5.0
    og = overlay(img, good, None, vmin=vmin, vmax=vmax)
    ob = overlay(img, bad, None, vmin=vmin, vmax=vmax)
    assert np.array_equal(og[5, 5], og[40, 40]), "values below the range all look alike"
    assert np.array_equal(og[40, 40], ob[40, 40]), "same value, same colour in every image"
    assert np.abs(ob[25, 25].astype(int) - og[25, 25].astype(int)).sum() > 100


def test_map_range_centres_threshold():
    vmin, vmax = map_range(4.0)
    assert vmin < 4.0 < vmax and (4.0 - vmin) / (vmax - vmin) == pytest.approx(1 / 3)
    with pytest.raises(InvalidInputError):
        map_range(0.0)
    with pytest.raises(InvalidInputError):
        map_range(float("nan"))


def test_mask_contour_ring_and_drawn_colour():
    m = np.zeros((30, 30), bool)
    m[5:25, 5:25] = True
    c = mask_contour(m, width=2)
    assert c[5, 10] and c[6, 10] and not c[7, 10] and not c[15, 15] and not c[3, 10]
    assert c.sum() == 20 * 20 - 16 * 16
    img = _image(30, 30)
    out = overlay(img, np.zeros((30, 30), np.float32), m, vmin=0.5, vmax=1.5, contour_color=(0, 255, 0))
    assert tuple(out[5, 10]) == (0, 255, 0)
    assert tuple(out[15, 15]) != (0, 255, 0)


def test_mask_contour_outside_leaves_the_mask_visible():
    m = np.zeros((30, 30), bool)
    m[10:12, 5:25] = True  # a thin scratch
    c = mask_contour(m, width=2, outside=True)
    assert not (c & m).any()
    assert c[9, 10] and c[8, 10] and c[12, 10] and not c[7, 10] and not c[0, 0]


def test_mask_touching_border_gets_an_edge():
    m = np.zeros((10, 10), bool)
    m[:, :5] = True
    assert mask_contour(m, width=1)[0, 2]


def test_caption_changes_top_left_only():
    img = _image(120, 160)
    amap = np.zeros((120, 160), np.float32)
    a = overlay(img, amap, None, vmin=0.5, vmax=1.5)
    b = overlay(img, amap, None, vmin=0.5, vmax=1.5, caption="1.23 / thr 1.00  good")
    assert not np.array_equal(a[:20, :60], b[:20, :60])
    assert np.array_equal(a[-20:], b[-20:])


@pytest.mark.parametrize("kwargs", [
    dict(image=np.zeros((8, 8, 3), np.float32), anomaly_map=np.zeros((8, 8), np.float32)),
    dict(image=np.zeros((8, 8), np.uint8), anomaly_map=np.zeros((8, 8), np.float32)),
    dict(image=np.zeros((8, 8, 3), np.uint8), anomaly_map=np.zeros((4, 8), np.float32)),
    dict(image=np.zeros((8, 8, 3), np.uint8), anomaly_map=np.zeros((8, 8), np.int32)),
    dict(image=np.zeros((8, 8, 3), np.uint8), anomaly_map=np.zeros((8, 8), np.float32), mask=np.zeros((4, 4), bool)),
    dict(image=np.zeros((8, 8, 3), np.uint8), anomaly_map=np.zeros((8, 8), np.float32), vmin=2.0, vmax=1.0),
    dict(image=np.zeros((8, 8, 3), np.uint8), anomaly_map=np.zeros((8, 8), np.float32), alpha=1.5),
    dict(image=np.zeros((8, 8, 3), np.uint8), anomaly_map=np.zeros((8, 8), np.float32), cmap="jet"),
])
def test_overlay_rejects_bad_input(kwargs):
    kw = dict(vmin=0.0, vmax=1.0, mask=None)
    kw.update(kwargs)
    with pytest.raises(InvalidInputError):
        overlay(kw.pop("image"), kw.pop("anomaly_map"), kw.pop("mask"), **kw)


def test_nan_in_map_does_not_crash():
    amap = np.full((8, 8), np.nan, np.float32)
    assert apply_colormap(amap, vmin=0, vmax=1).shape == (8, 8, 3)


def test_resize_map_and_png():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    r = resize_map(m, (30, 40))
    assert r.shape == (30, 40) and r.dtype == np.float32
    assert m.min() <= r.min() and r.max() <= m.max()
    assert resize_map(m, (3, 4)) is not None
    png = to_png_bytes(_image())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
