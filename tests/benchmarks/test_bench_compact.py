"""Compact search (bfloat16 / int8 first pass + exact float32 re-rank) against the float32
path and faiss-cpu IndexFlatL2, in one run, per instruction set available here (reports only).

    python -m pytest tests/benchmarks/test_bench_compact.py -m benchmark --benchmark-json=compact.json
    python tools/bench_table.py compact.json

Problems, k = 1, PatchCore-like synthetic features (non-negative low-rank plus noise; the
real-feature top-1 agreement per k' is tools/compact_rerank.py):
- 1024 queries x 19,000 x 152: the PatchCore bank size of issue 10;
- 1600 queries x 10,000 x 176: PatchCore's default bank (10,000 vectors of EfficientNet-Lite0
  taps stage2+3+5, D = 176) and one 320 x 320 image (40 x 40 patches).
extra_info carries the multiply-adds of the scan, so the table can state the achieved rate per
core and cycle against the ISA's nominal peak.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from npad_edge import search

from .test_bench_search import machine_info

faiss = pytest.importorskip("faiss")
threadpoolctl = pytest.importorskip("threadpoolctl")

pytestmark = pytest.mark.benchmark

THREADS = int(os.environ.get("NPAD_BENCH_THREADS", "2"))
K = 1
# (M queries, N bank vectors, D, data seed)
SHAPES = [(1024, 19_000, 152, 19), (1600, 10_000, 176, 23)]

# (name, isa, compute, rerank); scalar is left out (minutes per round). k' = 4 is the smallest
# re-rank depth that gave zero top-1 differences on real features (docs/search.md), 8 the default.
ISAS = [i for i in search.available_isas() if i != "scalar"]
RERANKS = (0, 4, search.DEFAULT_RERANK)
CASES = [("faiss", None, None, None)] + [
    (f"{isa}-{c}-rr{r}", isa, c, r)
    for isa in ISAS
    for c, rs in (("float32", (0,)), ("bfloat16", RERANKS), ("int8", RERANKS))
    for r in rs
]

_cache: dict = {}


def problem(shape):
    """Data and float32 reference per shape, computed once (both shapes together ~30 MB)."""
    if shape not in _cache:
        m, n, d, seed = shape
        rng = np.random.default_rng(seed)
        basis = rng.standard_normal((32, d), dtype=np.float32)
        x = np.abs(rng.standard_normal((n + m, 32), dtype=np.float32)) @ basis
        x += 0.1 * rng.standard_normal((n + m, d), dtype=np.float32)
        bank, q = np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])
        ref = search.FlatIndex(bank, threads=THREADS).search(q, K)
        _cache[shape] = (bank, q, ref)
    return _cache[shape]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"M{s[0]}-N{s[1]}-D{s[2]}" for s in SHAPES])
@pytest.mark.parametrize("name,isa,compute,rerank", CASES, ids=[c[0] for c in CASES])
def test_compact_search(benchmark, shape, name, isa, compute, rerank):
    m, n, d, _ = shape
    bank, q, (ref_d, ref_i) = problem(shape)
    faiss.omp_set_num_threads(THREADS)
    with threadpoolctl.threadpool_limits(THREADS):
        if isa is None:
            index = faiss.IndexFlatL2(d)
            index.add(bank)
            run = lambda: index.search(q, K)  # noqa: E731
        else:
            search.set_isa(isa)
            index = search.FlatIndex(bank, compute=compute, rerank=rerank, threads=THREADS)
            run = lambda: index.search(q, K)  # noqa: E731
        try:
            benchmark.group = f"compact search M={m} N={n} D={d} k={K}"
            word = {"float32": 1, "bfloat16": 2, "int8": 4}.get(compute or "float32")
            benchmark.extra_info.update(machine_info(), kind="compact", impl=name, compute=compute or "faiss",
                                        rerank=rerank, M=m, N=n, D=d, k=K, flop=2.0 * m * n * d,
                                        macs=float(m) * n * d, values_per_lane=word,
                                        run_isa=isa or "faiss")
            dist, idx = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
        finally:
            search.set_isa(None)
    top1 = float((idx[:, 0] == ref_i[:, 0]).mean())
    benchmark.extra_info["top1_agreement"] = top1
    if rerank:
        # After the re-rank the answer is the float32 path's (a fast wrong answer is no result).
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(dist, ref_d)
    else:
        assert top1 > 0.9
