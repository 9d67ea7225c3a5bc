"""The bounded PatchCore fit (coreset_max / coreset_pool) and N-pad's second reading
(gaussian="knn"), against direct numpy references on small synthetic features."""

from __future__ import annotations

import numpy as np
import pytest

from npad_edge import search
from npad_edge.errors import InvalidInputError
from npad_edge.methods import get_method, method_class
from npad_edge.methods.base import to_rows


def _feats(n=12, d=8, h=6, w=7, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((1, d, h, w)).astype(np.float32)
    return (base + 0.3 * rng.standard_normal((n, d, h, w))).astype(np.float32)


# ----------------------------------------------------------------------------- PatchCore bounds
def test_coreset_max_caps_the_bank_and_equals_the_greedy_of_that_size():
    train = _feats(n=10)
    rows = to_rows(train)                      # 420 rows; 10 % = 42 > the cap
    m = get_method("patchcore", coreset=0.1, coreset_max=17).fit(train, seed=3)
    assert m.bank.shape == (17, 8)
    idx = search.greedy_coreset(rows, 17, proj_dim=128, n_starts=10, seed=3, storage="float16")
    np.testing.assert_array_equal(m.bank, rows[np.sort(idx)])
    # the cap does nothing when the fraction is below it
    m2 = get_method("patchcore", coreset=0.1, coreset_max=1000).fit(train, seed=3)
    assert m2.bank.shape[0] == round(0.1 * rows.shape[0])


def test_coreset_pool_is_the_union_of_per_image_greedy_centers():
    train = _feats(n=10)                       # 10 images x 42 patches
    rows = to_rows(train)
    m = get_method("patchcore", coreset=0.5, coreset_max=30, coreset_pool=100).fit(train, seed=1)
    # reference: ceil(100 / 10) = 10 greedy centers per image, pooled in row order, then the greedy
    pool = []
    for i in range(10):
        own = rows[i * 42:(i + 1) * 42]
        idx = search.greedy_coreset(own, 10, proj_dim=128, n_starts=10, seed=1, storage="float16", threads=1)
        pool.append(i * 42 + np.sort(idx))
    pooled = rows[np.concatenate(pool)]
    ref = search.greedy_coreset(pooled, 30, proj_dim=128, n_starts=10, seed=1, storage="float16")
    np.testing.assert_array_equal(m.bank, pooled[np.sort(ref)])
    again = get_method("patchcore", coreset=0.5, coreset_max=30, coreset_pool=100).fit(train, seed=1)
    np.testing.assert_array_equal(again.bank, m.bank)            # same seed, same bank
    # a pool that covers every patch changes nothing
    full = get_method("patchcore", coreset=0.1, coreset_pool=10_000).fit(train, seed=1)
    plain = get_method("patchcore", coreset=0.1).fit(train, seed=1)
    np.testing.assert_array_equal(full.bank, plain.bank)


@pytest.mark.parametrize("bad", [0, -3, 1.5, "10"])
def test_bound_settings_are_validated(bad):
    with pytest.raises(InvalidInputError, match="coreset_max"):
        get_method("patchcore", coreset_max=bad)
    with pytest.raises(InvalidInputError, match="coreset_pool"):
        get_method("patchcore", coreset_pool=bad)


# ----------------------------------------------------------------------------- N-pad knn reading
def _knn_maha_reference(q, nominal, i, j, r, k, s, exclude=None):
    """Direct numpy: k nearest nominal features in the window, shrunk covariance, explicit inverse."""
    n, h, w, d = nominal.shape
    cells = [(a, b) for a in range(max(0, i - r), min(h, i + r + 1)) for b in range(max(0, j - r), min(w, j + r + 1))]
    cand, owner = [], []
    for img in range(n):
        for a, b in cells:
            cand.append(nominal[img, a, b])
            owner.append(img)
    cand, owner = np.array(cand, np.float64), np.array(owner)
    if exclude is not None:
        cand = cand[owner != exclude]
    d2 = ((cand - q) ** 2).sum(1)
    z = cand[np.argsort(d2, kind="stable")[:k]]
    mu = z.mean(0)
    cov = np.cov(z, rowvar=False)
    cov = (1 - s) * cov + s * np.trace(cov) / d * np.eye(d)
    v = q - mu
    return float(np.sqrt(v @ np.linalg.solve(cov, v)))


def test_knn_reading_equals_an_explicit_local_gaussian():
    train, test = _feats(n=9, d=6, h=5, w=4), _feats(n=2, d=6, h=5, w=4, seed=7)
    m = get_method("npad", gaussian="knn", knn_k=8, feature_dim=None, n_centroids=16, shrinkage=0.3,
                   precision="float32", combine="mahalanobis").fit(train, seed=0)
    maha, _ = m.score_terms(test)
    nominal = train.transpose(0, 2, 3, 1).astype(np.float64)
    x = test.transpose(0, 2, 3, 1).astype(np.float64)
    for b in range(2):
        for i in range(5):
            for j in range(4):
                ref = _knn_maha_reference(x[b, i, j], nominal, i, j, 1, 8, 0.3)
                assert maha[b, i, j] == pytest.approx(ref, rel=2e-4, abs=1e-4)


def test_knn_reading_excludes_own_image_for_its_statistics():
    from npad_edge.methods.npad import _knn_mahalanobis
    train = _feats(n=6, d=5, h=4, w=4)
    x = np.ascontiguousarray(train.transpose(0, 2, 3, 1))
    with_self = _knn_mahalanobis(x[:2], x, 1, 6, 0.3)
    without = _knn_mahalanobis(x[:2], x, 1, 6, 0.3, exclude=np.array([0, 1]))
    assert without.mean() > with_self.mean()        # own feature at distance 0 pulls the Gaussian in
    ref = _knn_maha_reference(x[1, 2, 3].astype(np.float64), x.astype(np.float64), 2, 3, 1, 6, 0.3, exclude=1)
    assert without[1, 2, 3] == pytest.approx(ref, rel=2e-4)


def test_knn_reading_round_trips_and_flags_a_planted_anomaly():
    train, test = _feats(n=10), _feats(n=2, seed=5)
    test[1, :, 2, 3] += 5.0
    m = get_method("npad", gaussian="knn", knn_k=8, feature_dim=4, n_centroids=16).fit(train, seed=0)
    patch, image = m.score(test)
    assert np.unravel_index(np.argmax(patch[1]), patch[1].shape) == (2, 3)
    assert image[1] > image[0]
    again = method_class("npad").from_state(m.settings, m.state_arrays())
    p2, i2 = again.score(test)
    np.testing.assert_array_equal(p2, patch)
    np.testing.assert_array_equal(i2, image)
    assert "nominal" in m.state_arrays() and "factors_packed" not in m.state_arrays()
    with pytest.raises(InvalidInputError, match="gaussian"):
        get_method("npad", gaussian="local")
    with pytest.raises(InvalidInputError, match="knn_k"):
        get_method("npad", knn_k=1)
