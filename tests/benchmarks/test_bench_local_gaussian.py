"""N-pad's second reading (gaussian="knn"): the core's LocalGaussianBank against its numpy
oracle (``methods.npad._knn_mahalanobis``) on the same problem, in one run (reports only, no
timing asserts).

    python -m pytest tests/benchmarks/test_bench_local_gaussian.py -m benchmark --benchmark-json=lg.json

One frame's reduced features (1, 24, 24, 64) float32 against N = 200 nominal images (float16,
as N-pad stores them), radius 1, K = 64, shrinkage 0.3: a small magnetic_tile-like problem
(the real one, 46 x 40 x 686, takes the numpy oracle ~7 s per frame). Synthetic features with a
low-rank structure. Threads NPAD_BENCH_THREADS (default 2) for the core; numpy runs with its
BLAS as configured. extra_info records the largest relative difference to the oracle.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from npad_edge import search
from npad_edge.methods.npad import _knn_mahalanobis

pytestmark = pytest.mark.benchmark

THREADS = int(os.environ.get("NPAD_BENCH_THREADS", "2"))
N, H, W, D, K = 200, 24, 24, 64, 64

_cache: dict = {}


def _problem():
    if not _cache:
        rng = np.random.default_rng(5)
        basis = rng.standard_normal((16, D), dtype=np.float32)
        x = rng.standard_normal((N + 1, H, W, 16), dtype=np.float32) @ basis
        x += 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
        nominal = np.ascontiguousarray(x[:N].astype(np.float16))
        query = np.ascontiguousarray(x[N:])
        _cache.update(nominal=nominal, query=query, bank=search.LocalGaussianBank(nominal, threads=THREADS),
                      ref=_knn_mahalanobis(query, nominal, 1, K, 0.3))
    return _cache


@pytest.mark.parametrize("impl", ["numpy", "core"])
def test_local_gaussians(benchmark, impl):
    p = _problem()
    if impl == "numpy":
        fn = lambda: _knn_mahalanobis(p["query"], p["nominal"], 1, K, 0.3)  # noqa: E731
        rounds = 2
    else:
        fn = lambda: p["bank"].mahalanobis(p["query"], radius=1, k=K, shrinkage=0.3)  # noqa: E731
        rounds = 10
    out = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(impl=impl, threads=THREADS if impl == "core" else None,
                                max_rel_diff=float(np.max(np.abs(out - p["ref"]) / np.abs(p["ref"]))))
    assert out.shape == (1, H, W)
