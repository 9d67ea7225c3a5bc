"""Methods on small synthetic feature tensors: exactness against direct numpy, state round trips,
seeds, planted anomalies, setting validation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
import pytest

from npad_edge.errors import InvalidInputError
from npad_edge.methods import NPad, PatchCore, available_methods, get_method, method_class
from npad_edge.methods._kmeans import kmeans


def _feats(n=12, d=8, h=6, w=7, seed=0):
    rng = np.random.default_rng(seed)
    # a smooth spatial pattern + noise, so per-position statistics differ across positions
    base = rng.standard_normal((1, d, h, w)).astype(np.float32)
    return (base + 0.3 * rng.standard_normal((n, d, h, w))).astype(np.float32)


def _with_anomaly(x, i=2, j=3, amount=4.0):
    y = x.copy()
    y[:, :, i, j] += amount
    return y


def test_registry_and_unknown_settings():
    assert available_methods() == ["npad", "patchcore"]
    assert method_class("npad") is NPad
    with pytest.raises(InvalidInputError, match="available methods"):
        get_method("padim")
    with pytest.raises(InvalidInputError, match="valid settings are .*coreset"):
        get_method("patchcore", corset=0.1)
    with pytest.raises(InvalidInputError, match="bank_dtype"):
        get_method("patchcore", bank_dtype="int4")
    with pytest.raises(InvalidInputError, match="radius"):
        get_method("npad", radius=-1)
    with pytest.raises(InvalidInputError):
        get_method("npad", combine="sum", n_centroids=0)


def test_feature_checks():
    m = get_method("patchcore", coreset=1.0)
    with pytest.raises(InvalidInputError, match="float32"):
        m.fit(_feats().astype(np.float64))
    with pytest.raises(InvalidInputError, match="before fit"):
        m.score(_feats())
    m.fit(_feats())
    with pytest.raises(InvalidInputError, match="feature dim"):
        m.score(_feats(d=5))
    bad = _feats(n=1)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        m.score(bad)


# ----------------------------------------------------------------------------- PatchCore
def test_patchcore_patch_score_is_brute_force_nn_distance():
    train, test = _feats(), _feats(n=3, seed=1)
    m = get_method("patchcore", coreset=0.25).fit(train, seed=0)
    bank = m.bank.astype(np.float64)
    assert bank.shape == (round(0.25 * 12 * 6 * 7), 8)
    q = test.transpose(0, 2, 3, 1).reshape(-1, 8).astype(np.float64)
    brute = np.sqrt(((q[:, None, :] - bank[None]) ** 2).sum(-1).min(1)).reshape(3, 6, 7)
    patch, image = m.score(test)
    np.testing.assert_allclose(patch, brute, rtol=1e-4, atol=1e-4)
    # the default image score: the peak of the grid smoothed with sigma 0.5 cells (edges repeated)
    smooth = np.stack([ndimage.gaussian_filter(p, 0.5, mode="nearest", truncate=4.0) for p in brute])
    np.testing.assert_allclose(image, smooth.reshape(3, -1).max(1), rtol=1e-4, atol=1e-4)
    assert (image < brute.reshape(3, -1).max(1)).all()          # smoothing lowers an isolated peak
    m_max = method_class("patchcore").from_state({**m.settings, "image_score": "max"}, m.state_arrays())
    np.testing.assert_allclose(m_max.score(test)[1], brute.reshape(3, -1).max(1), rtol=1e-4, atol=1e-4)


def test_patchcore_bank_rows_come_from_training_set_and_coreset_is_seeded():
    train = _feats()
    rows = train.transpose(0, 2, 3, 1).reshape(-1, 8)
    a = get_method("patchcore", coreset=0.1).fit(train, seed=0).bank
    b = get_method("patchcore", coreset=0.1).fit(train, seed=0).bank
    c = get_method("patchcore", coreset=0.1).fit(train, seed=5).bank
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert all((rows == r).all(1).any() for r in a)


@pytest.mark.parametrize("storage", ["float32", "float16", "int8"])
def test_patchcore_coreset_storage_choices(storage):
    # int8 is opt-in (the default stays float16); every choice selects training rows, seeded.
    train = _feats()
    rows = train.transpose(0, 2, 3, 1).reshape(-1, 8)
    a = get_method("patchcore", coreset=0.1, coreset_storage=storage).fit(train, seed=0).bank
    b = get_method("patchcore", coreset=0.1, coreset_storage=storage).fit(train, seed=0).bank
    np.testing.assert_array_equal(a, b)
    assert all((rows == r).all(1).any() for r in a)
    assert get_method("patchcore").settings["coreset_storage"] == "float16"
    with pytest.raises(InvalidInputError, match="coreset_storage"):
        get_method("patchcore", coreset_storage="int4")


def test_patchcore_reweighting_matches_direct_formula():
    train, test = _feats(), _feats(n=4, seed=2)
    test = _with_anomaly(test, amount=1.5)
    m = get_method("patchcore", coreset=0.3, image_score="reweighted", reweight_neighbors=5).fit(train)
    patch, image = m.score(test)
    bank = m.bank.astype(np.float64)
    q = test.transpose(0, 2, 3, 1).reshape(4, -1, 8).astype(np.float64)
    for b in range(4):
        d_all = np.sqrt(((q[b][:, None] - bank[None]) ** 2).sum(-1))      # (P, M)
        p = d_all.min(1).argmax()                                          # worst test patch
        m_star = d_all[p].argmin()
        d_star = d_all[p, m_star]
        nb = np.argsort(((bank - bank[m_star]) ** 2).sum(1), kind="stable")[:5]   # N_b(m*), m* included
        w = 1.0 - np.exp(d_star) / np.exp(np.linalg.norm(q[b][p] - bank[nb], axis=1)).sum()
        assert image[b] == pytest.approx(w * d_star, rel=1e-4)
        assert image[b] <= patch[b].max() + 1e-6


@pytest.mark.parametrize("settings", [{}, {"bank_dtype": "float16"}, {"index": "hnsw"},
                                      {"image_score": "reweighted"}])
def test_patchcore_state_round_trip(settings):
    train, test = _feats(), _with_anomaly(_feats(n=3, seed=1))
    m = get_method("patchcore", coreset=0.2, **settings).fit(train, seed=1)
    st = m.state_arrays()
    if settings.get("bank_dtype") == "float16":
        assert st["bank"].dtype == np.float16
    m2 = PatchCore.from_state(m.settings, st)
    p1, i1 = m.score(test)
    p2, i2 = m2.score(test)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(i1, i2)


@pytest.mark.parametrize("name,settings", [("patchcore", {"coreset": 0.2}),
                                           ("npad", {"n_centroids": 16}),
                                           ("npad", {"combine": "mahalanobis", "n_centroids": 0}),
                                           ("npad", {"n_centroids": 8, "feature_dim": 4})])
def test_planted_anomaly_scores_highest(name, settings):
    train = _feats(n=20)
    test = _feats(n=4, seed=7)
    test = _with_anomaly(test, i=2, j=3, amount=3.0)
    test[1] = _feats(n=1, seed=8)[0]          # image 1 stays nominal
    m = get_method(name, **settings).fit(train, seed=0)
    patch, image = m.score(test)
    for b in (0, 2, 3):
        assert np.unravel_index(patch[b].argmax(), patch[b].shape) == (2, 3)
    assert image[[0, 2, 3]].min() > image[1]


# ----------------------------------------------------------------------------- N-pad
def _direct_window_gaussian(x, i, j, r, shrink):
    """x (N, D, h, w) float64 -> mean, shrunk covariance of the window samples at (i, j)."""
    n, d, h, w = x.shape
    s = x[:, :, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1]
    s = s.transpose(0, 2, 3, 1).reshape(-1, d)
    mu = s.mean(0)
    cov = np.cov(s, rowvar=False, bias=True)
    cov = (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)
    return mu, cov


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_npad_mahalanobis_matches_direct(radius):
    train, test = _feats(n=30), _feats(n=2, seed=3)
    m = get_method("npad", radius=radius, shrinkage=0.05, combine="mahalanobis", n_centroids=0,
                   precision="float32", gaussian="window").fit(train)
    maha, eucl = m.score_terms(test)
    assert eucl is None
    x = train.astype(np.float64)
    for (i, j) in [(0, 0), (2, 3), (5, 6), (3, 0)]:
        mu, cov = _direct_window_gaussian(x, i, j, radius, 0.05)
        diff = test[:, :, i, j].astype(np.float64) - mu
        ref = np.sqrt(np.einsum("bd,de,be->b", diff, np.linalg.inv(cov), diff))
        np.testing.assert_allclose(maha[:, i, j], ref, rtol=2e-4)
    # the combined score is the nominally normalised Mahalanobis term
    patch, _ = m.score(test)
    mean, std = m.state_arrays()["stats"][0]
    np.testing.assert_allclose(patch, (maha - mean) / std, rtol=1e-5, atol=1e-5)


def test_npad_euclidean_term_and_combination():
    train, test = _feats(n=20), _feats(n=2, seed=3)
    m = get_method("npad", n_centroids=10, weight=0.3, precision="float32", image_combine="max").fit(train, seed=2)
    st = m.state_arrays()
    cent = st["centroids"].astype(np.float64)
    assert cent.shape == (10, 8)
    maha, eucl = m.score_terms(test)
    q = test.transpose(0, 2, 3, 1).reshape(-1, 8).astype(np.float64)
    ref = np.sqrt(((q[:, None] - cent[None]) ** 2).sum(-1).min(1)).reshape(2, 6, 7)
    np.testing.assert_allclose(eucl, ref, rtol=1e-4, atol=1e-4)
    (mm, sm), (me, se) = st["stats"]
    patch, image = m.score(test)
    np.testing.assert_allclose(patch, 0.3 * (maha - mm) / sm + 0.7 * (eucl - me) / se, rtol=1e-4, atol=1e-4)
    # the image score (default image_combine="max"): the smoothed peak of the larger of the two
    # normalised terms per patch, while the map stays the weighted sum
    stronger = np.maximum((maha - mm) / sm, (eucl - me) / se)
    assert not np.allclose(stronger, patch, atol=1e-3)
    smooth = np.stack([ndimage.gaussian_filter(p.astype(np.float64), 0.5, mode="nearest", truncate=4.0) for p in stronger])
    np.testing.assert_allclose(image, smooth.reshape(2, -1).max(1), rtol=1e-5, atol=1e-5)
    m_max = method_class("npad").from_state({**m.settings, "image_score": "max"}, m.state_arrays())
    np.testing.assert_allclose(m_max.score(test)[1], stronger.reshape(2, -1).max(1), rtol=1e-5, atol=1e-5)
    # image_combine="map": the peak of the map itself
    m_map = method_class("npad").from_state({**m.settings, "image_combine": "map"}, m.state_arrays())
    p_map, i_map = m_map.score(test)
    np.testing.assert_array_equal(p_map, patch)
    smooth = np.stack([ndimage.gaussian_filter(p.astype(np.float64), 0.5, mode="nearest", truncate=4.0) for p in patch])
    np.testing.assert_allclose(i_map, smooth.reshape(2, -1).max(1), rtol=1e-5, atol=1e-5)
    # "auto" resolves by the reading, at fit time and at load: max with knn, the map with window
    for reading, want in (("knn", "max"), ("window", "map")):
        a = get_method("npad", n_centroids=10, precision="float32", gaussian=reading).fit(train, seed=2)
        assert a.settings["image_combine"] == want
        loaded = method_class("npad").from_state({**a.settings, "image_combine": "auto"}, a.state_arrays())
        assert loaded.settings["image_combine"] == want
        np.testing.assert_array_equal(loaded.score(test)[1], a.score(test)[1])
    # a model saved before the setting scores its images from the map, as it was calibrated
    old = {k: v for k, v in m.settings.items() if k != "image_combine"}
    m_old = method_class("npad").from_state(old, m.state_arrays())
    assert m_old.settings["image_combine"] == "map"
    np.testing.assert_array_equal(m_old.score(test)[1], i_map)
    # one term only: both image rules are that term's peak
    one = get_method("npad", n_centroids=0, combine="mahalanobis", precision="float32").fit(train, seed=2)
    one_map = method_class("npad").from_state({**one.settings, "image_combine": "map"}, one.state_arrays())
    np.testing.assert_array_equal(one.score(test)[1], one_map.score(test)[1])


@pytest.mark.parametrize("settings", [{}, {"precision": "float32"}, {"feature_dim": 5, "reduction": "pca"},
                                      {"feature_dim": 5, "reduction": "random"}, {"normalize": "position"},
                                      {"combine": "euclidean"}, {"combine": "max", "radius": 0}])
def test_npad_state_round_trip_and_seed(settings):
    train, test = _feats(n=15), _with_anomaly(_feats(n=2, seed=4))
    s = {"n_centroids": 12, **settings}
    m = get_method("npad", **s).fit(train, seed=3)
    m_again = get_method("npad", **s).fit(train, seed=3)
    st = m.state_arrays()
    for k, v in m_again.state_arrays().items():
        np.testing.assert_array_equal(v, st[k])
    m2 = NPad.from_state(m.settings, st)
    p1, i1 = m.score(test)
    p2, i2 = m2.score(test)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(i1, i2)


def test_npad_factor_storage_is_packed_triangular_fp16():
    m = get_method("npad", combine="mahalanobis", n_centroids=0, gaussian="window").fit(_feats())
    st = m.state_arrays()
    assert st["factors_packed"].dtype == np.float16
    assert st["factors_packed"].shape == (6 * 7, 8 * 9 // 2)


def test_kmeans_seeded_and_recovers_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    x = (centres[rng.integers(0, 3, 600)] + 0.1 * rng.standard_normal((600, 2))).astype(np.float32)
    c1 = kmeans(x, 3, seed=1)
    np.testing.assert_array_equal(c1, kmeans(x, 3, seed=1))
    assert {tuple(r) for r in np.round(c1).astype(int)} == {tuple(r) for r in centres.astype(int)}


# ----------------------------------------------------------------------------- N-pad window reading in the core
def test_window_mahalanobis_core_equals_numpy_oracle_on_every_isa():
    from npad_edge import _core, search
    from npad_edge.methods.npad import _window_mahalanobis

    rng = np.random.default_rng(7)
    b, h, w, d = 3, 5, 7, 19
    x = rng.standard_normal((b, h, w, d)).astype(np.float32)
    means = rng.standard_normal((h * w, d)).astype(np.float32)
    factors = np.tril(rng.standard_normal((h * w, d, d))).astype(np.float32)
    ref = _window_mahalanobis(x, means, factors)
    cols = search.pack_lower_columns(factors)
    assert cols.shape == (h * w, d * (d + 1) // 2)
    # the packing: column j holds rows j .. d-1
    assert np.array_equal(cols[4, :d], factors[4, :, 0]) and np.array_equal(cols[4, d:2 * d - 1], factors[4, 1:, 1])
    xr = np.ascontiguousarray(x.reshape(b, h * w, d))
    got = search.window_mahalanobis(xr, means, cols, threads=1).reshape(b, h, w)
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6)
    try:
        for isa in _core.available_isas():
            _core.set_isa(isa)
            for t in (1, 2, 5):
                again = search.window_mahalanobis(xr, means, cols, threads=t).reshape(b, h, w)
                assert np.array_equal(again.view(np.uint32), got.view(np.uint32)), (isa, t)
    finally:
        _core.set_isa("auto")
    with pytest.raises(InvalidInputError):
        search.window_mahalanobis(xr, means[:-1], cols)
    with pytest.raises(InvalidInputError):
        search.window_mahalanobis(xr.astype(np.float64), means, cols)
    with pytest.raises(InvalidInputError):
        search.window_mahalanobis(xr, means, cols[:, :-1].copy())


def test_npad_window_scores_equal_the_numpy_oracle():
    from npad_edge import search
    from npad_edge.methods.npad import _lower_from_columns, _tril_column_positions, _window_mahalanobis

    rng = np.random.default_rng(8)
    feats = rng.standard_normal((12, 24, 6, 5)).astype(np.float32)
    m = get_method("npad", feature_dim=8, n_centroids=16, gaussian="window", combine="mahalanobis")
    m.fit(feats, seed=0)
    test = rng.standard_normal((2, 24, 6, 5)).astype(np.float32)
    maha, _ = m.score_terms(test)
    factors = _lower_from_columns(m._cols, 8)
    assert np.array_equal(search.pack_lower_columns(factors), m._cols)      # the two layouts agree
    i, j = np.tril_indices(8)
    assert np.array_equal(m.state_arrays()["factors_packed"].astype(np.float32), factors[:, i, j])
    assert _tril_column_positions(3).tolist() == [0, 1, 3, 2, 4, 5]
    ref = _window_mahalanobis(m._reduce(test), m._means, factors)
    np.testing.assert_allclose(maha, ref, rtol=2e-6, atol=1e-6)
    again = get_method("npad").__class__.from_state(m.settings, m.state_arrays())
    np.testing.assert_array_equal(again.score_terms(test)[0], maha)
