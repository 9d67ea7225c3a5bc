#!/usr/bin/env python
"""Is one image AUROC really above another? DeLong's paired test on two study rows.

Reads JSON lines written by ``tools/study.py --json`` (each row holds its per-image scores and
labels). Row ``A`` and row ``B`` are chosen by file and, where a file holds several rows, by
``--a-config`` / ``--b-config`` (the row's ``--config`` text) and by category; the two rows
must score the same test images in the same order (same category). Prints both AUROCs with
their 95 % intervals, the difference with its standard error and the two-sided p-value of "no
difference" (``npad_edge.metrics.compare_auroc``):

    python tools/study.py --data ../shared/data/magnetic_tile --size 352x320 ... --json a.jsonl
    python tools/study.py --data ../shared/data/magnetic_tile --size 368x320 ... --json b.jsonl
    python tools/auroc_compare.py a.jsonl b.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pick(path: Path, config: str | None) -> dict[str, dict]:
    """category -> the last row of ``path`` (with ``config`` when given) that has scores."""
    out: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if "image_scores" not in r or (config is not None and r.get("config", "") != config):
            continue
        out[r["category"]] = r
    return out


def describe(r: dict) -> str:
    return " ".join(str(v) for v in (r.get("method"), "x".join(str(x) for x in r.get("hw", [])),
                                     r.get("config") or "defaults", r.get("label") or "") if v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--a-config", default=None, help="the --config text of row A (default: the file's last row)")
    ap.add_argument("--b-config", default=None)
    ap.add_argument("--category", action="append", default=None)
    args = ap.parse_args(argv)
    from npad_edge import metrics

    ra, rb = pick(args.a, args.a_config), pick(args.b, args.b_config)
    cats = args.category or sorted(set(ra) & set(rb))
    if not cats:
        print("no category has a row with scores in both files", file=sys.stderr)
        return 2
    print("| category | A | B | AUROC A (95% CI) | AUROC B (95% CI) | A - B | SE | p |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in cats:
        a, b = ra[c], rb[c]
        if a["labels"] != b["labels"]:
            print(f"{c}: rows A and B do not score the same test images", file=sys.stderr)
            return 2
        ca, cb = (metrics.image_auroc_ci(r["labels"], r["image_scores"]) for r in (a, b))
        t = metrics.compare_auroc(a["labels"], a["image_scores"], b["image_scores"])
        print(f"| {c} | {describe(a)} | {describe(b)} | {100 * ca['auroc']:.2f} ({100 * ca['lo']:.2f}-{100 * ca['hi']:.2f}) | "
              f"{100 * cb['auroc']:.2f} ({100 * cb['lo']:.2f}-{100 * cb['hi']:.2f}) | {100 * t['diff']:+.2f} | "
              f"{100 * t['se']:.2f} | {t['p']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
