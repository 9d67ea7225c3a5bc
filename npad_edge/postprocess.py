"""Anomaly-map post-processing: patch-score grid -> smooth full-resolution anomaly map.

Used both at fit-time evaluation and per frame by the deployed runtime, so it imports only
numpy and the C++ core (no torch) and is built for speed.

The map pipeline is the one of PatchCore / anomalib:

1. bilinear upsample of the ``(h, w)`` patch grid to the model input size ``model_hw``
   (``align_corners=False``, no antialias: exactly ``torch.nn.functional.interpolate``);
2. Gaussian blur with ``sigma`` (kernel radius ``int(4 * sigma + 0.5)``, i.e. truncated at
   4 sigma like ``scipy.ndimage.gaussian_filter`` and anomalib's kornia blur; weights normalised
   to sum 1; ``reflect`` padding in torch / kornia / ``numpy.pad`` sense, ``d c b | a b c d |
   c b a``, the edge sample is not repeated);
3. bilinear resize (again ``align_corners=False``, no antialias) to the output size ``out_hw``,
   normally the original image size, so that maps line up with the ground-truth masks.

All three steps are linear and separable, so per axis they collapse into one small matrix
``L = Resize(out <- model) @ Blur(model) @ Upsample(model <- h)`` of shape ``(out, h)``,
computed once in float64 and cached per ``(h, model, out, sigma)``. A map is then
``L_y @ P @ L_x.T``. Each row of L touches only a few consecutive grid cells (the blur's
4 sigma reach plus the two bilinear supports: 6-7 of 40 for a 900 x 900 map from a 40 x 40
grid), so the product runs banded in the C++ core (``_core.separable_band``: per output row
and column only its band, in-order float32 sums, the same bits on every instruction set),
about 6 M multiply-adds instead of the dense 32 M; the bands are cut from the cached L (every
weight outside them is exactly 0), so the map is the dense product's up to float32 rounding.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import _core
from .errors import InvalidInputError

__all__ = [
    "anomaly_maps",
    "axis_operator",
    "bilinear_matrix",
    "gaussian_kernel1d",
    "blur_matrix",
    "mask_from_map",
    "resize_mask",
]


def _check_size(name: str, hw) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in hw)
        ok = len(tuple(hw)) == 2 and all(int(v) == v for v in hw)
    except (TypeError, ValueError):
        ok = False
    if not ok or h < 1 or w < 1:
        raise InvalidInputError(f"{name} must be a pair of positive ints (H, W), got {hw!r}")
    return h, w


def bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in) float64`` matrix of 1-D linear interpolation, ``align_corners=False``.

    Same source-index rule as torch: ``src = (dst + 0.5) * n_in / n_out - 0.5`` clamped at 0,
    neighbours ``floor(src)`` and ``min(floor(src) + 1, n_in - 1)``; no antialias when shrinking.
    """
    m = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


def gaussian_kernel1d(sigma: float) -> np.ndarray:
    """Normalised Gaussian weights, ``(2r + 1,) float64`` with ``r = int(4 * sigma + 0.5)``."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    # Mirror without repeating the edge sample (torch "reflect"); applied as often as needed,
    # so kernels wider than the signal are defined too (torch itself refuses pad >= n).
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def blur_matrix(n: int, sigma: float) -> np.ndarray:
    """``(n, n) float64`` matrix of a 1-D Gaussian blur with reflect padding; identity if sigma == 0."""
    if sigma == 0:
        return np.eye(n)
    k = gaussian_kernel1d(sigma)
    r = (k.size - 1) // 2
    m = np.zeros((n, n), dtype=np.float64)
    rows = np.repeat(np.arange(n), k.size)
    cols = _reflect_index((np.arange(n)[:, None] + np.arange(-r, r + 1)[None, :]).ravel(), n)
    np.add.at(m, (rows, cols), np.tile(k, n))
    return m


@functools.lru_cache(maxsize=64)
def _axis_operator(n_grid: int, n_model: int, n_out: int, sigma: float) -> np.ndarray:
    op = bilinear_matrix(n_out, n_model) @ blur_matrix(n_model, sigma) @ bilinear_matrix(n_model, n_grid)
    op = np.ascontiguousarray(op, dtype=np.float32)
    op.flags.writeable = False  # shared by every caller through the cache
    return op


def axis_operator(n_grid: int, n_model: int, n_out: int, sigma: float = 4.0) -> np.ndarray:
    """The cached ``(n_out, n_grid) float32`` operator of one axis (read-only)."""
    return _axis_operator(int(n_grid), int(n_model), int(n_out), float(sigma))


@functools.lru_cache(maxsize=64)
def _axis_band(n_grid: int, n_model: int, n_out: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The operator's band: ``(idx, w)``, both ``(n_out, k)``: output i is
    ``sum_t w[i, t] * grid[idx[i, t]]`` over consecutive cells from the first nonzero weight
    of row i (k = the widest row's span; shorter rows are padded with weight 0 on a valid
    index). Read-only, cached with the operator."""
    op = _axis_operator(n_grid, n_model, n_out, sigma)
    nz = op != 0
    any_nz = nz.any(axis=1)
    first = np.where(any_nz, nz.argmax(axis=1), 0)
    last = np.where(any_nz, n_grid - 1 - nz[:, ::-1].argmax(axis=1), 0)
    k = int((last - first).max()) + 1
    cols = first[:, None] + np.arange(k)[None, :]
    inside = cols <= last[:, None]
    cols = np.minimum(cols, n_grid - 1)
    w = np.where(inside, np.take_along_axis(op, cols, axis=1), np.float32(0)).astype(np.float32)
    idx = np.ascontiguousarray(cols, dtype=np.int32)
    w = np.ascontiguousarray(w)
    idx.flags.writeable = w.flags.writeable = False
    return idx, w


@functools.lru_cache(maxsize=64)
def _axis_band_tap_major(n_grid: int, n_model: int, n_out: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``_axis_band`` transposed to ``(k, n_out)``, as the core's horizontal pass reads it."""
    idx, w = _axis_band(n_grid, n_model, n_out, sigma)
    t_idx, t_w = np.ascontiguousarray(idx.T), np.ascontiguousarray(w.T)
    t_idx.flags.writeable = t_w.flags.writeable = False
    return t_idx, t_w


def anomaly_maps(
    patch_scores: np.ndarray,
    model_hw: tuple[int, int],
    out_hw: tuple[int, int],
    sigma: float = 4.0,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Turn patch scores into anomaly maps at the output resolution.

    Args:
        patch_scores: ``(B, h, w) float32`` patch-score grids (a single ``(h, w)`` grid is
            accepted too and gives ``(H, W)``); must be finite.
        model_hw: ``(H_model, W_model)`` the model input size the grid is first upsampled to.
        out_hw: ``(H, W)`` the output size, normally the original image size.
        sigma: Gaussian blur sigma in model-input pixels; ``0`` disables the blur.
        out: optional preallocated ``(B, H, W) float32`` C-contiguous output.

    Returns:
        ``(B, H, W) float32`` maps (``(H, W)`` for a 2-D input).
    """
    if not isinstance(patch_scores, np.ndarray):
        raise InvalidInputError(
            f"patch_scores must be a numpy array (B, h, w) float32, got {type(patch_scores).__name__}"
        )
    if patch_scores.dtype != np.float32:
        raise InvalidInputError(
            f"patch_scores must be float32, got {patch_scores.dtype}; convert explicitly with "
            ".astype(np.float32)"
        )
    single = patch_scores.ndim == 2
    scores = patch_scores[None] if single else patch_scores
    if scores.ndim != 3 or scores.shape[1] < 1 or scores.shape[2] < 1:
        raise InvalidInputError(f"patch_scores must have shape (B, h, w), got {patch_scores.shape}")
    model_h, model_w = _check_size("model_hw", model_hw)
    out_h, out_w = _check_size("out_hw", out_hw)
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        raise InvalidInputError(f"sigma must be a number >= 0, got {sigma!r}") from None
    if not math.isfinite(sigma) or sigma < 0:
        raise InvalidInputError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if not np.isfinite(scores).all():
        raise InvalidInputError("patch_scores contains NaN or infinite values")

    b, h, w = scores.shape
    ry, wy = _axis_band(h, model_h, out_h, sigma)   # (H, ky)
    cxt, wxt = _axis_band_tap_major(w, model_w, out_w, sigma)   # (kx, W)
    if out is None:
        out = np.empty((b, out_h, out_w), dtype=np.float32)
    elif (
        not isinstance(out, np.ndarray)
        or out.dtype != np.float32
        or out.shape != (b, out_h, out_w)
        or not out.flags.c_contiguous
    ):
        raise InvalidInputError(f"out must be a C-contiguous float32 array of shape {(b, out_h, out_w)}")
    for i in range(b):
        _core.separable_band(np.ascontiguousarray(scores[i], dtype=np.float32), ry, wy, cxt, wxt, out[i])
    return out[0] if single else out


def mask_from_map(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """Binary defect mask: ``anomaly_map >= threshold`` as ``bool`` of the same shape.

    ``>=`` matches :func:`npad_edge.metrics.f1_optimal_threshold`, whose threshold is the
    lowest score still called anomalous.
    """
    if not isinstance(anomaly_map, np.ndarray) or anomaly_map.dtype.kind != "f":
        raise InvalidInputError("anomaly_map must be a floating-point numpy array")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise InvalidInputError(f"threshold must be a number, got {threshold!r}") from None
    if math.isnan(threshold):
        raise InvalidInputError("threshold must not be NaN")
    return anomaly_map >= threshold


def resize_mask(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a ``(H, W) bool`` mask (or ``(N, H, W)``) to ``out_hw``.

    Pixel-centre rule ``src = floor((dst + 0.5) * in / out)``: the same as PIL ``NEAREST`` and
    torch ``mode="nearest-exact"`` (torch's legacy ``"nearest"`` uses ``floor(dst * in / out)``
    and shifts masks by up to one source pixel). For evaluating at a resolution other than the
    image's, as the MVTec AD protocol allows: state the resolution with the results.
    """
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim not in (2, 3):
        raise InvalidInputError("mask must be a bool numpy array of shape (H, W) or (N, H, W)")
    out_h, out_w = _check_size("out_hw", out_hw)
    h, w = mask.shape[-2:]
    if h < 1 or w < 1:
        raise InvalidInputError(f"mask has zero size: {mask.shape}")
    rows = np.minimum(((np.arange(out_h) + 0.5) * (h / out_h)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * (w / out_w)).astype(np.int64), w - 1)
    return np.ascontiguousarray(mask[..., rows[:, None], cols[None, :]])
