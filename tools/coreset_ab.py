"""The final greedy stage of PatchCore's default coreset with the subspace bound off and on,
interleaved in one run, on the real-feature pool of tests/benchmarks/test_bench_coreset_real.py.

    python tools/coreset_ab.py --category magnetic_tile --threads 1 2 --rounds 3

Builds the pool as PatchCore._pool does from the benchmark's cached features (run the
benchmark module once first: it extracts and caches them), then times
``greedy_coreset(pool, n_select, storage=...)`` with ``bound="off"`` and ``"on"`` alternately,
and checks that both select the same indices. Prints median seconds, the ratio and the share
of rows whose full distance was computed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npad_edge import search  # noqa: E402
from npad_edge.methods.base import to_rows  # noqa: E402
from npad_edge.methods.patchcore import PatchCore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--category", default="magnetic_tile")
    ap.add_argument("--cache", default=os.environ.get("NPAD_BENCH_CORESET_CACHE", "/tmp/npad_bench_coreset_real"))
    ap.add_argument("--resize-on", default="core")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--storage", default="float16")
    a = ap.parse_args()
    d = Path(a.cache) / f"{a.category}_{a.images}img_{a.resize_on}"
    if not (d / "features.npy").exists():
        print(f"no cached features at {d}: run tests/benchmarks/test_bench_coreset_real.py once", file=sys.stderr)
        return 2
    feats = np.load(d / "features.npy")
    meta = json.loads((d / "meta.json").read_text())
    rows = to_rows(feats)
    pc = PatchCore()
    s = pc.settings
    n_select, n_pool = pc.bank_plan(feats.shape[0], feats.shape[2:])
    greedy = dict(proj_dim=s["coreset_proj_dim"], n_starts=s["coreset_starts"], seed=0, storage=a.storage)
    pool = rows if n_pool is None else PatchCore._pool(rows, feats.shape[0], n_pool, greedy, None)
    print(f"{a.category}: {meta['shape']} features, input {meta['input_size']}, pool {pool.shape}, "
          f"{n_select} selected, storage {a.storage}, isa {search.isa()}, load {os.getloadavg()[0]:.1f}")
    for t in a.threads:
        times = {"off": [], "on": []}
        res = {}
        for _ in range(a.rounds):
            for mode in ("off", "on"):
                t0 = time.perf_counter()
                idx, info = search.greedy_coreset(pool, n_select, threads=t, bound=mode, return_info=True, **greedy)
                times[mode].append(time.perf_counter() - t0)
                res[mode] = (idx, info)
        same = np.array_equal(res["off"][0], res["on"][0])
        share = {m: 100 * float(np.mean(res[m][1]["rows_computed"][:-1])) / pool.shape[0] for m in res}
        off, on = float(np.median(times["off"])), float(np.median(times["on"]))
        print(f"threads {t}: bound off {off:.3f} s, on {on:.3f} s ({off / on:.2f}x); rows computed "
              f"{share['off']:.2f}% -> {share['on']:.2f}%; same indices: {same}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
