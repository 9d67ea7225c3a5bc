#!/usr/bin/env python
"""Fit and evaluate both methods on every real category, end to end, with the product defaults.

For each category found under ``--data`` (default ``../shared/data``: every folder with
``train/good``) and each method: ``npad_edge.pipeline.fit_model`` (real images -> model
directory, 10 % of the good training images held out for the threshold) then
``npad_edge.evaluation.evaluate_model`` (decode -> predict -> metrics), optionally after
``--export fp32|int8`` (the deployed OpenVINO Detector). Prints one markdown table with image
AUROC with its 95 % DeLong interval, pixel AUROC, PRO (%), fit seconds, fit peak RSS, ms per image, bank size and input
size, and the mean over categories per method.

    python tools/eval_suite.py --out /tmp/suite.md --json /tmp/suite.jsonl
    python tools/eval_suite.py --methods npad --set npad:radius=2 --image-size 320
    python tools/eval_suite.py --exposure off        # the models before the exposure gain

``--set METHOD:k=v,k=v`` overrides method settings (for lever runs); ``--image-size`` is the
short side (or HxW) as on the CLI. Each fit runs in this process, one after the other; fit peak
RSS is therefore the process's running maximum (read it per row in run order).

A category without masks has no pixel metrics ("-" in the table; the mean of a metric is over
the categories that have it, and says over how many). A category whose fit or evaluation fails
gets a row with the one-line reason and the suite goes on with the others; the exit status is
then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def categories(root: Path) -> list[Path]:
    return sorted({p.parent.parent for p in root.glob("**/train/good")}, key=lambda p: p.name)


def parse_sets(items) -> dict:
    out: dict = {}
    for it in items:
        meth, _, kv = it.partition(":")
        d = out.setdefault(meth, {})
        for part in filter(None, kv.split(",")):
            k, _, v = part.partition("=")
            try:
                d[k.strip()] = json.loads(v)
            except json.JSONDecodeError:
                d[k.strip()] = None if v.strip().lower() == "none" else v.strip()
    return out


def pct(v) -> str:
    """A metric in % with two decimals, "-" when undefined (no masks, a single class)."""
    return "-" if v is None else f"{100 * v:.2f}"


def num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def result_line(row: dict) -> str:
    if row.get("error"):
        return f"| {row['category']} | {row['method']} | - | failed: {row['error']} | | | | | | | | |"
    ci = row.get("image_auroc_ci95")
    ci = "-" if not ci else f"{pct(ci[0])}-{pct(ci[1])}"
    return (f"| {row['category']} | {row['method']} | {row['hw']} | {pct(row['image_auroc'])} | {ci} | "
            f"{pct(row['pixel_auroc'])} | {pct(row['pro'])} | {num(row['fit_s'], '.0f')} | "
            f"{num(row['rss_mb'], '.0f')} | {num(row['ms'], '.1f')} | {row['bank']} | {row['eval_resolution']} |")


def mean_line(method: str, rows: list[dict]) -> str:
    """Per metric, the mean over the rows that have it, with the count when some lack it."""
    ok = [r for r in rows if not r.get("error")]
    cells = []
    for k in ("image_auroc", "pixel_auroc", "pro"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        cell = pct(float(np.mean(vals))) if vals else "-"
        if vals and len(vals) < len(rows):
            cell += f" ({len(vals)} of {len(rows)})"
        cells.append(cell)
    return f"| **mean** ({len(rows)} categories) | {method} | | {cells[0]} | | {cells[1]} | {cells[2]} | | | | | |"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--methods", default="patchcore,npad")
    ap.add_argument("--image-size", default=None, help="short side N or HxW (default: the library default)")
    ap.add_argument("--taps", default=None)
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--exposure", default=None, choices=[None, "gain", "off"], help="default: the library default (gain)")
    ap.add_argument("--resize-on", default=None, choices=[None, "graph", "core", "host"],
                    help="where the input resize runs (default: the library default)")
    ap.add_argument("--set", action="append", default=[], help="METHOD:k=v,k=v settings override")
    ap.add_argument("--export", default=None, choices=[None, "fp32", "int8"], help="evaluate the exported model")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("TORCH_HOME", str(REPO.parent / "shared" / "weights" / "torch_hub"))

    from npad_edge import artifact
    from npad_edge.evaluation import evaluate_model
    from npad_edge.pipeline import fit_model

    sets = parse_sets(args.set)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="npad_suite_"))
    head = ("| category | method | input HxW | img AUROC | img 95% CI | pix AUROC | PRO | fit s | fit peak RSS MB | "
            "ms / image | bank / state | eval at |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    print(head, flush=True)
    results: dict[str, list[dict]] = {}
    failed = 0
    for cat in categories(args.data) if (args.data / "train").exists() is False else [args.data]:
        for method in args.methods.split(","):
            try:
                row = run_one(cat, method, args, sets, work, fit_model, evaluate_model, artifact)
            except Exception as e:  # one category's failure must not cost the others' rows
                failed += 1
                row = {"category": cat.name, "method": method, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
            results.setdefault(method, []).append(row)
            line = result_line(row)
            lines.append(line)
            print(line, flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row, default=str) + "\n")
    for method, rows in results.items():
        line = mean_line(method, rows)
        lines.append(line)
        print(line, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


def run_one(cat: Path, method: str, args, sets: dict, work: Path, fit_model, evaluate_model, artifact) -> dict:
    """Fit (and export) one method on one category and evaluate it -> the row of the table."""
    kw: dict = dict(method=method, seed=args.seed, overwrite=True, progress=True,
                    method_settings=sets.get(method) or None)
    if args.image_size:
        from npad_edge.data.geometry import parse_image_size
        kw["image_size"] = parse_image_size(args.image_size)
    if args.taps:
        kw["taps"] = args.taps.split(",")
    if args.backbone:
        kw["backbone"] = args.backbone
    if args.exposure:
        kw["exposure"] = args.exposure
    if args.resize_on:
        kw["resize_on"] = args.resize_on
    out = work / f"{cat.name}_{method}"
    path = fit_model(cat, out, **kw)
    if args.export:
        from npad_edge.export import export_model
        exp = work / f"{cat.name}_{method}_{args.export}"
        ekw = {"precision": args.export, "overwrite": True}
        if args.export == "int8":
            ekw["calib"] = cat / "train" / "good"
        path = export_model(path, exp, **ekw)
    man = artifact.read_manifest(path)
    res = evaluate_model(path, cat, progress=True)
    m = res.metrics
    fs = man.extra.get("fit_seconds", {})
    bank = man.extra.get("bank_size") or f"{man.extra.get('state_bytes', 0) / 2**20:.1f} MB"
    hw = "x".join(str(v) for v in man.preprocess.image_size)
    row = {"category": cat.name, "method": method, "hw": hw, "image_auroc": m["image_auroc"],
           "image_auroc_ci95": m.get("image_auroc_ci95"),
           "pixel_auroc": m["pixel_auroc"], "pro": m["pro"], "fit_s": fs.get("total"),
           "rss_mb": man.extra.get("peak_memory_mb", {}).get("rss"), "ms": res.timings["median_ms"],
           "bank": bank, "eval_resolution": m.get("eval_resolution"), "settings": man.method.settings,
           "export": args.export}
    return row


if __name__ == "__main__":
    sys.exit(main())
