"""npad_edge.metrics against sklearn, scipy and hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest

from npad_edge import metrics as M
from npad_edge.errors import InvalidInputError

sklearn_metrics = pytest.importorskip("sklearn.metrics")
ndimage = pytest.importorskip("scipy.ndimage")
EIGHT = np.ones((3, 3), dtype=int)


# ----------------------------------------------------------------------------- AUROC


@pytest.mark.parametrize("seed", range(5))
def test_image_auroc_equals_sklearn_random_and_tied(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    for s in (rng.normal(size=n), rng.integers(0, 5, n).astype(np.float32), np.round(rng.random(n), 1)):
        assert isinstance(M.image_auroc(y, s), float)
        assert M.image_auroc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)


def test_image_auroc_all_tied_is_half_and_perfect_is_one():
    assert M.image_auroc([0, 1, 0, 1], [3.0, 3.0, 3.0, 3.0]) == 0.5
    assert M.image_auroc([False, True, True], [0.1, 0.2, 0.3]) == 1.0
    assert M.image_auroc([1, 0], [0.1, 0.2]) == 0.0


def test_roc_curve_equals_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 30, 200).astype(np.float64)
    fpr, tpr, thr = M.roc_curve(y, s)
    rf, rt, rth = sklearn_metrics.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, rf)
    np.testing.assert_allclose(tpr, rt)
    np.testing.assert_array_equal(thr[1:], rth[1:])
    assert np.isinf(thr[0])


def test_f1_optimal_threshold_brute_force():
    rng = np.random.default_rng(4)
    for _ in range(5):
        y = rng.integers(0, 2, 60)
        y[0] = 1
        s = rng.integers(0, 12, 60).astype(np.float64)
        thr, f1 = M.f1_optimal_threshold(y, s)
        best = max(sklearn_metrics.f1_score(y, s >= t) for t in np.unique(s))
        assert f1 == pytest.approx(best)
        assert sklearn_metrics.f1_score(y, s >= thr) == pytest.approx(f1)


@pytest.mark.parametrize(
    "labels, scores",
    [([0, 0], [0.1, 0.2]), ([1, 1], [0.1, 0.2]), ([0, 2], [0.1, 0.2]), ([0, 1], [0.1, np.nan]), ([0, 1], [0.1])],
)
def test_image_auroc_bad_inputs(labels, scores):
    with pytest.raises(InvalidInputError):
        M.image_auroc(labels, scores)


def test_pixel_auroc_equals_sklearn_over_all_pixels_good_included():
    rng = np.random.default_rng(5)
    masks = np.zeros((6, 20, 24), bool)
    masks[0, 3:9, 4:10] = True
    masks[2, 10:19, 1:4] = True
    masks[3, 0:2, :] = True  # images 1, 4, 5 are good
    maps = (rng.random(masks.shape) + 0.6 * masks).round(2).astype(np.float32)  # ties included
    ref = sklearn_metrics.roc_auc_score(masks.ravel(), maps.ravel())
    assert M.pixel_auroc(masks, maps) == pytest.approx(ref, abs=1e-12)
    # list input of mixed sizes = the concatenation of all pixels
    lst_masks = [masks[0], masks[1][:, :10], masks[2]]
    lst_maps = [maps[0], maps[1][:, :10], maps[2]]
    ref = sklearn_metrics.roc_auc_score(
        np.concatenate([m.ravel() for m in lst_masks]), np.concatenate([m.ravel() for m in lst_maps])
    )
    assert M.pixel_auroc(lst_masks, lst_maps) == pytest.approx(ref, abs=1e-12)


def test_pixel_metrics_none_without_masks():
    maps = np.zeros((2, 4, 4), np.float32)
    assert M.pixel_auroc(None, maps) is None
    assert M.pro_score(None, maps) is None
    assert M.pro_curve(None, maps) is None
    assert M.pixel_metrics(None, maps) == {"pixel_auroc": None, "pro": None}


def test_pixel_inputs_checked():
    maps = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(InvalidInputError, match="bool"):
        M.pixel_auroc(np.zeros((2, 4, 4), np.uint8), maps)
    with pytest.raises(InvalidInputError):
        M.pixel_auroc(np.zeros((2, 4, 5), bool), maps)
    with pytest.raises(InvalidInputError, match="one class"):
        M.pixel_auroc(np.zeros((2, 4, 4), bool), maps)
    bad = maps.copy()
    bad[0, 0, 0] = np.nan
    m = np.zeros((2, 4, 4), bool)
    m[0, 1, 1] = True
    with pytest.raises(InvalidInputError, match="NaN"):
        M.pro_score(m, bad)
    with pytest.raises(InvalidInputError):
        M.pro_score(m, maps, fpr_limit=0)
    with pytest.raises(InvalidInputError, match="anomalous"):
        M.pro_score(np.zeros((2, 4, 4), bool), maps)


# ----------------------------------------------------------------------------- regions


@pytest.mark.parametrize("density", [0.05, 0.3, 0.45, 0.6, 0.95])
def test_label_regions_equals_scipy(density):
    rng = np.random.default_rng(int(density * 100))
    for shape in [(40, 50), (1, 30), (30, 1), (1, 1), (7, 64)]:
        m = rng.random(shape) < density
        got, n = M.label_regions(m)
        ref, n_ref = ndimage.label(m, structure=EIGHT)
        assert n == n_ref
        np.testing.assert_array_equal(got, ref)


def test_label_regions_diagonal_and_edge_cases():
    m = np.eye(5, dtype=bool) | np.eye(5, dtype=bool)[::-1]  # an X: 4-disconnected, 8-connected
    assert M.label_regions(m)[1] == 1
    assert ndimage.label(m)[1] > 1  # (sanity: 4-connectivity would split it)
    assert M.label_regions(np.zeros((3, 3), bool))[1] == 0
    assert M.label_regions(np.ones((3, 3), bool))[1] == 1
    u = np.array([[1, 0, 1], [1, 0, 1], [1, 1, 1]], bool)  # a U merges late
    assert M.label_regions(u)[1] == 1


# ----------------------------------------------------------------------------- PRO


def test_pro_hand_worked():
    # One 4 x 5 image. Region R1 = {(0,0), (1,1)}: touching only diagonally, so ONE 8-connected
    # region (two 4-connected ones). Region R2 = {(2,4), (3,4)}. 16 anomaly-free pixels.
    mask = np.zeros((4, 5), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 4] = mask[3, 4] = True
    amap = np.full((4, 5), 0.1)
    amap[0, 0], amap[1, 1] = 0.9, 0.5  # R1
    amap[2, 4], amap[3, 4] = 0.8, 0.4  # R2; 0.4 ties with a negative
    negs = [(0, 1, 0.95), (0, 2, 0.85), (0, 3, 0.7), (0, 4, 0.6), (1, 0, 0.4)]
    for i, j, v in negs:
        amap[i, j] = v
    # Curve (FPR in 1/16, PRO = mean of the two region fractions), thresholds descending:
    #   inf (0, 0); .95 (1, 0); .9 (1, .25); .85 (2, .25); .8 (2, .5); .7 (3, .5); .6 (4, .5);
    #   .5 (4, .75); .4 (5, 1.0) -> FPR 5/16 = .3125 passes 0.3: interpolate between
    #   (.25, .75) and (.3125, 1.0) at .3: .75 + .25 * (.05 / .0625) = .95.
    # Area: 1/16*.25 + 1/16*.5 + 1/16*.5 + .05*(.75 + .95)/2 = .120625; / 0.3:
    expected = 0.120625 / 0.3
    assert M.pro_score(mask[None], amap[None]) == pytest.approx(expected, abs=1e-12)
    fpr, pro, thr = M.pro_curve(mask[None], amap[None])
    assert fpr[-1] == pytest.approx(0.3) and pro[-1] == pytest.approx(0.95)
    assert fpr[0] == 0 and pro[0] == 0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-15)


def test_pro_hand_worked_regions_across_images():
    # Two images; region A (4 px) in image 0, region B (1 px) in image 1; 2 x (2 x 8) - 5 = 27 negatives.
    masks = np.zeros((2, 2, 8), bool)
    masks[0, 0, 0:4] = True
    masks[1, 1, 7] = True
    maps = np.zeros((2, 2, 8))
    maps[0, 0, 0:4] = [1.0, 1.0, 0.2, 0.2]  # half of A scores high
    maps[1, 1, 7] = 0.5
    maps[1, 0, 0] = 0.7  # one negative above everything but A's top half
    # thresholds: 1.0 -> (0, .25); .7 -> (1/27, .25); .5 -> (1/27, .75); .2 -> (1/27, 1);
    # 0 -> (1, 1), segment crosses .3: PRO stays 1.
    # area = 1/27 * .25 + (.3 - 1/27) * 1
    expected = (0.25 / 27 + (0.3 - 1 / 27)) / 0.3
    assert M.pro_score(masks, maps) == pytest.approx(expected, abs=1e-12)


def brute_force_pro(masks, maps, limit=0.3):
    """Independent reference: scipy labelling and a loop over every distinct threshold."""
    regions = []
    for k, m in zip(masks, maps):
        lab, n = ndimage.label(k, structure=EIGHT)
        regions += [m[lab == i] for i in range(1, n + 1)]
    neg = np.concatenate([m[~k] for k, m in zip(masks, maps)])
    thr = np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]
    fpr = np.array([0.0] + [(neg >= t).mean() for t in thr])
    pro = np.array([0.0] + [np.mean([(r >= t).mean() for r in regions]) for t in thr])
    k = int(np.searchsorted(fpr, limit))
    y_lim = pro[k - 1] + (pro[k] - pro[k - 1]) * (limit - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
    x = np.r_[fpr[:k], limit]
    y = np.r_[pro[:k], y_lim]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / limit)


@pytest.mark.parametrize("seed", range(4))
def test_pro_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((4, 24, 20), bool)
    for i in range(3):
        for _ in range(2):
            r, c = rng.integers(0, 18, 2)
            masks[i, r : r + rng.integers(1, 6), c : c + rng.integers(1, 6)] = True
    masks[0] |= rng.random((24, 20)) < 0.03  # speckles, diagonal neighbours
    maps = (rng.random(masks.shape) + masks * rng.random(masks.shape)).round(2)
    exact = M.pro_score(masks, maps)
    assert exact == pytest.approx(brute_force_pro(masks, maps), abs=1e-12)
    for limit in (0.05, 0.3, 1.0):
        assert M.pro_score(masks, maps, fpr_limit=limit) == pytest.approx(brute_force_pro(masks, maps, limit), abs=1e-12)
    both = M.pixel_metrics(masks, maps, with_curve=True)
    assert both["pro"] == pytest.approx(exact, abs=1e-15)
    for a, b in zip(both["pro_curve"], M.pro_curve(masks, maps)):
        np.testing.assert_array_equal(a, b)
    assert both["pixel_auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_pro_threshold_grid_close_to_exact():
    rng = np.random.default_rng(7)
    masks = np.zeros((5, 64, 64), bool)
    masks[0, 10:30, 10:20] = True
    masks[1, 40:44, 5:60] = True
    masks[2, 2:5, 2:5] = True
    maps = rng.normal(size=masks.shape) + 2.0 * masks * rng.random(masks.shape)
    exact = M.pro_score(masks, maps)
    approx = M.pro_score(masks, maps, num_thresholds=5000)
    assert abs(exact - approx) < 1e-3


def test_pro_extremes():
    rng = np.random.default_rng(8)
    masks = rng.random((4, 50, 50)) < 0.1
    perfect = masks + rng.random(masks.shape) * 0.5
    assert M.pro_score(masks, perfect) == pytest.approx(1.0)
    # Scores independent of the mask: PRO(t) ~ FPR(t), so AU-PRO/0.3 ~ 0.15.
    noise = rng.random(masks.shape)
    assert M.pro_score(masks, noise) == pytest.approx(0.15, abs=0.02)


def test_label_regions_real_masks(bottle_dir):
    from npad_edge.data import read_mask

    paths = sorted((bottle_dir / "ground_truth").glob("*/*_mask.png"))[::6]
    assert paths
    for p in paths:
        m = read_mask(p)
        got, n = M.label_regions(m)
        ref, n_ref = ndimage.label(m, structure=EIGHT)
        assert n == n_ref >= 1
        np.testing.assert_array_equal(got, ref)


# --------------------------------------------------------------------------- DeLong


def _brute_placements(y, s):
    y = np.asarray(y, bool)
    pos, neg = s[y], s[~y]
    v10 = np.array([((neg < p).sum() + 0.5 * (neg == p).sum()) / neg.size for p in pos])
    v01 = np.array([((pos > n).sum() + 0.5 * (pos == n).sum()) / pos.size for n in neg])
    return v10, v01


@pytest.mark.parametrize("seed", range(4))
def test_delong_se_equals_its_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 150)
    y[:2] = [0, 1]
    s = np.round(rng.normal(size=150) + 1.2 * y, 1)        # many ties
    v10, v01 = _brute_placements(y, s)
    ref_se = np.sqrt(v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size)
    r = M.image_auroc_ci(y, s)
    assert r["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    assert v10.mean() == pytest.approx(r["auroc"], abs=1e-12) and v01.mean() == pytest.approx(r["auroc"], abs=1e-12)
    assert r["se"] == pytest.approx(ref_se, rel=1e-10)
    assert r["lo"] < r["auroc"] < r["hi"]


def test_delong_se_matches_a_bootstrap():
    rng = np.random.default_rng(7)
    y = np.r_[np.zeros(120, int), np.ones(200, int)]
    s = np.r_[rng.normal(0, 1, 120), rng.normal(2.0, 1.3, 200)]
    boots = []
    for _ in range(2000):      # stratified: the class sizes of the test set are fixed
        i = np.r_[rng.integers(0, 120, 120), 120 + rng.integers(0, 200, 200)]
        boots.append(M.image_auroc(y[i], s[i]))
    assert M.image_auroc_ci(y, s)["se"] == pytest.approx(np.std(boots), rel=0.12)


def test_delong_interval_covers_the_true_auroc_at_its_level():
    from statistics import NormalDist
    rng = np.random.default_rng(11)
    d = 2.5
    true = NormalDist().cdf(d / np.sqrt(2))                 # binormal, unit variances: 0.962
    y = np.r_[np.zeros(60, int), np.ones(120, int)]
    hits = []
    for _ in range(600):
        s = np.r_[rng.normal(0, 1, 60), rng.normal(d, 1, 120)]
        r = M.image_auroc_ci(y, s, level=0.9)
        hits.append(r["lo"] <= true <= r["hi"])
    assert 0.86 <= np.mean(hits) <= 0.94


def test_delong_paired_test_holds_its_size_and_sees_a_real_difference():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(80, int), np.ones(150, int)]
    reject_null, reject_alt = [], []
    for _ in range(500):
        base = np.r_[rng.normal(0, 1, 80), rng.normal(1.6, 1, 150)]
        a = base + rng.normal(0, 0.6, 230)                  # two noisy views of one score:
        b = base + rng.normal(0, 0.6, 230)                  # equal true AUROC, correlated
        reject_null.append(M.compare_auroc(y, a, b)["p"] < 0.05)
        c = base + rng.normal(0, 1.5, 230)                  # a worse scorer of the same images
        reject_alt.append(M.compare_auroc(y, a, c)["p"] < 0.05)
    assert 0.02 <= np.mean(reject_null) <= 0.09
    assert np.mean(reject_alt) > 0.8


def test_delong_paired_test_edge_cases():
    y = np.array([0, 0, 1, 1, 0, 1])
    a = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.7])
    r = M.compare_auroc(y, a, a * 2 + 1)                    # the same ranking
    assert r["diff"] == 0.0 and r["se"] == 0.0 and r["p"] == 1.0
    b = np.array([0.3, 0.2, 0.5, 0.1, 0.25, 0.9])
    ab, ba = M.compare_auroc(y, a, b), M.compare_auroc(y, b, a)
    assert ab["diff"] == pytest.approx(-ba["diff"]) and ab["p"] == pytest.approx(ba["p"])
    assert ab["auroc_a"] == M.image_auroc(y, a) and ab["auroc_b"] == M.image_auroc(y, b)
    perfect = M.image_auroc_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    assert perfect["auroc"] == perfect["lo"] == perfect["hi"] == 1.0 and perfect["se"] == 0.0


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, True, "0.95"])
def test_delong_bad_level(level):
    with pytest.raises(InvalidInputError):
        M.image_auroc_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.05], level=level)


def test_delong_needs_both_classes_and_equal_lengths():
    with pytest.raises(InvalidInputError):
        M.image_auroc_ci([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InvalidInputError):
        M.compare_auroc([0, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2])
