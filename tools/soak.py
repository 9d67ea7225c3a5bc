#!/usr/bin/env python
"""Soak test of one Detector: sync threads + async queue for a while, checking results and memory.

    python tools/soak.py MODEL IMAGES_DIR [--minutes 5] [--threads 4] [--in-flight 8]

Every prediction is compared with the serial result of the same image (scores must be equal:
the runtime is deterministic), callbacks that raise are mixed in (every 50th submit) to check
that the queue keeps going, and the resident memory is sampled each 10 s: a steady climb after
warm-up means a leak. Exits 1 on any mismatch, lost future or growth above --max-growth-mb.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("images", type=Path)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=4, help="threads calling predict")
    ap.add_argument("--in-flight", type=int, default=8, help="async requests")
    ap.add_argument("--max-images", type=int, default=8)
    ap.add_argument("--max-growth-mb", type=float, default=50.0)
    args = ap.parse_args(argv)

    import logging

    from npad_edge import Detector
    from npad_edge.data import read_image

    # The deliberate callback failures would each log a traceback.
    logging.getLogger("npad_edge.runtime.detector").setLevel(logging.CRITICAL)

    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    images = [read_image(p) for p in files[: args.max_images]]
    if not images:
        print(f"no images in {args.images}", file=sys.stderr)
        return 2
    det = Detector.load(args.model, num_requests=args.in_flight)
    expected = [det(im).score for im in images]
    stop = time.monotonic() + 60 * args.minutes
    errors: list[str] = []
    counts = {"sync": 0, "async": 0, "callback_errors": 0}
    lock = threading.Lock()

    def sync_worker(k: int) -> None:
        i = k
        while time.monotonic() < stop and not errors:
            j = i % len(images)
            s = det(images[j]).score
            if s != expected[j]:
                errors.append(f"sync image {j}: {s} != {expected[j]}")
            with lock:
                counts["sync"] += 1
            i += 1

    def async_worker() -> None:
        n = 0
        while time.monotonic() < stop and not errors:
            batch = [(n + i) % len(images) for i in range(2 * args.in_flight)]
            futures = []
            for i, j in enumerate(batch):
                cb = _raiser if (n + i) % 50 == 0 else None
                futures.append((j, cb, det.submit(images[j], cb)))
            for j, cb, f in futures:
                try:
                    s = f.result(timeout=120).score
                except RuntimeError as e:
                    if cb is None or "soak" not in str(e):
                        errors.append(f"async image {j}: {e!r}")
                    with lock:
                        counts["callback_errors"] += 1
                    continue
                except Exception as e:  # a timeout or anything else is a failure
                    errors.append(f"async image {j}: {e!r}")
                    continue
                if s != expected[j]:
                    errors.append(f"async image {j}: {s} != {expected[j]}")
                with lock:
                    counts["async"] += 1
            n += len(batch)

    workers = [threading.Thread(target=sync_worker, args=(k,)) for k in range(args.threads)]
    workers.append(threading.Thread(target=async_worker))
    for w in workers:
        w.start()
    samples = []
    t0 = time.monotonic()
    while any(w.is_alive() for w in workers):
        time.sleep(10)
        samples.append(rss_mb())
        print(f"{time.monotonic() - t0:6.0f} s  rss {samples[-1]:7.1f} MB  {counts}", flush=True)
    for w in workers:
        w.join()
    det.close()
    growth = (samples[-1] - samples[min(2, len(samples) - 1)]) if samples else 0.0
    print(f"done: {counts}; rss growth after warm-up {growth:.1f} MB; {len(errors)} errors")
    for e in errors[:10]:
        print("  " + e)
    return 1 if errors or growth > args.max_growth_mb else 0


def _raiser(pred, userdata) -> None:
    raise RuntimeError("soak: deliberate callback failure")


if __name__ == "__main__":
    sys.exit(main())
