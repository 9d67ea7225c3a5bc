"""How much of the nominal feature variance the position explains, per category: the number
behind N-pad's ``gaussian="auto"`` (window reading at >= NPad.ALIGNED_R2, else the local
Gaussian of the nearest nominal features).

Uses tools/study.py's feature cache (extracting on first use), reduces the features as N-pad
does (PCA to ``feature_dim``, seeded), and prints R2 for radius 0 and the method's radius:

    python tools/positional_r2.py                      # every category in ../shared/data
    python tools/positional_r2.py --short 320 --taps stage2,stage3,stage5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import REPO, categories, load_cached  # noqa: E402

from npad_edge.data.geometry import DEFAULT_SHORT_SIDE  # noqa: E402
from npad_edge.methods import get_method  # noqa: E402
from npad_edge.methods.base import to_rows  # noqa: E402
from npad_edge.methods.npad import NPad, positional_r2  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="*", default=None, help="category roots (default: all in ../shared/data)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/npad_study"))
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--short", type=int, default=DEFAULT_SHORT_SIDE)
    ap.add_argument("--taps", default="stage2,stage3,stage5")
    ap.add_argument("--exposure", default="gain")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import os
    os.environ.setdefault("TORCH_HOME", str(REPO.parent / "shared" / "weights" / "torch_hub"))
    cats = [Path(c) for c in args.data] if args.data else categories()
    taps = tuple(args.taps.split(","))
    m = get_method("npad")
    radius = m.settings["radius"]
    print(f"| category | input | R2 (cell) | R2 (window r={radius}) | auto reading (threshold {NPad.ALIGNED_R2}) |")
    print("| --- | --- | --- | --- | --- |")
    for cat in cats:
        train, _, _, _, hw, _ = load_cached(cat, args.backbone, args.short, taps, args.cache, exposure=args.exposure)
        train = np.ascontiguousarray(train, dtype=np.float32)
        m = get_method("npad")
        m._fit_reduction(to_rows(train), args.seed)        # the reduction N-pad's fit uses
        x = m._reduce(train)
        r0, rw = positional_r2(x, 0), positional_r2(x, radius)
        reading = "window" if rw >= NPad.ALIGNED_R2 else "knn"
        print(f"| {cat.name} | {hw[0]}x{hw[1]} | {r0:.3f} | {rw:.3f} | {reading} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
