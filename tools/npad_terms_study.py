#!/usr/bin/env python
"""N-pad's image score, term by term: what each rule of combining the two normalised terms
(Mahalanobis z_m, Euclidean z_e) gives as the image score, per defect type, each tested
against the map's own rule (the weighted sum) with DeLong's paired test. One fit per run on
the cached features of ``tools/study.py`` (the same cache, sizes and flags); the map and the
pixel metrics are the same for every row (only the image score changes).

    python tools/npad_terms_study.py --data ../shared/data/magnetic_tile --size 368x320 --resize core
    python tools/npad_terms_study.py --data ../shared/data/magnetic_tile --size 368x320 --resize core --config gaussian=window
    python tools/npad_terms_study.py --data ../shared/data/mvtec_ad/bottle --size 320x320 --resize core
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study  # noqa: E402
from ablate_npad import parse_config  # noqa: E402


def add_fit_args(ap: argparse.ArgumentParser) -> None:
    """The flags of one N-pad fit on the study cache (shared with tools/npad_map_study.py)."""
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--size", required=True, help="HxW model input (the study cache's)")
    ap.add_argument("--resize", default="core", choices=("aa", "core"))
    ap.add_argument("--taps", default="stage2,stage3,stage5")
    ap.add_argument("--backbone", default=None, help="default: the product's")
    ap.add_argument("--config", default="", help="N-pad settings k=v,k=v (e.g. gaussian=window)")
    ap.add_argument("--cache", type=Path, default=study.DEFAULT_CACHE)


def fitted_terms(args):
    """Fit N-pad (seed 0) on the cached training features of ``args`` (:func:`add_fit_args`) and
    return ``(method, z_m, z_e, labels, (H, W))``: the normalised terms of every test image."""
    from threadpoolctl import threadpool_limits

    from npad_edge.methods import get_method

    hw = tuple(int(v) for v in args.size.lower().split("x"))
    with threadpool_limits(2):
        tr, te, _, labels, hw, _ = study.load_cached(args.data, args.backbone or study.default_backbone(), min(hw),
                                                     args.taps.split(","), args.cache, hw, None, "resize", "keep",
                                                     "gain", args.resize)
        m = get_method("npad", **parse_config(args.config)).fit(np.ascontiguousarray(tr), seed=0)
        zm, ze = [], []
        for s in range(0, te.shape[0], 16):
            a, b = m._normalised(*m.score_terms(np.ascontiguousarray(te[s:s + 16])))
            zm.append(a)
            ze.append(b)
    return m, np.concatenate(zm), np.concatenate(ze), labels, hw


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fit_args(ap)
    args = ap.parse_args(argv)
    from npad_edge import metrics
    from npad_edge.data import load_dataset
    from npad_edge.methods.base import smoothed_max

    m, zm, ze, labels, hw = fitted_terms(args)
    w, sig = m.settings["weight"], m.settings["image_sigma"]
    grids = {f"map rule: {w} z_m + {1 - w} z_e": w * zm + (1 - w) * ze, "0.5 z_m + 0.5 z_e": 0.5 * zm + 0.5 * ze,
             "max(z_m, z_e) (default)": np.maximum(zm, ze), "z_m alone": zm, "z_e alone": ze}
    img = {k: smoothed_max(v.astype(np.float32), sig) for k, v in grids.items()}
    ref = next(iter(img.values()))
    types = np.array([s.defect_type for s in load_dataset(args.data).test])
    lab = np.asarray(labels)
    kinds = sorted(set(types) - {"good"})
    print(f"{args.data.name} {hw[0]}x{hw[1]} ({args.resize}), N-pad reading {m.settings['gaussian']!r}"
          f"{', ' + args.config if args.config else ''}; image AUROC %, the whole set with its 95 % interval, "
          "then per defect type (with all good images)\n")
    print("| image score from | all (95% CI) | " + " | ".join(kinds) + " | vs map rule: diff, p |")
    print("| --- | --- | " + " | ".join("---" for _ in kinds) + " | --- |")
    for k, v in img.items():
        ci = metrics.image_auroc_ci(lab, v)
        per = [f"{100 * metrics.image_auroc(lab[(types == 'good') | (types == t)], v[(types == 'good') | (types == t)]):.2f}"
               for t in kinds]
        c = metrics.compare_auroc(lab, v, ref)
        print(f"| {k} | {100 * ci['auroc']:.2f} ({100 * ci['lo']:.1f}-{100 * ci['hi']:.1f}) | " + " | ".join(per)
              + f" | {100 * c['diff']:+.2f}, p {c['p']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
