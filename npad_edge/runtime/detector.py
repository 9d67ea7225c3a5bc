"""The deployed detector: load a saved model once, call it on images.

    det = Detector.load("bottle_int8", device="CPU")
    pred = det(image)                      # (H, W, 3) uint8 RGB, or a path
    pred.score, pred.is_anomalous, pred.anomaly_map, pred.mask, pred.timings

An exported model runs its backbone with OpenVINO (normalisation inside the IR; the resize to
the model input by the C++ core before it, ``data.geometry.core_resize``, or inside the IR for
models saved with ``resize.on`` "graph") and the memory-bank search in the C++ core; a fitted model runs its backbone in torch (fit-time
path, needs torch). This module imports no torch and no NNCF.

Thresholds: ``is_anomalous`` is ``score >= threshold`` (the manifest's image threshold, the
lowest score still called anomalous, as :func:`npad_edge.metrics.f1_optimal_threshold`
defines it). The mask is ``anomaly_map >= pixel_threshold``; the pixel threshold is
``manifest.extra["pixel_threshold"]`` when the model carries one, else the image threshold:
for PatchCore the image score is the largest patch score and the map is the blurred,
upsampled patch scores on the same scale, so the image threshold marks the patches that alone
would make an image anomalous (the blur lowers isolated peaks, so a mask may be empty for an
image barely above the threshold). N-pad fits whose image score is the stronger of its two terms
rather than the map's peak (the knn reading's default) carry their own pixel threshold,
calibrated on the map (``pipeline``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np

from ..data.geometry import Placement, Tiling, letterbox, merge_tiles, resize_for, tile_grid
from ..errors import DeviceError, InvalidInputError, ModelFormatError, NpadError
from . import _openvino

__all__ = ["Detector", "Prediction"]

log = logging.getLogger(__name__)

ImageLike = Union[np.ndarray, str, "os.PathLike[str]"]

#: Keys of ``Prediction.timings`` (milliseconds), in pipeline order.
STAGES = ("decode", "preprocess", "backbone", "search", "postprocess", "total")


@dataclass
class Prediction:
    """The result for one image.

    Attributes:
        score: image anomaly score (float; higher is more anomalous).
        is_anomalous: ``score >= threshold``.
        anomaly_map: ``(H, W) float32`` at the input image's size.
        mask: ``(H, W) bool``, ``anomaly_map >= pixel_threshold``.
        timings: milliseconds per stage: ``decode`` (file -> array, 0 for arrays),
            ``preprocess`` (input checks, batching, and the resize to the model input for
            models that resize in the core or on the host: ``resize.on`` "core", the default
            of new fits, or "host"), ``backbone`` (the IR: its resize for "graph" models,
            exposure gain, normalisation, CNN), ``search`` (memory-bank scoring), ``postprocess`` (map at
            full size + mask), ``total`` (the whole call, decode included). For
            ``predict_batch`` these are the batch's times divided by the batch size; for
            ``submit`` ``backbone`` includes the wait for a free request.
    """

    score: float
    is_anomalous: bool
    anomaly_map: np.ndarray
    mask: np.ndarray
    timings: dict = field(default_factory=dict)


def _now() -> float:
    return time.perf_counter() * 1000.0


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """Check one ``(H, W, 3) uint8`` C-contiguous RGB image (``data.as_image_array``); returns
    it unchanged. InvalidInputError names ``name``, what was expected and what came."""
    from ..data import as_image_array

    try:
        return as_image_array(image)
    except InvalidInputError as e:
        raise InvalidInputError(f"{name}: {e}") from None


def _limit_blas_threads(n: int | None) -> None:
    """Cap numpy's BLAS pool: the map products are small, and idle OpenBLAS threads spin and
    take cores from OpenVINO and the search. Process-wide on purpose (BLAS has one pool per
    process, so a per-Detector cap cannot exist): applied by every Detector that asks, the
    last one wins; None leaves the pool as it is."""
    if n is None:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.debug("threadpoolctl not installed; numpy BLAS threads left as they are")
        return
    threadpool_limits(limits=n, user_api="blas")


class Detector:
    """A loaded anomaly-detection model, callable on images; thread-safe.

    Args:
        path: a model directory written by ``npad-edge fit`` (kind "fitted") or
            ``npad-edge export`` (kind "exported").
        device: an OpenVINO device name (``"CPU"``, ``"GPU"``, ``"GPU.1"``, ``"AUTO"``...);
            an unknown one raises DeviceError listing the available ones. ``"CUDA"`` (or
            ``"CUDA:1"``) runs backbone, search and map in torch on an NVIDIA GPU
            (``runtime/_torch.py``; needs torch with CUDA; ``inference_precision`` ``"f32"``,
            ``"f16"`` or ``"bf16"``, default the model's; an INT8 export is refused, its graph
            is OpenVINO's). A fitted model runs in torch: ``"CPU"`` or ``"CUDA"``.
        threads: CPU threads for the backbone (OpenVINO INFERENCE_NUM_THREADS) and for the
            memory-bank search (the method's search indexes); None lets OpenVINO choose and
            the search use every CPU this process may run on (its affinity mask).
        hint: ``"latency"`` (default; one stream, lowest time per image) or ``"throughput"``
            (several streams; more images per second with many requests in flight).
        inference_precision: override the OpenVINO INFERENCE_PRECISION_HINT (``"f32"``,
            ``"bf16"``, ``"f16"``); default ``f32`` for fp32/int8 models on CPU.
        num_requests: infer requests of the async queue (default: OpenVINO's optimum, at
            least 2 so that the backbone of one image overlaps the search of another).
        blas_threads: cap numpy's BLAS threads (default 1); None leaves them. Process-wide
            (BLAS has one pool per process): each Detector created with a number sets it,
            the last one wins.

    Process-wide effects, on purpose and only these: ``blas_threads`` above; for a fitted
    model on the CPU (torch), ``torch.set_num_threads(threads)`` when ``threads`` is given
    and ``OMP_WAIT_POLICY=PASSIVE`` set (unless already set) before torch is first imported
    (``runtime/_torch.py``). An exported model on OpenVINO changes nothing outside itself.
        tiling: serve frames much larger than the model input by tiles
            (``npad_edge.data.geometry.Tiling``; a number is ``Tiling(scale=number)``): the frame
            is cut into overlapping tiles of ``scale`` x the model input (or ``size``) in source
            pixels, each scored at the model input, maps merged (max in overlaps by default),
            image score the maximum over tiles. A frame within one tile is that one tile,
            identical to the untiled path. None (default): the whole frame is resized.
        compiled_cache: an ``_openvino.CompiledModelCache`` shared by several Detectors: models
            whose IR files have the same sha256 (manifest, verified on load) share one compiled
            backbone (npad_edge.fleet serves many parts this way). None: compile privately.

    Raises:
        ModelFormatError: not a model directory, a missing/corrupt file (IR included).
        ModelVersionError: written by a newer npad_edge.
        DeviceError: unknown device.
        NpadError: a fitted model without torch installed.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], device: str = "CPU", *,
                 threads: int | None = None, hint: str = "latency",
                 inference_precision: str | None = None, num_requests: int | None = None,
                 blas_threads: int | None = 1, tiling: "Tiling | float | None" = None,
                 compiled_cache: "_openvino.CompiledModelCache | None" = None) -> None:
        from .. import artifact

        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InvalidInputError(f"threads must be a positive int or None, got {threads!r}")
        if num_requests is not None and (not isinstance(num_requests, int) or num_requests < 1):
            raise InvalidInputError(f"num_requests must be a positive int or None, got {num_requests!r}")
        # Device first: a wrong device name is the cheapest mistake to report.
        head = artifact.read_manifest(path)
        kind = head.kind
        on_cuda = isinstance(device, str) and device.strip().upper().split(":")[0] == "CUDA"
        on_torch = kind == "fitted" or on_cuda
        if on_cuda:  # INT8 refused, a missing GPU reported, before the model files are read
            from . import _torch

            cuda_device, cuda_precision = _torch.check_cuda_request(head, device, inference_precision)
        elif not on_torch:
            device = _openvino.check_device(device)
        loaded = artifact.load_model(path)
        m = loaded.manifest
        self.path = Path(os.fspath(path))
        self.manifest = m
        self.kind = m.kind
        self.precision = m.precision
        self.threshold = float(m.threshold.value)
        pix = m.extra.get("pixel_threshold")
        self.pixel_threshold = float(pix) if isinstance(pix, (int, float)) and not isinstance(pix, bool) else self.threshold
        self.input_size: tuple[int, int] = (int(m.preprocess.image_size[0]), int(m.preprocess.image_size[1]))
        # Mixed-aspect rule (data.geometry): letterbox pads on the host before the backbone.
        self.aspect_rule: str = m.preprocess.aspect_rule
        self._letterbox = (m.preprocess.letterbox_fill, list(m.preprocess.mean)) \
            if self.aspect_rule == "letterbox" else None
        # Issue 10: a model whose backbone config says resize.on = "host" or "core" has no resize
        # in its graph; images are resized here (data.geometry.resize_for, the preprocess stage).
        self.resize_on: str = str((m.backbone.config or {}).get("resize", {}).get("on", "graph"))
        if self.resize_on not in ("graph", "core", "host"):
            raise ModelFormatError(f"{loaded.root}: backbone config resize.on={self.resize_on!r}; "
                                   "expected 'graph', 'core' or 'host'")
        self.tiling: Tiling | None = _check_tiling(tiling)
        self.sigma = _map_sigma(m.extra)
        self.method = _build_method(m, loaded.arrays, loaded.root)
        _bind_search_threads(self.method, threads)
        self.threads = threads
        # the core resize (resize_on "core") splits its output rows over the search's threads
        self._resize_threads = int(threads) if threads else max(1, min(os.cpu_count() or 1, 4))
        self._num_requests = num_requests
        self._device_pipeline = None  # runtime/_torch.DevicePipeline for device="CUDA"
        if not on_torch:
            self.backbone = _openvino.OpenVINOBackbone(
                loaded.file_path(artifact.BACKBONE_XML), device, precision=m.precision, threads=threads,
                hint=hint, inference_precision=inference_precision, cache=compiled_cache,
                ir_key=None if compiled_cache is None else _ir_key(m),
                ir=(loaded.file_bytes(artifact.BACKBONE_XML), loaded.file_bytes(artifact.BACKBONE_BIN)))
            self.device = self.backbone.device
            want = "f32" if self.resize_on == "core" else "u8"
            got = self.backbone.compiled.inputs[0].get_element_type().get_type_name()
            if got != want:
                raise ModelFormatError(f"{loaded.root}: the backbone IR takes {got} images, but its config "
                                       f"(resize.on={self.resize_on!r}) says {want}: the manifest and the IR disagree")
        elif on_cuda:
            self._device_pipeline = _torch.build_device_pipeline(
                m, self.method, cuda_device, cuda_precision, input_size=self.input_size, sigma=self.sigma,
                pixel_threshold=self.pixel_threshold)
            self.backbone = self._device_pipeline
            self.device = self._device_pipeline.name
            self.precision = cuda_precision  # what runs, not what the manifest was exported as
        else:
            self.backbone = _torch_backbone(m, device, threads)
            self.device = device
        _limit_blas_threads(blas_threads)
        self._queue = None
        self._executor: ThreadPoolExecutor | None = None
        self._async_lock = threading.Lock()
        self._pending: set = set()  # futures of submit() not completed yet
        self._pending_lock = threading.Lock()

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], device: str = "CPU", **kwargs: Any) -> "Detector":
        """Load a model directory; the same as ``Detector(path, device, ...)``."""
        return cls(path, device, **kwargs)

    def __repr__(self) -> str:
        return (f"Detector({str(self.path)!r}, kind={self.kind!r}, precision={self.precision!r}, "
                f"device={self.device!r}, method={self.manifest.method.name!r}, input_size={self.input_size})")

    # ---------------------------------------------------------------- single images

    def __call__(self, image: ImageLike) -> Prediction:
        return self.predict(image)

    def predict(self, image: ImageLike) -> Prediction:
        """Score one image: ``(H, W, 3) uint8`` RGB array or a path to an image file."""
        t0 = _now()
        image, t_decode = self._decode(image)
        t1 = _now()
        check_image(image)
        if self.tiling is not None:
            return self._predict_tiled(image, t0, t_decode)
        x, place = self._place(image)
        batch = x[None]
        t2 = _now()
        features = self.backbone.extract(batch)
        t3 = _now()
        return self._finish(features, [place], {"decode": t_decode, "preprocess": t2 - t1,
                                                "backbone": t3 - t2}, t0)[0]

    def predict_batch(self, images: Union[Sequence[ImageLike], np.ndarray]) -> list[Prediction]:
        """Score several images; one backbone call when they share a size. Returns a list.

        ``images``: a ``(B, H, W, 3) uint8`` array or a sequence of arrays / paths.
        """
        t0 = _now()
        if isinstance(images, np.ndarray):
            if images.ndim != 4:
                raise InvalidInputError(f"images: expected (B, H, W, 3) uint8 or a list of images, got shape {images.shape}")
            items: list = list(images)
        else:
            items = list(images)
        if not items:
            return []
        decoded, t_decode = [], 0.0
        for i, item in enumerate(items):
            img, t = self._decode(item)
            check_image(img, f"images[{i}]")
            decoded.append(img)
            t_decode += t
        if len({im.shape for im in decoded}) > 1 or self.tiling is not None:
            # Different sizes cannot share one tensor (and tiles are batched per frame): one call each.
            return [self.predict(im) for im in decoded]
        t1 = _now()
        placed = [self._place(im) for im in decoded]
        if placed[0][1].padded or self.resize_on != "graph":   # letterboxed or resized here
            batch = np.stack([x for x, _ in placed])
        else:
            batch = images if isinstance(images, np.ndarray) else np.stack(decoded)
        t2 = _now()
        features = self.backbone.extract(batch)
        t3 = _now()
        return self._finish(features, [p for _, p in placed],
                            {"decode": t_decode, "preprocess": t2 - t1, "backbone": t3 - t2}, t0)

    def warmup(self, image_size: tuple[int, int] | None = None, batch: int = 1) -> None:
        """Run one prediction on a blank image of ``image_size`` (H, W; default the model input
        size). The first call at each new input shape compiles shape-specific kernels (about
        a second of CPU for a 900x900 input); do it before timing or serving that size."""
        h, w = self.input_size if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.predict_batch(np.zeros((batch, h, w, 3), np.uint8)) if batch > 1 else \
            self.predict(np.zeros((h, w, 3), np.uint8))

    # ---------------------------------------------------------------- async

    def submit(self, image: ImageLike, callback: Callable[[Prediction, Any], None] | None = None,
               userdata: Any = None) -> "Future[Prediction]":
        """Start scoring one image without waiting; returns a ``concurrent.futures.Future``.

        The backbone runs in OpenVINO's ``AsyncInferQueue`` (``num_requests`` in flight;
        this call blocks while all are busy), the search and the map in a worker thread.
        ``callback(prediction, userdata)``, if given, runs in that worker thread before the
        future completes; if it raises, the exception is logged and set on the future.
        Errors about the image (bad array, unreadable file) are set on the future too, and so
        is any error starting the work (creating the async queue, ``start_async``): the future
        always completes, so ``wait()``, ``close()`` and ``with`` never block on it.
        """
        fut: Future = Future()
        with self._pending_lock:
            self._pending.add(fut)
        fut.add_done_callback(self._forget)
        try:
            self._submit_into(fut, image, callback, userdata)
        except BaseException as e:
            # Registered above: left pending, it would block wait()/close()/__exit__ forever.
            _set_exception(fut, e)
            if not isinstance(e, Exception):
                raise  # KeyboardInterrupt & co. still reach the caller
        return fut

    def _submit_into(self, fut: Future, image: ImageLike, callback: Callable[[Prediction, Any], None] | None,
                     userdata: Any) -> "Future[Prediction]":
        t0 = _now()
        try:
            image, t_decode = self._decode(image)
            check_image(image)
        except Exception as e:
            fut.set_exception(e)
            return fut
        queue = self._ensure_async()
        if self.tiling is not None:  # several backbone calls per frame: the whole predict in a worker
            self._executor.submit(self._run_tiled, image, fut, callback, userdata)  # type: ignore[union-attr]
            return fut
        t1 = _now()
        image, place = self._place(image)
        ctx = (fut, place, callback, userdata, t0, t_decode, t1)
        if queue is None:  # torch backbone: no OpenVINO queue, run the whole predict in a worker
            self._executor.submit(self._run_sync, image, ctx)  # type: ignore[union-attr]
        else:
            queue.start_async({0: image[None]}, userdata=ctx, share_inputs=False)
        return fut

    def predict_async(self, images: Iterable[ImageLike]) -> list["Future[Prediction]"]:
        """``submit`` each image; returns the futures in order (``[f.result() for f in ...]``)."""
        return [self.submit(im) for im in images]

    def wait(self) -> None:
        """Block until every submitted image has finished (futures completed)."""
        with self._async_lock:
            queue = self._queue
        if queue is not None:
            queue.wait_all()
        with self._pending_lock:
            pending = list(self._pending)
        futures_wait(pending)

    def close(self) -> None:
        """Wait for submitted work and free the async workers (the detector stays usable)."""
        self.wait()
        with self._async_lock:
            executor, self._executor, self._queue = self._executor, None, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _forget(self, fut: Future) -> None:
        with self._pending_lock:
            self._pending.discard(fut)

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _ensure_async(self):
        with self._async_lock:
            if self._executor is not None:
                return self._queue
            if isinstance(self.backbone, _openvino.OpenVINOBackbone):
                import openvino as ov

                jobs = self._num_requests or max(2, self.backbone.optimal_requests)
                queue = ov.AsyncInferQueue(self.backbone.compiled, jobs)
                queue.set_callback(self._on_infer_done)
            else:
                jobs, queue = self._num_requests or 2, None
            self._executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="npad-detector")
            self._queue = queue
            return queue

    def _on_infer_done(self, request, ctx) -> None:
        # Runs on an OpenVINO thread: copy the features out and hand the rest to a worker, so
        # the request is free again at once. Must never raise.
        fut = ctx[0]
        try:
            features = self.backbone.output(request)
            t2 = _now()
            self._executor.submit(self._complete, features, ctx, t2)  # type: ignore[union-attr]
        except BaseException as e:  # noqa: BLE001 - everything goes to the future
            _set_exception(fut, e)

    def _run_sync(self, image: np.ndarray, ctx) -> None:
        fut = ctx[0]
        try:
            features = self.backbone.extract(image[None])
            self._complete(features, ctx, _now())
        except BaseException as e:  # noqa: BLE001
            _set_exception(fut, e)

    def _run_tiled(self, image: np.ndarray, fut: Future, callback, userdata) -> None:
        try:
            pred = self.predict(image)
        except BaseException as e:  # noqa: BLE001
            _set_exception(fut, e)
            return
        if callback is not None:
            try:
                callback(pred, userdata)
            except BaseException as e:  # noqa: BLE001
                log.exception("Detector.submit callback raised; the exception is set on the future")
                _set_exception(fut, e)
                return
        if not fut.done():
            fut.set_result(pred)

    def _complete(self, features: np.ndarray, ctx, t_backbone_done: float) -> None:
        fut, hw, callback, userdata, t0, t_decode, t1 = ctx
        try:
            pred = self._finish(features, [hw], {"decode": t_decode, "preprocess": 0.0,
                                                 "backbone": t_backbone_done - t1}, t0)[0]
        except BaseException as e:  # noqa: BLE001
            _set_exception(fut, e)
            return
        if callback is not None:
            try:
                callback(pred, userdata)
            except BaseException as e:  # noqa: BLE001
                log.exception("Detector.submit callback raised; the exception is set on the future")
                _set_exception(fut, e)
                return
        if not fut.done():
            fut.set_result(pred)

    # ---------------------------------------------------------------- shared tail

    def _decode(self, image: ImageLike) -> tuple[np.ndarray, float]:
        if isinstance(image, (str, os.PathLike)):
            from ..data import read_image

            t = _now()
            arr = read_image(image)
            return arr, _now() - t
        return image, 0.0

    def _finish_on_device(self, features, sizes: list, timings: dict, t0: float) -> list[Prediction]:
        # CUDA: search, map and mask ran on the device; its stage times are CUDA-event times.
        scores, maps, masks, stage_ms = self._device_pipeline.finish(features, sizes)
        b = len(sizes)
        per = {k: v / b for k, v in timings.items()}
        per.update({k: v / b for k, v in stage_ms.items()}, total=(_now() - t0) / b)
        return [Prediction(score=float(scores[i]), is_anomalous=bool(float(scores[i]) >= self.threshold),
                           anomaly_map=maps[i], mask=masks[i], timings={k: per[k] for k in STAGES})
                for i in range(b)]

    def _finish(self, features: np.ndarray, sizes: list, timings: dict, t0: float) -> list[Prediction]:
        # sizes: per image its (h, w) or a geometry.Placement (letterbox: the map is made at the
        # padded size and cropped back to the image).
        places = [s if isinstance(s, Placement) else Placement(tuple(s), tuple(s)) for s in sizes]
        if self._device_pipeline is not None:
            preds = self._finish_on_device(features, [p.padded_hw for p in places], timings, t0)
            for p, pred in zip(places, preds):
                if p.padded:
                    pred.anomaly_map, pred.mask = p.crop(pred.anomaly_map), p.crop(pred.mask)
            return preds
        from ..postprocess import anomaly_maps

        b = len(sizes)
        t3 = _now()
        patch, image_scores = self.method.score(features)
        t4 = _now()
        preds = []
        if len({p.padded_hw for p in places}) == 1:
            maps = anomaly_maps(patch, self.input_size, places[0].padded_hw, self.sigma)
        else:
            maps = [anomaly_maps(patch[i], self.input_size, places[i].padded_hw, self.sigma) for i in range(b)]
        maps = [p.crop(maps[i]) for i, p in enumerate(places)]
        masks = [maps[i] >= self.pixel_threshold for i in range(b)]
        t5 = _now()
        per = {k: v / b for k, v in timings.items()}
        per.update(search=(t4 - t3) / b, postprocess=(t5 - t4) / b, total=(t5 - t0) / b)
        for i in range(b):
            s = float(image_scores[i])
            preds.append(Prediction(score=s, is_anomalous=bool(s >= self.threshold), anomaly_map=maps[i],
                                    mask=masks[i], timings={k: per[k] for k in STAGES}))
        return preds


    # ---------------------------------------------------------------- geometry

    def _place(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """The array the backbone sees for ``image`` and where the image sits in it: the image
        itself (aspect rule "resize": the in-graph resize squashes), or letterboxed."""
        if self._letterbox is None:
            place = Placement(image.shape[:2], image.shape[:2])
            # resized here for "host" / "core" models; the map still comes back at the image's size
            return resize_for(self.resize_on, image, self.input_size, self._resize_threads), place
        fill, mean = self._letterbox
        x, place = letterbox(image, self.input_size, fill=fill, mean=mean)
        return resize_for(self.resize_on, x, self.input_size, self._resize_threads), place

    def _predict_tiled(self, image: np.ndarray, t0: float, t_decode: float) -> Prediction:
        """Score ``image`` by tiles (``self.tiling``): tiles of one size, batched through the
        backbone in chunks, each scored like a frame of its own, maps merged at full size."""
        tiling = self.tiling
        t1 = _now()
        tiles = tile_grid(image.shape[:2], tiling.tile_hw(self.input_size), tiling.overlap)
        placed = [self._place(np.ascontiguousarray(image[y:y + h, x:x + w])) for y, x, h, w in tiles]
        preds: list[Prediction] = []
        t_backbone, t_pre = 0.0, (_now() - t1) + (t1 - t0 - t_decode)   # checks + cutting
        for s in range(0, len(placed), _TILE_BATCH):
            chunk = placed[s:s + _TILE_BATCH]
            ta = _now()
            batch = chunk[0][0][None] if len(chunk) == 1 else np.stack([x for x, _ in chunk])
            tb = _now()
            features = self.backbone.extract(batch)
            tc = _now()
            t_pre += tb - ta
            t_backbone += tc - tb
            preds += self._finish(features, [p for _, p in chunk], {"decode": 0.0, "preprocess": 0.0,
                                                                      "backbone": 0.0}, tc)
        t4 = _now()
        amap = merge_tiles(image.shape[:2], tiles, [p.anomaly_map for p in preds], tiling.merge)
        mask = amap >= self.pixel_threshold
        score = max(p.score for p in preds)
        t5 = _now()
        timings = {"decode": t_decode, "preprocess": t_pre, "backbone": t_backbone,
                   "search": sum(p.timings["search"] for p in preds),
                   "postprocess": sum(p.timings["postprocess"] for p in preds) + (t5 - t4), "total": t5 - t0}
        return Prediction(score=float(score), is_anomalous=bool(score >= self.threshold), anomaly_map=amap,
                          mask=mask, timings={k: timings[k] for k in STAGES})


#: Tiles per backbone call when tiling (bounds the batch's memory; one compiled shape).
_TILE_BATCH = 8


def _check_tiling(tiling: Any) -> "Tiling | None":
    if tiling is None or isinstance(tiling, Tiling):
        return tiling
    if isinstance(tiling, (int, float)) and not isinstance(tiling, bool):
        return Tiling(scale=float(tiling))
    if isinstance(tiling, dict):
        return Tiling(**tiling)
    raise InvalidInputError(f"tiling must be a geometry.Tiling, a scale (number), a dict of Tiling's fields or "
                            f"None, got {tiling!r}")


def _ir_key(manifest) -> tuple:
    """The identity of a model's IR: the sha256 of its .xml and .bin from the manifest (load_model
    has verified them against the files)."""
    from .. import artifact

    files = manifest.files
    return tuple(files[n].sha256 if n in files else None for n in (artifact.BACKBONE_XML, artifact.BACKBONE_BIN))


def _map_sigma(extra: dict) -> float:
    """The Gaussian sigma of the anomaly map: ``extra["anomaly_map"]["sigma"]`` (written by
    ``pipeline.fit_model``), 4.0 (PatchCore's) when absent."""
    spec = extra.get("anomaly_map")
    sigma = spec.get("sigma", 4.0) if isinstance(spec, dict) else 4.0
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < 1e3:
        raise ModelFormatError(f"manifest: 'extra.anomaly_map.sigma' must be a number >= 0, found {sigma!r}")
    return float(sigma)


def _set_exception(fut: Future, e: BaseException) -> None:
    if not fut.done():
        try:
            fut.set_exception(e)
        except Exception:  # completed concurrently
            pass


def _bind_search_threads(method, threads: int | None) -> None:
    """Make the search indexes ``method`` holds search with ``threads`` threads by default
    (they were built with the affinity count). Only indexes that exist after loading: an
    exact index PatchCore builds lazily for HNSW + reweighting keeps the default."""
    if threads is None:
        return
    from .. import search

    n = search._threads(threads)
    if hasattr(method, "_search_threads"):     # N-pad's window reading (search.window_mahalanobis)
        method._search_threads = n
    for value in vars(method).values():
        if isinstance(value, (search.FlatIndex, search.HnswIndex, search.LocalGaussianBank)):
            # FlatIndex/HnswIndex have no setter; their default is this attribute.
            value._threads = n


def _build_method(manifest, arrays, root):
    from ..methods import method_class

    name, settings = manifest.method.name, dict(manifest.method.settings)
    # manifest.json is not hashed and its settings are free-form: a hand-edited setting is a
    # broken model, reported as such with its path, not as a bad argument.
    try:
        return method_class(name).from_state(settings, arrays)
    except (InvalidInputError, KeyError, IndexError, TypeError, ValueError) as e:
        raise ModelFormatError(f"{root}: manifest 'method' ({name!r}): {e}") from None


def _torch_backbone(manifest, device: str, threads: int | None):
    """The fit-time torch backbone of a fitted model on the CPU (``runtime._torch.TorchBackend``;
    ``device="CUDA"`` goes through ``runtime._torch.DevicePipeline`` instead)."""
    from . import _torch

    _torch.import_torch_for_fitted()
    from ..backbones import FeatureExtractor

    if str(device).strip().upper() != "CPU":
        raise DeviceError(f"device {device!r} is not available for a fitted (torch) model; available: "
                          + ", ".join(["CPU"] + _torch.cuda_devices()))
    return _torch.TorchBackend(FeatureExtractor.from_config(manifest.backbone.config), threads=threads)
