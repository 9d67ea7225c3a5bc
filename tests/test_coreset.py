"""greedy_coreset against a straightforward numpy implementation of the same algorithm."""

from __future__ import annotations

import math
import os
import signal
import threading

import numpy as np
import pytest

from npad_edge import _core, search
from npad_edge.errors import InvalidInputError

M64 = (1 << 64) - 1


class SplitMix64:
    """Pure-Python copy of the documented generator: checks the C++ one is what the docs say."""

    def __init__(self, seed):
        self.s = seed & M64

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)


def py_projection(dim, proj_dim, seed):
    rng = SplitMix64(seed ^ 0x50524F4A45435431)
    n = dim * proj_dim
    out = np.empty(n, np.float32)
    scale = 1.0 / math.sqrt(proj_dim)
    for i in range(0, n, 2):
        u1 = ((rng.next() >> 11) + 1) * 2.0**-53
        u2 = (rng.next() >> 11) * 2.0**-53
        r = math.sqrt(-2.0 * math.log(u1))
        out[i] = r * math.cos(2 * math.pi * u2) * scale
        if i + 1 < n:
            out[i + 1] = r * math.sin(2 * math.pi * u2) * scale
    return out.reshape(dim, proj_dim)


def py_starts(n, n_starts, seed):
    rng = SplitMix64(seed ^ 0x5354415254533031)
    a = list(range(n))
    for i in range(min(n, n_starts)):
        j = i + ((rng.next() * (n - i)) >> 64)
        a[i], a[j] = a[j], a[i]
    return a[: min(n, n_starts)]


def numpy_greedy(features, n_select, proj_dim=128, n_starts=10, seed=0):
    """The documented algorithm, written plainly in float64."""
    n, d = features.shape
    y = features.astype(np.float64)
    if proj_dim is not None and proj_dim < d:
        y = y @ search.projection_matrix(d, proj_dim, seed).astype(np.float64)
    starts = search.coreset_start_indices(n, n_starts, seed)
    score = np.mean([np.linalg.norm(y - y[s], axis=1) for s in starts], axis=0)
    out = []
    for _ in range(n_select):
        sel = int(np.argmax(score))  # first maximum: ties to the lowest index
        out.append(sel)
        score[sel] = -np.inf
        score = np.minimum(score, np.linalg.norm(y - y[sel], axis=1))
    return np.array(out, np.int64)


def test_projection_and_starts_follow_documented_rng():
    np.testing.assert_allclose(search.projection_matrix(13, 7, 42), py_projection(13, 7, 42), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(search.coreset_start_indices(1000, 10, 3), py_starts(1000, 10, 3))
    np.testing.assert_array_equal(search.coreset_start_indices(5, 10, 3), py_starts(5, 10, 3))
    p = search.projection_matrix(256, 64, 0)
    assert p.shape == (256, 64) and p.dtype == np.float32
    assert abs(p.std() * 8 - 1) < 0.05 and abs(p.mean()) < 0.01  # N(0, 1/64)


@pytest.mark.parametrize("isa", search.available_isas())
@pytest.mark.parametrize(
    "n,d,n_select,proj_dim,n_starts,seed",
    [(400, 48, 60, 16, 10, 0), (300, 10, 300, 128, 3, 7), (257, 33, 40, None, 1, 123), (50, 8, 20, 4, 100, 5)],
)
def test_equals_numpy_reference(isa, n, d, n_select, proj_dim, n_starts, seed):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, d), dtype=np.float32)
    try:
        search.set_isa(isa)
        got = search.greedy_coreset(features, n_select, proj_dim=proj_dim, n_starts=n_starts, seed=seed)
    finally:
        search.set_isa(None)
    want = numpy_greedy(features, n_select, proj_dim, n_starts, seed)
    assert got.dtype == np.int64 and got.shape == (n_select,)
    np.testing.assert_array_equal(got, want)
    assert len(set(got.tolist())) == n_select


def f16_projection(features, proj_dim, seed):
    """Y as greedy_coreset(storage="float16") holds it: the float32 projection (the C++ GEMM,
    bit-identical on every ISA) rounded to float16 and widened back to float32."""
    n, d = features.shape
    y = features
    if proj_dim is not None and proj_dim < d:
        y = _core.project(features, search.projection_matrix(d, proj_dim, seed), 1)
    return y.astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("isa", search.available_isas())
@pytest.mark.parametrize(
    "n,d,n_select,proj_dim,n_starts,seed",
    [(400, 48, 60, 16, 10, 0), (300, 10, 300, 128, 3, 7), (257, 33, 40, None, 1, 123), (50, 8, 20, 4, 100, 5),
     (3000, 40, 300, 20, 10, 2)],
)
def test_float16_storage_equals_reference_on_rounded_projection(isa, n, d, n_select, proj_dim, n_starts, seed):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, d), dtype=np.float32)
    try:
        search.set_isa(isa)
        got = search.greedy_coreset(features, n_select, proj_dim=proj_dim, n_starts=n_starts, seed=seed,
                                    storage="float16", threads=2)
    finally:
        search.set_isa(None)
    want = numpy_greedy(f16_projection(features, proj_dim, seed), n_select, None, n_starts, seed)
    np.testing.assert_array_equal(got, want)


def int8_codes(features, proj_dim, seed):
    """Y as greedy_coreset(storage="int8") holds it, by the documented formula: the float32
    projection (the C++ GEMM), m = max |Y|, codes = clip(rint(Y * float32(127 / m)), -127, 127)
    (rint: half to even, in float32), scale = m / 127."""
    n, d = features.shape
    y = features
    if proj_dim is not None and proj_dim < d:
        y = _core.project(features, search.projection_matrix(d, proj_dim, seed), 1)
    m = np.abs(y).max()
    inv = np.float32(127) / m if m > 0 else np.float32(0)
    codes = np.clip(np.rint(y * inv), -127, 127).astype(np.int64)
    return codes, np.float32(m) / np.float32(127)


def numpy_greedy_int8(features, n_select, proj_dim=128, n_starts=10, seed=0):
    """The documented algorithm on the int8 codes: each distance sqrt(float32(D)) with D the
    exact (int64) squared code distance; scores summed over the starts in float32, in order."""
    codes, _ = int8_codes(features, proj_dim, seed)
    n = len(codes)

    def dist(i):
        return np.sqrt(((codes - codes[i]) ** 2).sum(1).astype(np.float32))

    starts = search.coreset_start_indices(n, n_starts, seed)
    score = np.zeros(n, np.float32)
    for s in starts:
        score += dist(s)
    score /= np.float32(len(starts))
    out = []
    for _ in range(n_select):
        sel = int(np.argmax(score))
        out.append(sel)
        score[sel] = -np.inf
        score = np.minimum(score, dist(sel))
    return np.array(out, np.int64)


@pytest.mark.parametrize("isa", search.available_isas())
@pytest.mark.parametrize(
    "n,d,n_select,proj_dim,n_starts,seed",
    [(400, 48, 60, 16, 10, 0), (300, 10, 300, 128, 3, 7), (257, 33, 40, None, 1, 123), (50, 8, 20, 4, 100, 5),
     (3000, 40, 300, 20, 10, 2), (1, 3, 1, None, 10, 0), (17, 130, 17, None, 2, 1)],
)
def test_int8_storage_equals_reference_on_the_codes(isa, n, d, n_select, proj_dim, n_starts, seed):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, d), dtype=np.float32)
    try:
        search.set_isa(isa)
        got, info = search.greedy_coreset(features, n_select, proj_dim=proj_dim, n_starts=n_starts, seed=seed,
                                          storage="int8", threads=2, return_info=True)
    finally:
        search.set_isa(None)
    np.testing.assert_array_equal(got, numpy_greedy_int8(features, n_select, proj_dim, n_starts, seed))
    assert info["storage"] == info["requested_storage"] == "int8" and info["isa"] == isa
    assert info["int8_scale"] == int8_codes(features, proj_dim, seed)[1]
    assert len(set(got.tolist())) == n_select


def test_int8_storage_pruning_threads_and_duplicates():
    # Clustered data: the triangle bound skips most rows (on the integer distances); the result
    # is the reference's on any thread count. Duplicated rows still give distinct indices.
    rng = np.random.default_rng(4)
    centers = 10 * rng.standard_normal((30, 24))
    features = (centers[rng.integers(0, 30, 3000)] + 0.3 * rng.standard_normal((3000, 24))).astype(np.float32)
    features[2000:2100] = features[0]
    want = numpy_greedy_int8(features, 400, 12, 10, 3)
    for threads in (1, 2, 3):
        idx, info = search.greedy_coreset(features, 400, proj_dim=12, seed=3, threads=threads, storage="int8",
                                          return_info=True)
        np.testing.assert_array_equal(idx, want)
        rows = info["rows_computed"]
        assert rows[0] == 3000 - 1 and rows[-1] == 0
        assert rows[200:399].mean() < 0.2 * 3000  # the bound applies late in the run


def test_int8_storage_all_zero_and_large_values():
    # m = 0: every code is 0, every distance 0, so the lowest indices win in order.
    got, info = search.greedy_coreset(np.zeros((40, 8), np.float32), 5, storage="int8", return_info=True)
    np.testing.assert_array_equal(got, np.arange(5))
    assert info["int8_scale"] == 0
    # Values far beyond the float16 range need no fallback: one scale covers them.
    x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32) * 1e6
    got, info = search.greedy_coreset(x, 50, proj_dim=None, storage="int8", return_info=True)
    np.testing.assert_array_equal(got, numpy_greedy_int8(x, 50, None))
    assert info["storage"] == "int8"


def test_int8_storage_refuses_too_many_dimensions():
    # Exact int32 distances need D <= 4 * 8192 (254^2 per dimension).
    x = np.zeros((3, 32769), np.float32)
    with pytest.raises(InvalidInputError, match="32768"):
        search.greedy_coreset(x, 2, proj_dim=None, storage="int8")
    assert len(search.greedy_coreset(x, 2, proj_dim=8, storage="int8")) == 2  # projected: accepted
    with pytest.raises(InvalidInputError, match="32768"):  # the C++ boundary checks it too
        _core.greedy_coreset(x, 2, 0, 10, 0, 1, None, "int8")


def test_float16_storage_pruning_and_threads():
    rng = np.random.default_rng(4)
    centers = 10 * rng.standard_normal((30, 24))
    features = (centers[rng.integers(0, 30, 3000)] + 0.3 * rng.standard_normal((3000, 24))).astype(np.float32)
    want = numpy_greedy(f16_projection(features, 12, 3), 400, None, 10, 3)
    for threads in (1, 2, 3):
        got = search.greedy_coreset(features, 400, proj_dim=12, seed=3, threads=threads, storage="float16")
        np.testing.assert_array_equal(got, want)


def test_seed_and_thread_determinism():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((20000, 64), dtype=np.float32)
    a = search.greedy_coreset(features, 200, proj_dim=32, seed=1, threads=1)
    b = search.greedy_coreset(features, 200, proj_dim=32, seed=1, threads=2)
    c = search.greedy_coreset(features, 200, proj_dim=32, seed=1, threads=5)
    d = search.greedy_coreset(features, 200, proj_dim=32, seed=2, threads=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, d)


def test_duplicates_still_give_distinct_indices():
    features = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 3 distinct points, 12 rows
    got = search.greedy_coreset(features, 12, proj_dim=None, n_starts=2)
    assert sorted(got.tolist()) == list(range(12))
    np.testing.assert_array_equal(got, numpy_greedy(features, 12, None, 2))
    assert set(got[:3] // 4) == {0, 1, 2}  # one of each distinct point first


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_progress_reports_and_finishes(storage):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((500, 16), dtype=np.float32)
    calls = []
    search.greedy_coreset(features, 50, proj_dim=8, progress=lambda done, total: calls.append((done, total)),
                          storage=storage)
    assert calls[0] == (0, 50) and calls[-1] == (50, 50)
    assert all(0 <= d <= t == 50 for d, t in calls)


@pytest.mark.parametrize("storage", ["float32", "int8"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_exception_in_progress_stops_and_propagates(exc, storage):
    features = np.random.default_rng(0).standard_normal((50000, 32), dtype=np.float32)
    seen = []

    def progress(done, total):
        seen.append(done)
        if done > 0 or len(seen) > 1:
            raise exc("stop")

    with pytest.raises(exc, match="stop"):
        search.greedy_coreset(features, 40000, proj_dim=None, progress=progress, threads=2, storage=storage)
    # stopped at the second report, long before the end. The second report may still say 0: the
    # subspace bound's setup (principal coordinates of every row) runs before the first step, and
    # a slow machine's time-based report can fall inside it (seen once in a fresh CI run).
    assert len(seen) == 2 and 0 <= seen[-1] < 40000


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt", reason="POSIX signals")
def test_ctrl_c_interrupts_long_selection():
    # Counts, not seconds: once SIGINT is sent, the selection may report progress at most once
    # more (a poll already under way) before KeyboardInterrupt; it reports every ~50 ms.
    features = np.random.default_rng(0).standard_normal((100000, 32), dtype=np.float32)
    reports, sent = [], []

    def progress(done, total):
        reports.append(done)
        if sent and len(reports) - sent[0] > 100:     # never hang the suite: fail instead
            raise RuntimeError(f"SIGINT ignored for {len(reports) - sent[0]} progress reports")

    def interrupt():
        sent.append(len(reports))
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own SIGINT handler for the test: a library imported by an earlier test may
    # have installed another one process-wide.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            search.greedy_coreset(features, 90000, proj_dim=None, threads=2, progress=progress)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert sent and len(reports) - sent[0] <= 1, (len(reports), sent)
    assert reports[-1] < 90000


GOOD = np.zeros((10, 4), np.float32)


@pytest.mark.parametrize(
    "features,kwargs,match",
    [
        (GOOD.astype(np.float64), {}, "float32"),
        (np.asfortranarray(np.zeros((10, 4), np.float32)), {}, "C-contiguous"),
        (np.zeros(10, np.float32), {}, "2-D"),
        (np.zeros((0, 4), np.float32), {"n_select": 1}, "at least one"),
        (GOOD, {"n_select": 0}, "n_select"),
        (GOOD, {"n_select": 11}, "n_select"),
        (GOOD, {"proj_dim": 0}, "proj_dim"),
        (GOOD, {"n_starts": 0}, "n_starts"),
        (GOOD, {"threads": 0}, "threads"),
        (GOOD, {"progress": 3}, "progress"),
        (GOOD, {"storage": "int4"}, "storage"),
        (np.array([[0, np.nan]] * 3, np.float32), {"proj_dim": 1}, "NaN"),
        (np.array([[0, np.inf]] * 3, np.float32), {"proj_dim": None}, "inf"),
    ],
)
def test_bad_input(features, kwargs, match):
    kwargs = {"n_select": 2, **kwargs}
    n_select = kwargs.pop("n_select")
    with pytest.raises(InvalidInputError, match=match):
        search.greedy_coreset(features, n_select, **kwargs)


@pytest.mark.parametrize("threads", [1, 2])
def test_nonfinite_reported_before_any_norm_error(threads):
    # Finiteness and norms are checked in one pass split over the threads; a non-finite value is
    # still the error reported, at its first position, even after an earlier too-large row.
    x = np.zeros((10_000, 4), np.float32)
    x[100] = 1e19  # squared norm 4e38 > FLT_MAX / 4
    x[9000, 2] = np.nan
    x[9500, 1] = np.inf
    with pytest.raises(InvalidInputError, match="row 9000, column 2 is NaN"):
        search.greedy_coreset(x, 2, proj_dim=None, threads=threads)
    x[9000, 2] = 0
    with pytest.raises(InvalidInputError, match="row 9500, column 1 is inf"):
        search.greedy_coreset(x, 2, proj_dim=None, threads=threads)
    x[9500, 1] = 0
    x[7000] = 1e19
    with pytest.raises(InvalidInputError, match="features row 100 has a squared norm of 4e\\+38"):
        search.greedy_coreset(x, 2, proj_dim=None, threads=threads)


def test_equals_reference_on_clustered_data_where_pruning_applies():
    # Tight clusters: most updates are skipped by the triangle-inequality bound, which must
    # not change a single index.
    rng = np.random.default_rng(4)
    centers = 10 * rng.standard_normal((30, 24))
    features = (centers[rng.integers(0, 30, 3000)] + 0.3 * rng.standard_normal((3000, 24))).astype(np.float32)
    got = search.greedy_coreset(features, 400, proj_dim=12, seed=3, threads=2)
    np.testing.assert_array_equal(got, numpy_greedy(features, 400, 12, 10, 3))


# ---- numeric edge cases and reproducibility (issue 13) --------------------------------------


def test_float16_storage_out_of_range_falls_back_to_float32(caplog):
    # Rows beyond 65504 became inf in float16, every distance NaN, and the "winner" INT64_MAX.
    rng = np.random.default_rng(0)
    features = rng.standard_normal((300, 16)).astype(np.float32) * 1e6
    with caplog.at_level("WARNING", logger="npad_edge.search"):
        got = search.greedy_coreset(features, 299, storage="float16", proj_dim=None)
    assert got.min() >= 0 and got.max() < 300 and len(set(got.tolist())) == 299
    np.testing.assert_array_equal(got, search.greedy_coreset(features, 299, storage="float32", proj_dim=None))
    np.testing.assert_array_equal(got, numpy_greedy(features, 299, None))
    assert "float16" in caplog.text and "float32" in caplog.text
    _, info = search.greedy_coreset(features, 299, storage="float16", proj_dim=None, return_info=True)
    assert info["storage"] == "float32" and info["requested_storage"] == "float16"
    # Also when it is the projection that leaves the float16 range.
    big = rng.standard_normal((200, 64)).astype(np.float32) * 3e4
    got, info = search.greedy_coreset(big, 50, proj_dim=16, storage="float16", return_info=True)
    assert info["storage"] == "float32"
    np.testing.assert_array_equal(got, numpy_greedy(big, 50, 16))


@pytest.mark.parametrize("proj_dim", [None, 8])
def test_overflowing_features_refused(proj_dim):
    # |x|^2 beyond FLT_MAX / 4: distances between such rows overflow to inf, and every score
    # ties at inf. Refused at the boundary, like FlatIndex.
    features = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    features[7, 3] = 1e20
    for storage in ("float32", "float16"):
        with pytest.raises(InvalidInputError, match="squared norm"):
            search.greedy_coreset(features, 10, proj_dim=proj_dim, storage=storage)


def test_overflowing_projection_refused():
    # Each row is fine (|x|^2 = 16 * 1.3e18^2 ~ 2.7e37 < FLT_MAX / 4), but a row along the
    # projection's first column projects to ~1.2e19, whose square is beyond the bound.
    p = search.projection_matrix(16, 2, 0)
    features = np.tile(np.where(p[:, 0] >= 0, 1.3e18, -1.3e18).astype(np.float32), (20, 1))
    features[1::2] = 1.0
    assert (np.einsum("ij,ij->i", features.astype(np.float64), features) < np.finfo(np.float32).max / 4).all()
    with pytest.raises(InvalidInputError, match="squared norm"):
        search.greedy_coreset(features, 5, proj_dim=2)


@pytest.mark.skipif(len(search.available_isas()) < 2, reason="only one instruction set here")
@pytest.mark.parametrize(
    "d,proj_dim,storage,seed",
    # Found on this machine (AVX2): these selected different rows on scalar and AVX2 when the
    # per-pair kernels rounded differently per ISA.
    [(48, None, "float32", 0), (200, 128, "float16", 0), (200, 128, "float32", 1), (20, None, "float32", 4),
     (200, 128, "int8", 0), (20, None, "int8", 4)],
)
def test_same_indices_on_every_isa(d, proj_dim, storage, seed):
    x = np.random.default_rng(seed).standard_normal((2000, d)).astype(np.float32)
    results = {}
    try:
        for name in search.available_isas():
            search.set_isa(name)
            results[name] = search.greedy_coreset(x, 2000, proj_dim=proj_dim, storage=storage, threads=2)
    finally:
        search.set_isa(None)
    ref = results["scalar"]
    for name, got in results.items():
        np.testing.assert_array_equal(got, ref, err_msg=f"{name} vs scalar")
    try:  # the kernel set that ran is recorded
        for name in search.available_isas():
            search.set_isa(name)
            assert search.greedy_coreset(x[:50], 5, return_info=True)[1]["isa"] == name
    finally:
        search.set_isa(None)


def test_info_counts_the_work():
    # Clustered data: the triangle bound skips most distance computations; info says how many
    # rows each step computed (the figure docs/search.md quotes comes from this counter).
    rng = np.random.default_rng(4)
    centers = 10 * rng.standard_normal((30, 24))
    features = (centers[rng.integers(0, 30, 3000)] + 0.3 * rng.standard_normal((3000, 24))).astype(np.float32)
    idx, info = search.greedy_coreset(features, 400, proj_dim=12, seed=3, threads=2, return_info=True)
    np.testing.assert_array_equal(idx, numpy_greedy(features, 400, 12, 10, 3))
    rows = info["rows_computed"]
    assert rows.shape == (400,) and rows.dtype == np.int64
    assert rows[-1] == 0  # the last step selects and stops
    assert ((rows >= 0) & (rows <= 3000)).all()
    assert rows[0] == 3000 - 1  # step 0: no point has a center yet; all but the winner computed
    assert rows[200:399].mean() < 0.2 * 3000  # the bound applies late in the run
    assert info["storage"] == info["requested_storage"] == "float32" and info["isa"] == search.isa()


# ---- the subspace bound: less work, the same selection -----------------------------------------


def _anisotropic(n, d, seed, scale=1.0):
    """Gaussian clusters with a decaying spectrum, as backbone features have: the subspace bound
    has something to find."""
    rng = np.random.default_rng(seed)
    spectrum = 1.0 / (1.0 + np.arange(d)) ** 0.8
    centers = 4 * rng.standard_normal((40, d)) * spectrum
    x = centers[rng.integers(0, 40, n)] + rng.standard_normal((n, d)) * spectrum
    return (scale * x).astype(np.float32)


def _bound_cases():
    rng = np.random.default_rng(9)
    low_rank = (rng.standard_normal((2500, 3)) @ rng.standard_normal((3, 40))).astype(np.float32)
    dup = _anisotropic(2500, 48, 3)
    dup[1000:1500] = dup[:500]  # exact duplicates
    return {
        "anisotropic": (_anisotropic(3000, 64, 1), None),
        "projected": (_anisotropic(3000, 96, 2), 48),
        "low_rank": (low_rank, None),  # rank 3 in 40 dims: the basis is padded with axes
        "duplicates": (dup, None),
        "tiny_scale": (_anisotropic(2500, 40, 4, 1e-6), None),
        "large_scale": (_anisotropic(2500, 40, 5, 1e6), None),
    }


@pytest.mark.parametrize("case", list(_bound_cases()))
@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_subspace_bound_changes_no_index(case, storage):
    features, proj = _bound_cases()[case]
    n_sel = 700
    off, info_off = search.greedy_coreset(features, n_sel, proj_dim=proj, storage=storage, threads=2, bound="off",
                                          return_info=True)
    assert info_off["bound_dims"] == 0
    try:
        for isa in search.available_isas():
            search.set_isa(isa)
            for threads in (1, 3):
                on, info = search.greedy_coreset(features, n_sel, proj_dim=proj, storage=storage, threads=threads,
                                                 bound="on", return_info=True)
                np.testing.assert_array_equal(on, off, err_msg=f"{case} {storage} {isa} threads={threads}")
                assert info["bound_dims"] == 16
                assert (info["rows_computed"] <= info_off["rows_computed"]).all()
    finally:
        search.set_isa(None)
    if case == "anisotropic":  # the bound does work where the data has principal directions
        assert info["rows_computed"].sum() < 0.6 * info_off["rows_computed"].sum()


@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_subspace_bound_selection_equals_numpy_reference(storage):
    # auto mode turns the bound on from 1024 selected rows; the reference knows no bound
    x = _anisotropic(2000, 40, 7)
    got, info = search.greedy_coreset(x, 1100, proj_dim=None, storage=storage, threads=2, return_info=True)
    assert info["bound_dims"] == 16
    y = x if storage == "float32" else x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got, numpy_greedy(y, 1100, None, 10, 0))


def test_subspace_bound_mode_checked_and_dimension_limits():
    x = _anisotropic(500, 64, 8)
    with pytest.raises(InvalidInputError, match="bound must be"):
        search.greedy_coreset(x, 10, bound="yes")
    # below 32 dimensions, or int8 storage, the bound is not used
    assert search.greedy_coreset(x[:, :20].copy(), 50, proj_dim=None, bound="on", return_info=True)[1]["bound_dims"] == 0
    assert search.greedy_coreset(x, 50, storage="int8", bound="on", return_info=True)[1]["bound_dims"] == 0
    assert search.greedy_coreset(x, 50, bound="auto", return_info=True)[1]["bound_dims"] == 0  # short run
