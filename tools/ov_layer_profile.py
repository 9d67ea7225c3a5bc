"""Where the backbone IR's time goes, per OpenVINO op type and kernel, for several exported models.

Compiles each model's ``backbone.xml`` on the CPU with ``PERF_COUNT`` (f32 inference precision,
latency hint, ``--threads`` threads), feeds it a random input of the IR's own input type and
(static) shape, and prints the mean time per (op type, kernel) over ``--calls`` calls after a
warm-up, with each row's share of the model's total. A report, not a gate: compare models of one
run (the machine is shared), e.g. FP32 against INT8 to see which ops INT8 speeds up:

    python tools/ov_layer_profile.py MODEL_FP32 MODEL_INT8 [--threads 1] [--calls 20] [--top 14] [--wall]
"""
from __future__ import annotations

import argparse
import collections
import platform
import sys
from pathlib import Path

import numpy as np


def profile(xml: Path, threads: int, calls: int):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True})
    req = compiled.create_infer_request()
    inp = model.inputs[0]
    shape = [d.get_length() if d.is_static else (1 if i == 0 else 320) for i, d in enumerate(inp.get_partial_shape())]
    dtype = np.uint8 if inp.get_element_type() == ov.Type.u8 else np.float32
    x = np.random.default_rng(0).uniform(0, 255, shape).astype(dtype)
    for _ in range(5):
        req.infer({0: x})
    per = collections.Counter()
    for _ in range(calls):
        req.infer({0: x})
        for p in req.get_profiling_info():
            per[(p.node_type, p.exec_type)] += p.real_time.total_seconds() * 1e3 / calls
    return shape, dtype, per


def wall(xml: Path, threads: int, calls: int) -> float:
    """Median wall-clock ms of ``infer`` calls (PERF_COUNT off; the input copied in, the
    features returned as a copy, as the Detector's backbone does)."""
    import time

    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_NUM_THREADS": threads})
    req = compiled.create_infer_request()
    inp = model.inputs[0]
    shape = [d.get_length() if d.is_static else (1 if i == 0 else 320) for i, d in enumerate(inp.get_partial_shape())]
    x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.uint8 if inp.get_element_type() == ov.Type.u8
                                                                    else np.float32)
    out = compiled.outputs[0]
    for _ in range(5):
        req.infer({0: x}, share_inputs=False)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        req.infer({0: x}, share_inputs=False)[out]
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="exported model directories (backbone.xml inside)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--wall", action="store_true",
                    help="also the median wall-clock ms of whole infer calls, each model alone in turn")
    args = ap.parse_args(argv)
    import openvino as ov

    print(f"CPU: {platform.processor() or platform.machine()}; OpenVINO {ov.__version__}; threads {args.threads}")
    for m in args.models:
        shape, dtype, per = profile(m / "backbone.xml", args.threads, args.calls)
        total = sum(per.values())
        print(f"\n{m}: input {shape} {np.dtype(dtype).name}, total {total:.2f} ms")
        print("| op type | kernel | ms | share |\n| --- | --- | --- | --- |")
        for (node, kern), ms in per.most_common(args.top):
            print(f"| {node} | {kern} | {ms:.3f} | {100 * ms / total:.1f}% |")
    if args.wall:
        print("\n| model | median ms per infer call |\n| --- | --- |")
        for m in args.models:
            print(f"| {m} | {wall(m / 'backbone.xml', args.threads, max(args.calls, 50)):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
