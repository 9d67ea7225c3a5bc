"""Issue 10, "the resize": what the input resize costs in the backbone stage, and its alternatives.

One run, interleaved rounds (every variant once per round, R rounds x N calls, median of the
round medians), OpenVINO CPU, ``INFERENCE_PRECISION_HINT`` f32, 2 threads, latency hint, batch
1. Per category (bottle: a 900 x 900 frame -> 320 x 320; magnetic_tile: a 375 x 265 frame ->
368 x 320, an upscale) it builds, from the suite's fitted N-pad model config (exposure gain
included):

- preprocessing-only IRs (resize + exposure gain + normalisation, nothing else): OpenVINO's
  ``bilinear_pillow`` Interpolate as converted; the banded gather export puts in its place
  (``npad_edge.export.resize``, the product); ``linear`` Interpolate without antialias (a);
  a 2 x 2 box pre-reduction then the banded antialiased step (b, in graph); the same IR at
  identity (input already at the model size); a PrePostProcessor ``RESIZE_BILINEAR_PILLOW``
  resize in front of the identity graph (d);
- host resizes with PIL (c): ``BILINEAR`` (the same triangle filter, uint8 out) and with
  ``reducing_gap=2`` (box pre-reduction by an integer factor, then ``BILINEAR``: b on the host);
- the FP32 and INT8 backbones (INT8: NNCF as export, ``subset`` calibration images) with the
  product's banded resize on the raw frame, at identity on a pre-resized frame, with the
  no-antialias Interpolate spliced in, and host PIL + identity IR timed as one call;
- ``resize_on="core"``: the C++ core's resize alone, and core resize + the float32-input IR
  without a resize op (FP32 and INT8, calibrated on core-resized images) timed as one call.

    TORCH_HOME=../shared/weights/torch_hub python tools/resize_latency.py [--rounds 8 --calls 10 --subset 32]

A report, not a gate: compare rows of one run only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CFG = {"ov": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY"}}


def _interp_nodes(model):
    return [n for n in model.get_ordered_ops() if n.get_type_name() == "Interpolate"
            and n.get_attributes().get("mode") == "bilinear_pillow"]


def splice_linear(model):
    """Clone with the input's bilinear_pillow Interpolate turned into linear, no antialias."""
    m = model.clone()
    for n in _interp_nodes(m):
        n.set_attribute("mode", "linear")
        n.set_attribute("antialias", False)
    m.validate_nodes_and_infer_types()
    return m


def splice_box(model, f: int):
    """Clone with an f x f average pool (stride f) in front of the antialiased resize, then the
    banded gather for the remaining step."""
    import openvino.opset13 as ops

    from npad_edge.export.resize import replace_pillow_resize

    m = model.clone()
    for n in _interp_nodes(m):
        src = n.input_value(0)
        pool = ops.avg_pool(src, [f, f], [0, 0], [0, 0], [f, f], True, "floor")
        n.input(0).replace_source_output(pool.output(0))
    m.validate_nodes_and_infer_types()
    replace_pillow_resize(m)
    return m


def bypass(model):
    """Clone with the input resize removed (the input must already have the model size)."""
    m = model.clone()
    for n in _interp_nodes(m):
        for t in list(n.output(0).get_target_inputs()):
            t.replace_source_output(n.input_value(0))
    m.validate_nodes_and_infer_types()
    return m


def banded(model):
    from npad_edge.export.resize import replace_pillow_resize

    m = model.clone()
    assert replace_pillow_resize(m) == 1
    return m


def ppp_resize(model, hw):
    """PrePostProcessor RESIZE_BILINEAR_PILLOW to hw in front of the (dynamic) graph."""
    from openvino.preprocess import PrePostProcessor, ResizeAlgorithm
    import openvino as ov

    m = banded(model)
    p = PrePostProcessor(m)
    p.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_spatial_dynamic_shape()
    p.input().model().set_layout(ov.Layout("NHWC"))
    p.input().preprocess().convert_element_type(ov.Type.f32).resize(ResizeAlgorithm.RESIZE_BILINEAR_PILLOW, *hw) \
        .convert_element_type(ov.Type.u8)
    return p.build()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--subset", type=int, default=32, help="INT8 calibration images (speed does not depend on it)")
    ap.add_argument("--models", default="/tmp/exp/suite", help="folder with the suite's fitted {cat}_npad models")
    ap.add_argument("--cats", default="bottle,magnetic_tile")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("TORCH_HOME", str(SHARED / "weights" / "torch_hub"))

    import openvino as ov
    import torch
    from PIL import Image

    from npad_edge import artifact
    from npad_edge.backbones import FeatureExtractor
    from npad_edge.data import read_image
    from npad_edge.data.geometry import core_resize
    from npad_edge.export.convert import calibration_images, convert_extractor, quantize_backbone

    torch.set_num_threads(2)
    core = ov.Core()
    frames = {"bottle": SHARED / "data/mvtec_ad/bottle/test/broken_large/000.png",
              "magnetic_tile": SHARED / "data/magnetic_tile/test/good"}
    calib = {"bottle": SHARED / "data/mvtec_ad/bottle", "magnetic_tile": SHARED / "data/magnetic_tile"}
    rows = []   # (cat, name, fn, times)
    for cat in args.cats.split(","):
        cfg = artifact.load_model(Path(args.models) / f"{cat}_npad").manifest.backbone.config
        fe = FeatureExtractor.from_config(cfg)
        hw = tuple(fe.image_size)
        fp = frames[cat]
        if fp.is_dir():   # magnetic_tile: the first 375 x 265 good test frame
            fp = next(p for p in sorted(fp.iterdir()) if Image.open(p).size == (265, 375))
        img = read_image(fp)[None]
        pre = np.ascontiguousarray(np.asarray(
            Image.fromarray(img[0]).resize(hw[::-1], Image.BILINEAR)))[None]   # identity input

        class Pre(torch.nn.Module):
            def __init__(self, fe):
                super().__init__()
                self.fe = fe
                self.image_size = fe.image_size

            def forward(self, x):
                return self.fe.preprocess(x)

        pre_ir = convert_extractor(Pre(fe))
        full32 = convert_extractor(fe)
        # resize_on "core": the C++ core's antialiased resize, float32 hand-over, IR without resize
        fe_core = FeatureExtractor.from_config({**cfg, "format_version": 3,
                                                "resize": {**cfg["resize"], "on": "core"}})
        core32 = convert_extractor(fe_core)
        core8 = quantize_backbone(convert_extractor(fe_core), calibration_images(calib[cat]), subset=args.subset,
                                  progress=False, prepare=lambda im, hw=hw: core_resize(im, hw))
        t0 = time.perf_counter()
        full8 = quantize_backbone(convert_extractor(fe), calibration_images(calib[cat]), subset=args.subset,
                                  progress=False)
        print(f"# {cat}: INT8 calibration {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        f = max(1, min(img.shape[1] // hw[0], img.shape[2] // hw[1]))

        def comp(m):
            return core.compile_model(m, "CPU", CFG["ov"]).create_infer_request()

        def ir(req, x):
            return lambda: req.infer({0: x})

        def host(filter_kw, frame=img[0], size=hw[::-1]):
            # frame and size bound now: a bare closure would see the last category's frame
            return lambda: np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR, **filter_kw))

        def host_then(req, filter_kw):
            h = host(filter_kw)
            return lambda: req.infer({0: np.ascontiguousarray(h())[None]})

        variants = {
            "pre: OV bilinear_pillow Interpolate (as converted)": ir(comp(pre_ir), img),
            "pre: banded gather (product)": ir(comp(banded(pre_ir)), img),
            "pre: (a) OV linear Interpolate, no antialias": ir(comp(splice_linear(pre_ir)), img),
            "pre: identity (input at model size)": ir(comp(banded(pre_ir)), pre),
            "pre: no resize op in the graph (input at model size)": ir(comp(bypass(pre_ir)), pre),
            "pre: (d) PrePostProcessor RESIZE_BILINEAR_PILLOW + identity": ir(comp(ppp_resize(pre_ir, hw)), img),
            "host: (c) PIL BILINEAR": host({}),
            "host: core resize (C++, float32 out)": (lambda frame=img[0], hw=hw: core_resize(frame, hw)),
            "host: (c) PIL BILINEAR reducing_gap=2 (box pre-reduction)": host({"reducing_gap": 2.0}),
        }
        if f >= 2:
            variants[f"pre: (b) {f}x{f} box in graph + banded gather"] = ir(comp(splice_box(pre_ir, f)), img)
        for prec, m in (("fp32", core32), ("int8", core8)):
            req_c = comp(m)
            variants[f"{prec}: core resize + float32 IR (resize_on core)"] = \
                (lambda req=req_c, frame=img[0], hw=hw: req.infer({0: core_resize(frame, hw)[None]}))
        for prec, m in (("fp32", full32), ("int8", full8)):
            req_b = comp(banded(m))
            variants[f"{prec}: banded gather (product) on the frame"] = ir(req_b, img)
            variants[f"{prec}: identity (pre-resized input)"] = ir(req_b, pre)
            req_n = comp(bypass(m))
            variants[f"{prec}: no resize op (input at model size)"] = ir(req_n, pre)
            variants[f"{prec}: (c) host PIL BILINEAR + no-resize IR"] = host_then(req_n, {})
            variants[f"{prec}: (a) linear Interpolate, no antialias"] = ir(comp(splice_linear(m)), img)
            variants[f"{prec}: (c) host PIL BILINEAR + identity IR"] = host_then(req_b, {})
            if f >= 2:
                variants[f"{prec}: (b) {f}x{f} box in graph + banded"] = ir(comp(splice_box(m, f)), img)
        for name, fn in variants.items():
            for _ in range(3):
                fn()
            rows.append([cat, name, fn, [], img.shape[1:3], hw])
    for _ in range(args.rounds):   # interleaved: load drift hits every variant alike
        for row in rows:
            fn, ts = row[2], row[3]
            t = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                fn()
                t.append((time.perf_counter() - t0) * 1e3)
            ts.append(statistics.median(t))
    out = []
    for cat, name, fn, ts, shp, hw in rows:
        r = {"category": cat, "frame_hw": list(shp), "model_hw": list(hw), "variant": name,
             "median_ms": round(statistics.median(ts), 3), "min_round_ms": round(min(ts), 3)}
        out.append(r)
        print(json.dumps(r), flush=True)
    print(json.dumps({"loadavg": os.getloadavg(), "openvino": ov.__version__}))
    if args.json:
        args.json.write_text("\n".join(json.dumps(r) for r in out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
