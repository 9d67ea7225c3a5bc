"""Evaluation metrics of the MVTec AD protocol, in numpy only.

- :func:`image_auroc`: ROC AUC of image scores vs image labels.
- :func:`image_auroc_ci`: its standard error and confidence interval (DeLong et al. 1988), and
  :func:`compare_auroc`: DeLong's paired test of two scorings of the same test images. With 190
  good and 392 defective images an image AUROC near 97.5 % has a standard error of about 0.5 pt
  (a 95 % interval about +-1 pt wide each side): these say which differences between two
  settings a test set can tell apart.
- :func:`pixel_auroc`: ROC AUC over *all* pixels of *all* test images (good images included).
- :func:`pro_score`: AU-PRO up to ``fpr_limit`` (0.3) divided by ``fpr_limit`` (Bergmann et al.):
  ``FPR(t)`` = false-positive pixels / all anomaly-free pixels of the test set, ``PRO(t)`` =
  mean over all 8-connected ground-truth regions of the fraction of the region scored ``>= t``;
  trapezoid over the curve, the point at exactly ``FPR = fpr_limit`` linearly interpolated, and
  the area divided by ``fpr_limit`` (never by the last FPR reached).

Everything is exact: curves are built from sorted scores with ties grouped (one curve point per
distinct score), so :func:`image_auroc` / :func:`pixel_auroc` equal
``sklearn.metrics.roc_auc_score``. The pixel metrics never sort all pixels together: negatives and
positives are sorted separately (positives are few) and merged with ``searchsorted``, so peak
extra memory is about one float32 copy of the anomaly-free pixels (~270 MB for 83 maps of
900 x 900). :func:`pixel_metrics` computes both pixel metrics from one sort.

``pro_score(num_thresholds=K)`` is an optional low-memory approximation on ``K`` equally spaced
thresholds (anomalib style); the exact path is the default.

Conventions: a score ``>= t`` is called anomalous. Scores must be finite. Maps and masks are
evaluated at whatever resolution they are given in; the caller states it.
All results are Python floats; the pixel metrics return ``None`` when ``masks is None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import InvalidInputError

__all__ = [
    "image_auroc",
    "image_auroc_ci",
    "compare_auroc",
    "roc_curve",
    "f1_optimal_threshold",
    "pixel_auroc",
    "pro_score",
    "pro_curve",
    "pixel_metrics",
    "label_regions",
]


# --------------------------------------------------------------------------- input checks


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise InvalidInputError(
            f"labels and scores must be 1-D of equal length, got shapes {y.shape} and {s.shape}"
        )
    if y.dtype != np.bool_:
        if y.dtype.kind not in "iu" or not np.isin(y, (0, 1)).all():
            raise InvalidInputError("labels must be bool or integers 0 (good) / 1 (anomalous)")
        y = y.astype(bool)
    if s.dtype.kind not in "fiu":
        raise InvalidInputError(f"scores must be numeric, got dtype {s.dtype}")
    if s.dtype.kind == "f" and not np.isfinite(s).all():
        raise InvalidInputError("scores contain NaN or infinite values")
    return y, s


def _need_both_classes(n_pos: int, n_neg: int, what: str) -> None:
    if n_pos == 0 or n_neg == 0:
        raise InvalidInputError(
            f"{what} is undefined with only one class present "
            f"({n_pos} anomalous, {n_neg} good); the test set needs both"
        )


def _masks_maps(masks, maps) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Accept ``(N, H, W)`` arrays or equal-length sequences of ``(H_i, W_i)`` arrays."""

    def as_list(x, name):
        if isinstance(x, np.ndarray):
            if x.ndim != 3:
                raise InvalidInputError(f"{name} must have shape (N, H, W), got {x.shape}")
            return list(x)
        if isinstance(x, Sequence):
            return [np.asarray(a) for a in x]
        raise InvalidInputError(f"{name} must be an (N, H, W) array or a list of (H, W) arrays")

    mk = as_list(masks, "masks")
    mp = as_list(maps, "maps")
    if len(mk) != len(mp) or not mk:
        raise InvalidInputError(f"need as many maps as masks (> 0), got {len(mp)} maps, {len(mk)} masks")
    for i, (k, m) in enumerate(zip(mk, mp)):
        if k.dtype != np.bool_:
            raise InvalidInputError(
                f"masks[{i}] must be bool (True = defect), got {k.dtype}; use `mask > 0`"
            )
        if m.dtype.kind != "f":
            raise InvalidInputError(f"maps[{i}] must be floating point, got {m.dtype}")
        if k.ndim != 2 or k.shape != m.shape:
            raise InvalidInputError(f"masks[{i}] {k.shape} and maps[{i}] {m.shape} must be equal 2-D shapes")
    return mk, mp


def _check_finite(arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        raise InvalidInputError("maps contain NaN or infinite values")


# --------------------------------------------------------------------------- ROC


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for plotting: ``(fpr, tpr, thresholds)`` float64, one point per distinct score.

    Starts at ``(0, 0)`` with threshold ``+inf``; point ``i`` is "anomalous iff score >=
    thresholds[i]". ``labels (N,)`` bool or 0/1; ``scores (N,)`` finite.
    """
    y, s = _labels_scores(labels, scores)
    n_pos = int(y.sum())
    _need_both_classes(n_pos, y.size - n_pos, "ROC")
    order = np.argsort(-s.astype(np.float64), kind="stable")
    s_sorted = s[order].astype(np.float64)
    y_sorted = y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    fpr = np.r_[0.0, fps / (y.size - n_pos)]
    tpr = np.r_[0.0, tps / n_pos]
    thr = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thr


def _auc_sorted(pos_sorted: np.ndarray, neg_sorted: np.ndarray) -> float:
    """P(pos > neg) + 0.5 P(pos == neg) from two ascending arrays (Mann-Whitney U / (n_p n_n)).

    This is the trapezoid area under the ROC curve with tied scores grouped, i.e. sklearn's value.
    """
    lo = np.searchsorted(neg_sorted, pos_sorted, side="left")  # negatives strictly below
    hi = np.searchsorted(neg_sorted, pos_sorted, side="right")  # ... or equal
    u = lo.sum(dtype=np.float64) + 0.5 * (hi - lo).sum(dtype=np.float64)
    return float(u / (float(pos_sorted.size) * float(neg_sorted.size)))


def image_auroc(labels, scores) -> float:
    """Image-level ROC AUC. ``labels (N,)`` bool or 0/1, ``scores (N,)`` finite; ties count 1/2."""
    y, s = _labels_scores(labels, scores)
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    _need_both_classes(pos.size, neg.size, "AUROC")
    return _auc_sorted(pos, neg)


def _placements(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong's structural components: ``(auc, v10, v01)``. ``v10[i]``: the share of negatives a
    positive ``i`` outscores (ties 1/2); ``v01[j]``: the share of positives that outscore the
    negative ``j``. Their means are the AUROC."""
    s = s.astype(np.float64)
    pos, neg = s[y], s[~y]
    _need_both_classes(pos.size, neg.size, "AUROC")
    ps, ns = np.sort(pos), np.sort(neg)
    v10 = (np.searchsorted(ns, pos, side="left") + np.searchsorted(ns, pos, side="right")) * (0.5 / ns.size)
    v01 = ((ps.size - np.searchsorted(ps, neg, side="right")) + (ps.size - np.searchsorted(ps, neg, side="left"))) \
        * (0.5 / ps.size)
    return _auc_sorted(ps, ns), v10, v01


def _z(level: float) -> float:
    from statistics import NormalDist

    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
        raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
    return NormalDist().inv_cdf(0.5 + 0.5 * float(level))


def _var(a: np.ndarray) -> float:
    return float(np.var(a, ddof=1)) if a.size > 1 else 0.0


def image_auroc_ci(labels, scores, level: float = 0.95) -> dict:
    """Image AUROC with DeLong's standard error and a ``level`` confidence interval.

    Returns ``{"auroc", "se", "lo", "hi", "level"}``. The interval is symmetric on the logit
    scale (``logit(A) +- z se / (A (1 - A))``), so it stays inside (0, 1) and is skewed towards
    0.5 where A is near 1 (a plain ``A +- z se`` would cross 1 there). At A = 0 or 1 DeLong's
    variance is 0 and so is the interval's width: the test set shows no error to estimate from.
    """
    z = _z(level)
    y, s = _labels_scores(labels, scores)
    auc, v10, v01 = _placements(y, s)
    se = math.sqrt(_var(v10) / v10.size + _var(v01) / v01.size)
    lo = hi = auc
    if 0.0 < auc < 1.0 and se > 0.0:
        half = z * se / (auc * (1.0 - auc))
        logit = math.log(auc / (1.0 - auc))
        lo, hi = 1.0 / (1.0 + math.exp(-(logit - half))), 1.0 / (1.0 + math.exp(-(logit + half)))
    return {"auroc": auc, "se": se, "lo": lo, "hi": hi, "level": float(level)}


def compare_auroc(labels, scores_a, scores_b) -> dict:
    """DeLong's paired test of two scorings of the same images (e.g. two settings of a method).

    Returns ``{"auroc_a", "auroc_b", "diff", "se", "z", "p"}``: ``diff = auroc_a - auroc_b``,
    its standard error from the covariance of the two scorings' structural components, and
    the two-sided p-value of "same AUROC". ``p`` is 1.0 when ``se`` is 0 and ``diff`` is 0
    (identical rankings), 0.0 when only ``se`` is 0.
    """
    from statistics import NormalDist

    y, a = _labels_scores(labels, scores_a)
    _, b = _labels_scores(labels, scores_b)
    auc_a, a10, a01 = _placements(y, a)
    auc_b, b10, b01 = _placements(y, b)
    d10, d01 = a10 - b10, a01 - b01
    se = math.sqrt(max(_var(d10) / d10.size + _var(d01) / d01.size, 0.0))
    diff = auc_a - auc_b
    if se > 0.0:
        z = diff / se
        p = 2.0 * (1.0 - NormalDist().cdf(abs(z)))
    else:
        z = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0.0 else 0.0
    return {"auroc_a": auc_a, "auroc_b": auc_b, "diff": diff, "se": se, "z": z, "p": p}


def f1_optimal_threshold(labels, scores) -> tuple[float, float]:
    """The threshold maximising F1 over all distinct scores: ``(threshold, f1)``.

    Images with ``score >= threshold`` are anomalous. The highest such threshold wins ties.
    Needs at least one anomalous label.
    """
    y, s = _labels_scores(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise InvalidInputError("F1 needs at least one anomalous label")
    order = np.argsort(-s.astype(np.float64), kind="stable")
    s_sorted = s[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tp = np.cumsum(y[order])[last].astype(np.float64)
    predicted = (last + 1).astype(np.float64)
    f1 = 2.0 * tp / (predicted + n_pos)  # 2TP / (2TP + FP + FN)
    best = int(np.argmax(f1))
    return float(s_sorted[last[best]]), float(f1[best])


# --------------------------------------------------------------------------- regions


class _UnionFind:
    __slots__ = ("parent",)

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in a 2-D bool mask: (row, start, end) int64, end exclusive, raster order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1).ravel()  # (h, w + 1) flattened
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    rows = starts // (w + 1)
    return rows, starts - rows * (w + 1), ends - rows * (w + 1)


def _region_of_runs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, w: int) -> tuple[np.ndarray, int]:
    """8-connected component id (0..n-1, numbered in raster order of first pixel) of every run."""
    n_runs = rows.size
    if n_runs == 0:
        return np.zeros(0, dtype=np.int64), 0
    stride = w + 2
    gstart = rows * stride + starts
    gend = rows * stride + ends
    # Run b in row r+1 touches run a in row r (8-connectivity) iff a.start <= b.end and
    # a.end >= b.start (ends exclusive). Runs of one row are disjoint and sorted, so the
    # touching runs of the row above form one index range [lo, hi).
    above = (rows - 1) * stride
    lo = np.searchsorted(gend, above + starts, side="left")
    hi = np.searchsorted(gstart, above + ends, side="right")
    has = (hi > lo) & (rows > 0)
    uf = _UnionFind(n_runs)
    for b, a0, a1 in zip(np.flatnonzero(has).tolist(), lo[has].tolist(), hi[has].tolist()):
        for a in range(a0, a1):
            uf.union(a, b)
    roots = np.fromiter((uf.find(i) for i in range(n_runs)), dtype=np.int64, count=n_runs)
    # Union by smaller index makes every root the component's first run in raster order.
    uniq, region = np.unique(roots, return_inverse=True)
    return region.reshape(-1), int(uniq.size)


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a ``(H, W) bool`` mask: ``(labels (H, W) int32, n)``.

    Background is 0, regions are 1..n numbered in raster order of their first pixel (the same
    numbering as ``scipy.ndimage.label(mask, structure=np.ones((3, 3)))``).
    """
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 2:
        raise InvalidInputError("mask must be a 2-D bool numpy array")
    rows, starts, ends = _runs(mask)
    region, n = _region_of_runs(rows, starts, ends, mask.shape[1])
    labels = np.zeros(mask.shape, dtype=np.int32)
    flat = labels.reshape(-1)
    lengths = ends - starts
    pix = np.repeat(rows * mask.shape[1] + starts - np.cumsum(np.r_[0, lengths[:-1]]), lengths)
    pix += np.arange(pix.size)
    flat[pix] = np.repeat(region + 1, lengths)
    return labels, n


# --------------------------------------------------------------------------- pixel metrics


class _PixelData:
    """Sorted anomaly-free scores, and positive scores with their PRO weights (1 / (|R| n_R))."""

    def __init__(self, masks, maps, need_regions: bool):
        mk, mp = _masks_maps(masks, maps)
        negs, poss, wts = [], [], []
        region_sizes: list[np.ndarray] = []
        pos_region: list[np.ndarray] = []
        offset = 0
        for k, m in zip(mk, mp):
            _check_finite(m)
            negs.append(m[~k])
            if not k.any():
                continue
            poss.append(m[k])  # raster order, the same order as the runs below
            if need_regions:
                rows, starts, ends = _runs(k)
                region, n = _region_of_runs(rows, starts, ends, k.shape[1])
                lengths = ends - starts
                per_pixel = np.repeat(region, lengths)
                region_sizes.append(np.bincount(region, weights=lengths, minlength=n))
                pos_region.append(per_pixel + offset)
                offset += n
        neg = np.concatenate(negs)
        neg.sort()  # in place: peak memory one copy of the anomaly-free scores
        self.neg = neg
        pos = np.concatenate(poss) if poss else np.zeros(0, neg.dtype)
        self.n_regions = offset
        order = np.argsort(pos, kind="stable")
        self.pos = pos[order]  # no cast: comparisons with self.neg must be exact
        if need_regions and offset:
            sizes = np.concatenate(region_sizes)
            w = 1.0 / (sizes[np.concatenate(pos_region)] * offset)
            self.pos_w = w[order]
        else:
            self.pos_w = None

    def auroc(self) -> float:
        _need_both_classes(self.pos.size, self.neg.size, "pixel AUROC")
        return _auc_sorted(self.pos, self.neg)

    def pro_points(self, fpr_limit: float):
        """(fpr, pro, thresholds) up to and including the interpolated point at fpr_limit."""
        if self.n_regions == 0:
            raise InvalidInputError("PRO is undefined without any anomalous ground-truth pixel")
        if self.neg.size == 0:
            raise InvalidInputError("PRO is undefined without any anomaly-free pixel (FPR has no denominator)")
        n_neg = self.neg.size
        # Distinct negative scores, descending, with how many negatives sit at each; only the
        # top fpr_limit share of the negatives (plus the tie group that crosses it) matters.
        m = min(n_neg, int(math.ceil(fpr_limit * n_neg)) + 1)
        top = self.neg[::-1][:m]
        first = np.r_[0, np.flatnonzero(top[1:] != top[:-1]) + 1]
        values = top[first].astype(np.float64)
        counts = np.diff(np.r_[first, m])
        # The last group may continue below the cut: count it in the full sorted array.
        n_ge_last = n_neg - int(np.searchsorted(self.neg, top[first[-1]], side="left"))
        counts[-1] = n_ge_last - first[-1]
        fpr = np.cumsum(counts) / n_neg
        # Keep the thresholds up to the first one reaching fpr_limit.
        k = int(np.searchsorted(fpr, fpr_limit, side="left"))
        k = min(k, fpr.size - 1)
        values, fpr = values[: k + 1], fpr[: k + 1]
        # Cumulative PRO weight of positives >= v and > v (positives sorted ascending).
        cum_w = np.r_[0.0, np.cumsum(self.pos_w[::-1])]  # weight of the top j positives
        n_pos = self.pos.size
        ge = cum_w[n_pos - np.searchsorted(self.pos, values, side="left")]
        gt = cum_w[n_pos - np.searchsorted(self.pos, values, side="right")]
        # Curve: (0, 0) -> for each distinct negative value v (descending):
        # vertical step to (F_prev, PRO(> v)) [positives-only thresholds add no area], then
        # the segment to (F(v), PRO(>= v)).
        f_prev = np.r_[0.0, fpr[:-1]]
        xs = np.empty(2 * fpr.size + 1)
        ys = np.empty_like(xs)
        ts = np.empty_like(xs)
        xs[0], ys[0], ts[0] = 0.0, 0.0, np.inf
        xs[1::2], ys[1::2] = f_prev, gt
        xs[2::2], ys[2::2] = fpr, ge
        ts[1::2] = np.nextafter(values, np.inf)  # just above v: the "> v" point
        ts[2::2] = values
        if xs[-1] > fpr_limit:
            x0, y0, x1, y1 = xs[-2], ys[-2], xs[-1], ys[-1]  # the last segment crosses the limit
            xs[-1] = fpr_limit
            ys[-1] = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        return xs, ys, ts


def _check_limit(fpr_limit) -> float:
    try:
        fpr_limit = float(fpr_limit)
    except (TypeError, ValueError):
        raise InvalidInputError(f"fpr_limit must be a number in (0, 1], got {fpr_limit!r}") from None
    if not 0.0 < fpr_limit <= 1.0:
        raise InvalidInputError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    return fpr_limit


def _area(xs: np.ndarray, ys: np.ndarray) -> float:
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) * 0.5))


def pixel_auroc(masks, maps) -> float | None:
    """ROC AUC over all pixels of all test images, good images included.

    Args:
        masks: ``(N, H, W) bool`` ground truth (True = defect; all False for good images), or a
            list of ``(H_i, W_i)`` bool arrays; ``None`` when the data has no masks.
        maps: ``(N, H, W)`` floating anomaly maps of the same shapes.

    Returns ``None`` if ``masks is None``.
    """
    if masks is None:
        return None
    return _PixelData(masks, maps, need_regions=False).auroc()


def pro_curve(masks, maps, fpr_limit: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """PRO curve points for plotting: ``(fpr, pro, thresholds)`` float64 from ``(0, 0)`` to ``fpr_limit``.

    The last point is interpolated at exactly ``fpr_limit`` (its threshold is that of the
    segment's end). Returns ``None`` if ``masks is None``.
    """
    if masks is None:
        return None
    fpr_limit = _check_limit(fpr_limit)
    return _PixelData(masks, maps, need_regions=True).pro_points(fpr_limit)


def _pro_grid(masks, maps, fpr_limit: float, num_thresholds: int) -> float:
    # Approximation on a fixed grid of thresholds: per-image histograms, no global sort.
    mk, mp = _masks_maps(masks, maps)
    lo = min(float(m.min()) for m in mp)
    hi = max(float(m.max()) for m in mp)
    for m in mp:
        _check_finite(m)
    thr = np.linspace(lo, hi, num_thresholds)
    nb = num_thresholds + 1
    neg_hist = np.zeros(nb, np.int64)
    region_hists = []
    for k, m in zip(mk, mp):
        # bin j holds scores in [thr[j-1], thr[j]); "score >= thr[i]" = bins i+1 .. end.
        b = np.searchsorted(thr, m, side="right")
        neg_hist += np.bincount(b[~k], minlength=nb)
        if k.any():
            labels, n = label_regions(k)
            lab = labels[k]
            hist = np.bincount(lab.astype(np.int64) * nb + b[k], minlength=(n + 1) * nb).reshape(n + 1, nb)[1:]
            region_hists.append(hist / hist.sum(axis=1, keepdims=True))
    if not region_hists:
        raise InvalidInputError("PRO is undefined without any anomalous ground-truth pixel")
    n_neg = neg_hist.sum()
    if n_neg == 0:
        raise InvalidInputError("PRO is undefined without any anomaly-free pixel (FPR has no denominator)")
    regions = np.concatenate(region_hists)
    # Above-threshold fractions for thresholds thr[i], i descending.
    fpr = np.cumsum(neg_hist[::-1])[:-1][::-1] / n_neg  # fpr[i] = P(neg >= thr[i])
    pro = np.cumsum(regions[:, ::-1], axis=1)[:, :-1][:, ::-1].mean(axis=0)
    xs = np.r_[0.0, fpr[::-1]]
    ys = np.r_[0.0, pro[::-1]]
    k = int(np.searchsorted(xs, fpr_limit, side="left"))
    if k < xs.size:
        x0, y0, x1, y1 = xs[k - 1], ys[k - 1], xs[k], ys[k]
        y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0) if x1 > x0 else y1
        xs, ys = np.r_[xs[:k], fpr_limit], np.r_[ys[:k], y_lim]
    return _area(xs, ys) / fpr_limit


def pro_score(masks, maps, fpr_limit: float = 0.3, num_thresholds: int | None = None) -> float | None:
    """AU-PRO up to ``fpr_limit``, divided by ``fpr_limit`` (so 1.0 is perfect).

    Args:
        masks: ``(N, H, W) bool`` ground truth or a list of ``(H_i, W_i)`` bool arrays; regions
            are 8-connected components per image. ``None`` -> returns ``None``.
        maps: ``(N, H, W)`` floating anomaly maps, same shapes.
        fpr_limit: upper FPR bound of the integration (0.3 in the MVTec AD protocol).
        num_thresholds: ``None`` (default) for the exact curve (every distinct score a
            threshold); an int ``K >= 2`` for the approximation on ``K`` equally spaced
            thresholds between the global min and max score (less memory, no sort).

    Returns:
        The normalised area, a float in [0, 1], or ``None``.
    """
    if masks is None:
        return None
    fpr_limit = _check_limit(fpr_limit)
    if num_thresholds is not None:
        if int(num_thresholds) != num_thresholds or num_thresholds < 2:
            raise InvalidInputError(f"num_thresholds must be None or an int >= 2, got {num_thresholds!r}")
        return _pro_grid(masks, maps, fpr_limit, int(num_thresholds))
    xs, ys, _ = _PixelData(masks, maps, need_regions=True).pro_points(fpr_limit)
    return _area(xs, ys) / fpr_limit


def pixel_metrics(masks, maps, fpr_limit: float = 0.3, *, with_curve: bool = False) -> dict:
    """``{"pixel_auroc": ..., "pro": ...}`` from one sort of the pixels (both ``None`` without masks).

    With ``with_curve=True`` the dict also holds ``"pro_curve"``: the ``(fpr, pro, thresholds)``
    of :func:`pro_curve` (``None`` without masks), so a report needs no second sort.
    """
    if masks is None:
        out: dict = {"pixel_auroc": None, "pro": None}
        if with_curve:
            out["pro_curve"] = None
        return out
    fpr_limit = _check_limit(fpr_limit)
    data = _PixelData(masks, maps, need_regions=True)
    xs, ys, ts = data.pro_points(fpr_limit)
    out = {"pixel_auroc": data.auroc(), "pro": _area(xs, ys) / fpr_limit}
    if with_curve:
        out["pro_curve"] = (xs, ys, ts)
    return out
