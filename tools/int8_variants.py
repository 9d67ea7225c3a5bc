#!/usr/bin/env python
"""INT8 export variants of fitted models, each exported and evaluated end to end (one JSON line
per model and variant: image AUROC / pixel AUROC / PRO in %). The variants are
``export_model(..., int8_options=...)``: the default, NNCF's "mixed" preset, and the coarsest
stage's convolutions kept in float (docs/runtime.md, "How the INT8 settings were chosen").
Calibration: the category's train/good images, as ``tools/eval_suite.py --export int8``.

    python tools/int8_variants.py /tmp/s26/suite_l2/magnetic_tile_npad:../shared/data/magnetic_tile \\
        /tmp/s26/suite_l2/bottle_npad:../shared/data/mvtec_ad/bottle --work /tmp/s26/qvar
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"default": {}, "mixed": {"preset": "mixed"}, "float_tail": {"float_tail": True}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="+", help="FITTED_MODEL:CATEGORY_DIR")
    ap.add_argument("--work", type=Path, required=True, help="folder for the exported models")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of " + ", ".join(VARIANTS))
    args = ap.parse_args(argv)
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
    pairs = []
    for pair in args.pairs:
        model, sep, cat = pair.partition(":")
        if not sep or not (Path(model) / "manifest.json").is_file() or not (Path(cat) / "train" / "good").is_dir():
            ap.error(f"{pair!r}: want FITTED_MODEL:CATEGORY_DIR (a model directory with manifest.json, a "
                     "category with train/good)")
        pairs.append((Path(model), Path(cat)))
    os.environ.setdefault("TORCH_HOME", str(REPO.parent / "shared" / "weights" / "torch_hub"))
    from npad_edge.evaluation import evaluate_model
    from npad_edge.export import export_model

    for model, cat in pairs:
        for name in args.variants.split(","):
            out = args.work / f"{model.name}_{name}"
            export_model(model, out, precision="int8", calib=cat / "train" / "good", overwrite=True,
                         progress=False, int8_options=VARIANTS[name])
            m = evaluate_model(out, cat, progress=False).metrics
            print(json.dumps({"model": str(model), "variant": name,
                              **{k: round(100 * m[k], 2) for k in ("image_auroc", "pixel_auroc", "pro")}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
