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
    m = get_method("patchcore", coreset=0.1, coreset_max=17, coreset_pool=None).fit(train, seed=3)
    assert m.bank.shape == (17, 8)
    idx = search.greedy_coreset(rows, 17, proj_dim=128, n_starts=10, seed=3, storage="float16")
    np.testing.assert_array_equal(m.bank, rows[np.sort(idx)])
    # the cap does nothing when the fraction is below it
    m2 = get_method("patchcore", coreset=0.1, coreset_max=1000, coreset_pool=None).fit(train, seed=3)
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
    plain = get_method("patchcore", coreset=0.1, coreset_pool=None).fit(train, seed=1)
    np.testing.assert_array_equal(full.bank, plain.bank)


def test_bank_plan_auto_keeps_ten_vectors_per_grid_cell_and_a_pool_four_times_the_bank():
    pc = get_method("patchcore")
    assert pc.settings["coreset_max"] == pc.settings["coreset_pool"] == "auto"
    # the cap binds: 686 images x (46 x 40) patches, 10 % = 126k > 10 x 1840
    assert pc.bank_plan(686, (46, 40)) == (18_400, 73_600)
    assert pc.bank_plan(686, (32, 32)) == (10_240, 40_960)      # ~ the fixed 10,000 / 40,000 at 256 x 256
    assert pc.bank_plan(300, (100, 40)) == (40_000, 160_000)    # 800 x 320 strips: the bank follows the area
    # the fraction binds: 48 images x 1600 patches, 10 % = 7,680 < 16,000
    assert pc.bank_plan(48, (40, 40)) == (7_680, 30_720)
    # a pool that would hold every patch is no pool
    assert pc.bank_plan(3, (8, 8)) == (19, 76)
    assert get_method("patchcore", coreset=0.3).bank_plan(1, (8, 8)) == (19, None)
    # explicit settings keep their meaning
    fixed = get_method("patchcore", coreset_max=10_000, coreset_pool=40_000)
    assert fixed.bank_plan(686, (46, 40)) == (10_000, 40_000)
    assert get_method("patchcore", coreset_max=None, coreset_pool=None).bank_plan(686, (46, 40)) == (126_224, None)
    assert get_method("patchcore", coreset_max=50, coreset_pool=10).bank_plan(100, (10, 10)) == (50, 50)


def test_default_fit_follows_its_bank_plan():
    train = _feats(n=10, h=6, w=7)             # 420 rows: 10 % = 42 < 10 x 42; pool 4 x 42 = 168
    m = get_method("patchcore").fit(train, seed=2)
    assert m.bank.shape == (42, 8)
    explicit = get_method("patchcore", coreset_max=420, coreset_pool=168).fit(train, seed=2)
    np.testing.assert_array_equal(m.bank, explicit.bank)
    no_pool = get_method("patchcore", coreset_pool=None).fit(train, seed=2)
    assert not np.array_equal(no_pool.bank, m.bank)            # the pool is really used


@pytest.mark.parametrize("bad", [0, -3, 1.5, "10", "Auto"])
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


# --------------------------------------------------------- the core's local-Gaussian search
@pytest.mark.parametrize("dtype,radius,k,exclude", [
    (np.float32, 1, 8, False), (np.float32, 1, 8, True), (np.float16, 2, 16, True),
    (np.float32, 0, 5, False), (np.float32, 1, 40, True),   # k above the window's candidates
])
def test_core_local_gaussians_equal_the_numpy_oracle(dtype, radius, k, exclude):
    from npad_edge.methods.npad import _knn_mahalanobis
    rng = np.random.default_rng(3)
    nominal = rng.standard_normal((37, 6, 5, 12)).astype(dtype)      # 37 images: two panels of 32
    x = rng.standard_normal((3, 6, 5, 12)).astype(np.float32)
    ex = np.array([0, 36, -1], dtype=np.int64) if exclude else None
    bank = search.LocalGaussianBank(nominal)
    assert bank.shape == (37, 6, 5, 12) and bank.dtype == np.dtype(dtype).name
    back = bank.nominal()                     # what a saved model stores: the input, bit for bit
    assert back.dtype == dtype and back.flags.c_contiguous
    np.testing.assert_array_equal(back, nominal)
    got = bank.mahalanobis(x, radius=radius, k=k, shrinkage=0.3, exclude=ex, threads=2)
    ref = _knn_mahalanobis(x, nominal, radius, k, 0.3, ex)
    # the neighbours' Gram matrix is formed in float32, the rest in float64
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bank.mahalanobis(x, radius=radius, k=k, shrinkage=0.3, exclude=ex, threads=1), got)


def test_core_local_gaussians_refuse_bad_input():
    bank = search.LocalGaussianBank(np.zeros((4, 3, 3, 2), np.float32))
    with pytest.raises(InvalidInputError, match="x must be"):
        bank.mahalanobis(np.zeros((1, 3, 3, 2), np.float64), radius=1, k=4, shrinkage=0.3)
    with pytest.raises(InvalidInputError, match="grid and dim"):
        bank.mahalanobis(np.zeros((1, 3, 4, 2), np.float32), radius=1, k=4, shrinkage=0.3)
    with pytest.raises(InvalidInputError, match="k must be"):
        bank.mahalanobis(np.zeros((1, 3, 3, 2), np.float32), radius=1, k=1, shrinkage=0.3)
    bad = np.zeros((4, 3, 3, 2), np.float32)
    bad[2, 1, 1, 0] = np.nan
    with pytest.raises(InvalidInputError, match="non-finite"):
        search.LocalGaussianBank(bad)
    with pytest.raises(InvalidInputError, match="float32 or float16"):
        search.LocalGaussianBank(np.zeros((4, 3, 3, 2), np.float64))


# ----------------------------------------------------------------------- gaussian="auto"
def _aligned_and_shuffled(n=16, d=8, seed=0):
    """Aligned: every image shows the same pattern per position (4 x 4 blocks of 3 x 3 cells on
    a 12 x 12 grid, plus noise: the part). Shuffled: the same images with their cells permuted
    independently per image (a surface: what a position shows does not depend on it)."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((1, d, 4, 4))
    base = np.repeat(np.repeat(coarse, 3, axis=2), 3, axis=3)
    aligned = (base + 0.3 * rng.standard_normal((n, d, 12, 12))).astype(np.float32)
    flat = aligned.reshape(n, d, 144)
    shuffled = np.stack([flat[i][:, rng.permutation(144)] for i in range(n)]).reshape(n, d, 12, 12)
    return aligned, np.ascontiguousarray(shuffled)


def test_positional_r2_separates_aligned_parts_from_surfaces():
    from npad_edge.methods.npad import positional_r2
    aligned, shuffled = _aligned_and_shuffled()
    r_al = positional_r2(np.ascontiguousarray(aligned.transpose(0, 2, 3, 1)), 1)
    r_sh = positional_r2(np.ascontiguousarray(shuffled.transpose(0, 2, 3, 1)), 1)
    assert r_al > 0.5 > 0.1 > r_sh   # ALIGNED_R2 = 0.5 splits them
    # the definition, directly: 1 - mean window variance / global variance (radius 0: the cell)
    x = aligned.transpose(0, 2, 3, 1).astype(np.float64)
    direct = 1 - x.var(axis=0).sum(-1).mean() / x.reshape(-1, x.shape[-1]).var(axis=0).sum()
    assert positional_r2(np.ascontiguousarray(aligned.transpose(0, 2, 3, 1)), 0) == pytest.approx(direct, rel=1e-9)


def test_auto_reading_follows_alignment_and_is_recorded():
    aligned, shuffled = _aligned_and_shuffled()
    m_al = get_method("npad", feature_dim=None, n_centroids=16, knn_k=8).fit(aligned, seed=0)
    m_sh = get_method("npad", feature_dim=None, n_centroids=16, knn_k=8).fit(shuffled, seed=0)
    assert m_al.settings["gaussian"] == "window" and "factors_packed" in m_al.state_arrays()
    assert m_sh.settings["gaussian"] == "knn" and "nominal" in m_sh.state_arrays()
    # the recorded reading scores exactly as the explicit setting
    explicit = get_method("npad", feature_dim=None, n_centroids=16, knn_k=8, gaussian="knn").fit(shuffled, seed=0)
    np.testing.assert_array_equal(m_sh.score(shuffled[:2])[0], explicit.score(shuffled[:2])[0])
    # a model whose settings say "auto" (saved before it was resolved) loads by its arrays
    for m in (m_al, m_sh):
        again = method_class("npad").from_state({**m.settings, "gaussian": "auto"}, m.state_arrays())
        assert again.settings["gaussian"] == m.settings["gaussian"]
        np.testing.assert_array_equal(again.score(aligned[:2])[0], m.score(aligned[:2])[0])


@pytest.mark.parametrize("name", ["npad", "patchcore"])
def test_models_saved_before_the_smoothed_image_score_keep_the_max(name):
    train, test = _feats(n=10), _feats(n=2, seed=4)
    m = get_method(name, image_score="max").fit(train, seed=0)
    old = {k: v for k, v in m.settings.items() if k not in ("image_score", "image_sigma")}
    again = method_class(name).from_state(old, m.state_arrays())
    assert again.settings["image_score"] == "max"
    np.testing.assert_array_equal(again.score(test)[1], m.score(test)[1])
    assert get_method(name).settings["image_score"] == "smoothed"      # new fits


def test_core_local_gaussians_give_the_same_bits_on_every_instruction_set():
    """The tile kernel, the float16 widening and the float64 SPD solve (kernels/spd_solve.h,
    vectorised per instruction set without reassociation) are bit-identical to the scalar
    oracle, so the whole computation is."""
    rng = np.random.default_rng(11)
    nominal = rng.standard_normal((45, 7, 6, 24)).astype(np.float16)
    x = rng.standard_normal((2, 7, 6, 24)).astype(np.float32)
    outs = {}
    try:
        for isa in search.available_isas():
            search.set_isa(isa)
            bank = search.LocalGaussianBank(nominal)
            outs[isa] = bank.mahalanobis(x, radius=1, k=20, shrinkage=0.3, exclude=np.array([3, -1]))
    finally:
        search.set_isa(None)
    assert "scalar" in outs
    for isa, out in outs.items():
        np.testing.assert_array_equal(out, outs["scalar"], err_msg=isa)


def test_npad_auto_centroids_are_one_per_grid_cell():
    m = get_method("npad")
    assert m.settings["n_centroids"] == "auto"
    assert m.centroid_count((32, 32)) == 1024          # the fixed default of earlier models at 256 x 256
    assert m.centroid_count((46, 40)) == 1840
    assert get_method("npad", n_centroids=16).centroid_count((46, 40)) == 16
    train = _feats(n=12, d=8, h=6, w=7)
    fitted = get_method("npad", feature_dim=4, kmeans_iters=3).fit(train, seed=0)
    assert fitted.state_arrays()["centroids"].shape == (42, 4)
    explicit = get_method("npad", feature_dim=4, kmeans_iters=3, n_centroids=42).fit(train, seed=0)
    np.testing.assert_array_equal(fitted.state_arrays()["centroids"], explicit.state_arrays()["centroids"])
    # a saved model's settings say "auto"; it loads by its arrays
    again = method_class("npad").from_state(fitted.settings, fitted.state_arrays())
    np.testing.assert_array_equal(again.score(train[:2])[0], fitted.score(train[:2])[0])
    with pytest.raises(InvalidInputError, match="n_centroids"):
        get_method("npad", n_centroids="many")
