"""Search and coreset benchmarks against faiss-cpu and numpy in the same run (reports only).

Run (a few minutes):
    python -m pytest tests/benchmarks -m benchmark --benchmark-json=bench.json
    python tools/bench_table.py bench.json

Everything runs at THREADS threads: our core via its threads argument, faiss via
omp_set_num_threads, numpy's BLAS via threadpoolctl.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from npad_edge import _core, search

faiss = pytest.importorskip("faiss")
threadpoolctl = pytest.importorskip("threadpoolctl")

pytestmark = pytest.mark.benchmark

THREADS = int(os.environ.get("NPAD_BENCH_THREADS", "2"))
M = 784  # one 224x224 image at stride 8
DIMS = (152, 1024, 1536)
BANKS = (2_000, 17_000, 60_000)
KS = (1, 9)
IMPLS = ("npad", "faiss", "numpy")
CASES = [(d, n, k, impl) for d in DIMS for n in BANKS for k in KS for impl in IMPLS]


from ._machine import machine_info  # noqa: E402  (re-exported for the other benchmark modules)


_cache: dict = {}


def setup(d, n):
    """One (D, N) problem at a time: banks up to 60k x 1536 are 370 MB each."""
    if _cache.get("key") != (d, n):
        _cache.clear()
        rng = np.random.default_rng(d + n)
        # PatchCore-like: non-negative low-rank part plus noise.
        rank = 32
        basis = rng.standard_normal((rank, d), dtype=np.float32)
        x = np.abs(rng.standard_normal((n + M, rank), dtype=np.float32)) @ basis
        x += 0.1 * rng.standard_normal((n + M, d), dtype=np.float32)
        bank, queries = np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])
        _cache.update(key=(d, n), bank=bank, queries=queries)
    return _cache


def make_search(impl, c):
    bank, queries = c["bank"], c["queries"]
    if impl == "npad":
        if "npad" not in c:
            c["npad"] = search.FlatIndex(bank, threads=THREADS)
        index = c["npad"]
        return lambda k: index.search(queries, k)
    if impl == "faiss":
        if "faiss" not in c:
            c["faiss"] = faiss.IndexFlatL2(bank.shape[1])
            c["faiss"].add(bank)
        index = c["faiss"]
        return lambda k: index.search(queries, k)
    # numpy: one BLAS GEMM for the whole M x N matrix, then argpartition.
    bn = (bank.astype(np.float32) ** 2).sum(1)
    qn = (queries**2).sum(1)

    def run(k):
        dist = queries @ bank.T
        dist *= -2
        dist += bn
        dist += qn[:, None]
        if k == 1:
            idx = dist.argmin(1)[:, None]
        else:
            part = np.argpartition(dist, k - 1, axis=1)[:, :k]
            order = np.argsort(np.take_along_axis(dist, part, 1), axis=1)
            idx = np.take_along_axis(part, order, 1)
        return np.maximum(np.take_along_axis(dist, idx, 1), 0), idx

    return run


@pytest.fixture(autouse=True)
def limit_threads():
    faiss.omp_set_num_threads(THREADS)
    with threadpoolctl.threadpool_limits(THREADS):
        yield


@pytest.mark.parametrize("d,n,k,impl", CASES, ids=[f"D{d}-N{n}-k{k}-{i}" for d, n, k, i in CASES])
def test_search(benchmark, d, n, k, impl):
    c = setup(d, n)
    run = make_search(impl, c)
    benchmark.group = f"search D={d} N={n} k={k}"
    benchmark.extra_info.update(machine_info(), kind="search", impl=impl, M=M, N=n, D=d, k=k,
                                flop=2.0 * M * n * d)
    dist, idx = benchmark.pedantic(run, args=(k,), rounds=3, iterations=1, warmup_rounds=1)
    # Report, but also make sure the three agree (a fast wrong answer is no result).
    if impl != "npad":
        ref_d, ref_i = make_search("npad", c)(k)
        assert (idx[:, 0] == ref_i[:, 0]).mean() > 0.999


# ---- coreset: 10% of 200k x 1024 ------------------------------------------------------

CORESET_N, CORESET_D, PROJ = 200_000, 1024, 128
STEPS = int(os.environ.get("NPAD_BENCH_CORESET_STEPS", "100"))


def coreset_features():
    if _cache.get("key") != "coreset":
        _cache.clear()
        rng = np.random.default_rng(0)
        x = np.empty((CORESET_N, CORESET_D), np.float32)
        for s in range(0, CORESET_N, 20_000):  # in slices: no float64 temporaries
            x[s:s + 20_000] = rng.standard_normal((20_000, CORESET_D), dtype=np.float32)
        _cache.update(key="coreset", x=x)
        _cache["p"] = search.projection_matrix(CORESET_D, PROJ, 0)
        _cache["y"] = _core.project(x, _cache["p"], THREADS)
    return _cache


def numpy_greedy_steps(y, steps, starts, gemv):
    """The reference algorithm in numpy (float32). gemv=True uses PatchCore's formulation
    (|a|^2 + |b|^2 - 2 a.b through BLAS), the faster of the two."""
    yn = (y * y).sum(1) if gemv else None

    def dist(i):
        if gemv:
            return np.sqrt(np.maximum(yn - 2 * (y @ y[i]) + yn[i], 0))
        return np.linalg.norm(y - y[i], axis=1)

    score = np.mean([dist(s) for s in starts], axis=0)
    out = []
    for _ in range(steps):
        sel = int(np.argmax(score))
        out.append(sel)
        score[sel] = -np.inf
        np.minimum(score, dist(sel), out=score)
    return out


CORESET_IMPLS = ("npad", "npad-f16", "npad-int8", "numpy-gemv", "numpy-norm")
CORESET_STORAGE = {"npad": "float32", "npad-f16": "float16", "npad-int8": "int8"}


@pytest.mark.parametrize("impl", CORESET_IMPLS)
def test_coreset_greedy_steps(benchmark, impl):
    """STEPS greedy steps (plus the start-point scores) on the projected 200k x 128 features.
    The full 10% selection is 20,000 steps: extrapolate linearly (each step is the same work)."""
    c = coreset_features()
    y = c["y"]
    starts = search.coreset_start_indices(CORESET_N, 10, 0)
    benchmark.group = f"coreset {STEPS} steps N={CORESET_N} proj={PROJ}"
    benchmark.extra_info.update(machine_info(), kind="coreset_steps", impl=impl, N=CORESET_N, D=PROJ,
                                steps=STEPS, flop=3.0 * CORESET_N * PROJ * (STEPS + 10))
    if impl.startswith("npad"):
        storage = CORESET_STORAGE[impl]
        benchmark.extra_info["storage"] = storage
        got = benchmark.pedantic(lambda: search.greedy_coreset(y, STEPS, proj_dim=None, threads=THREADS,
                                                               storage=storage),
                                 rounds=3, iterations=1, warmup_rounds=1)
    else:
        got = benchmark.pedantic(numpy_greedy_steps, args=(y, STEPS, starts, impl == "numpy-gemv"),
                                 rounds=1, iterations=1)
    c.setdefault("results", {})[impl] = list(got)
    if "npad" in c["results"] and impl not in CORESET_STORAGE:
        # float32 vs float32-with-BLAS rounding may flip a late near-tie; the start must agree.
        assert c["results"][impl][:20] == c["results"]["npad"][:20]


@pytest.mark.parametrize("impl", ("npad", "numpy"))
def test_coreset_projection(benchmark, impl):
    """The random projection 200k x 1024 -> 128 (one GEMM), done once per selection."""
    c = coreset_features()
    x, p = c["x"], c["p"]
    benchmark.group = f"coreset projection {CORESET_N}x{CORESET_D}->{PROJ}"
    benchmark.extra_info.update(machine_info(), kind="projection", impl=impl, N=CORESET_N, D=CORESET_D,
                                flop=2.0 * CORESET_N * CORESET_D * PROJ)
    fn = (lambda: _core.project(x, p, THREADS)) if impl == "npad" else (lambda: x @ p)
    benchmark.pedantic(fn, rounds=2, iterations=1, warmup_rounds=0)
