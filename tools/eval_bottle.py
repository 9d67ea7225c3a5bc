#!/usr/bin/env python
"""Accuracy tables on the real MVTec AD bottle category (or any category via --data).

1. ``--table backbones``: every backbone with real ImageNet weights here (EfficientNet-Lite0/1/2,
   MobileNetV2) x {PatchCore, N-pad} with the library defaults, from cached features
   (``tools/ablate_npad.py``'s cache), maps/masks at the input size.
2. ``--table final``: the end-to-end product path for the default backbone: ``fit_model`` (real
   images -> model directory; fit time and peak memory from the manifest) then
   ``evaluate_model`` (decode -> predict -> metrics), for PatchCore and N-pad.

    python tools/eval_bottle.py --table backbones,final --out /tmp/eval_bottle.md

Every number comes from the real images; nothing is tuned on the test set here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablate_npad import DEFAULT_CACHE, DEFAULT_DATA, HEADER, fmt_row, load_cached, run_config  # noqa: E402

BACKBONES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"]


def table_backbones(args) -> list[str]:
    lines = [f"\n#### Backbones — {args.data.name}, {args.image_size}px, default taps, library defaults\n", HEADER]
    print("\n".join(lines), flush=True)
    for bb in args.backbones.split(","):
        try:
            train, test, masks, _, t_extract = load_cached(args.data, bb, args.image_size, None, args.cache)
        except Exception as exc:   # e.g. weights not installed
            row = f"| {bb} | not available here: {exc} |"
            print(row, flush=True)
            lines.append(row)
            continue
        for method in args.methods.split(","):
            r = run_config(method, {}, train, test, masks, args.image_size, args.seed)
            row = fmt_row(f"{bb} (D={train.shape[1]}), {method}", r)
            print(row, flush=True)
            lines.append(row)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"table": "backbones", "backbone": bb, **r}) + "\n")
    return lines


def table_final(args) -> list[str]:
    from npad_edge import artifact
    from npad_edge.evaluation import evaluate_model
    from npad_edge.pipeline import fit_model

    head = ("| method | img AUROC | pix AUROC | PRO | fit s (extract + method) | fit peak RSS MB | model MB | "
            "threshold | good/defective flagged at threshold | predict ms (median) |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [f"\n#### End to end — {args.data.name}, {args.backbone}, {args.image_size}px, "
             f"fit_model + evaluate_model (maps at the input size)\n", head]
    print("\n".join(lines), flush=True)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="npad_eval_"))
    for method in args.methods.split(","):
        out = work / f"{args.data.name}_{method}"
        path = fit_model(args.data, out, method=method, backbone=args.backbone, image_size=args.image_size,
                         seed=args.seed, overwrite=True, progress=True)
        man = artifact.read_manifest(path)
        res = evaluate_model(path, args.data, progress=True)
        m = res.metrics
        fs = man.extra["fit_seconds"]
        model_mb = sum(f.bytes for f in man.files.values()) / 2**20
        thr = m["threshold"]
        flagged_good = int(((res.scores >= thr) & (res.labels == 0)).sum())
        flagged_bad = int(((res.scores >= thr) & (res.labels == 1)).sum())
        row = (f"| {method} | {100 * m['image_auroc']:.2f} | {100 * m['pixel_auroc']:.2f} | {100 * m['pro']:.2f} | "
               f"{fs['total']:.0f} ({fs['extract']:.0f} + {fs['method']:.0f}) | "
               f"{man.extra['peak_memory_mb']['rss']:.0f} | {model_mb:.1f} | {thr:.3g} | "
               f"{flagged_good}/{(res.labels == 0).sum()} good, {flagged_bad}/{(res.labels == 1).sum()} defective | "
               f"{res.timings['median_ms']:.0f} |")
        print(row, flush=True)
        lines.append(row)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"table": "final", "method": method, "metrics": m, "timings": res.timings,
                                    "fit": fs, "manifest_extra": man.extra}) + "\n")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--table", default="backbones,final")
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--backbone", default="efficientnet_lite0", help="backbone of the final table")
    ap.add_argument("--methods", default="patchcore,npad")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where the final table's models are written")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("TORCH_HOME", str(Path(__file__).resolve().parents[2] / "shared" / "weights" / "torch_hub"))
    import torch
    torch.set_num_threads(2)
    lines: list[str] = []
    for t in args.table.split(","):
        lines += {"backbones": table_backbones, "final": table_final}[t](args)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
