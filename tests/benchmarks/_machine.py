"""The machine facts every benchmark row records (kernel set, threads, clock, vendor, CPUs)."""
from __future__ import annotations

import os
import platform

from npad_edge import search

THREADS = int(os.environ.get("NPAD_BENCH_THREADS", "2"))


def machine_info() -> dict:
    mhz, vendor = None, platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz") and mhz is None:
                    mhz = float(line.split(":")[1])
                if line.startswith("vendor_id"):
                    vendor = line.split(":")[1].strip()
    except OSError:
        pass
    return {"isa": search.isa(), "threads": THREADS, "cpu_mhz": mhz, "vendor": vendor,
            "cpus": search.default_threads()}
