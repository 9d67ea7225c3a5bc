"""OpenVINO FP32 backbone latency (f32 precision hint, 2 threads, batch 1) of EfficientNet-Lite0/1 at short
side 256 vs 320, square and magnetic_tile geometry, interleaved in one run (8 rounds x 10 calls).

    TORCH_HOME=../shared/weights/torch_hub python tools/backbone_latency_ov.py

A report, not a gate: compare rows of one run only.
"""
from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np


def main() -> None:
    import openvino as ov
    import torch

    from npad_edge.backbones import FeatureExtractor, create_backbone
    from npad_edge.export.convert import convert_extractor

    torch.set_num_threads(2)
    core = ov.Core()
    taps = ["stage2", "stage3", "stage5"]
    cfgs = []
    for name in ("efficientnet_lite0", "efficientnet_lite1"):
        for hw in ((256, 256), (320, 320), (288, 256), (352, 320)):
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
    print(json.dumps({"loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
