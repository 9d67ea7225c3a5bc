"""The evaluation loop: score every test image of a dataset, compute the MVTec AD metrics.

``evaluate(scorer, dataset)`` accepts anything with ``predict(image (H, W, 3) uint8)`` returning
an object with ``.score`` (float) and ``.anomaly_map`` ((H', W') float32): the runtime
``npad_edge.Detector``, or :class:`FittedScorer` (torch backbone + method, for a model of kind
"fitted"). ``evaluate_model(path, data)`` picks the right one.

Resolution of the pixel metrics (``eval_size``; the result records it as ``eval_resolution``
and the rule as ``eval_size_rule``):

- ``None`` (default, "auto"): when every test image has one size, the model input size
  (``scorer.input_size``; what every evaluation did before mixed sizes were handled, so old
  results are unchanged); when the test images differ in size (e.g. magnetic_tile), each
  image's own size ("native"): squashing every mask to one input size would distort thin
  defects differently per image, and the anomaly maps already come back at each image's size;
- ``"native"``: each image's own size; ``"model"``: the model input size;
- an int ``N`` (``N x N``) or ``(H, W)``: that size for every image.

Anomaly maps of another size are resized bilinearly (PIL, float32), ground-truth masks with
nearest neighbour. At "native" every pixel counts once, so larger images weigh more in pixel
AUROC (PRO averages per region). No score is normalised with test-set statistics.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InvalidInputError

log = logging.getLogger(__name__)

__all__ = ["EvalResult", "evaluate", "evaluate_model", "FittedScorer", "ScorerPrediction"]


@dataclass
class ScorerPrediction:
    """What :class:`FittedScorer.predict` returns (the runtime's Prediction has the same fields)."""

    score: float
    anomaly_map: np.ndarray
    is_anomalous: bool | None = None


class FittedScorer:
    """predict() for a fitted (not exported) model: torch FeatureExtractor + method + anomaly_maps.

    ``input_size`` (H, W), ``threshold`` (float | None), ``manifest``. The manifest's aspect
    rule applies (``preprocess.aspect_rule``: letterbox pads the image before the extractor and
    crops the map back), exactly as in the runtime ``Detector``.
    """

    def __init__(self, model_path: str | os.PathLike, *, threads: int | None = 2):
        from . import artifact
        from .backbones import FeatureExtractor
        from .methods import method_class
        from .pipeline import TorchBackend

        loaded = artifact.load_model(model_path)
        m = loaded.manifest
        self.manifest = m
        self.backend = TorchBackend(FeatureExtractor.from_config(m.backbone.config), threads=threads)
        self.method = method_class(m.method.name).from_state(m.method.settings, loaded.arrays)
        self.input_size = tuple(self.backend.input_size)
        self.threshold = float(m.threshold.value)
        self.sigma = float(m.extra.get("anomaly_map", {}).get("sigma", 4.0))
        self.aspect_rule = m.preprocess.aspect_rule
        self._letterbox = (m.preprocess.letterbox_fill, list(m.preprocess.mean))

    def predict(self, image: np.ndarray, *, out_size: tuple[int, int] | None = None) -> ScorerPrediction:
        """image (H, W, 3) uint8 -> score and (H, W) float32 map (or ``out_size``)."""
        from .postprocess import anomaly_maps

        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInputError(f"expected an image (H, W, 3) uint8, got "
                                    f"{getattr(image, 'shape', type(image))} {getattr(image, 'dtype', '')}")
        from .data.geometry import Placement, letterbox, resize_for

        if self.aspect_rule == "letterbox":
            x, place = letterbox(image, self.input_size, fill=self._letterbox[0], mean=self._letterbox[1])
        else:
            x, place = image, Placement(image.shape[:2], image.shape[:2])
        # a model that resizes on the host or in the core: resized here, as by the Detector
        feats = self.backend.extract(resize_for(self.backend.extractor.resize_on, x, self.input_size)[None])
        patch, img = self.method.score(feats)
        amap = place.crop(anomaly_maps(patch, self.input_size, place.padded_hw, sigma=self.sigma)[0])
        if out_size is not None and tuple(out_size) != amap.shape:
            amap = _resize_float(amap, tuple(out_size))
        score = float(img[0])
        return ScorerPrediction(score=score, anomaly_map=amap, is_anomalous=score >= self.threshold)


@dataclass
class EvalResult:
    """Metrics (values in [0, 1]) and per-image results of one evaluation."""

    metrics: dict[str, Any]
    paths: list[str]
    labels: np.ndarray
    scores: np.ndarray
    defect_types: list[str]
    roc: tuple[np.ndarray, np.ndarray] | None
    pro_curve: tuple[np.ndarray, np.ndarray] | None
    timings: dict[str, float]
    per_defect: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.metrics)
        d["timings_ms"] = dict(self.timings)
        d["per_defect_type"] = self.per_defect
        d["images"] = [{"path": p, "label": int(l), "defect_type": t, "score": float(s)}
                       for p, l, t, s in zip(self.paths, self.labels, self.defect_types, self.scores)]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """``{"image_auroc": x, "pixel_auroc": x|null, "pro": x|null, ...}`` (NaN refused)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _resize_float(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if a.shape == tuple(hw):
        return np.asarray(a, dtype=np.float32)
    from PIL import Image
    return np.asarray(Image.fromarray(np.asarray(a, dtype=np.float32), mode="F").resize((hw[1], hw[0]), Image.BILINEAR),
                      dtype=np.float32)


def _scorer_input_size(scorer) -> tuple[int, int] | None:
    for attr in ("input_size", "image_size"):
        v = getattr(scorer, attr, None)
        if v is not None:
            v = (int(v), int(v)) if np.isscalar(v) else tuple(int(x) for x in v)
            return v
    man = getattr(scorer, "manifest", None)
    if man is not None:
        try:
            return tuple(int(x) for x in man.preprocess.image_size)
        except AttributeError:
            pass
    return None


def _scorer_aspect_rule(scorer) -> str | None:
    man = getattr(scorer, "manifest", None)
    try:
        return str(man.preprocess.aspect_rule)
    except AttributeError:
        return getattr(scorer, "aspect_rule", None)


def _scorer_exposure(scorer) -> str | None:
    """The model's exposure rule as one line ("gain to mean intensity 107.8 of 255" / "off")."""
    man = getattr(scorer, "manifest", None)
    try:
        e = man.preprocess.exposure
    except AttributeError:
        return None
    return "off" if e is None else f"{e['mode']} to mean intensity {e['target']:.1f} of 255"


def _scorer_threshold(scorer) -> float | None:
    v = getattr(scorer, "threshold", None)
    if v is not None and not callable(v):
        try:
            return float(getattr(v, "value", v))
        except (TypeError, ValueError):
            return None
    man = getattr(scorer, "manifest", None)
    return float(man.threshold.value) if man is not None else None


def _eval_resolution(eval_size, scorer, test_paths) -> tuple[tuple[int, int] | None, str]:
    """(resolution or None for each image's own size, the rule) for ``evaluate``."""
    from .data import image_size

    if isinstance(eval_size, str):
        if eval_size not in ("native", "model", "auto"):
            raise InvalidInputError(f"eval_size must be 'auto', 'native', 'model', N or (H, W), got {eval_size!r}")
        rule = eval_size
    elif eval_size is None:
        rule = "auto"
    else:
        try:
            hw = (int(eval_size), int(eval_size)) if np.isscalar(eval_size) else tuple(int(x) for x in eval_size)
        except (TypeError, ValueError):
            hw = ()
        if len(hw) != 2 or min(hw) < 1 or isinstance(eval_size, bool):
            raise InvalidInputError(f"eval_size must be 'auto', 'native', 'model', N or (H, W), got {eval_size!r}")
        return hw, "explicit"
    if rule == "auto":
        sizes = {image_size(p) for p in test_paths}       # headers only
        if len(sizes) > 1:
            return None, "auto: native (test images of %d sizes)" % len(sizes)
        res = _scorer_input_size(scorer)
        return res, "auto: model input (test images of one size)" if res is not None else "auto: native"
    if rule == "model":
        res = _scorer_input_size(scorer)
        if res is None:
            raise InvalidInputError("eval_size='model': the scorer has no input_size")
        return res, "model"
    return None, "native"


def evaluate(scorer, dataset, *, eval_size: int | tuple[int, int] | str | None = None, progress: bool = True,
             fpr_limit: float = 0.3) -> EvalResult:
    """Score every test image of ``dataset`` (a ``Dataset`` or a root path) with ``scorer``.

    ``eval_size``: the resolution of the pixel metrics (module docstring): None ("auto"),
    ``"native"``, ``"model"``, N or (H, W).

    Metrics: ``image_auroc`` (None when the test set has a single class), ``pixel_auroc`` and
    ``pro`` (AU-PRO to ``fpr_limit`` / ``fpr_limit``; None without masks), ``eval_resolution``
    [h, w] (or "native"), ``eval_size_rule``, ``model_input_size`` [H, W] and ``aspect_rule``
    (of the scorer's model, when known), ``threshold`` (the scorer's), ``f1_threshold`` / ``f1`` (best F1 over
    the test scores: an oracle, for reference), ``n_images``, ``n_defective``. Timings: wall
    ms per ``predict`` call (decode excluded), mean and median.
    """
    from . import metrics, postprocess
    from .data import load_dataset, load_test_masks, read_image

    ds = dataset if hasattr(dataset, "test") else load_dataset(dataset)
    if not ds.test:
        raise InvalidInputError(f"dataset {ds.name!r} has no test images")
    res, res_rule = _eval_resolution(eval_size, scorer, [s.path for s in ds.test])
    masks_full = load_test_masks(ds)
    bar = None
    if progress:
        from ._progress import progress_bar
        bar = progress_bar(len(ds.test), "evaluate", True)
    scores, maps, masks, times = [], [], [], []
    try:
        for i, s in enumerate(ds.test):
            img = read_image(s.path)
            t0 = time.perf_counter()
            pred = scorer.predict(img)
            times.append((time.perf_counter() - t0) * 1000)
            score = float(pred.score)
            if not np.isfinite(score):
                raise InvalidInputError(f"scorer returned a non-finite score for {s.path}")
            scores.append(score)
            if masks_full is not None:
                hw = res if res is not None else img.shape[:2]
                maps.append(_resize_float(np.asarray(pred.anomaly_map), hw))
                masks.append(postprocess.resize_mask(masks_full[i].astype(bool), hw))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    labels = ds.labels.astype(np.int64)
    scores_a = np.asarray(scores, dtype=np.float64)
    both = 0 < labels.sum() < labels.size
    m: dict[str, Any] = {
        "image_auroc": metrics.image_auroc(labels, scores_a) if both else None,
        "image_auroc_ci95": None,
        "pixel_auroc": None, "pro": None,
        "eval_resolution": list(res) if res is not None else "native",
        "eval_size_rule": res_rule,
        "model_input_size": list(_scorer_input_size(scorer) or []) or None,
        "aspect_rule": _scorer_aspect_rule(scorer),
        "exposure": _scorer_exposure(scorer),
        "threshold": _scorer_threshold(scorer),
        "f1_threshold": None, "f1": None,
        "n_images": int(labels.size), "n_defective": int(labels.sum()),
    }
    roc = None
    if both:
        ci = metrics.image_auroc_ci(labels, scores_a, level=0.95)
        m["image_auroc_ci95"] = [ci["lo"], ci["hi"]]
        fpr, tpr, _ = metrics.roc_curve(labels, scores_a)
        roc = (fpr, tpr)
    if labels.sum() > 0:
        m["f1_threshold"], m["f1"] = metrics.f1_optimal_threshold(labels, scores_a)
    pro_c = None
    if masks_full is not None and any(k.any() for k in masks):
        pm = metrics.pixel_metrics(masks, maps, fpr_limit=fpr_limit, with_curve=True)
        m["pixel_auroc"], m["pro"] = pm["pixel_auroc"], pm["pro"]
        xs, ys, _ = pm["pro_curve"]
        pro_c = (xs, ys)
    defect_types = [s.defect_type for s in ds.test]
    per = {}
    good = labels == 0
    for t in sorted(set(defect_types) - {"good"}):
        sel = np.array([d == t for d in defect_types])
        entry: dict[str, Any] = {"n_images": int(sel.sum())}
        if good.any():
            entry["image_auroc"] = metrics.image_auroc(labels[sel | good], scores_a[sel | good])
        per[t] = entry
    t = np.asarray(times)
    timings = {"mean_ms": float(t.mean()), "median_ms": float(np.median(t)), "n": int(t.size)}
    return EvalResult(metrics=m, paths=[str(s.path) for s in ds.test], labels=labels, scores=scores_a,
                      defect_types=defect_types, roc=roc, pro_curve=pro_c, timings=timings, per_defect=per)


def load_scorer(model_path: str | os.PathLike, **kwargs):
    """The runtime ``Detector`` for a model when the runtime can load it, else a FittedScorer
    (a "fitted" model without an exported backbone)."""
    from . import artifact
    man = artifact.read_manifest(model_path)
    if man.kind == "exported":
        from . import Detector
        return Detector.load(model_path, **kwargs)
    try:
        from . import Detector
        return Detector.load(model_path, **kwargs)
    except Exception as exc:  # the runtime may not load torch-backbone ("fitted") models
        log.info("runtime Detector cannot load %s (%s); using the torch FittedScorer", model_path, exc)
        return FittedScorer(model_path)


def evaluate_model(model_path: str | os.PathLike, data, *, eval_size: int | tuple[int, int] | str | None = None,
                   progress: bool = True, scorer=None) -> EvalResult:
    """Load the model at ``model_path`` (``load_scorer``) and ``evaluate`` it on ``data``."""
    return evaluate(scorer if scorer is not None else load_scorer(model_path), data, eval_size=eval_size,
                    progress=progress)
