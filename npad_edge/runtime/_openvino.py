"""The OpenVINO side of the runtime: one shared Core, device checks, compiled backbones.

Imports no torch and no NNCF. Everything here is thread-safe: a compiled model is shared,
each concurrent caller gets its own infer request from a free list.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeviceError, InvalidInputError, ModelFormatError

__all__ = ["core", "available_devices", "check_device", "default_inference_precision", "OpenVINOBackbone",
           "CompiledModelCache"]

log = logging.getLogger(__name__)

_core = None
_core_lock = threading.Lock()

# Devices OpenVINO composes from the real ones; they are not in available_devices.
_VIRTUAL = ("AUTO", "MULTI", "HETERO", "BATCH")

#: OpenVINO's names of element types, the values INFERENCE_PRECISION_HINT accepts.
_HINTS = ("f32", "bf16", "f16")


def core():
    """The process-wide ``openvino.Core`` (created once; creating one costs tens of ms)."""
    global _core
    if _core is None:
        with _core_lock:
            if _core is None:
                import openvino as ov

                _core = ov.Core()
    return _core


def available_devices() -> list[str]:
    """OpenVINO's devices on this machine, e.g. ``['CPU']`` or ``['CPU', 'GPU.0', 'GPU.1']``."""
    return list(core().available_devices)


def check_device(device: Any) -> str:
    """Return ``device`` if OpenVINO has it here, else raise DeviceError listing what it has.

    Virtual devices (``AUTO``, ``MULTI:...``, ``HETERO:...``, ``BATCH:...``) are accepted when
    every real device they name exists. ``GPU`` matches ``GPU.0`` etc. No fallback, ever.
    """
    if not isinstance(device, str) or not device.strip():
        raise DeviceError(f"device must be an OpenVINO device name such as 'CPU', got {device!r}; "
                          f"available: {', '.join(available_devices())}")
    device = device.strip()
    have = available_devices()
    head, _, rest = device.partition(":")
    if head.upper() in _VIRTUAL:
        named = [d.strip() for d in rest.split(",") if d.strip()]
        missing = [d for d in named if not _has(d, have)]
        if missing:
            raise DeviceError(f"device {device!r} names {', '.join(missing)}, not available here; "
                              f"available: {', '.join(have)}")
        return device
    if not _has(device, have):
        raise DeviceError(f"device {device!r} is not available; available OpenVINO devices: "
                          f"{', '.join(have)}")
    return device


def _has(name: str, have: list[str]) -> bool:
    name = name.split("(")[0].strip()  # "GPU(4)" in MULTI syntax
    return name in have or any(d.split(".")[0] == name for d in have)


def default_inference_precision(device: str, precision: str) -> str:
    """The INFERENCE_PRECISION_HINT for a model stored in ``precision`` on ``device``.

    Always explicit: on CPUs with AVX-512 BF16 / AMX OpenVINO otherwise runs f32 models in
    bf16. fp32 -> ``f32``; fp16 -> ``f16`` where the device computes in FP16 natively (GPU,
    CPUs with AVX512-FP16), else ``f32`` (the weights are stored in fp16, math stays f32);
    int8 -> the quantized ops run in int8 whatever the hint, the rest in ``f32`` (``f16`` on
    FP16-native devices).
    """
    if precision == "fp32":
        return "f32"
    try:
        caps = core().get_property(device, "OPTIMIZATION_CAPABILITIES")
    except Exception:  # virtual devices (AUTO, MULTI) have no capabilities of their own
        caps = []
    return "f16" if "FP16" in caps and device.split(".")[0].split(":")[0] != "CPU" else "f32"


class CompiledModelCache:
    """Compiled backbones shared between Detectors (many parts, one backbone).

    One ``openvino.CompiledModel`` per key: the IR's identity (the sha256 of backbone.xml and
    backbone.bin recorded in the model's verified manifest), the device and the compile
    settings. Parts fitted with the same backbone, taps, input size and precision export
    byte-identical IRs, so they compile once and hold one copy of the weights and kernels;
    each Detector keeps its own method state and infer requests. Entries stay until
    :meth:`clear` (there are few distinct backbones). Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple, Any] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, compile_fn: Any) -> Any:
        """The compiled model of ``key``; ``compile_fn()`` builds it on the first request."""
        with self._lock:
            found = self._models.get(key)
            if found is not None:
                self.hits += 1
                return found
            # Compile under the lock: two parts arriving together compile once, not twice.
            compiled = compile_fn()
            self._models[key] = compiled
            self.misses += 1
            return compiled

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


class OpenVINOBackbone:
    """A compiled backbone IR: ``(B, H, W, 3) uint8`` -> ``(B, D, h, w) float32`` features.

    Args:
        xml: path of ``backbone.xml`` (``backbone.bin`` beside it).
        device: an OpenVINO device name (checked with :func:`check_device`).
        precision: the stored precision (``"fp32"``, ``"fp16"``, ``"int8"``).
        threads: CPU threads for inference (INFERENCE_NUM_THREADS); None: OpenVINO's default.
        hint: ``"latency"`` (one stream; best for single images) or ``"throughput"``
            (several streams; best for many requests in flight).
        inference_precision: override of the INFERENCE_PRECISION_HINT (``f32``, ``bf16``,
            ``f16``); None picks :func:`default_inference_precision`.
        cache, ir_key: a :class:`CompiledModelCache` and the IR's identity (e.g. the sha256 of
            its .xml and .bin): the compiled model is taken from / put in the cache under
            ``(ir_key, device, settings)``. Both or neither.
        ir: the content of ``backbone.xml`` and ``backbone.bin`` already read (and verified)
            by the caller (``LoadedModel.file_bytes``): the files are then not read again, and
            ``xml`` only names the model in messages.
    """

    def __init__(self, xml: Path, device: str = "CPU", *, precision: str = "fp32",
                 threads: int | None = None, hint: str = "latency",
                 inference_precision: str | None = None, cache: CompiledModelCache | None = None,
                 ir_key: Any = None, ir: tuple[bytes, bytes] | None = None) -> None:
        device = check_device(device)
        if hint not in ("latency", "throughput"):
            raise InvalidInputError(f"hint must be 'latency' or 'throughput', got {hint!r}")
        if inference_precision is None:
            inference_precision = default_inference_precision(device, precision)
        if inference_precision not in _HINTS:
            raise InvalidInputError(f"inference_precision must be one of {_HINTS}, got {inference_precision!r}")
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": hint.upper(),
            "INFERENCE_PRECISION_HINT": inference_precision,
        }
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise InvalidInputError(f"threads must be a positive int or None, got {threads!r}")
            if device.split(".")[0] == "CPU":
                config["INFERENCE_NUM_THREADS"] = int(threads)
        xml = Path(xml)
        for f in (xml, xml.with_suffix(".bin")) if ir is None else ():
            if not f.is_file():
                raise ModelFormatError(f"OpenVINO IR file missing: {f}")
        if (cache is None) != (ir_key is None):
            raise InvalidInputError("OpenVINOBackbone: pass both cache and ir_key, or neither")
        if cache is None:
            self._compiled = _compile(xml, device, config, ir)
        else:
            key = (ir_key, device, tuple(sorted((k, str(v)) for k, v in config.items())))
            self._compiled = cache.get(key, lambda: _compile(xml, device, config, ir))
        self.device = device
        self.precision = precision
        self.hint = hint
        self.inference_precision = inference_precision
        self.threads = threads
        self._output = self._compiled.outputs[0]
        self._free: list[Any] = []
        self._lock = threading.Lock()

    @property
    def compiled(self):
        """The ``openvino.CompiledModel`` (for AsyncInferQueue and properties)."""
        return self._compiled

    @property
    def optimal_requests(self) -> int:
        try:
            return max(1, int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        except Exception:
            return 1

    def properties(self) -> dict[str, str]:
        """The compiled model's settings that matter for speed and accuracy, as strings."""
        out = {}
        for key in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS",
                    "PERFORMANCE_HINT", "OPTIMAL_NUMBER_OF_INFER_REQUESTS"):
            try:
                out[key] = str(self._compiled.get_property(key))
            except Exception:
                pass
        return out

    def extract(self, images: np.ndarray) -> np.ndarray:
        """``(B, H, W, 3) uint8`` -> ``(B, D, h, w) float32`` (a new array the caller owns)."""
        with self._lock:
            request = self._free.pop() if self._free else None
        if request is None:
            request = self._compiled.create_infer_request()
        try:
            # share_inputs=False: the input is copied into the request (0.2 ms for a 900x900
            # frame). Zero-copy sharing returned a stale result (the previous image's) in a
            # test process on OpenVINO 2026.4 CPU; copying never did.
            result = request.infer({0: images}, share_inputs=False)
            return result[self._output]
        finally:
            with self._lock:
                self._free.append(request)

    def output(self, request) -> np.ndarray:
        """A copy of the features held by a finished request (for AsyncInferQueue callbacks)."""
        return np.array(request.get_tensor(self._output).data, copy=True)


def _compile(xml: Path, device: str, config: dict[str, Any], ir: tuple[bytes, bytes] | None = None):
    c = core()
    try:
        # From bytes the caller verified: reading the path again could read a swapped file.
        model = c.read_model(os.fspath(xml)) if ir is None else c.read_model(bytes(ir[0]), bytes(ir[1]))
    except Exception as e:  # OpenVINO raises RuntimeError with a long C++ trace
        raise ModelFormatError(f"cannot read OpenVINO IR {xml}: {_first_line(e)}") from None
    if len(model.inputs) != 1:
        raise ModelFormatError(f"backbone IR {xml} must have one input, has {len(model.inputs)}")
    try:
        return c.compile_model(model, device, config)
    except Exception as e:
        raise ModelFormatError(f"cannot compile {xml} on {device}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # OpenVINO's messages start with "Exception from src/...cpp:123:" then the useful line.
    for ln in lines:
        if not ln.startswith(("Exception from", "Check '")):
            return ln.strip()
    return lines[0] if lines else type(e).__name__
