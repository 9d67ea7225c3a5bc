"""PatchCore scoring with the float32 search against the compact searches (``search_compute``),
in one run (reports only, no timing asserts).

    python -m pytest tests/benchmarks/test_bench_patchcore_search.py -m benchmark --benchmark-json=pc.json
    python tests/benchmarks/test_bench_patchcore_search.py pc.json     # markdown summary

``PatchCore.score`` on one image's features, (1, 176, 40, 40) float32 (1,600 patches, one
320 x 320 frame at the default taps), against a bank of 10,000 x 176 (the default
``coreset_max``): PatchCore-like synthetic features (non-negative low-rank part plus noise).
The same bank and the same image for every configuration; search threads NPAD_BENCH_THREADS
(default 2). extra_info records how many patch scores differ from the float32 ones (0 when
every true nearest is among the k' candidates). Real-feature metrics and timings:
tools/compact_patchcore.py (docs/search.md).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from npad_edge import search

pytestmark = pytest.mark.benchmark

THREADS = int(os.environ.get("NPAD_BENCH_THREADS", "2"))
N_BANK, D, H, W = 10_000, 176, 40, 40
CONFIGS = [("float32", 0), ("int8", 4), ("int8", search.DEFAULT_RERANK), ("bfloat16", search.DEFAULT_RERANK)]

_cache: dict = {}


def _problem():
    if not _cache:
        rng = np.random.default_rng(29)
        basis = rng.standard_normal((32, D), dtype=np.float32)
        x = np.abs(rng.standard_normal((N_BANK + H * W, 32), dtype=np.float32)) @ basis
        x += 0.1 * rng.standard_normal(x.shape, dtype=np.float32)
        bank = np.ascontiguousarray(x[:N_BANK])
        image = np.ascontiguousarray(x[N_BANK:].reshape(1, H, W, D).transpose(0, 3, 1, 2))
        _cache.update(bank=bank, image=image)
    return _cache


def _method(compute: str, rerank: int):
    from npad_edge.methods import PatchCore

    p = _problem()
    settings = {"search_compute": compute}
    if rerank:
        settings["search_rerank"] = rerank
    m = PatchCore.from_state(settings, {"bank": p["bank"], "_meta": np.array([D, H, W], dtype=np.int64)})
    for index in (m._index, m._exact):
        if index is not None:
            index._threads = THREADS   # what Detector(threads=...) does
    return m


@pytest.mark.parametrize("compute,rerank", CONFIGS, ids=[f"{c}-rr{r}" for c, r in CONFIGS])
def test_patchcore_score(benchmark, compute, rerank):
    p = _problem()
    m = _method(compute, rerank)
    ref = _cache.setdefault("ref", _method("float32", 0).score(p["image"])[0])
    patch, _ = m.score(p["image"])
    benchmark.group = f"PatchCore.score, 1 image ({H * W} patches) x bank {N_BANK} x {D}, {THREADS} threads"
    benchmark.extra_info.update(compute=compute, rerank=rerank, threads=THREADS, isa=search.isa(),
                                patch_scores_differ=int((patch != ref).sum()), patches=H * W)
    benchmark.pedantic(lambda: m.score(p["image"]), rounds=20, iterations=1, warmup_rounds=2)


def summarize(path: str) -> str:
    """Markdown table: median ms per configuration and the ratio to float32 of the same run."""
    import json
    import statistics

    benches = json.load(open(path))["benchmarks"]
    rows = [(b["extra_info"], 1e3 * statistics.median(b["stats"]["data"])) for b in benches
            if b["name"].startswith("test_patchcore_score")]
    f32 = next((ms for e, ms in rows if e["compute"] == "float32"), None)
    out = ["| search_compute | k' | ms / image | vs float32 | patch scores differing from float32 |",
           "|---|---|---|---|---|"]
    for e, ms in rows:
        out.append(f"| {e['compute']} | {e['rerank'] or '-'} | {ms:.1f} | {f32 / ms:.2f}x | "
                   f"{e['patch_scores_differ']} / {e['patches']} |")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    print(summarize(sys.argv[1]))
