#!/usr/bin/env python
"""Turn pytest-benchmark JSON from tests/benchmarks (search, compact, coreset, coreset on real
features) into markdown tables.

    python tools/bench_table.py bench.json [--ghz 2.6] [--flop-per-cycle 32]

Each time is the median over rounds. GFLOP/s counts 2 FLOP per multiply-add of the distance
GEMM (search: 2*M*N*D; projection: 2*N*D*P) or 3*N*P per greedy step (subtract, multiply,
add). The FMA peak is  cores x GHz x FLOP/cycle/core  where
  cores  = the benchmark's thread count,
  GHz    = the "cpu MHz" /proc/cpuinfo reported during the run (nominal, not turbo: a figure
           above 100% means the core ran faster than reported) unless --ghz is given,
  FLOP/cycle/core from the instruction set the core ran: 2 FMA pipes x 8 float lanes x 2 for
           avx2; for avx512 64 on Intel (two 512-bit FMA pipes) but 32 on AMD Zen 4, which
           splits each 512-bit FMA over its two 256-bit pipes; neon 2 x 4 x 2 = 16 (override
           with --flop-per-cycle).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict


def flop_per_cycle(isa: str, vendor: str) -> int:
    if isa.startswith("avx512"):  # avx512, avx512_vnni, avx512_bf16: the same float32 FMA units
        return 32 if "AMD" in (vendor or "") else 64
    return {"avx2": 32, "neon": 16, "scalar": 2}.get(isa, 2)


def first_isa(group):
    """The first (best) instruction set in a compact run: faiss's row is set against its float32."""
    for b in group:
        isa = b["extra_info"].get("run_isa")
        if isa not in (None, "faiss"):
            return isa
    return None


def load(paths):
    benches = []
    for p in paths:
        with open(p) as f:
            benches += json.load(f)["benchmarks"]
    return benches


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+")
    ap.add_argument("--ghz", type=float, default=None)
    ap.add_argument("--flop-per-cycle", type=int, default=None)
    a = ap.parse_args(argv)
    benches = load(a.json)
    if not benches:
        print("no benchmarks in input", file=sys.stderr)
        return 1
    info = benches[0]["extra_info"]
    ghz = a.ghz or (info.get("cpu_mhz") or 0) / 1000 or None
    fpc = a.flop_per_cycle or flop_per_cycle(info.get("isa", ""), info.get("vendor", ""))
    threads = info.get("threads", 1)
    peak = threads * ghz * fpc if ghz else None
    out = []
    out.append(f"Machine: {info.get('vendor')} ({info.get('cpus')} CPUs), isa={info.get('isa')}, "
               f"{threads} threads; FMA peak = {threads} x {ghz:.2f} GHz x {fpc} FLOP/cycle = "
               f"{peak:.0f} GFLOP/s" if peak else "FMA peak unknown (no clock)")
    out.append("")

    def med(b):
        return statistics.median(b["stats"]["data"])

    def fmt(b):
        t = med(b)
        gf = b["extra_info"]["flop"] / t / 1e9
        pct = f"{100 * gf / peak:.0f}%" if peak else "-"
        return t, gf, pct

    # Search: one row per (D, N, k), columns per implementation.
    rows = defaultdict(dict)
    for b in benches:
        e = b["extra_info"]
        if e.get("kind") == "search":
            rows[(e["D"], e["N"], e["k"])][e["impl"]] = b
    if rows:
        out.append("| D | N | k | npad ms | GFLOP/s | % peak | faiss ms | GFLOP/s | % peak | numpy ms | GFLOP/s | % peak | npad vs faiss | npad vs numpy |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for (d, n, k) in sorted(rows):
            r = rows[(d, n, k)]
            cells = [str(d), str(n), str(k)]
            for impl in ("npad", "faiss", "numpy"):
                if impl in r:
                    t, gf, pct = fmt(r[impl])
                    cells += [f"{t * 1e3:.1f}", f"{gf:.1f}", pct]
                else:
                    cells += ["-", "-", "-"]
            for other in ("faiss", "numpy"):
                cells.append(f"{med(r[other]) / med(r['npad']):.2f}x" if other in r and "npad" in r else "-")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")

    # Compact search (tests/benchmarks/test_bench_compact.py): one table per shape, each row
    # against the float32 search of the same ISA table and against faiss, from the same run.
    shapes = defaultdict(list)
    for b in benches:
        e = b["extra_info"]
        if e.get("kind") == "compact":
            shapes[(e.get("M"), e.get("N"), e.get("D"), e.get("k"))].append(b)
    for (m, n, d, k), group in shapes.items():
        by_impl = {b["extra_info"]["impl"]: b for b in group}
        faiss_b = by_impl.get("faiss")
        out.append(f"Compact search M={m} N={n} D={d} k={k}, median of {len(group[0]['stats']['data'])} rounds:")
        out.append("")
        out.append("| ISA / compute | ms | vs float32 (same ISA table) | vs faiss | top-1 = fp32 |")
        out.append("| --- | ---: | ---: | ---: | ---: |")
        for b in sorted(group, key=med):
            e = b["extra_info"]
            t = med(b)
            if e["impl"] == "faiss":
                label, f32 = "faiss-cpu IndexFlatL2", by_impl.get(f"{first_isa(group)}-float32-rr0")
            else:
                isa = e["run_isa"]
                label = f"{isa}, {e['compute']}" + ("" if e["compute"] == "float32" else f", k'={e['rerank']}")
                f32 = by_impl.get(f"{isa}-float32-rr0")
            vs32 = f"{med(f32) / t:.2f}x" if f32 else "-"
            vsf = f"{med(faiss_b) / t:.2f}x" if faiss_b else "-"
            top1 = e.get("top1_agreement")
            top1 = "-" if top1 is None else f"{100 * top1:.2f} %"
            if e.get("rerank") and top1 == "100.00 %":
                top1 += " (bit-identical)"
            out.append(f"| {label} | {t * 1e3:.1f} | {vs32} | {vsf} | {top1} |")
        out.append("")

    # Coreset parts: one row per implementation.
    for kind, title in (("coreset_steps", "Greedy coreset steps"), ("projection", "Coreset random projection")):
        group = [b for b in benches if b["extra_info"].get("kind") == kind]
        if not group:
            continue
        ref = next((b for b in group if b["extra_info"]["impl"] == "npad"), None)
        e0 = group[0]["extra_info"]
        extra = f", {e0['steps']} steps" if "steps" in e0 else ""
        out.append(f"{title} (N={e0['N']}, D={e0['D']}{extra}):")
        out.append("")
        # Steps: also each implementation's speed-up over numpy-gemv (PatchCore's formulation).
        gemv = next((b for b in group if b["extra_info"]["impl"] == "numpy-gemv"), None)
        gemv_col = kind == "coreset_steps" and gemv is not None
        out.append("| impl | time s | per step ms | GFLOP/s | % peak | npad speed-up |"
                   + (" speed-up vs numpy-gemv |" if gemv_col else ""))
        out.append("|---|---|---|---|---|---|" + ("---|" if gemv_col else ""))
        for b in group:
            t, gf, pct = fmt(b)
            steps = b["extra_info"].get("steps")
            per = f"{t / steps * 1e3:.2f}" if steps else "-"
            sp = f"{t / med(ref):.2f}x" if ref else "-"
            vs = f" {med(gemv) / t:.2f}x |" if gemv_col else ""
            out.append(f"| {b['extra_info']['impl']} | {t:.3f} | {per} | {gf:.1f} | {pct} | {sp} |{vs}")
        out.append("")

    # Coreset on real features (tests/benchmarks/test_bench_coreset_real.py): one table per
    # category, every row against numpy-gemv and against the exact numpy reference on its rows.
    cats = defaultdict(list)
    for b in benches:
        if b["extra_info"].get("kind") == "coreset_real":
            cats[b["extra_info"]["category"]].append(b)
    for cat, group in cats.items():
        by_impl = {b["extra_info"]["impl"]: b for b in group}
        e0 = group[0]["extra_info"]
        pool = (f"pool {e0['pool_rows']} rows ({e0['take_per_image']} per image), " if e0.get("pool_rows") else "")
        out.append(f"Coreset on real features, {cat}: {e0['images']} images, {e0['N']} x {e0['D']} "
                   f"(input {e0['input_size'][0]}x{e0['input_size'][1]}, resize {e0.get('resize_on', 'graph')}), {pool}{e0['n_select']} selected, "
                   f"proj {e0['proj_dim']}, {e0['threads']} threads, median of the rounds:")
        out.append("")
        out.append("| impl | storage | rounds | total s | min-max s | pool stage s | final stage s | speed-up vs numpy-gemv "
                   "| final stage vs numpy-gemv | vs numpy-exact (same rows) "
                   "| rows computed, final stage: all / first 1/8 / last 1/8 | same indices | load avg |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        gemv = by_impl.get("numpy-gemv")
        for b in group:
            e = b["extra_info"]
            t = med(b)
            exact = by_impl.get("numpy-exact-f16" if e["storage"] == "float16" else "numpy-exact")
            vs_gemv = f"{med(gemv) / t:.2f}x" if gemv else "-"
            vs_exact = f"{med(exact) / t:.2f}x" if exact else "-"
            fin_gemv = f"{gemv['extra_info']['final_s'] / e['final_s']:.2f}x" if gemv else "-"
            if "rows_computed_all" in e:
                rc = " / ".join(f"{100 * e[k]:.2f}%" for k in ("rows_computed_all", "rows_computed_first8",
                                                                "rows_computed_last8"))
            else:
                rc = "- (no pruning)"
            if e["impl"].startswith("npad"):
                ex = (exact or {}).get("extra_info", {}).get("same_indices_as_npad")
                same = "-" if ex is None else ("= numpy-exact" if ex else "differs from numpy-exact")
            elif e.get("same_indices_as_npad") is None:
                same = "-"
            elif e["same_indices_as_npad"]:
                same = "= npad"
            else:
                same = f"differs from npad from step {e['first_difference_step']}"
                if e.get("same_pool_as_npad") is not None:
                    same += " (same pool)" if e["same_pool_as_npad"] else " (pool differs)"
            data = b["stats"]["data"]
            out.append(f"| {e['impl']} | {e['storage']} | {len(data)} | {t:.2f} | {min(data):.2f}-{max(data):.2f} "
                       f"| {e['pool_s']:.2f} "
                       f"| {e['final_s']:.2f} | {vs_gemv} | {fin_gemv} | {vs_exact} | {rc} | {same} "
                       f"| {e['loadavg_1min']:.1f} |" if "loadavg_1min" in e else " | - |")
        out.append("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
