"""The evaluation loop on hand-made scorer outputs (no model, no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from npad_edge.data import load_dataset
from npad_edge.evaluation import EvalResult, evaluate


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture()
def tiny_mvtec(tmp_path):
    """4 train, 2 good + 2 defective test images (64x48) with masks; the defect is a bright square."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cat"
    base = lambda: rng.integers(0, 40, (48, 64, 3), dtype=np.uint8)  # noqa: E731
    for i in range(4):
        _write(root / "train" / "good" / f"{i:03d}.png", base())
    for i in range(2):
        _write(root / "test" / "good" / f"{i:03d}.png", base())
    for i, (y, x) in enumerate([(10, 10), (30, 40)]):
        im = base()
        im[y:y + 8, x:x + 8] = 255
        _write(root / "test" / "crack" / f"{i:03d}.png", im)
        m = np.zeros((48, 64), np.uint8)
        m[y:y + 8, x:x + 8] = 255
        _write(root / "ground_truth" / "crack" / f"{i:03d}_mask.png", m)
    return load_dataset(root)


class _Pred:
    def __init__(self, score, amap):
        self.score, self.anomaly_map = score, amap


class BrightnessScorer:
    """Map = brightness (a perfect detector of the bright squares), score = max of the map."""

    input_size = (24, 32)
    threshold = 100.0

    def predict(self, image):
        amap = image.astype(np.float32).mean(axis=2)
        return _Pred(float(amap.max()), amap)


class InvertedScorer(BrightnessScorer):
    def predict(self, image):
        p = super().predict(image)
        return _Pred(-p.score, -p.anomaly_map)


def test_perfect_scorer(tiny_mvtec):
    res = evaluate(BrightnessScorer(), tiny_mvtec, progress=False)
    assert isinstance(res, EvalResult)
    m = res.metrics
    assert m["image_auroc"] == 1.0 and m["pixel_auroc"] == pytest.approx(1.0) and m["pro"] == pytest.approx(1.0)
    assert m["eval_resolution"] == [24, 32]          # the scorer's input size
    assert m["n_images"] == 4 and m["n_defective"] == 2
    assert m["threshold"] == 100.0 and m["f1"] == 1.0
    assert list(res.labels) == [0, 0, 1, 1] and res.defect_types == ["good", "good", "crack", "crack"]
    fpr, tpr = res.roc
    assert fpr[0] == 0 and tpr[-1] == 1
    assert res.timings["n"] == 4 and res.timings["median_ms"] >= 0
    doc = json.loads(res.to_json())
    for k in ("image_auroc", "pixel_auroc", "pro"):
        assert 0.0 <= doc[k] <= 1.0
    assert len(doc["images"]) == 4 and doc["per_defect_type"]["crack"]["image_auroc"] == 1.0


def test_inverted_scorer_and_native_resolution(tiny_mvtec):
    res = evaluate(InvertedScorer(), tiny_mvtec, eval_size=(48, 64), progress=False)
    m = res.metrics
    assert m["image_auroc"] == 0.0 and m["pixel_auroc"] < 0.05 and m["pro"] < 0.05
    assert m["eval_resolution"] == [48, 64]


def test_no_masks_gives_null_pixel_metrics(tiny_mvtec, tmp_path):
    import dataclasses
    ds = dataclasses.replace(tiny_mvtec, has_masks=False)
    res = evaluate(BrightnessScorer(), ds, progress=False)
    doc = json.loads(res.to_json())
    assert doc["pixel_auroc"] is None and doc["pro"] is None and res.pro_curve is None
    assert doc["image_auroc"] == 1.0


def test_non_finite_score_is_an_error(tiny_mvtec):
    class Bad(BrightnessScorer):
        def predict(self, image):
            return _Pred(float("nan"), np.zeros(image.shape[:2], np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(Bad(), tiny_mvtec, progress=False)


def test_image_auroc_comes_with_its_delong_interval(tiny_mvtec):
    from npad_edge import metrics

    class Mixed(BrightnessScorer):     # scores 1, 3 (good), 2, 4 (defective) in test order: AUROC 0.75
        calls = 0

        def predict(self, image):
            p = super().predict(image)
            Mixed.calls += 1
            return _Pred(float([1, 3, 2, 4][Mixed.calls - 1]), p.anomaly_map)
    res = evaluate(Mixed(), tiny_mvtec, progress=False)
    m = res.metrics
    ref = metrics.image_auroc_ci(res.labels, res.scores)
    assert m["image_auroc_ci95"] == [ref["lo"], ref["hi"]]
    assert 0.0 < m["image_auroc_ci95"][0] < m["image_auroc"] < m["image_auroc_ci95"][1] < 1.0
    assert json.loads(res.to_json())["image_auroc_ci95"] == m["image_auroc_ci95"]
    perfect = evaluate(BrightnessScorer(), tiny_mvtec, progress=False).metrics
    assert perfect["image_auroc_ci95"] == [1.0, 1.0]


def test_single_class_test_set_has_no_interval(tiny_mvtec):
    import dataclasses
    good = [s for s in tiny_mvtec.test if s.defect_type == "good"]
    ds = dataclasses.replace(tiny_mvtec, test=good)
    m = evaluate(BrightnessScorer(), ds, progress=False).metrics
    assert m["image_auroc"] is None and m["image_auroc_ci95"] is None
