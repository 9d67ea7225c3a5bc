#!/usr/bin/env python
"""N-pad's anomaly map, weight by weight: pixel AUROC and PRO of ``w z_m + (1 - w) z_e`` for each
Mahalanobis weight ``w`` of ``--weights``, per defect type, from one fit on the cached features of
``tools/study.py`` (the same cache, sizes and flags; maps and masks at each image's own size, as
``study.py --eval own``). Only the map changes between rows; the fit, the terms and the images are
the same, so the rows differ by the weight alone.

Then, for the first weight, where the pixel AUROC comes from: the defect pixels ranked against
the normal pixels of the good test images, and against the normal pixels of the defective test
images (all of them, and only those more than ``--far`` pixels from any defect), with each
group's median map value. A figure far below the per-type ones means the defective images score
high as a whole, away from their masks: the pixel AUROC then measures that image-level shift as
much as the localisation.

    python tools/npad_map_study.py --data ../shared/data/magnetic_tile --size 368x320
    python tools/npad_map_study.py --data ../shared/data/mvtec_ad/bottle --size 320x320 --config gaussian=knn
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study  # noqa: E402
from npad_terms_study import add_fit_args, fitted_terms  # noqa: E402


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    from npad_edge import metrics
    return metrics.image_auroc(np.r_[np.ones(pos.size, np.int8), np.zeros(neg.size, np.int8)], np.r_[pos, neg])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fit_args(ap)
    ap.add_argument("--weights", default="0.25,0.3,0.35,0.4,0.5", help="Mahalanobis weights of the map, first = reference")
    ap.add_argument("--far", type=int, default=48, help="pixels from any defect for the 'far' group")
    ap.add_argument("--stride", type=int, default=7, help="every n-th pixel enters the decomposition (memory)")
    args = ap.parse_args(argv)
    from scipy.ndimage import distance_transform_edt

    from npad_edge import metrics
    from npad_edge.data import load_dataset

    weights = [float(v) for v in args.weights.split(",")]
    m, zm, ze, _, hw = fitted_terms(args)
    own = study.own_masks(args.data)
    types = np.array([s.defect_type for s in load_dataset(args.data).test])
    kinds = sorted(set(types) - {"good"})
    total = sum(int(k.sum()) for k in own)
    share = {t: sum(int(own[i].sum()) for i in np.flatnonzero(types == t)) / total for t in kinds}
    print(f"{args.data.name} {hw[0]}x{hw[1]} ({args.resize}), N-pad reading {m.settings['gaussian']!r}"
          f"{', ' + args.config if args.config else ''}; pixel AUROC / PRO %, then pixel AUROC per defect "
          "type (that type's images with all good images)\n")
    print("share of the defect pixels: " + ", ".join(f"{t} {100 * v:.1f} %" for t, v in share.items()) + "\n")
    print("| map | pixel AUROC | PRO | " + " | ".join(kinds) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in kinds) + " |")
    first = None
    for w in weights:
        maps = study.maps_at_own_size((w * zm + (1 - w) * ze).astype(np.float32), hw, own, "resize", 4.0)
        first = maps if first is None else first
        pm = metrics.pixel_metrics(own, maps)
        per = []
        for t in kinds:
            sel = np.flatnonzero((types == t) | (types == "good"))
            per.append(100 * metrics.pixel_auroc([own[i] for i in sel], [maps[i] for i in sel]))
        print(f"| {w:g} z_m + {1 - w:g} z_e | {100 * pm['pixel_auroc']:.2f} | {100 * pm['pro']:.2f} | "
              + " | ".join(f"{v:.2f}" for v in per) + " |", flush=True)

    pos, good, normal_def, far = [], [], [], []
    for t, k, a in zip(types, own, first):
        k = k.astype(bool)
        keep = np.zeros(k.shape, bool).ravel()
        keep[::args.stride] = True
        keep = keep.reshape(k.shape)
        if t == "good":
            good.append(a[keep])
            continue
        # a defective image without a marked pixel: all its pixels are normal and far from any defect
        dist = distance_transform_edt(~k) if k.any() else np.full(k.shape, np.inf)
        pos.append(a[k & keep])
        normal_def.append(a[~k & keep])
        far.append(a[(dist > args.far) & keep])
    pos, good, normal_def, far = (np.concatenate(v) for v in (pos, good, normal_def, far))
    print(f"\nwhere the pixel AUROC of {weights[0]:g} z_m + {1 - weights[0]:g} z_e comes from (every "
          f"{args.stride}th pixel): defect pixels (median map value {np.median(pos):.2f}) ranked against\n")
    print("| normal pixels of | pixels | median map value | pixel AUROC |")
    print("| --- | --- | --- | --- |")
    for name, neg in (("the good test images", good), ("the defective test images, all", normal_def),
                      (f"the defective test images, > {args.far} px from any defect", far),
                      ("every test image (the metric)", np.r_[good, normal_def])):
        print(f"| {name} | {neg.size} | {np.median(neg):.2f} | {100 * _auroc(pos, neg):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
