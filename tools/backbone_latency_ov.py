"""OpenVINO FP32 backbone latency (f32 precision hint, 2 threads, batch 1) of EfficientNet-Lite
backbones at several input sizes, interleaved in one run (8 rounds x 10 calls). Defaults: Lite0/1 at
short side 256 vs 320, square and magnetic_tile geometry (stop 17); the product's geometry now:

    TORCH_HOME=../shared/weights/torch_hub python tools/backbone_latency_ov.py
    TORCH_HOME=../shared/weights/torch_hub python tools/backbone_latency_ov.py \
        --backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --sizes 320x320,368x320

A report, not a gate: compare rows of one run only.
"""
from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1")
    ap.add_argument("--sizes", default="256x256,320x320,288x256,352x320", help="HxW,HxW,...")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    import openvino as ov
    import torch

    from npad_edge.backbones import FeatureExtractor, create_backbone
    from npad_edge.export.convert import convert_extractor

    torch.set_num_threads(2)
    core = ov.Core()
    taps = ["stage2", "stage3", "stage5"]
    cfgs = []
    for name in args.backbones.split(","):
        for hw in sizes:
            fe = FeatureExtractor(create_backbone(name, taps=taps), image_size=hw)
            c = core.compile_model(convert_extractor(fe), "CPU", {
                "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY"})
            x = np.random.default_rng(0).integers(0, 256, (1, hw[0], hw[1], 3), dtype=np.uint8)
            req = c.create_infer_request()
            for _ in range(3):
                req.infer({0: x})
            cfgs.append((name, hw, req, x, []))
    for _ in range(8):  # rounds interleave the configurations, so load drift hits all alike
        for name, hw, req, x, ts in cfgs:
            t = []
            for _ in range(10):
                t0 = time.perf_counter()
                req.infer({0: x})
                t.append((time.perf_counter() - t0) * 1e3)
            ts.append(statistics.median(t))
    for name, hw, req, x, ts in cfgs:
        print(json.dumps({"backbone": name, "hw": list(hw), "median_of_round_medians_ms": round(statistics.median(ts), 2),
                          "min_round_ms": round(min(ts), 2)}))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(json.dumps({"loadavg": os.getloadavg(), "cpu": cpu}))


if __name__ == "__main__":
    main()
