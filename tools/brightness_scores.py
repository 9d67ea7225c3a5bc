#!/usr/bin/env python
"""How much of a category's image score is brightness? (the measurement behind the exposure gain)

Fits the method on the cached features of ``tools/study.py`` (same cache, same defaults) and
prints, for the good test images, the Spearman rank correlation between each image's mean
intensity (0..255, all pixels and channels) and its image score, with and without the
exposure gain, plus image AUROC. A detector whose good-image scores follow brightness flags
well-lit good parts; with the gain the correlation should drop and the AUROC rise.

    python tools/brightness_scores.py --data ../shared/data/magnetic_tile --method patchcore
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, action="append", default=None)
    ap.add_argument("--method", default="patchcore")
    ap.add_argument("--taps", default="stage2,stage3,stage5")
    ap.add_argument("--short", type=int, default=256)
    ap.add_argument("--cache", type=Path, default=study.DEFAULT_CACHE)
    args = ap.parse_args(argv)
    os.environ.setdefault("TORCH_HOME", str(study.REPO.parent / "shared" / "weights" / "torch_hub"))
    from scipy.stats import spearmanr
    from threadpoolctl import threadpool_limits

    from npad_edge import metrics
    from npad_edge.data import load_dataset, read_image
    from npad_edge.methods import get_method

    taps = args.taps.split(",")
    with threadpool_limits(2):
        for cat in args.data or study.categories():
            ds = load_dataset(cat)
            train_b = np.array([read_image(p).mean(dtype=np.float64) for p in ds.train])
            print(f"| {cat.name} | training images' mean intensity: min {train_b.min():.1f}, median "
                  f"{np.median(train_b):.1f}, max {train_b.max():.1f} |", flush=True)
            bright = np.array([read_image(s.path).mean(dtype=np.float64) for s in ds.test])
            good = ds.labels == 0
            for exposure in ("off", "gain"):
                train, test, _, labels, hw, _ = study.load_cached(cat, "efficientnet_lite0", args.short, taps, args.cache,
                                                                  exposure=exposure)
                m = get_method(args.method).fit(np.ascontiguousarray(train), seed=0)
                score = np.concatenate([m.score(np.ascontiguousarray(test[s:s + 16]))[1]
                                        for s in range(0, len(test), 16)])
                rho = spearmanr(bright[good], score[good]).statistic
                print(f"| {cat.name} | {args.method} | exposure {exposure} | rho(brightness, score | good) {rho:+.2f} | "
                      f"image AUROC {100 * metrics.image_auroc(labels, score):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
