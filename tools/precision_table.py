#!/usr/bin/env python
"""Accuracy of each export precision next to the torch fit-time path, on one MVTec category.

    python tools/precision_table.py --data ../shared/data/mvtec_ad/bottle --work /tmp/npad_prec

Fits the category with ``pipeline.fit_model`` defaults (or takes ``--fitted``), exports FP32,
FP16 and INT8 (INT8 calibrated on the category's train/good images), evaluates every model
with ``evaluation.evaluate`` (maps evaluated at the model input size, masks resized nearest)
and prints a markdown table: image AUROC, pixel AUROC, PRO (in %), the change against FP32,
the largest anomaly-map difference against the torch path (relative to the torch map's
maximum), the IR size and the median predict time of the evaluation loop.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class _Recorder:
    """Wraps a scorer; keeps every full-size map (``keep``) or compares them to ``ref``'s."""

    def __init__(self, scorer, ref: "_Recorder | None" = None):
        self.scorer, self.ref, self.maps, self.max_rel_diff, self.i = scorer, ref, [], 0.0, 0
        self.input_size = scorer.input_size
        self.threshold = scorer.threshold

    def predict(self, image):
        p = self.scorer.predict(image)
        if self.ref is None:
            self.maps.append(p.anomaly_map)
        else:
            r = self.ref.maps[self.i]
            self.max_rel_diff = max(self.max_rel_diff, float(np.abs(p.anomaly_map - r).max() / r.max()))
        self.i += 1
        return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/mvtec_ad/bottle")
    ap.add_argument("--work", type=Path, default=Path("/tmp/npad_precision"))
    ap.add_argument("--fitted", type=Path, default=None, help="an existing fitted model (else fit one)")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--subset", type=int, default=300, help="INT8 calibration images (at most)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reuse", action="store_true", help="reuse models already in --work")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("nncf", "npad_edge.artifact.store", "npad_edge.backbones.tap"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from npad_edge import Detector
    from npad_edge.data import load_dataset
    from npad_edge.evaluation import evaluate
    from npad_edge.export import export_model
    from npad_edge.pipeline import fit_model

    args.work.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data)
    fitted = args.fitted or args.work / "fitted"
    if args.fitted is None and not (args.reuse and (fitted / "manifest.json").exists()):
        t = time.perf_counter()
        fit_model(ds, fitted, overwrite=True, progress=False)
        logging.info("fit %s in %.1f s", fitted, time.perf_counter() - t)
    rows = {}
    ref = _Recorder(Detector.load(fitted, "CPU", threads=args.threads))
    res = evaluate(ref, ds, progress=False)
    rows["torch (fitted)"] = {**res.metrics, "median_ms": res.timings["median_ms"], "map_diff": 0.0, "ir_mb": None}
    for prec in args.precisions.split(","):
        out = args.work / prec
        if not (args.reuse and (out / "manifest.json").exists()):
            t = time.perf_counter()
            export_model(fitted, out, precision=prec, calib=args.data / "train" / "good" if prec == "int8" else None,
                         subset=args.subset, overwrite=True, progress=False)
            logging.info("export %s in %.1f s", prec, time.perf_counter() - t)
        rec = _Recorder(Detector.load(out, "CPU", threads=args.threads), ref)
        res = evaluate(rec, ds, progress=False)
        rows[prec] = {**res.metrics, "median_ms": res.timings["median_ms"], "map_diff": rec.max_rel_diff,
                      "ir_mb": (out / "backbone.bin").stat().st_size / 2**20}
        logging.info("%s: %s", prec, json.dumps({k: rows[prec][k] for k in ("image_auroc", "pixel_auroc", "pro")}))

    base = rows.get("fp32")
    res_hw = rows["torch (fitted)"]["eval_resolution"]
    print(f"\n{ds.name}: {rows['torch (fitted)']['n_images']} test images, metrics at "
          f"{res_hw[0]}x{res_hw[1]} (model input size), CPU\n")
    print("| model | image AUROC | pixel AUROC | PRO | Δ vs FP32 (img / pix / PRO, pt) | max map diff vs torch "
          "| IR .bin MB | median predict ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        vals = [100 * r["image_auroc"], 100 * r["pixel_auroc"], 100 * r["pro"]]
        delta = "-" if base is None or name in ("fp32", "torch (fitted)") else " / ".join(
            f"{100 * (r[k] - base[k]):+.2f}" for k in ("image_auroc", "pixel_auroc", "pro"))
        ir = "-" if r["ir_mb"] is None else f"{r['ir_mb']:.1f}"
        print(f"| {name} | {vals[0]:.2f} | {vals[1]:.2f} | {vals[2]:.2f} | {delta} | {r['map_diff']:.1e} | {ir} "
              f"| {r['median_ms']:.1f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
