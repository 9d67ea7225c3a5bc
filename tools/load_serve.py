"""Load test of a fleet server (or of one in-process Detector, the baseline).

    # against a running `npad-edge serve --fleet FLEET --port 8000`
    python tools/load_serve.py --url http://127.0.0.1:8000 --part bottle --images DIR --clients 1,4,16

    # start a local Ray + Serve for FLEET here, then measure it and the in-process baseline
    python tools/load_serve.py --fleet FLEET --start --part bottle --images DIR --clients 1,4,16 --baseline

N concurrent clients (threads, one keep-alive connection each) send a bounded number of requests
(``--requests`` in all per setting, images taken round-robin from ``--images``, sent as PNG/JPEG
bytes). Reports p50/p99 latency (ms, client side) and images/s; ``--json`` writes them.
The baseline runs the same loop with N threads calling one ``Detector.predict`` on the decoded
images (no HTTP, no decode), i.e. what one camera process gets without a server.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path


def _images(folder: Path, limit: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        sys.exit(f"no images under {folder}")
    return files[:limit]


def _run(n_clients: int, n_requests: int, work) -> dict:
    """``work(client_index, request_index)`` in n_clients threads, n_requests in all."""
    lat: list[float] = []
    lock = threading.Lock()
    counter = iter(range(n_requests))
    errors: list[str] = []

    def loop(ci: int) -> None:
        state: dict = {}
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            try:
                work(ci, i, state)
            except Exception as e:  # noqa: BLE001 - count it, keep going
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            with lock:
                lat.append((time.perf_counter() - t) * 1000.0)

    threads = [threading.Thread(target=loop, args=(ci,)) for ci in range(n_clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] if lat else float("nan")

    return {"clients": n_clients, "requests": n_requests, "ok": len(lat), "errors": len(errors),
            "first_error": errors[0] if errors else None, "p50_ms": round(pct(0.5), 2),
            "p99_ms": round(pct(0.99), 2), "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
            "images_per_s": round(len(lat) / wall, 2), "wall_s": round(wall, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="server URL (default: http://127.0.0.1:PORT with --start)")
    ap.add_argument("--fleet", type=Path, help="fleet folder (for --start and --baseline)")
    ap.add_argument("--start", action="store_true", help="start a local Ray + Serve for --fleet here")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray with --start (default 2)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--cpus-per-replica", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1, help="OpenVINO threads per replica / of the baseline")
    ap.add_argument("--max-batch-size", type=int, default=1)
    ap.add_argument("--part", required=True)
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--n-images", type=int, default=8, help="distinct images used (default 8)")
    ap.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    ap.add_argument("--requests", type=int, default=64, help="requests per setting (default 64)")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--baseline", action="store_true", help="also measure one in-process Detector")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from npad_edge.fleet import Client  # does not import Ray

    paths = _images(args.images, args.n_images)
    bodies = [p.read_bytes() for p in paths]
    clients = [int(c) for c in args.clients.split(",")]
    out: dict = {"cpu": _cpu(), "part": args.part, "images": str(args.images), "n_images": len(paths),
                 "requests": args.requests, "server": [], "baseline": []}
    if args.start:
        if args.fleet is None:
            sys.exit("--start needs --fleet")
        import os

        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on 127.0.0.1 only
        import ray

        from npad_edge.fleet import ServeSettings, serve_fleet

        ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="warning", log_to_driver=False)
        serve_fleet(args.fleet, ServeSettings(num_replicas=args.replicas, cpus_per_replica=args.cpus_per_replica,
                                              threads=args.threads, max_batch_size=args.max_batch_size,
                                              max_ongoing_requests=max(16, max(clients))), port=args.port)
    url = args.url or f"http://127.0.0.1:{args.port}"
    out["settings"] = {"replicas": args.replicas, "cpus_per_replica": args.cpus_per_replica,
                       "threads": args.threads, "max_batch_size": args.max_batch_size}
    per_thread: dict = {}

    def http_work(ci: int, i: int, state: dict) -> None:
        c = state.get("c") or state.setdefault("c", Client(url, timeout=300))
        c.predict(args.part, bodies[i % len(bodies)])

    warm = Client(url, timeout=300)
    for i in range(args.warmup):
        warm.predict(args.part, bodies[i % len(bodies)])
    for n in clients:
        r = _run(n, args.requests, http_work)
        out["server"].append(r)
        print(f"server   clients={n:3d}  p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  "
              f"{r['images_per_s']:6.2f} img/s  errors {r['errors']}", flush=True)
    if args.baseline:
        from npad_edge import Detector
        from npad_edge.data import read_image
        from npad_edge.fleet import read_index

        det = Detector.load(read_index(args.fleet).model_path(args.part), threads=args.threads)
        arrays = [read_image(p) for p in paths]
        for i in range(args.warmup):
            det.predict(arrays[i % len(arrays)])
        for n in clients:
            r = _run(n, args.requests, lambda ci, i, st: det.predict(arrays[i % len(arrays)]))
            out["baseline"].append(r)
            print(f"detector clients={n:3d}  p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  "
                  f"{r['images_per_s']:6.2f} img/s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    if args.start:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
