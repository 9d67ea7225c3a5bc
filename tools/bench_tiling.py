"""Latency of Detector tiling on a 4000 x 3000 frame vs the untiled path (same model, same run).

    python tools/bench_tiling.py --data ../shared/data/mvtec_ad/bottle --out /tmp/tiling-bench

Fits a small PatchCore model (6 training images, default input size and taps), exports FP32,
then times median ms per frame over --repeat calls, untiled and with tiles of 4x the model input
(25 % overlap). The frame is a bottle test image upsampled (a latency measurement, not accuracy).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    from PIL import Image

    from npad_edge import Detector
    from npad_edge.data import load_dataset, read_image
    from npad_edge.data.geometry import Tiling, tile_grid
    from npad_edge.export import export_model
    from npad_edge.pipeline import fit_model

    ds = load_dataset(a.data)
    model = a.out / "fp32"
    if not model.exists():
        f = fit_model(dataclasses.replace(ds, train=ds.train[:6]), a.out / "fitted", holdout=2, progress=False,
                      overwrite=True)
        export_model(f, model, progress=False)
    img = read_image(ds.test[-1].path)
    frame = np.asarray(Image.fromarray(img).resize((4000, 3000), Image.BILINEAR))
    for name, tiling in (("untiled", None), ("tiled x4, overlap 0.25", Tiling(scale=4.0, overlap=0.25))):
        det = Detector.load(model, threads=a.threads, tiling=tiling)
        det(frame)  # compile for the shape
        ts = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            det(frame)
            ts.append(1000 * (time.perf_counter() - t))
        n = 1 if tiling is None else len(tile_grid(frame.shape[:2], tiling.tile_hw(det.input_size), tiling.overlap))
        print(f"{name}: input {det.input_size}, {n} tile(s), median {statistics.median(ts):.0f} ms/frame "
              f"(min {min(ts):.0f}, n={a.repeat})")


if __name__ == "__main__":
    main()
