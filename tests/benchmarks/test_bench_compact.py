"""Compact search (bfloat16 / int8 first pass + exact float32 re-rank) against the float32
path and faiss-cpu IndexFlatL2, in one run, per instruction set available here (reports only).

    python -m pytest tests/benchmarks/test_bench_compact.py -m benchmark --benchmark-json=compact.json
    python tools/bench_table.py compact.json

Problem: 1024 queries x 19,000 x 152 (the PatchCore bank size of issue 10), k = 1, PatchCore-
like synthetic features (non-negative low-rank plus noise; the real-feature top-1 agreement
per k' is tools/compact_rerank.py). extra_info carries the multiply-adds of the scan, so
the table can state the achieved rate per core and cycle against the ISA's nominal peak.
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
M, N, D, K = 1024, 19_000, 152, 1

# (name, isa, compute, rerank); scalar is left out (minutes per round).
ISAS = [i for i in search.available_isas() if i != "scalar"]
CASES = [("faiss", None, None, None)] + [
    (f"{isa}-{c}-rr{r}", isa, c, r)
    for isa in ISAS
    for c, rs in (("float32", (0,)), ("bfloat16", (0, search.DEFAULT_RERANK)), ("int8", (0, search.DEFAULT_RERANK)))
    for r in rs
]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(19)
    basis = rng.standard_normal((32, D), dtype=np.float32)
    x = np.abs(rng.standard_normal((N + M, 32), dtype=np.float32)) @ basis
    x += 0.1 * rng.standard_normal((N + M, D), dtype=np.float32)
    bank, q = np.ascontiguousarray(x[:N]), np.ascontiguousarray(x[N:])
    ref = search.FlatIndex(bank, threads=THREADS).search(q, K)
    return bank, q, ref


@pytest.mark.parametrize("name,isa,compute,rerank", CASES, ids=[c[0] for c in CASES])
def test_compact_search(benchmark, problem, name, isa, compute, rerank):
    bank, q, (ref_d, ref_i) = problem
    faiss.omp_set_num_threads(THREADS)
    with threadpoolctl.threadpool_limits(THREADS):
        if isa is None:
            index = faiss.IndexFlatL2(D)
            index.add(bank)
            run = lambda: index.search(q, K)  # noqa: E731
        else:
            search.set_isa(isa)
            index = search.FlatIndex(bank, compute=compute, rerank=rerank, threads=THREADS)
            run = lambda: index.search(q, K)  # noqa: E731
        try:
            benchmark.group = f"compact search M={M} N={N} D={D} k={K}"
            word = {"float32": 1, "bfloat16": 2, "int8": 4}.get(compute or "float32")
            benchmark.extra_info.update(machine_info(), kind="compact", impl=name, compute=compute or "faiss",
                                        rerank=rerank, flop=2.0 * M * N * D, macs=float(M) * N * D,
                                        values_per_lane=word)
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
