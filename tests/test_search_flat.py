"""FlatIndex: exact k-NN against numpy float64 brute force, on every instruction set."""

from __future__ import annotations

import numpy as np
import pytest

from npad_edge import _core, search
from npad_edge.errors import InvalidInputError, NpadError

ISAS = search.available_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    search.set_isa(request.param)
    yield request.param
    search.set_isa(None)


def brute(bank, queries):
    b, q = bank.astype(np.float64), queries.astype(np.float64)
    return (q**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * q @ b.T


def check_against_brute(bank, queries, dist, idx, k):
    ref = brute(bank, queries)
    m = queries.shape[0]
    assert dist.shape == idx.shape == (m, k) and dist.dtype == np.float32 and idx.dtype == np.int64
    scale = (queries.astype(np.float64) ** 2).sum(1)[:, None] + (bank.astype(np.float64) ** 2).sum(1).max()
    tol = 1e-5 * scale + 1e-30
    ref_sorted = np.sort(ref, axis=1)[:, :k]
    # Returned distances are the true distances of the returned vectors, and those are the k
    # smallest (up to float32 rounding, which may swap near-ties).
    true = np.take_along_axis(ref, idx, 1)
    assert (np.abs(dist - true) <= tol).all(), np.abs(dist - true).max()
    assert (np.abs(true - ref_sorted) <= 2 * tol).all(), np.abs(true - ref_sorted).max()
    assert (np.diff(dist, axis=1) >= 0).all()
    assert (dist >= 0).all()
    for row in idx:
        assert len(set(row.tolist())) == k and row.min() >= 0 and row.max() < bank.shape[0]


@pytest.mark.parametrize("d", [1, 7, 17, 152, 1024, 1536])
@pytest.mark.parametrize("n,m,k", [(1, 5, 1), (45, 13, 45), (300, 25, 1), (300, 25, 9)])
def test_matches_brute_force(isa, d, n, m, k):
    rng = np.random.default_rng(d * 1000 + n)
    bank = rng.standard_normal((n, d), dtype=np.float32)
    queries = rng.standard_normal((m, d), dtype=np.float32)
    index = search.FlatIndex(bank)
    dist, idx = index.search(queries, k)
    check_against_brute(bank, queries, dist, idx, k)
    if d >= 17:  # well separated: the exact neighbours themselves
        np.testing.assert_array_equal(idx[:, 0], np.argmin(brute(bank, queries), axis=1))


def test_multi_chunk_multi_thread_paths(isa):
    # Several L2 chunks and query groups, more threads than chunks at small sizes.
    rng = np.random.default_rng(7)
    bank = rng.standard_normal((2500, 152), dtype=np.float32)
    queries = rng.standard_normal((61, 152), dtype=np.float32)
    index = search.FlatIndex(bank)
    ref = None
    for threads in (1, 2, 3, 8):
        dist, idx = index.search(queries, 4, threads=threads)
        check_against_brute(bank, queries, dist, idx, 4)
        if ref is None:
            ref = (dist, idx)
        np.testing.assert_array_equal(dist, ref[0])
        np.testing.assert_array_equal(idx, ref[1])


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_bit_identical_across_isas(dtype):
    rng = np.random.default_rng(3)
    bank = rng.standard_normal((333, 100), dtype=np.float32)
    queries = rng.standard_normal((29, 100), dtype=np.float32)
    results = []
    try:
        for name in ISAS:
            search.set_isa(name)
            results.append(search.FlatIndex(bank, dtype=dtype).search(queries, 7))
    finally:
        search.set_isa(None)
    for dist, idx in results[1:]:
        np.testing.assert_array_equal(dist, results[0][0])
        np.testing.assert_array_equal(idx, results[0][1])


def test_ties_go_to_lower_index_and_duplicates(isa):
    # Small integers: every product and sum is exact in float32, so ties are exact ties.
    rng = np.random.default_rng(5)
    base = rng.integers(-3, 4, (40, 9)).astype(np.float32)
    bank = np.concatenate([base, base[::-1], base[:10]])  # every row duplicated, some thrice
    queries = np.concatenate([rng.integers(-3, 4, (30, 9)).astype(np.float32), base[:5]])
    ref = brute(bank, queries)
    k = bank.shape[0]
    dist, idx = search.FlatIndex(bank).search(queries, k)
    order = np.array([np.lexsort((np.arange(k), r)) for r in ref])
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(dist, np.take_along_axis(ref, order, 1).astype(np.float32))
    assert (dist[-5:, 0] == 0).all()


def test_k_equals_n_is_a_permutation(isa):
    rng = np.random.default_rng(9)
    bank = rng.standard_normal((70, 17), dtype=np.float32)
    queries = rng.standard_normal((3, 17), dtype=np.float32)
    dist, idx = search.FlatIndex(bank).search(queries, 70)
    for row in idx:
        assert sorted(row.tolist()) == list(range(70))
    check_against_brute(bank, queries, dist, idx, 70)


def test_negative_distances_clamped_to_zero(isa):
    # Large norms: |q|^2 + |x|^2 - 2 q.x cancels badly and can round below zero.
    rng = np.random.default_rng(11)
    bank = (1000 + rng.standard_normal((50, 64))).astype(np.float32)
    dist, idx = search.FlatIndex(bank).search(bank.copy(), 1)
    assert (dist >= 0).all()
    np.testing.assert_array_equal(idx[:, 0], np.arange(50))


def test_properties_and_empty_queries():
    bank = np.ones((5, 3), np.float32)
    index = search.FlatIndex(bank, dtype="float16")
    assert (index.ntotal, index.dim, index.dtype) == (5, 3, "float16")
    assert "FlatIndex" in repr(index)
    dist, idx = index.search(np.zeros((0, 3), np.float32), 2)
    assert dist.shape == idx.shape == (0, 2)


def patchcore_like(n, d, rank, seed, noise=0.1):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d)).astype(np.float32)
    coef = np.abs(rng.standard_normal((n, rank))).astype(np.float32)  # post-ReLU-like
    return (coef @ basis + noise * rng.standard_normal((n, d))).astype(np.float32)


# Measured on this data (x86, 2025): float16 recall 1.0, relative error median 3.5e-5, max 2.3e-4;
# int8 recall 0.998, median 1.0e-3, max 5.1e-3. Bounds leave a margin of about 5x.
@pytest.mark.parametrize(
    "dtype,min_recall,max_rel_err,max_rel_err_worst",
    [("float16", 0.99, 2e-4, 2e-3), ("int8", 0.98, 5e-3, 3e-2)],
)
def test_compact_banks_recall_and_distance_error(dtype, min_recall, max_rel_err, max_rel_err_worst):
    data = patchcore_like(3000, 256, 24, seed=1)
    bank, queries = data[:2500], data[2500:]
    exact_d, exact_i = search.FlatIndex(bank).search(queries, 1)
    index = search.FlatIndex(bank, dtype=dtype)
    d, i = index.search(queries, 1)
    recall = (i[:, 0] == exact_i[:, 0]).mean()
    rel = np.abs(d[:, 0] - exact_d[:, 0]) / exact_d[:, 0]
    assert recall >= min_recall, f"{dtype} recall@1 {recall:.4f}"
    assert np.median(rel) <= max_rel_err, f"{dtype} median relative distance error {np.median(rel):.2e}"
    assert rel.max() <= max_rel_err_worst, f"{dtype} worst relative distance error {rel.max():.2e}"
    assert index.memory_bytes < search.FlatIndex(bank).memory_bytes * (0.55 if dtype == "float16" else 0.3)


GOOD = np.zeros((4, 3), np.float32)


@pytest.mark.parametrize(
    "bank,kwargs,match",
    [
        (GOOD.astype(np.float64), {}, "float32"),
        (np.asfortranarray(np.zeros((4, 3), np.float32)), {}, "C-contiguous"),
        (np.zeros((4, 3, 1), np.float32), {}, "2-D"),
        (np.zeros(4, np.float32), {}, "2-D"),
        (np.zeros((0, 3), np.float32), {}, "at least one"),
        (np.array([[0, np.nan, 0]], np.float32), {}, "NaN"),
        (np.array([[0, np.inf, 0]], np.float32), {}, "inf"),
        (GOOD, {"dtype": "bfloat16"}, "dtype"),
        (GOOD, {"threads": 0}, "threads"),
        (GOOD, {"threads": -2}, "threads"),
        (np.full((2, 2), 1e5, np.float32), {"dtype": "float16"}, "float16 range"),
        ([[0.0, 1.0]], {}, "ndarray"),
    ],
)
def test_bad_bank(bank, kwargs, match):
    with pytest.raises(InvalidInputError, match=match) as e:
        search.FlatIndex(bank, **kwargs)
    assert isinstance(e.value, ValueError) and isinstance(e.value, NpadError)


@pytest.mark.parametrize(
    "queries,k,match",
    [
        (np.zeros((2, 3)), 1, "float32"),
        (np.zeros((2, 4), np.float32), 1, "dim 3"),
        (np.zeros((3, 2), np.float32).T, 1, "C-contiguous"),
        (np.zeros(3, np.float32), 1, "2-D"),
        (np.array([[0, 0, np.nan]], np.float32), 1, "NaN"),
        (np.array([[0, -np.inf, 0]], np.float32), 1, "inf"),
        (np.zeros((2, 3), np.float32), 0, "k must be"),
        (np.zeros((2, 3), np.float32), 5, "k must be"),
        (np.zeros((2, 3), np.float32), 1.0, "k must be an int"),
    ],
)
def test_bad_queries(queries, k, match):
    index = search.FlatIndex(GOOD)
    with pytest.raises(InvalidInputError, match=match):
        index.search(queries, k)


def test_bad_search_threads():
    with pytest.raises(InvalidInputError, match="threads"):
        search.FlatIndex(GOOD).search(GOOD, 1, threads=0)


# ---- numeric edge cases (issue 13) ---------------------------------------------------------

# The largest squared norm accepted: FLT_MAX / 4, so that |q|^2 + |x|^2 and 2 q.x stay finite.
MAX_SQNORM = np.finfo(np.float32).max / 4


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_overflowing_bank_refused(isa, dtype):
    # |x|^2 = 1e40 overflows float32: the epilogue computed fma(-2, inf, inf) = NaN and
    # clamped it to distance 0, so a far-away vector read as an exact match.
    bank = np.array([[1e20, 0.0], [0.0, 0.0]], np.float32)
    with pytest.raises(InvalidInputError, match="squared norm"):
        search.FlatIndex(bank, dtype=dtype)
    # Finite squared norms whose sum overflows: q = x = 1.35e19 gave distance inf instead of 0.
    with pytest.raises(InvalidInputError, match="squared norm"):
        search.FlatIndex(np.array([[1.35e19]], np.float32), dtype=dtype)
    ok = np.array([[np.sqrt(MAX_SQNORM) * 0.999]], np.float32)  # just inside the bound
    dist, idx = search.FlatIndex(ok, dtype="float32").search(ok, 1)
    assert np.isfinite(dist).all() and idx[0, 0] == 0


def test_overflowing_queries_refused(isa):
    index = search.FlatIndex(np.array([[1.0, 0.0], [0.0, 0.0]], np.float32))
    for q in ([[1e20, 0.0]], [[0.0, -1e19]]):
        with pytest.raises(InvalidInputError, match="squared norm"):
            index.search(np.array(q, np.float32), 1)


@pytest.mark.parametrize("compute", ["float32", "int8"])
def test_query_errors_name_the_first_bad_row_when_packing_is_split(compute):
    """Queries are packed on all workers (600 x 128: above the split threshold); the error
    still names the first non-finite row, and non-finite values before squared norms."""
    rng = np.random.default_rng(4)
    index = search.FlatIndex(rng.standard_normal((300, 128)).astype(np.float32), compute=compute)
    q = rng.standard_normal((600, 128)).astype(np.float32)
    q[300, 5] = 1e19  # finite, squared norm beyond FLT_MAX / 4
    bad = q.copy()
    bad[533, 0], bad[517, 3] = np.inf, np.nan
    with pytest.raises(InvalidInputError, match="row 517, column 3 is NaN"):
        index.search(bad, 1, threads=2)
    with pytest.raises(InvalidInputError, match="row 300 has a squared norm"):
        index.search(q, 1, threads=2)
    q[300, 5] = 0
    assert index.search(q, 1, threads=2)[1].shape == (600, 1)


def test_int8_tiny_rows_are_zero_rows():
    # max|x| < ~3.7e-37: 1 / (max|x| / 127) overflows; 0 * inf = NaN clamped to -127 codes.
    x = np.array([[1e-38, 0.0, -2e-38, 0.0], [3e-37, -1e-37, 0.0, 0.0], [0.0] * 4, [2.0, -1.0, 0.5, 0.0]],
                 np.float32)
    codes, scales = _core._quantize_i8(x)
    np.testing.assert_array_equal(codes[:3], 0)
    np.testing.assert_array_equal(scales[:3], 0)
    s = np.float32(2.0) / np.float32(127)
    assert scales[3] == s
    np.testing.assert_array_equal(codes[3], np.clip(np.rint(x[3] * (np.float32(1) / s)), -127, 127))
    index = search.FlatIndex(x, dtype="int8")
    dist, idx = index.search(x, 4)
    assert np.isfinite(dist).all() and (dist >= 0).all()
    assert idx[3, 0] == 3 and set(idx[0, :3].tolist()) == {0, 1, 2}


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGINT") or __import__("os").name == "nt",
                    reason="POSIX signals")
def test_ctrl_c_seen_while_worker_0_waits_for_the_others():
    # The worker pool of FlatIndex.search: worker 0 (the calling thread, the only one that may
    # poll for signals) has run out of work while worker 1 still has 20 s of 1 ms steps. Ctrl-C
    # must stop worker 1 within a few steps, not after its whole share.
    import os
    import signal
    import threading

    done = np.full(2, -1, np.int64)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)   # an earlier import may have replaced it
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _core._poll_probe(2, 20_000, done)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert done[0] == 0 and 0 <= done[1] < 5_000, done


# ---- compact computes (bfloat16 / int8 first pass, exact float32 re-rank) ----------------

def _clustered(rng, n, m, d):
    basis = rng.standard_normal((16, d)).astype(np.float32)
    x = np.abs(rng.standard_normal((n + m, 16))).astype(np.float32) @ basis
    x += 0.1 * rng.standard_normal((n + m, d)).astype(np.float32)
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])


@pytest.mark.parametrize("isa", search.available_isas())
@pytest.mark.parametrize("compute", ["bfloat16", "int8"])
def test_compact_with_rerank_equals_float32_bit_for_bit(isa, compute):
    rng = np.random.default_rng(7)
    bank, q = _clustered(rng, 1500, 61, 37)  # odd dims: padded words; 61 queries: padded blocks
    search.set_isa(isa)
    try:
        ref_d, ref_i = search.FlatIndex(bank).search(q, 3)
        ix = search.FlatIndex(bank, compute=compute, rerank=64)
        d, i = ix.search(q, 3)
        pure_d, pure_i = search.FlatIndex(bank, compute=compute, rerank=0).search(q, 3)
    finally:
        search.set_isa(None)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(d, ref_d)  # re-ranked distances are the float32 path's bits
    assert ix.compute == compute and ix.rerank == 64
    # Pure compact: neighbours of the rounded vectors; mostly the same, distances close, not equal.
    assert (pure_i[:, 0] == ref_i[:, 0]).mean() > 0.8
    assert not np.array_equal(pure_d, ref_d)
    np.testing.assert_allclose(pure_d[:, 0], ref_d[:, 0], rtol=0.1 if compute == "int8" else 0.02, atol=1e-2)


@pytest.mark.parametrize("compute", ["bfloat16", "int8"])
def test_compact_same_result_on_every_isa_and_thread_count(compute):
    rng = np.random.default_rng(8)
    bank, q = _clustered(rng, 3000, 200, 152)
    outs = []
    for isa in search.available_isas():
        search.set_isa(isa)
        try:
            for threads in (1, 2):
                for rr in (0, 8):
                    outs.append((isa, threads, rr, *search.FlatIndex(bank, compute=compute, rerank=rr).search(q, 5, threads=threads)))
        finally:
            search.set_isa(None)
    for rr in (0, 8):
        ref = [o for o in outs if o[2] == rr][0]
        for o in outs:
            if o[2] == rr:
                np.testing.assert_array_equal(o[3], ref[3], err_msg=str(o[:3]))
                np.testing.assert_array_equal(o[4], ref[4], err_msg=str(o[:3]))


@pytest.mark.parametrize("isa", search.available_isas())
@pytest.mark.parametrize("compute", ["bfloat16", "int8"])
def test_compact_scan_ties_and_duplicates(isa, compute):
    """The scan's top-k (64-bit keys, branch-free insertion) orders by (distance, index):
    duplicated bank rows have equal compact distances, so the lower index of each pair ranks
    first, on 1 and 2 threads (two workers' lists merged); with the re-rank, the float32 answer."""
    rng = np.random.default_rng(12)
    base, q = _clustered(rng, 700, 40, 29)
    bank = np.ascontiguousarray(np.concatenate([base, base[::-1][:300], base[:50]]))  # 350 rows 2-3 times
    twin = {j: np.flatnonzero((bank == bank[j]).all(1)) for j in range(len(bank))}  # equal rows
    search.set_isa(isa)
    try:
        ref_d, ref_i = search.FlatIndex(bank).search(q, 6)
        outs = {}
        for threads in (1, 2):
            for rr in (0, 8):
                outs[threads, rr] = search.FlatIndex(bank, compute=compute, rerank=rr).search(q, 6, threads=threads)
    finally:
        search.set_isa(None)
    for (threads, rr), (d, i) in outs.items():
        np.testing.assert_array_equal(d, outs[1, rr][0])
        np.testing.assert_array_equal(i, outs[1, rr][1])
        for dr, ir in zip(d, i):
            keys = list(zip(dr.tolist(), ir.tolist()))
            assert keys == sorted(keys) and len(set(ir.tolist())) == len(ir)
            for t, j in enumerate(ir):  # every lower twin of a returned row ranks before it, at equal distance
                lower = [u for u in twin[int(j)] if u < j]
                assert all(u in ir[:t] for u in lower)
                assert all(dr[list(ir).index(u)] == dr[t] for u in lower)
    np.testing.assert_array_equal(outs[1, 8][0], ref_d)
    np.testing.assert_array_equal(outs[1, 8][1], ref_i)


def test_compact_rerank_larger_than_the_bank_and_k_above_rerank():
    rng = np.random.default_rng(9)
    bank, q = _clustered(rng, 10, 5, 8)
    ref_d, ref_i = search.FlatIndex(bank).search(q, 10)
    d, i = search.FlatIndex(bank, compute="int8", rerank=50).search(q, 10)  # k' capped at ntotal
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(d, ref_d)
    d, i = search.FlatIndex(bank, compute="bfloat16", rerank=2).search(q, 4)  # k > k': keeps k
    assert i.shape == (5, 4) and (i >= 0).all()


def test_compact_refuses_other_storage_and_bad_arguments():
    bank = np.ones((4, 3), np.float32)
    with pytest.raises(InvalidInputError, match="dtype='float32'"):
        search.FlatIndex(bank, dtype="float16", compute="int8")
    with pytest.raises(InvalidInputError, match="compute"):
        search.FlatIndex(bank, compute="fp8")
    with pytest.raises(InvalidInputError, match="rerank"):
        search.FlatIndex(bank, compute="int8", rerank=-1)
    with pytest.raises(InvalidInputError, match="dtype='float32'"):
        _core.FlatIndex(bank, "int8", "bfloat16")
    ix = search.FlatIndex(bank, compute="int8")
    assert ix.rerank == search.DEFAULT_RERANK
    assert "compute='int8'" in repr(ix)
    # memory: float32 rows + int8 words + per-vector scale/sum/norm
    assert ix.memory_bytes > search.FlatIndex(bank).memory_bytes // 2
