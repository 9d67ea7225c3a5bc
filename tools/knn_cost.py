"""Cost of N-pad's second reading (gaussian="knn") on a fitted or exported model: the core's
time per frame for several K, the numpy oracle's for one frame, and the Detector's memory.

The frame is the model's first training image scored against the others (its own features
excluded), as the fit's nominal statistics are: real features, no backbone time. CPU time of
the calling process (so other jobs on the machine inflate it less than wall clock), one
thread by default:

    python tools/knn_cost.py /tmp/s22/suite2/magnetic_tile_npad_int8 --ks 32,64,128 --numpy

Reports, not assertions; state the CPU (printed) with the figures.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="an N-pad model directory fitted or exported with gaussian knn")
    ap.add_argument("--ks", default="32,64,128", help="neighbour counts K to time (comma-separated)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--numpy", action="store_true", help="also time the numpy oracle once (seconds per frame)")
    args = ap.parse_args(argv)

    import numpy as np

    from npad_edge import Detector
    from npad_edge.methods.npad import _knn_mahalanobis

    before = _rss_mb()
    det = Detector.load(args.model, "CPU", threads=2)
    after = _rss_mb()
    m = det.method
    if getattr(m, "_local", None) is None:
        raise SystemExit(f"{args.model}: not an N-pad model with gaussian='knn' "
                         f"(settings: {m.settings.get('gaussian')!r})")
    bank, s = m._local, m.settings
    nominal = bank.nominal()
    x = np.ascontiguousarray(nominal[:1].astype(np.float32))
    ex = np.array([0], dtype=np.int64)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"CPU: {cpu}; load average {os.getloadavg()[0]:.1f}; bank {tuple(nominal.shape)} {nominal.dtype}, "
          f"radius {s['radius']}, threads {args.threads}")
    print(f"Detector: RSS {after - before:.0f} MB added by loading (process {after:.0f} MB); "
          f"the core's bank holds {bank.memory_bytes / 2**20:.0f} MB")
    print("| K | core CPU ms per frame |" + (" numpy oracle s per frame |" if args.numpy else ""))
    print("| --- | --- |" + (" --- |" if args.numpy else ""))
    for k in [int(v) for v in args.ks.split(",")]:
        bank.mahalanobis(x, radius=s["radius"], k=k, shrinkage=s["shrinkage"], exclude=ex, threads=args.threads)
        t = time.process_time()
        for _ in range(args.rounds):
            got = bank.mahalanobis(x, radius=s["radius"], k=k, shrinkage=s["shrinkage"], exclude=ex,
                                   threads=args.threads)
        core_ms = (time.process_time() - t) / args.rounds * 1000
        row = f"| {k} | {core_ms:.0f} |"
        if args.numpy:
            t = time.process_time()
            ref = _knn_mahalanobis(x, nominal, s["radius"], k, s["shrinkage"], ex)
            row += f" {time.process_time() - t:.1f} (max rel. diff {float(np.max(np.abs(got - ref) / ref)):.1e}) |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
