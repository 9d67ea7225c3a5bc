"""npad_edge.postprocess against independent torch / scipy references."""

from __future__ import annotations

import numpy as np
import pytest

from npad_edge.errors import InvalidInputError
from npad_edge.postprocess import (
    anomaly_maps,
    axis_operator,
    bilinear_matrix,
    blur_matrix,
    gaussian_kernel1d,
    mask_from_map,
    resize_mask,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_reference(p: np.ndarray, model_hw, out_hw, sigma: float) -> np.ndarray:
    """Direct computation: F.interpolate -> separable Gaussian conv with reflect pad -> F.interpolate."""
    t = torch.from_numpy(p.astype(np.float64))[:, None]
    t = F.interpolate(t, size=tuple(model_hw), mode="bilinear", align_corners=False)
    if sigma > 0:
        radius = int(4.0 * sigma + 0.5)
        x = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (x / sigma) ** 2)
        k = k / k.sum()
        t = F.pad(t, (radius, radius, radius, radius), mode="reflect")
        t = F.conv2d(t, k.view(1, 1, 1, -1))
        t = F.conv2d(t, k.view(1, 1, -1, 1))
    t = F.interpolate(t, size=tuple(out_hw), mode="bilinear", align_corners=False)
    return t[:, 0].numpy()


@pytest.mark.parametrize(
    "grid, model_hw, out_hw, sigma",
    [
        ((28, 28), (224, 224), (900, 900), 4.0),  # PatchCore at 224, MVTec size
        ((32, 32), (256, 256), (900, 900), 4.0),
        ((20, 30), (160, 240), (333, 517), 4.0),  # non-square everywhere
        ((30, 20), (240, 160), (517, 333), 2.5),
        ((32, 32), (256, 256), (200, 150), 4.0),  # final resize shrinks
        ((7, 9), (56, 72), (56, 72), 0.0),  # no blur, output = model size
        ((28, 28), (224, 224), (224, 224), 4.0),
    ],
)
def test_anomaly_maps_match_torch(grid, model_hw, out_hw, sigma):
    rng = np.random.default_rng(1)
    p = (rng.random((3, *grid), dtype=np.float32) * 5).astype(np.float32)
    got = anomaly_maps(p, model_hw, out_hw, sigma)
    ref = torch_reference(p, model_hw, out_hw, sigma)
    assert got.shape == (3, *out_hw) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_bilinear_matrix_matches_torch_1d():
    for n_in, n_out in [(5, 13), (13, 5), (1, 4), (4, 1), (28, 224), (224, 900), (7, 7)]:
        x = np.random.default_rng(n_in).random(n_in)
        ref = F.interpolate(torch.from_numpy(x).view(1, 1, -1), size=n_out, mode="linear", align_corners=False)
        np.testing.assert_allclose(bilinear_matrix(n_out, n_in) @ x, ref.view(-1).numpy(), rtol=1e-12, atol=1e-12)


def test_blur_matches_scipy_mirror():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).random(100)
    for sigma in (0.7, 2.0, 4.0):
        # scipy "mirror" (d c b | a b c d) is torch/kornia "reflect"; truncate=4 is the same radius
        ref = ndimage.gaussian_filter1d(x, sigma, mode="mirror", truncate=4.0)
        np.testing.assert_allclose(blur_matrix(100, sigma) @ x, ref, rtol=1e-10, atol=1e-12)
    assert gaussian_kernel1d(4.0).size == 33
    np.testing.assert_allclose(gaussian_kernel1d(4.0).sum(), 1.0)


def test_blur_wider_than_signal_is_defined():
    # radius 16 on 5 samples: torch refuses, we reflect repeatedly; a constant stays constant.
    m = blur_matrix(5, 4.0)
    np.testing.assert_allclose(m @ np.full(5, 3.0), np.full(5, 3.0))
    out = anomaly_maps(np.full((1, 2, 2), 2.0, np.float32), (5, 5), (9, 9))
    np.testing.assert_allclose(out, 2.0, rtol=1e-6)
    np.testing.assert_allclose(blur_matrix(1, 4.0), [[1.0]])


def test_single_grid_sigma_zero_and_out_param():
    p = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = anomaly_maps(p, (6, 8), (6, 8), sigma=0)
    assert a.shape == (6, 8)
    np.testing.assert_allclose(a, torch_reference(p[None], (6, 8), (6, 8), 0.0)[0], rtol=1e-6)
    out = np.empty((2, 10, 11), np.float32)
    r = anomaly_maps(np.stack([p, p]), (6, 8), (10, 11), out=out)
    assert r is out
    np.testing.assert_array_equal(out[0], out[1])


def test_constant_map_is_preserved():
    out = anomaly_maps(np.full((2, 28, 28), 1.5, np.float32), (224, 224), (900, 900))
    np.testing.assert_allclose(out, 1.5, rtol=1e-5)


def test_operator_is_cached_and_read_only():
    a = axis_operator(28, 224, 900, 4.0)
    assert a is axis_operator(28, 224, 900, 4.0)
    assert a.shape == (900, 28) and a.dtype == np.float32 and not a.flags.writeable


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(patch_scores=np.zeros((1, 4, 4), np.float64)),
        dict(patch_scores=np.zeros((1, 1, 4, 4), np.float32)),
        dict(patch_scores=np.full((1, 4, 4), np.nan, np.float32)),
        dict(patch_scores=[[0.0]]),
        dict(model_hw=(0, 8)),
        dict(out_hw=(8,)),
        dict(out_hw=(8.5, 8)),
        dict(sigma=-1.0),
        dict(sigma=float("nan")),
        dict(out=np.empty((1, 8, 8), np.float64)),
    ],
)
def test_bad_inputs(kwargs):
    args = dict(patch_scores=np.zeros((1, 4, 4), np.float32), model_hw=(8, 8), out_hw=(8, 8), sigma=1.0)
    args.update(kwargs)
    with pytest.raises(InvalidInputError):
        anomaly_maps(**args)


def test_mask_from_map():
    m = np.array([[0.1, 0.5], [0.7, 0.5]], np.float32)
    assert mask_from_map(m, 0.5).tolist() == [[False, True], [True, True]]
    with pytest.raises(InvalidInputError):
        mask_from_map(m, float("nan"))
    with pytest.raises(InvalidInputError):
        mask_from_map(np.zeros((2, 2), np.uint8), 1)


def test_resize_mask_matches_torch_nearest_exact_and_pil():
    from PIL import Image

    rng = np.random.default_rng(2)
    for (h, w), out_hw in [((900, 900), (224, 224)), ((37, 53), (100, 20)), ((5, 4), (5, 4)), ((8, 8), (3, 17))]:
        m = rng.random((h, w)) < 0.3
        got = resize_mask(m, out_hw)
        t = F.interpolate(torch.from_numpy(m.astype(np.float32))[None, None], size=out_hw, mode="nearest-exact")
        np.testing.assert_array_equal(got, t[0, 0].numpy() > 0.5)
        pil = Image.fromarray(m.astype(np.uint8) * 255).resize(out_hw[::-1], Image.NEAREST)
        np.testing.assert_array_equal(got, np.asarray(pil) > 0)
    stack = rng.random((3, 10, 12)) < 0.5
    assert resize_mask(stack, (5, 6)).shape == (3, 5, 6)
    with pytest.raises(InvalidInputError):
        resize_mask(stack.astype(np.uint8), (5, 6))


# ----------------------------------------------------------------------------- benchmarks (-m benchmark)


@pytest.mark.benchmark(group="anomaly_map_900")
def test_bench_anomaly_maps_900(benchmark):
    p = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    benchmark(anomaly_maps, p, (256, 256), (900, 900))


@pytest.mark.benchmark(group="anomaly_map_900")
def test_bench_torch_reference_900(benchmark):
    # Baseline: the direct computation (F.interpolate + separable blur + F.interpolate) in float32.
    p = torch.from_numpy(np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32))
    k = torch.from_numpy(gaussian_kernel1d(4.0).astype(np.float32))

    def direct():
        t = F.interpolate(p, size=(256, 256), mode="bilinear", align_corners=False)
        t = F.pad(t, (16, 16, 16, 16), mode="reflect")
        t = F.conv2d(F.conv2d(t, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
        return F.interpolate(t, size=(900, 900), mode="bilinear", align_corners=False)

    benchmark(direct)


# ----------------------------------------------------------------------------- the banded product


@pytest.mark.parametrize("n_grid,n_model,n_out,sigma", [(40, 320, 900, 4.0), (46, 368, 517, 4.0), (7, 56, 56, 0.0),
                                                         (2, 5, 9, 4.0), (1, 8, 13, 4.0), (32, 256, 200, 2.5)])
def test_band_holds_every_nonzero_weight_of_the_operator(n_grid, n_model, n_out, sigma):
    from npad_edge.postprocess import _axis_band, _axis_band_tap_major
    op = axis_operator(n_grid, n_model, n_out, sigma)
    idx, w = _axis_band(n_grid, n_model, n_out, sigma)
    dense = np.zeros_like(op)
    for t in range(idx.shape[1]):
        np.add.at(dense, (np.arange(n_out), idx[:, t]), w[:, t])
    np.testing.assert_array_equal(dense, op)   # the band is the operator, weight for weight
    assert idx.shape[1] <= max(7, n_grid) and not idx.flags.writeable
    ti, tw = _axis_band_tap_major(n_grid, n_model, n_out, sigma)
    np.testing.assert_array_equal(ti, idx.T)
    np.testing.assert_array_equal(tw, w.T)


def test_banded_map_same_bits_on_every_isa_and_close_to_the_dense_product():
    from npad_edge import search
    p = (np.random.default_rng(3).random((2, 40, 46), dtype=np.float32) * 4).astype(np.float32)
    maps = {}
    try:
        for isa in search.available_isas():
            search.set_isa(isa)
            maps[isa] = anomaly_maps(p, (320, 368), (900, 517), 4.0)
    finally:
        search.set_isa(None)
    ref = maps["scalar"]
    for isa, m in maps.items():
        np.testing.assert_array_equal(m.view(np.uint32), ref.view(np.uint32), err_msg=isa)
    ly, lx = axis_operator(40, 320, 900, 4.0).astype(np.float64), axis_operator(46, 368, 517, 4.0).astype(np.float64)
    dense = np.stack([ly @ g.astype(np.float64) @ lx.T for g in p])
    np.testing.assert_allclose(ref, dense, rtol=2e-6, atol=2e-6 * np.abs(dense).max())


def test_separable_band_binding_checks_its_inputs():
    from npad_edge import _core
    g = np.ones((4, 5), np.float32)
    ry, wy = np.zeros((6, 2), np.int32), np.full((6, 2), 0.5, np.float32)
    cx, wx = np.zeros((2, 7), np.int32), np.full((2, 7), 0.5, np.float32)
    out = np.empty((6, 7), np.float32)
    np.testing.assert_allclose(_core.separable_band(g, ry, wy, cx, wx, out), 1.0)
    with pytest.raises(Exception, match="row tap out of range"):
        _core.separable_band(g, ry + 4, wy, cx, wx, out)
    with pytest.raises(Exception, match="column tap out of range"):
        _core.separable_band(g, ry, wy, cx - 1, wx, out)
    with pytest.raises(Exception, match="out must be"):
        _core.separable_band(g, ry, wy, cx, wx, np.empty((6, 8), np.float32))
    with pytest.raises(Exception, match="weights must have"):
        _core.separable_band(g, ry, wy[:, :1].copy(), cx, wx, out)
    with pytest.raises(Exception, match="dtype"):
        _core.separable_band(g.astype(np.float64), ry, wy, cx, wx, out)
