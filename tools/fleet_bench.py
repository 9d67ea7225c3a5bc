"""Fleet figures for docs/fleet.md: fit wall time vs number of parts, memory per resident part.

    # fit-many wall time (CLI, local Ray started by the command) for 1, 4 and 16 parts
    python tools/fleet_bench.py fit --work /tmp/fleet_bench --parts 1,4,16 --json /tmp/fleet_fit.json

    # memory of N resident parts: one shared compiled backbone vs N separate Detectors
    python tools/fleet_bench.py memory --model FLEET/models/PART --n 100 --json /tmp/fleet_mem.json

Parts are made from the real data in ../shared: part i takes ``--images`` training images of
bottle (even i) or magnetic_tile (odd i), at a different offset each, so every part has its own
images. Each memory case runs in a fresh Python process and reports the growth of its resident
set size (VmRSS) from before the first load to after the N-th, plus the per-part state bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NPAD_SHARED", REPO.parent / "shared"))
SOURCES = [SHARED / "data/mvtec_ad/bottle/train/good", SHARED / "data/magnetic_tile/train/good"]


def make_parts(root: Path, n: int, per_part: int) -> None:
    shutil.rmtree(root, ignore_errors=True)
    for i in range(n):
        src = SOURCES[i % 2]
        files = sorted(src.iterdir())
        start = (i // 2) * per_part % max(1, len(files) - per_part)
        dst = root / f"part{i:02d}" / "train" / "good"
        dst.mkdir(parents=True)
        for f in files[start:start + per_part]:
            shutil.copy(f, dst / f.name)


def cmd_fit(args) -> dict:
    rows = []
    for n in [int(v) for v in args.parts.split(",")]:
        data, fleet = args.work / f"data{n}", args.work / f"fleet{n}"
        make_parts(data, n, args.images)
        shutil.rmtree(fleet, ignore_errors=True)
        cmd = ["npad-edge", "-q", "fit-many", "--data", str(data), "--out", str(fleet), "--num-cpus", str(args.num_cpus),
               "--cpus-per-fit", str(args.cpus_per_fit), "--image-size", args.image_size, "--coreset", "0.1",
               "--export", args.export]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode:
            sys.exit(f"fit-many failed: {p.stderr[-2000:]}")
        idx = json.loads((fleet / "fleet.json").read_text())
        per = sorted(e["fit_seconds"] for e in idx["parts"].values())
        groups = {e.get("backbone_group") for e in idx["parts"].values()}
        # Re-run: everything unchanged, so every part is skipped (cost of resume).
        t1 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        rerun = time.perf_counter() - t1
        row = {"parts": n, "wall_s": round(wall, 1), "per_part_task_s_median": round(per[len(per) // 2], 1),
               "complete": sum(e["status"] == "complete" for e in idx["parts"].values()),
               "backbone_groups": len(groups), "rerun_all_skipped_s": round(rerun, 1), "command": " ".join(cmd)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"fit": rows}


_MEM_CHILD = r"""
import json, sys, gc
from npad_edge import Detector
from npad_edge.runtime._openvino import CompiledModelCache
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
model, n, shared = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
import numpy as np
img = np.zeros((256, 256, 3), np.uint8)
Detector.load(model, threads=1)(img)  # imports, OpenVINO core, first compile: not counted
gc.collect(); r0 = rss()
cache = CompiledModelCache() if shared else None
dets = []
for i in range(n):
    d = Detector.load(model, threads=1, **({"compiled_cache": cache} if shared else {}))
    d(img)  # each resident part has served one image (its infer request exists)
    dets.append(d)
gc.collect(); r1 = rss()
print(json.dumps({"n": n, "shared": shared, "rss_growth_mb": round(r1 - r0, 1),
                  "per_part_mb": round((r1 - r0) / n, 2), "compiled": len(cache) if cache is not None else n}))
"""


def cmd_memory(args) -> dict:
    rows = []
    for shared in (True, False):
        p = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(args.model), str(args.n), "1" if shared else "0"],
                           capture_output=True, text=True)
        if p.returncode:
            sys.exit(p.stderr[-2000:])
        row = json.loads(p.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    from npad_edge import artifact

    m = artifact.read_manifest(args.model)
    return {"memory": rows, "model": str(args.model), "state_bytes": m.extra.get("state_bytes"),
            "input_size": list(m.preprocess.image_size),
            "ir_bytes": sum(e.bytes for k, e in m.files.items() if k.startswith("backbone."))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--work", type=Path, required=True)
    f.add_argument("--parts", default="1,4,16")
    f.add_argument("--images", type=int, default=5, help="training images per part (default 5)")
    f.add_argument("--image-size", default="128x128")
    f.add_argument("--export", default="fp32")
    f.add_argument("--num-cpus", type=int, default=2)
    f.add_argument("--cpus-per-fit", type=int, default=1)
    f.add_argument("--json", type=Path)
    m = sub.add_parser("memory")
    m.add_argument("--model", type=Path, required=True)
    m.add_argument("--n", type=int, default=100)
    m.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out = cmd_fit(args) if args.cmd == "fit" else cmd_memory(args)
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    out["cpu"] = cpu
    out["nproc"] = os.cpu_count()
    out["loadavg_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
