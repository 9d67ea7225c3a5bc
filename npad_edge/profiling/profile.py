"""Latency profiles of the Detector: sync single image and async many-in-flight, per device.

Stages (milliseconds): ``decode`` (file -> RGB array, Pillow), ``preprocess`` (uint8 ->
resized, normalised float tensor: inside the IR, timed on its own as the IR's sub-graph up to
the first convolution, plus the host-side input checks), ``backbone`` (the rest of the IR:
CNN + aggregation), ``search`` (memory-bank scoring), ``postprocess`` (anomaly map at the
input's size + mask), ``total`` (one ``predict`` call on a decoded image: preprocess + backbone
+ search + postprocess; decode is reported apart).

``"CUDA"`` (torch on an NVIDIA GPU, ``runtime/_torch.py``): backbone, search and map run on the
GPU and their stage times are CUDA-event times (``"timer": "cuda_events"``): ``backbone``
includes the upload of the uint8 image, ``postprocess`` the map, the mask and their download;
``preprocess`` is the host-side input checks only (the resize is part of the backbone there).
``batch_sizes`` adds ``predict_batch`` rounds (per-image stage times and images/s of the
batch); ``inference_precision`` (``"f32"``, ``"f16"``, ``"bf16"``) selects the device precision.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np

from ..errors import DataError, DeviceError, InvalidInputError

__all__ = ["profile", "info", "stage_stats"]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_CUDA = "CUDA"


def stage_stats(values_ms: Sequence[float]) -> dict[str, float]:
    """``{"median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms"}`` of a list of milliseconds."""
    v = np.asarray(values_ms, dtype=np.float64)
    if v.size == 0:
        return {"median_ms": float("nan"), "p90_ms": float("nan"), "p99_ms": float("nan"),
                "mean_ms": float("nan"), "min_ms": float("nan")}
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return {"median_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3), "p99_ms": round(float(p99), 3),
            "mean_ms": round(float(v.mean()), 3), "min_ms": round(float(v.min()), 3)}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def info() -> dict[str, Any]:
    """Versions, search instruction sets and inference devices, for ``npad-edge info``.

    Versions come from package metadata (torch is not imported). Keys: ``npad_edge``,
    ``python``, ``platform``, ``versions`` (numpy, openvino, torch, nncf, pillow: None when
    not installed), ``search`` (``isa`` in use, ``available_isas``, ``native_computes``: what
    PatchCore's ``search_compute="auto"`` can pick, ``cpu_features``), ``openvino_devices``
    (name -> full device name), ``cuda`` (whether an NVIDIA driver is visible).
    """
    from .. import __version__

    out: dict[str, Any] = {
        "npad_edge": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "versions": {name: _version(dist) for name, dist in (
            ("numpy", "numpy"), ("openvino", "openvino"), ("torch", "torch"), ("nncf", "nncf"),
            ("pillow", "pillow"))},
    }
    try:
        from .. import search

        out["search"] = {"isa": search.isa(), "available_isas": list(search.available_isas()),
                         "native_computes": search.native_computes(), "cpu_features": search.cpu_features()}
    except Exception as e:  # the compiled core missing or broken: say so, do not fail info
        out["search"] = {"isa": None, "available_isas": [], "error": f"{type(e).__name__}: {e}"}
    try:
        from ..runtime._openvino import core

        c = core()
        devs = {}
        for d in c.available_devices:
            try:
                devs[d] = str(c.get_property(d, "FULL_DEVICE_NAME"))
            except Exception:
                devs[d] = d
        out["openvino_devices"] = devs
    except Exception as e:
        out["openvino_devices"] = {}
        out["openvino_error"] = f"{type(e).__name__}: {e}"
    out["cuda"] = _nvidia_driver_present()
    return out


def _nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or any(
        (Path(p) / "nvidia-smi").exists() for p in os.environ.get("PATH", "").split(os.pathsep) if p)


def _list_images(images_dir: PathLike) -> list[Path]:
    root = Path(os.fspath(images_dir))
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"images folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"images folder {root} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
    return files


def _unavailable(device: str) -> str | None:
    """None if ``device`` can run here, else the one-line reason."""
    if device.strip().upper().split(":")[0] == _CUDA:
        try:
            import torch
        except ImportError:
            return f"{device}: not available (torch is not installed)"
        if not torch.cuda.is_available():
            return f"{device}: not available (torch {torch.__version__} sees no CUDA GPU)"
        return None
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"{device}: not available (openvino is not installed)"
    from ..runtime._openvino import available_devices, check_device

    try:
        check_device(device)
    except DeviceError:
        return f"{device}: not available (available: {', '.join(available_devices())})"
    return None


def _preprocess_ms(det, image: np.ndarray, n: int) -> float | None:
    """Median ms of the IR's preprocessing sub-graph (input -> first convolution's input)."""
    from ..runtime._openvino import OpenVINOBackbone, core

    if not isinstance(det.backbone, OpenVINOBackbone):
        return None
    import openvino as ov

    c = core()
    model = c.read_model(str(det.path / "backbone.xml"))
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    if not convs:
        return None
    src = convs[0].input_value(0)
    # INT8 IRs put a FakeQuantize in front of the convolution: stop before it.
    while src.get_node().get_type_name() in ("FakeQuantize", "Convert"):
        src = src.get_node().input_value(0)
    sub = ov.Model([src], model.get_parameters(), "preprocess")
    cfg = {"INFERENCE_PRECISION_HINT": det.backbone.inference_precision, "PERFORMANCE_HINT": "LATENCY"}
    if det.threads is not None and det.device.split(".")[0] == "CPU":
        cfg["INFERENCE_NUM_THREADS"] = det.threads
    compiled = c.compile_model(sub, det.device, cfg)
    req = compiled.create_infer_request()
    batch = det._place(image)[0][None]   # what the IR takes (resized first for host / core models)
    req.infer({0: batch})
    times = []
    for _ in range(n):
        t = time.perf_counter()
        req.infer({0: batch})
        times.append((time.perf_counter() - t) * 1000.0)
    return float(np.median(times))


def _profile_batches(det, images: list[np.ndarray], batch_sizes: Sequence[int], n: int,
                     warmup: int) -> dict[str, Any]:
    """``predict_batch`` rounds per batch size: about ``n`` images each (at least one round),
    images of the first image's size cycled; per-image stage times (the batch's / its size)."""
    same = [im for im in images if im.shape == images[0].shape]
    out: dict[str, Any] = {}
    for bs in batch_sizes:
        batch = np.stack([same[i % len(same)] for i in range(bs)])
        for _ in range(max(1, warmup)):
            det.predict_batch(batch)
        rounds = max(1, -(-n // bs))
        stages: dict[str, list[float]] = {k: [] for k in ("preprocess", "backbone", "search", "postprocess", "total")}
        t0 = time.perf_counter()
        for _ in range(rounds):
            preds = det.predict_batch(batch)
            for k in stages:
                stages[k].append(preds[0].timings[k])
        wall = time.perf_counter() - t0
        out[str(bs)] = {"batch": bs, "rounds": rounds, "images": rounds * bs,
                        "throughput_ips": round(rounds * bs / wall, 2),
                        "batch_latency_ms": stage_stats([v * bs for v in stages["total"]]),
                        "stages": {k: stage_stats(v) for k, v in stages.items()}}
    return out


def _profile_device(model: PathLike, device: str, images: list[np.ndarray], decode_ms: list[float], *,
                    n: int, warmup: int, threads: int | None, requests: int, hint: str,
                    batch_sizes: Sequence[int] = (), inference_precision: str | None = None) -> dict[str, Any]:
    from ..runtime import Detector

    det = Detector.load(model, device, threads=threads, hint=hint, num_requests=requests,
                        inference_precision=inference_precision)
    on_device = getattr(det, "_device_pipeline", None)
    for i in range(warmup):
        det.predict(images[i % len(images)])
    stages: dict[str, list[float]] = {k: [] for k in ("preprocess", "backbone", "search", "postprocess", "total")}
    t0 = time.perf_counter()
    for i in range(n):
        p = det.predict(images[i % len(images)])
        for k in stages:
            stages[k].append(p.timings[k])
    sync_wall = time.perf_counter() - t0
    pre_ms = _preprocess_ms(det, images[0], max(5, min(n, 20)))
    if pre_ms is not None:
        # Split the IR time: its preprocessing sub-graph, timed apart, moves to "preprocess".
        stages["preprocess"] = [v + pre_ms for v in stages["preprocess"]]
        stages["backbone"] = [max(v - pre_ms, 0.0) for v in stages["backbone"]]
    result: dict[str, Any] = {
        "device": det.device,
        "backend": "openvino" if det.kind == "exported" and not device.upper().startswith(_CUDA) else "torch",
        "precision": det.precision,
        "inference_precision": getattr(det.backbone, "inference_precision", "f32"),
        "threads": threads,
        "stages": {"decode": stage_stats(decode_ms), **{k: stage_stats(v) for k, v in stages.items()}},
        "sync": {"n": n, "throughput_ips": round(n / sync_wall, 2), "latency_ms": stage_stats(stages["total"])},
    }
    if on_device is not None:
        from ..runtime._torch import gpu_name

        result["timer"] = "cuda_events" if on_device.device.type == "cuda" else "perf_counter"
        result["gpu"] = gpu_name(on_device.device)
    if batch_sizes:
        result["batches"] = _profile_batches(det, images, batch_sizes, n, warmup)
    # Async: all n submitted at once, ``requests`` in flight; latency includes the queueing.
    try:
        for f in det.predict_async(images[:min(len(images), requests)]):
            f.result()
        t0 = time.perf_counter()
        futures = det.predict_async(images[i % len(images)] for i in range(n))
        preds = [f.result() for f in futures]
        wall = time.perf_counter() - t0
    finally:
        det.close()
    result["async"] = {"n": n, "requests": requests, "hint": hint, "throughput_ips": round(n / wall, 2),
                       "latency_ms": stage_stats([p.timings["total"] for p in preds])}
    return result


def profile(model: PathLike, images_dir: PathLike, devices: Iterable[str] = ("CPU",), *, n: int = 50,
            warmup: int = 3, threads: int | None = None, requests: int = 4, hint: str = "latency",
            json_out: PathLike | None = None, batch_sizes: Sequence[int] = (),
            inference_precision: str | None = None) -> dict[str, Any]:
    """Time a saved model on each device.

    Args:
        model: a model directory (exported: OpenVINO; fitted: torch, CPU / CUDA only).
        images_dir: a folder of images (searched recursively) or one image file; they are
            decoded once (decode is timed then) and cycled through ``n`` times.
        devices: OpenVINO device names (``CPU``, ``GPU``, ``AUTO``, ...) and/or ``"CUDA"`` (the
            same pipeline with the backbone in torch on an NVIDIA GPU). A device missing here
            gives one line in ``result["unavailable"]`` and the report, not an error.
        n: timed predictions per mode and device; ``warmup`` untimed ones first.
        threads: CPU inference threads (None: OpenVINO's default).
        requests: requests in flight in the async mode.
        hint: OpenVINO performance hint of the compiled backbone (``"latency"``: one stream,
            the better choice on 2 cores even for the async mode; ``"throughput"``: streams).
        json_out: also write the result there as JSON.
        batch_sizes: also time ``predict_batch`` at these batch sizes (``result["devices"][d]
            ["batches"][str(b)]``: per-image stage times, images/s, batch latency).
        inference_precision: passed to the Detector (``"f32"``, ``"f16"``, ``"bf16"``; on CUDA
            the precision of the torch path, on OpenVINO devices the inference precision hint).

    Returns a dict: ``model``, ``kind``, ``precision``, ``method``, ``input_size``,
    ``images`` (folder, count, first image's size), ``n``, ``devices`` (name ->
    ``{"stages": {stage: {median_ms, p90_ms, p99_ms, mean_ms, min_ms}}, "sync": {throughput_ips,
    latency_ms}, "async": {requests, throughput_ips, latency_ms}, ...}``), ``unavailable``
    (name -> one line), ``report`` (lines of text), ``info`` (:func:`info`).
    """
    from ..artifact import read_manifest
    from ..data import read_image

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"n must be a positive int, got {n!r}")
    batch_sizes = list(batch_sizes)
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise InvalidInputError(f"batch_sizes must be positive ints, got {batch_sizes!r}")
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    devices = list(devices)
    if not devices:
        raise InvalidInputError("devices must name at least one device, e.g. ('CPU',)")
    manifest = read_manifest(model)
    files = _list_images(images_dir)[: max(n, 1)]
    images, decode_ms = [], []
    for f in files:
        t = time.perf_counter()
        images.append(read_image(f))
        decode_ms.append((time.perf_counter() - t) * 1000.0)
    result: dict[str, Any] = {
        "model": str(model),
        "kind": manifest.kind,
        "precision": manifest.precision,
        "method": manifest.method.name,
        "input_size": list(manifest.preprocess.image_size),
        "images": {"folder": str(images_dir), "count": len(images), "size": list(images[0].shape[:2])},
        "n": n,
        "devices": {},
        "unavailable": {},
    }
    for dev in devices:
        reason = _unavailable(dev)
        if reason is None and manifest.kind == "fitted" and not dev.upper().startswith(_CUDA) \
                and dev.upper() != "CPU":
            reason = f"{dev}: not available for a fitted (torch) model; export it first"
        if reason is not None:
            result["unavailable"][dev] = reason
            continue
        try:
            result["devices"][dev] = _profile_device(model, dev, images, decode_ms, n=n, warmup=warmup,
                                                     threads=threads, requests=requests, hint=hint,
                                                     batch_sizes=batch_sizes,
                                                     inference_precision=inference_precision)
        except DeviceError as e:  # e.g. an INT8 model on CUDA: refused by the Detector, said here
            result["unavailable"][dev] = f"{dev}: {e}"
    result["report"] = report_lines(result)
    result["info"] = info()
    if json_out is not None:
        Path(os.fspath(json_out)).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def report_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable lines of a :func:`profile` result."""
    lines = [f"{result['model']} ({result['kind']}, {result['precision']}, {result['method']}, input "
             f"{result['input_size'][0]}x{result['input_size'][1]}); {result['images']['count']} images of "
             f"{result['images']['size'][0]}x{result['images']['size'][1]}, n={result['n']}"]
    for dev, r in result["devices"].items():
        st = r["stages"]
        parts = ", ".join(f"{k} {st[k]['median_ms']:.2f}" for k in ("decode", "preprocess", "backbone", "search",
                                                                   "postprocess", "total"))
        lines.append(f"{dev} [{r['backend']}, {r['inference_precision']}]: median ms {parts}; p90 total "
                     f"{st['total']['p90_ms']:.2f}, p99 {st['total']['p99_ms']:.2f}")
        lines.append(f"{dev}: sync {r['sync']['throughput_ips']:.1f} img/s; async ({r['async']['requests']} in "
                     f"flight) {r['async']['throughput_ips']:.1f} img/s, median latency "
                     f"{r['async']['latency_ms']['median_ms']:.1f} ms"
                     + (f"; timer {r['timer']}" if "timer" in r else "") + (f" on {r['gpu']}" if r.get("gpu") else ""))
        for bs, br in r.get("batches", {}).items():
            st = br["stages"]
            lines.append(f"{dev} batch {bs}: {br['throughput_ips']:.1f} img/s, per image median ms "
                         + ", ".join(f"{k} {st[k]['median_ms']:.2f}" for k in ("backbone", "search", "postprocess",
                                                                             "total"))
                         + f"; batch latency median {br['batch_latency_ms']['median_ms']:.1f} ms")
    lines.extend(result["unavailable"].values())
    return lines
