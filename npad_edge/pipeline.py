"""Fit-time pipeline (torch allowed): images -> features -> fitted method -> saved model.

- ``TorchBackend(extractor)``: runs a ``backbones.FeatureExtractor`` on uint8 images.
- ``extract_features(backend, paths, batch_size, progress)``: decode + extract, in batches.
- ``fit_model(data, out, ...)``: the whole fit, written atomically with ``artifact.write_model``.

Threshold calibration (``fit_model``): a held-out subset of the good training images (never in
the method's bank / statistics) is scored, and the image-score threshold is

    threshold = q + margin * (q - median),   q = the ``quantile`` of the held-out scores

i.e. a high quantile of nominal scores pushed out by a multiple of the nominal spread above the
median (robust to scale: it is in the units of the score, whatever the method). With the
default quantile 1.0 (the max) and margin 0.1, no held-out good image is flagged and scores a
tenth of the nominal spread beyond the worst good image are needed to flag one. The held-out
images are not added back to the bank (so the calibration stays out-of-sample).

Where a method's image score is not the peak of its anomaly map (N-pad's default
``image_combine="max"``), the map's mask gets its own threshold by the same rule from the
held-out images' map peaks (``extra["pixel_threshold"]``), so that the mask still marks the
regions whose map alone exceeds every held-out good image's.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import DataError, InvalidInputError

log = logging.getLogger(__name__)

__all__ = ["TorchBackend", "extract_features", "fit_model", "calibrate_threshold", "exposure_target",
           "EXPOSURE_CHOICES", "DEFAULT_BACKBONE", "DEFAULT_THREADS"]

# TorchBackend lives with the runtime's torch path (runtime/_torch.py), below both this fit-time
# module and the Detector; re-exported here, where fit code has always imported it from.
from .runtime._torch import DEFAULT_BACKBONE, DEFAULT_THREADS, TorchBackend  # noqa: E402,F401
from ._progress import progress_bar as _progress_bar  # noqa: E402
from .data.geometry import DEFAULT_RESIZE_ON, DEFAULT_SHORT_SIDE  # noqa: E402  (numpy only)


def extract_features(backend: TorchBackend, paths: Sequence[str | os.PathLike], batch_size: int = 8,
                     progress: bool | Callable[[int, int], None] = False,
                     read: Callable[[Any], np.ndarray] | None = None) -> np.ndarray:
    """Decode ``paths`` and extract features in batches -> (N, D, h, w) float32.

    ``progress``: True for a tqdm bar on stderr, or a callable ``progress(done, total)``.
    ``read``: image reader (default ``npad_edge.data.read_image``).
    """
    if read is None:
        from .data import read_image as read
    paths = list(paths)
    if not paths:
        raise InvalidInputError("extract_features: no image paths given")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    h, w = backend.feature_hw
    out = np.empty((len(paths), backend.feature_dim, h, w), dtype=np.float32)
    bar = _progress_bar(len(paths), "features", progress is True)
    try:
        for s in range(0, len(paths), batch_size):
            chunk = paths[s:s + batch_size]
            out[s:s + len(chunk)] = backend.extract([read(p) for p in chunk])
            if bar is not None:
                bar.update(len(chunk))
            elif callable(progress):
                progress(s + len(chunk), len(paths))
    finally:
        if bar is not None:
            bar.close()
    return out


# ----------------------------------------------------------------------------- exposure
#: ``fit_model(exposure=...)``: "gain" (default: one gain per image to the training images'
#: median mean intensity, ``backbones.features``) or "off" (no gain, as every model before it).
EXPOSURE_CHOICES = ("gain", "off")


def exposure_target(paths: Sequence[str | os.PathLike], *, sample: int = 256, seed: int = 0,
                    read: Callable[[Any], np.ndarray] | None = None) -> float:
    """The exposure target of a fit: the median over (at most ``sample``, seeded) training
    images of their mean intensity (all pixels and channels, 0..255 scale).

    The median, not the mean: a few over- or under-exposed training images do not move it.
    Bounded work (``sample`` decodes, a few seconds). Raises DataError when it is 0 (black
    images: no gain can be defined)."""
    if read is None:
        from .data import read_image as read
    paths = list(paths)
    if not paths:
        raise InvalidInputError("exposure_target: no image paths given")
    if sample < 1:
        raise InvalidInputError(f"exposure_target: sample must be >= 1, got {sample}")
    if len(paths) > sample:
        pick = np.sort(np.random.default_rng(seed).choice(len(paths), size=sample, replace=False))
        paths = [paths[i] for i in pick]
    target = float(np.median([np.mean(read(p), dtype=np.float64) for p in paths]))
    if not target > 0:
        raise DataError("exposure_target: the training images are black (median mean intensity 0); "
                        "fit with exposure='off'")
    return round(target, 4)


# ----------------------------------------------------------------------------- calibration
def calibrate_threshold(scores: np.ndarray, *, quantile: float = 1.0, margin: float = 0.1) -> float:
    """Image-score threshold from scores of held-out good images (see the module docstring):
    ``q + margin * (q - median)`` with ``q = np.quantile(scores, quantile)``."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise InvalidInputError("calibrate_threshold: needs at least one finite score")
    if not 0.0 <= quantile <= 1.0 or margin < 0:
        raise InvalidInputError(f"calibrate_threshold: quantile must be in [0, 1] and margin >= 0, "
                                f"got {quantile}, {margin}")
    q = float(np.quantile(s, quantile))
    return q + margin * max(q - float(np.median(s)), 0.0)


def _split_holdout(n_train: int, holdout: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, held out), sorted; the held-out set is a seeded random subset."""
    if isinstance(holdout, float) and not isinstance(holdout, bool):
        if not 0.0 <= holdout < 1.0:
            raise InvalidInputError(f"holdout as a fraction must be in [0, 1), got {holdout}")
        n_hold = int(round(holdout * n_train))
    elif isinstance(holdout, (int, np.integer)) and not isinstance(holdout, bool):
        n_hold = int(holdout)
    else:
        raise InvalidInputError(f"holdout must be a fraction (float) or a count (int), got {holdout!r}")
    if n_hold > 0:
        n_hold = min(n_hold, n_train - 1)
    if n_train - n_hold < 1:
        raise DataError(f"need at least one training image to fit after holding out {n_hold}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_train)
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def _versions() -> dict[str, str]:
    from . import __version__
    v = {"npad_edge": __version__, "numpy": np.__version__, "python": platform.python_version()}
    for mod in ("torch", "openvino"):
        try:
            m = __import__(mod)
            v[mod] = str(getattr(m, "__version__", "unknown")).split("-")[0]
        except Exception:  # pragma: no cover - optional
            v[mod] = "not installed"
    try:
        from . import search
        v["search_isa"] = search.isa()
    except Exception:  # pragma: no cover
        v["search_isa"] = "unavailable"
    return v


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (2**20 if sys.platform == "darwin" else 2**10)


# ----------------------------------------------------------------------------- input geometry
def _derive_input_geometry(be: "TorchBackend", size_arg, paths) -> tuple["TorchBackend", dict[str, Any]]:
    """The backend at the model input size and the record of how that size was chosen.

    ``size_arg``: an int short side (derived from the training images' headers, see
    ``data.geometry.derive_input_size``) or an explicit (H, W) (``be`` is returned as is)."""
    from .data import geometry

    if not isinstance(size_arg, int):
        return be, {"rule": "explicit", "image_size": [int(v) for v in size_arg]}
    ex = be.extractor
    multiple = int(max(ex.backbone.strides))
    sizes = geometry.image_sizes(paths)
    hw = geometry.derive_input_size(sizes, size_arg, multiple)
    record = {"rule": "short side + median aspect ratio of the training images, long side rounded to the "
                      "largest tap stride",
              "short_side": int(size_arg), "median_aspect_hw": round(geometry.median_aspect(sizes), 6),
              "n_images": len(sizes), "multiple": multiple,
              "n_image_sizes": len(set(sizes)), "image_size": [int(hw[0]), int(hw[1])]}
    log.info("model input %dx%d (H x W) from %d training images (median aspect H/W %.3f)",
             hw[0], hw[1], len(sizes), record["median_aspect_hw"])
    if tuple(hw) != tuple(ex.image_size):
        from .backbones import FeatureExtractor

        ex = FeatureExtractor(ex.backbone, image_size=hw, feature_dim=ex.feature_dim, aggregate=ex.aggregate,
                              antialias=ex.antialias, resize_on=ex.resize_on)
        be = TorchBackend(ex, threads=None)
    return be, record


def _fit_reader(be: "TorchBackend", aspect_rule: str, letterbox_fill: str):
    """The image reader of the fit: decode, then the aspect rule (letterbox pads here; resize
    is inside the extractor, or here for an extractor with ``resize_on`` "host" or "core")."""
    from .data import geometry, read_image

    hw, on = tuple(be.input_size), be.extractor.resize_on
    if aspect_rule == "resize":
        if on != "graph":
            return lambda p: geometry.resize_for(on, read_image(p), hw)
        return read_image
    mean = list(be.extractor.backbone.mean)
    return lambda p: geometry.resize_for(on, geometry.letterbox(read_image(p), hw, fill=letterbox_fill,
                                                                mean=mean)[0], hw)


# ----------------------------------------------------------------------------- fit
def fit_model(
    data: str | os.PathLike | Any,
    out: str | os.PathLike,
    *,
    method: str = "patchcore",
    backbone: str = DEFAULT_BACKBONE,
    image_size: int | tuple[int, int] = DEFAULT_SHORT_SIDE,
    aspect_rule: str = "resize",
    letterbox_fill: str = "mean",
    exposure: str = "gain",
    exposure_target_value: float | None = None,
    method_settings: Mapping[str, Any] | None = None,
    taps: Sequence[str] | None = None,
    weights: str = "imagenet",
    seed: int = 0,
    resize_on: str = DEFAULT_RESIZE_ON,
    holdout: float | int = 0.1,
    threshold_quantile: float = 1.0,
    threshold_margin: float = 0.1,
    train_paths: Sequence[str | os.PathLike] | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    on_error: str = "raise",
    progress: bool = True,
    threads: int | None = DEFAULT_THREADS,
) -> Path:
    """Fit ``method`` on the good training images of ``data`` and write a model directory.

    Args:
        data: a dataset root (MVTec AD category or plain folder, see ``npad_edge.data``) or a
            loaded ``Dataset``.
        out: the model directory to create (atomically; ``overwrite`` to replace a model).
        method, method_settings: ``npad_edge.methods.get_method(method, **method_settings)``.
        backbone, taps, weights: the feature extractor (``npad_edge.backbones``).
        image_size: the model input. An int ``S`` is the short side: the input keeps the
            median aspect ratio of the training images (read from the file headers), the long
            side rounded to a multiple of the backbone's largest tap stride
            (``npad_edge.data.geometry.derive_input_size``; square images give ``(S, S)``).
            ``(H, W)`` is used as given. Recorded in ``preprocess.size_derivation``.
        aspect_rule: images of another aspect ratio than the model input: ``"resize"``
            (squash) or ``"letterbox"`` (pad to the model's aspect ratio with
            ``letterbox_fill``, ``"mean"`` or ``"edge"``, then resize; maps are cropped back).
            Applied to the training images here and to every image at inference.
        exposure: ``"gain"`` (default): every image, here and at inference, is multiplied by
            one gain that brings its mean intensity to the target (inside the backbone graph,
            clipped to 0.25..4; ``backbones.features``); ``"off"``: no gain.
        exposure_target_value: the gain's target mean intensity (0..255); default: the median
            of the fit images' mean intensities (``exposure_target``, at most 256 images). Fix
            it to give several parts byte-identical IRs (a fleet's shared backbone group). Recorded in ``preprocess.exposure`` (docs/accuracy.md for the study).
        resize_on: ``"core"`` (default): images are resized before the backbone by the C++ core
            (``data.geometry.core_resize``: the same filter, handed over as float32; the IR
            then takes model-size float32 images and has no resize op); ``"graph"``: the
            antialiased resize to the model input is inside the backbone graph (the IR takes
            uint8 frames of any size; models before issue 10); ``"host"``: resized
            before it with ``data.geometry.host_resize`` (PIL bilinear, the same filter rounded
            to uint8). Here and at inference. Recorded in the backbone config
            (``resize.on``); docs/runtime.md, "The resize (issue 10)".
        seed: every random step (hold-out split, coreset, k-means); same seed, same arrays.
        holdout: good training images kept out of the fit to calibrate the threshold: a
            fraction (default 0.1) or a count; 0 disables calibration (threshold = max of
            the in-sample training image scores, recorded as method "train_max").
        threshold_quantile, threshold_margin: the calibration rule (module docstring).
        train_paths: use these training images instead of ``data``'s (``data`` may then be None).
        on_error: "raise" or "skip" for unreadable images (dataset discovery).
        progress: tqdm bars on stderr.

    Returns the model directory path.
    """
    from . import artifact
    from .data import geometry
    from .methods import get_method

    size_arg = geometry.parse_image_size(image_size)
    if aspect_rule not in geometry.ASPECT_RULES:
        raise InvalidInputError(f"aspect_rule must be one of {geometry.ASPECT_RULES}, got {aspect_rule!r}")
    if letterbox_fill not in geometry.LETTERBOX_FILLS:
        raise InvalidInputError(f"letterbox_fill must be one of {geometry.LETTERBOX_FILLS}, got {letterbox_fill!r}")
    if exposure not in EXPOSURE_CHOICES:
        raise InvalidInputError(f"exposure must be one of {EXPOSURE_CHOICES}, got {exposure!r}")
    if exposure_target_value is not None:
        from .backbones.features import check_exposure
        check_exposure({"mode": "gain", "target": exposure_target_value})   # validates early
    t_start = time.perf_counter()
    tracemalloc.start()
    try:
        if train_paths is None:
            from .data import load_dataset
            ds = data if hasattr(data, "train") else load_dataset(data, on_error=on_error)
            paths = list(ds.train)
            data_name = ds.name
        else:
            paths = [Path(p) for p in train_paths]
            data_name = Path(data).name if data is not None else "images"
        if not paths:
            raise DataError("no training images")
        m = get_method(method, **dict(method_settings or {}))     # validates settings early
        be = TorchBackend.create(backbone, image_size=size_arg, weights=weights, taps=taps, threads=threads,
                                 resize_on=resize_on)
        be, size_derivation = _derive_input_geometry(be, size_arg, paths)
        read = _fit_reader(be, aspect_rule, letterbox_fill)
        fit_idx, hold_idx = _split_holdout(len(paths), holdout, seed)
        if exposure == "gain":
            from .backbones.features import check_exposure
            if exposure_target_value is None:
                # from the fit images only, so the held-out calibration stays out of sample
                exposure_target_value = exposure_target([paths[i] for i in fit_idx], seed=seed, read=read)
            be.extractor.exposure = check_exposure({"mode": "gain", "target": exposure_target_value})
            log.info("exposure gain to mean intensity %.2f", exposure_target_value)
        t0 = time.perf_counter()
        feats = extract_features(be, paths, batch_size, progress=progress, read=read)
        t_extract = time.perf_counter() - t0

        bar = _progress_bar(0, f"fit {method}", progress, unit="step")
        last = {}

        def cb(stage: str, done: int, total: int) -> None:
            if bar is not None:
                if last.get("stage") != stage:
                    bar.set_description(f"fit {method} ({stage})")
                    bar.reset(total=total)
                    last["stage"] = stage
                bar.n = done
                bar.refresh()

        t0 = time.perf_counter()
        try:
            m.fit(np.ascontiguousarray(feats[fit_idx]), seed=seed, progress=cb)
        finally:
            if bar is not None:
                bar.close()
        t_fit = time.perf_counter() - t0

        pixel_threshold = None
        if hold_idx.size:
            hold_patch, hold_scores = m.score(np.ascontiguousarray(feats[hold_idx]))
            thr = calibrate_threshold(hold_scores, quantile=threshold_quantile, margin=threshold_margin)
            hold_peaks = None
            if not m.image_score_is_map_peak:
                hold_peaks = m.map_peaks(hold_patch)
                pixel_threshold = calibrate_threshold(hold_peaks, quantile=threshold_quantile,
                                                      margin=threshold_margin)
            threshold = artifact.Threshold(value=float(thr), method="holdout_quantile_margin",
                                           n_images=int(hold_idx.size), quantile=float(threshold_quantile))
            calib = {"rule": "q + margin * (q - median)", "quantile": threshold_quantile,
                     "margin": threshold_margin, "holdout_scores": [float(s) for s in hold_scores],
                     "holdout_images": [Path(paths[i]).name for i in hold_idx]}
            if hold_peaks is not None:
                calib["holdout_map_peaks"] = [float(v) for v in hold_peaks]
        else:
            tr_patch, tr_scores = m.score(np.ascontiguousarray(feats[fit_idx]))
            threshold = artifact.Threshold(value=float(tr_scores.max()), method="train_max",
                                           n_images=int(fit_idx.size))
            if not m.image_score_is_map_peak:
                pixel_threshold = float(m.map_peaks(tr_patch).max())
            calib = {"rule": "max of in-sample training image scores (no hold-out)"}
        del feats

        cfg = be.config()
        bb = be.extractor.backbone
        manifest = artifact.Manifest(
            kind="fitted",
            backbone=artifact.Backbone(name=bb.name, taps=list(bb.taps), weights=str(bb.weights),
                                       weights_sha256=bb.weights_sha256, config=cfg),
            preprocess=artifact.Preprocess(image_size=list(be.input_size), mean=list(bb.mean), std=list(bb.std),
                                           resize="bilinear", antialias=bool(be.extractor.antialias),
                                           aspect_rule=aspect_rule, letterbox_fill=letterbox_fill,
                                           size_derivation=size_derivation,
                                           exposure=be.extractor.exposure),
            method=artifact.Method(name=m.name, settings=dict(m.settings)),
            threshold=threshold,
            precision="fp32",
            versions=_versions(),
            extra={
                "calibration": calib,
                "dataset": data_name,
                "n_train_images": int(len(paths)),
                "n_fit_images": int(fit_idx.size),
                "seed": int(seed),
                "feature_shape": [int(be.feature_dim), *map(int, be.feature_hw)],
                "state_bytes": int(m.state_nbytes()),
                "bank_size": (int(m.bank.shape[0]) if getattr(m, "bank", None) is not None else None),
                "fit_seconds": {"extract": round(t_extract, 3), "method": round(t_fit, 3),
                                "total": round(time.perf_counter() - t_start, 3)},
                "peak_memory_mb": {"rss": round(_peak_rss_mb(), 1),
                                   "python_traced": round(tracemalloc.get_traced_memory()[1] / 2**20, 1)},
                "anomaly_map": {"upsample": "bilinear", "sigma": 4.0},
            },
        )
        if pixel_threshold is not None:
            # the mask's threshold on the map's scale (module docstring); the Detector reads it
            manifest.extra["pixel_threshold"] = float(pixel_threshold)
        arrays = m.state_arrays()
    finally:
        tracemalloc.stop()
    path = artifact.write_model(out, manifest, arrays, overwrite=overwrite)
    log.info("wrote %s (%s, %s) in %.1f s", path, method, backbone, time.perf_counter() - t_start)
    return path
