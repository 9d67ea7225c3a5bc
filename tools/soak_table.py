#!/usr/bin/env python
"""Sequential soak of one Detector: N consecutive predictions, resident memory and latency drift.

    python tools/soak_table.py MODEL IMAGES_DIR [--frames 10000] [--warmup 200] [--json OUT]

Unlike ``tools/soak.py`` (threads + async queue for a fixed time, checking results), this runs
one caller, frame after frame, and reports what a production line cares about over months:

- resident memory (``/proc/self/statm``) sampled every ``--sample-every`` frames after the
  warm-up; the growth is the least-squares slope of RSS against the frame number, in MB per
  1,000 frames (it uses every sample, so one noisy sample moves it less than last - first),
  plus the raw last - first;
- latency of every call (wall clock around ``det(image)``), p50 / p99 of the first and of the
  last 1,000 counted frames (after the warm-up);
- every score compared with the first score of the same image (the runtime is
  deterministic; a mismatch is counted and fails the run).

Images are decoded once up front (``read_image``) and cycled, so the loop measures the
Detector, not PNG decoding. Prints a markdown table (the one in docs/hardening.md) and exits 1
on a score mismatch or when the growth is above ``--max-growth-mb-per-1k``.

``soak(det, images, frames, ...)`` is the same measurement as a function (tests/test_soak.py
runs a short version of it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    """Current resident set size in MB (Linux ``/proc/self/statm``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:  # pragma: no cover - not Linux: the peak is the best available
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / (2**20 if sys.platform == "darwin" else 2**10)


def growth_mb_per_1k(frames: Sequence[int], rss: Sequence[float]) -> float:
    """Least-squares slope of ``rss`` (MB) against ``frames``, times 1,000."""
    x = np.asarray(frames, np.float64)
    y = np.asarray(rss, np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0] * 1000.0)


def _pcts(ms: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean()), "n": int(ms.size)}


def soak(predict: Callable[[np.ndarray], Any], images: Sequence[np.ndarray], frames: int, *,
         warmup: int = 200, sample_every: int = 100, window: int = 1000,
         progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Run ``predict`` (a Detector, or anything returning an object with ``.score``) on
    ``frames`` images cycled from ``images``, after ``warmup`` uncounted calls.

    Returns ``{"frames", "warmup", "rss_mb": {"start", "end", "max"}, "growth_mb_per_1k",
    "growth_mb_total", "latency_ms": {"first", "last", "all"} (p50/p99/mean/n),
    "score_mismatches", "samples": [[frame, rss_mb], ...]}``. ``window``: frames in the
    first / last latency windows (capped at half the counted frames).
    """
    if frames < 2 or not images:
        raise ValueError("soak needs at least 2 frames and one image")
    expected: list[float | None] = [None] * len(images)
    for i in range(warmup):
        j = i % len(images)
        s = float(predict(images[j]).score)
        expected[j] = s if expected[j] is None else expected[j]
    lat = np.empty(frames, np.float64)
    samples: list[list[float]] = [[0, rss_mb()]]
    mismatches = 0
    for i in range(frames):
        j = (warmup + i) % len(images)
        t = time.perf_counter()
        pred = predict(images[j])
        lat[i] = (time.perf_counter() - t) * 1000.0
        s = float(pred.score)
        if expected[j] is None:
            expected[j] = s
        elif s != expected[j]:
            mismatches += 1
        del pred
        if (i + 1) % sample_every == 0 or i + 1 == frames:
            samples.append([i + 1, rss_mb()])
            if progress is not None:
                progress(i + 1, samples[-1][1])
    w = max(1, min(window, frames // 2))
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    return {
        "frames": frames,
        "warmup": warmup,
        "rss_mb": {"start": ys[0], "end": ys[-1], "max": max(ys)},
        "growth_mb_per_1k": growth_mb_per_1k(xs, ys),
        "growth_mb_total": ys[-1] - ys[0],
        "latency_ms": {"window": w, "first": _pcts(lat[:w]), "last": _pcts(lat[-w:]), "all": _pcts(lat),
                       # every window, to tell a drift of the Detector from a burst of load
                       "windows": [_pcts(lat[k:k + w]) for k in range(0, frames - w + 1, w)]},
        "score_mismatches": mismatches,
        "samples": samples,
    }


def table(result: dict[str, Any], label: str) -> str:
    """The markdown table row(s) of docs/hardening.md."""
    lm = result["latency_ms"]
    head = ("| model | frames (after warm-up) | RSS start -> end MB | RSS growth MB / 1k frames (slope) "
            "| p50 first / last 1k ms | p99 first / last 1k ms | score mismatches |\n"
            "| --- | --- | --- | --- | --- | --- | --- |")
    row = (f"| {label} | {result['frames']:,} (+{result['warmup']}) | {result['rss_mb']['start']:.1f} -> "
           f"{result['rss_mb']['end']:.1f} | {result['growth_mb_per_1k']:+.3f} | "
           f"{lm['first']['p50']:.1f} / {lm['last']['p50']:.1f} | {lm['first']['p99']:.1f} / "
           f"{lm['last']['p99']:.1f} | {result['score_mismatches']} |")
    return head + "\n" + row


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="exported (or fitted) model directory")
    ap.add_argument("images", type=Path, help="folder searched recursively for .png/.jpg/.bmp")
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--sample-every", type=int, default=100)
    ap.add_argument("--max-images", type=int, default=0, help="cycle over at most this many images (0: all)")
    ap.add_argument("--device", default="CPU")
    ap.add_argument("--threads", type=int, default=None, help="backbone CPU threads (default: OpenVINO's)")
    ap.add_argument("--max-growth-mb-per-1k", type=float, default=1.0)
    ap.add_argument("--json", type=Path, help="write the full result (with the RSS samples) here")
    args = ap.parse_args(argv)

    from npad_edge import Detector
    from npad_edge.data import read_image

    files = sorted(p for p in args.images.rglob("*") if p.is_file()
                   and p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if args.max_images:
        files = files[: args.max_images]
    if not files:
        print(f"no images under {args.images}", file=sys.stderr)
        return 2
    images = [read_image(p) for p in files]
    det = Detector.load(args.model, args.device, threads=args.threads)
    t0 = time.perf_counter()

    def tick(done: int, rss: float) -> None:
        if done % 1000 == 0:
            print(f"{done:6d} frames  {time.perf_counter() - t0:7.1f} s  rss {rss:7.1f} MB", file=sys.stderr,
                  flush=True)

    res = soak(det, images, args.frames, warmup=args.warmup, sample_every=args.sample_every, progress=tick)
    det.close()
    res.update(model=str(args.model), precision=det.precision, device=args.device, threads=args.threads,
               n_images=len(images), image_hw=list(images[0].shape[:2]), seconds=time.perf_counter() - t0,
               host={"cpus": os.cpu_count(), "machine": platform.machine(),
                     "loadavg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
               command=" ".join(["python", "tools/soak_table.py", *map(str, argv if argv is not None else sys.argv[1:])]))
    print(table(res, f"{det.manifest.method.name} {det.precision}, {res['image_hw'][0]}x{res['image_hw'][1]} input"))
    print("p50 / p99 per window of %d frames: %s" % (res["latency_ms"]["window"], ", ".join(
        f"{x['p50']:.0f}/{x['p99']:.0f}" for x in res["latency_ms"]["windows"])))
    print(f"raw RSS growth {res['growth_mb_total']:+.1f} MB over {args.frames} frames; "
          f"{res['seconds']:.0f} s; load average at the end {res['host']['loadavg_end']}")
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2))
    ok = res["score_mismatches"] == 0 and res["growth_mb_per_1k"] <= args.max_growth_mb_per_1k
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
