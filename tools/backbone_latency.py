"""Torch latency of FeatureExtractor per backbone (batch 1, uint8 input, fixed thread count).

    python tools/backbone_latency.py [--size 256] [--input 256] [--threads 2] [--repeat 20]

Prints one JSON line per backbone: D, grid, wall-clock min / p10 / median / p90 milliseconds at
``--threads``, and the single-thread CPU time per image (robust on a shared machine). Backbones without
installed ImageNet weights run with random weights (same cost). A report, not a benchmark
gate; numbers from a loaded machine are meaningless, so check `uptime` first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from npad_edge.backbones import FeatureExtractor, available_backbones, create_backbone
from npad_edge.errors import WeightsNotFoundError


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="image_size (square)")
    p.add_argument("--input", type=int, default=256, help="input image side (square, uint8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("backbones", nargs="*", default=available_backbones())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x = torch.randint(0, 256, (1, a.input, a.input, 3), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    for name in a.backbones:
        try:
            b, weights = create_backbone(name), "imagenet"
        except WeightsNotFoundError:
            b, weights = create_backbone(name, weights="random"), "random"
        fe = FeatureExtractor(b, image_size=(a.size, a.size))
        times = []
        with torch.inference_mode():
            for i in range(a.warmup + a.repeat):
                t0 = time.perf_counter()
                y = fe(x)
                if i >= a.warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
        q = statistics.quantiles(times, n=10)
        # Contention-robust companion figure: single-thread CPU time of the calling thread,
        # which other processes on a shared machine do not inflate the way they inflate wall time.
        torch.set_num_threads(1)
        cpu = []
        with torch.inference_mode():
            for i in range(a.warmup + max(5, a.repeat // 4)):
                t0 = time.thread_time()
                fe(x)
                if i >= a.warmup:
                    cpu.append((time.thread_time() - t0) * 1e3)
        torch.set_num_threads(a.threads)
        print(json.dumps({
            "backbone": name, "weights": weights, "taps": list(b.taps), "D": int(y.shape[1]),
            "grid": list(y.shape[-2:]), "image_size": a.size, "input": a.input,
            "threads": a.threads, "median_ms": round(statistics.median(times), 2),
            "min_ms": round(min(times), 2), "p10_ms": round(q[0], 2), "p90_ms": round(q[-1], 2), "loadavg_1m": os.getloadavg()[0],
            "cpu_1thread_min_ms": round(min(cpu), 2), "cpu_1thread_median_ms": round(statistics.median(cpu), 2),
        }), flush=True)


if __name__ == "__main__":
    main()
