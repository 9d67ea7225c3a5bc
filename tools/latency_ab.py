"""Detector latency of several exported models on the same frames, interleaved in one run.

Each round calls every model once on the same decoded frame (round-robin over the frames), so
load drift on a shared machine hits all models alike; prints the median per stage (the
Detector's own ``Prediction.timings``) and each model's end-to-end ratio to the first:

    python tools/latency_ab.py /tmp/s22/mt_window_int8 /tmp/s22/suite_npad/magnetic_tile_npad_int8 \
        --images ../shared/data/magnetic_tile/test --rounds 40 --threads 2

Reports, not assertions; state the CPU (printed) and the load with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="exported (or fitted) model directories")
    ap.add_argument("--images", type=Path, required=True, help="folder searched recursively for images")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    from npad_edge import Detector
    from npad_edge.data import read_image
    from npad_edge.runtime.detector import STAGES

    exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in exts and "ground_truth" not in p.parts)
    if not paths:
        raise SystemExit(f"no images under {args.images}")
    frames = [read_image(p) for p in paths[:: max(1, len(paths) // 16)][:16]]
    dets = [Detector.load(m, "CPU", threads=args.threads) for m in args.models]
    for det in dets:
        for f in frames[: args.warmup]:
            det(f)
    times = [{k: [] for k in STAGES} for _ in dets]
    for r in range(args.rounds):
        f = frames[r % len(frames)]
        for i, det in enumerate(dets):
            t = det(f).timings
            for k in STAGES:
                times[i][k].append(t[k])
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"CPU: {cpu}; {os.cpu_count()} logical CPUs; load average {os.getloadavg()[0]:.1f}; "
          f"{args.rounds} rounds, {len(frames)} frames, threads={args.threads}")
    print("| model | method / reading | " + " | ".join(STAGES) + " | end to end vs first |")
    print("| --- | --- | " + " | ".join("---" for _ in STAGES) + " | --- |")
    base = statistics.median(times[0]["total"])
    for m, det, t in zip(args.models, dets, times):
        s = det.manifest.method.settings
        what = f"{det.manifest.method.name}" + (f" / {s['gaussian']}" if "gaussian" in s else "")
        med = {k: statistics.median(v) for k, v in t.items()}
        print(f"| {m.name} | {what} | " + " | ".join(f"{med[k]:.1f}" for k in STAGES)
              + f" | {med['total'] / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
