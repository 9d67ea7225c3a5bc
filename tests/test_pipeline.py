"""Fit pipeline end to end on a small subset of the real bottle images (by path)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from npad_edge import artifact  # noqa: E402
from npad_edge.errors import InvalidInputError  # noqa: E402
from npad_edge.evaluation import FittedScorer, evaluate  # noqa: E402
from npad_edge.pipeline import TorchBackend, calibrate_threshold, fit_model  # noqa: E402


@pytest.fixture(scope="module")
def small_bottle(bottle_dir):
    from npad_edge.data import load_dataset
    ds = load_dataset(bottle_dir)
    good = [s for s in ds.test if s.label == 0][:2]
    bad = [s for s in ds.test if s.label == 1][::20][:3]
    return dataclasses.replace(ds, train=ds.train[:12], test=good + bad)


@pytest.fixture(scope="module")
def fitted(small_bottle, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "pc"
    path = fit_model(small_bottle, out, method="patchcore", image_size=128, holdout=2,
                     method_settings={"coreset": 0.05}, seed=3, progress=False)
    return path


def test_model_directory_and_manifest(fitted):
    assert fitted.is_dir()
    assert not [p for p in fitted.parent.iterdir() if p.name != fitted.name]   # no temp leftovers
    m = artifact.read_manifest(fitted)
    assert m.kind == "fitted" and m.method.name == "patchcore"
    assert m.method.settings["coreset"] == 0.05
    assert m.preprocess.image_size == [128, 128]
    assert m.threshold.method == "holdout_quantile_margin" and m.threshold.n_images == 2
    assert m.extra["n_fit_images"] == 10
    assert "torch" in m.versions and "search_isa" in m.versions
    assert m.extra["fit_seconds"]["total"] > 0 and m.extra["peak_memory_mb"]["rss"] > 0
    loaded = artifact.load_model(fitted)
    bank = loaded.arrays["bank"]
    # 10 images x 16 x 16 patches, 5% kept
    assert bank.shape == (round(0.05 * 10 * 16 * 16), m.extra["feature_shape"][0])
    # the threshold is above every held-out good score (max + margin rule)
    hold = m.extra["calibration"]["holdout_scores"]
    assert m.threshold.value >= max(hold)


def test_scores_finite_and_threshold_consistent(fitted, small_bottle):
    scorer = FittedScorer(fitted)
    res = evaluate(scorer, small_bottle, progress=False)
    assert np.isfinite(res.scores).all() and (res.scores > 0).all()
    assert res.metrics["eval_resolution"] == [128, 128]
    assert res.metrics["n_images"] == 5 and res.metrics["n_defective"] == 3
    for k in ("image_auroc", "pixel_auroc", "pro"):
        assert 0.0 <= res.metrics[k] <= 1.0
    # pixel AUROC far above chance even on this tiny fit: defects are large and textured
    assert res.metrics["pixel_auroc"] > 0.7
    doc = json.loads(res.to_json())
    assert doc["image_auroc"] == res.metrics["image_auroc"]
    # predict gives a full-resolution map
    from npad_edge.data import read_image
    img = read_image(small_bottle.test[0].path)
    p = scorer.predict(img)
    assert p.anomaly_map.shape == img.shape[:2] and p.anomaly_map.dtype == np.float32


def test_same_seed_same_arrays(small_bottle, fitted, tmp_path):
    again = fit_model(small_bottle, tmp_path / "pc2", method="patchcore", image_size=128, holdout=2,
                      method_settings={"coreset": 0.05}, seed=3, progress=False)
    a, b = artifact.read_manifest(fitted), artifact.read_manifest(again)
    assert {k: v.sha256 for k, v in a.files.items()} == {k: v.sha256 for k, v in b.files.items()}


def test_overwrite_refused_and_bad_settings(small_bottle, fitted):
    with pytest.raises(FileExistsError):
        fit_model(small_bottle, fitted, image_size=128, progress=False)
    with pytest.raises(InvalidInputError, match="valid settings"):
        fit_model(small_bottle, fitted.parent / "x", method_settings={"coresett": 0.1}, progress=False)
    assert not (fitted.parent / "x").exists()


def test_torch_backend_list_and_array_inputs():
    be = TorchBackend.create("mobilenet_v2", weights="random", image_size=64)
    imgs = np.random.default_rng(0).integers(0, 255, (2, 80, 96, 3), dtype=np.uint8)
    a = be.extract(imgs)
    b = be.extract([imgs[0], imgs[1]])
    assert a.shape == (2, be.feature_dim, 8, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InvalidInputError):
        be.extract(imgs.astype(np.float32))


def test_calibrate_threshold_rule():
    s = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert calibrate_threshold(s) == pytest.approx(5.0 + 0.1 * (5.0 - 3.0))
    assert calibrate_threshold(s, quantile=0.5, margin=0.0) == pytest.approx(3.0)
    with pytest.raises(InvalidInputError):
        calibrate_threshold(np.array([]))


def test_exposure_gain_recorded_by_default_and_off_on_request(small_bottle, fitted, tmp_path):
    from npad_edge.data import read_image
    m = artifact.read_manifest(fitted)
    assert m.preprocess.exposure == m.backbone.config["exposure"]
    # the target is the median mean intensity of the fit images (the held-out ones excluded)
    held = set(m.extra["calibration"]["holdout_images"])
    fit_means = [read_image(p).mean(dtype=np.float64) for p in small_bottle.train if p.name not in held]
    assert len(fit_means) == 10
    assert m.preprocess.exposure["mode"] == "gain"
    assert m.preprocess.exposure["target"] == pytest.approx(float(np.median(fit_means)), abs=1e-3)
    pinned = fit_model(small_bottle, tmp_path / "pinned", method="patchcore", image_size=128, holdout=2,
                       method_settings={"coreset": 0.05}, seed=3, progress=False, exposure_target_value=100.0)
    assert artifact.read_manifest(pinned).preprocess.exposure["target"] == 100.0
    off = fit_model(small_bottle, tmp_path / "off", method="patchcore", image_size=128, holdout=2,
                    method_settings={"coreset": 0.05}, seed=3, progress=False, exposure="off")
    mo = artifact.read_manifest(off)
    assert mo.preprocess.exposure is None and mo.backbone.config["exposure"] is None
    # the gain changes what the bank holds (bottle's mean intensity is not 114.5)
    assert artifact.load_model(off).arrays["bank"].tobytes() != artifact.load_model(fitted).arrays["bank"].tobytes()
    with pytest.raises(InvalidInputError, match="exposure"):
        fit_model(small_bottle, tmp_path / "bad", image_size=128, exposure="auto", progress=False)
    with pytest.raises(InvalidInputError, match="exposure"):
        fit_model(small_bottle, tmp_path / "bad", image_size=128, exposure_target_value=0.0, progress=False)
    assert not (tmp_path / "bad").exists()

    # The same model written as format_version 1 (no exposure anywhere) loads and scores the same.
    import shutil
    v1 = tmp_path / "v1"
    shutil.copytree(off, v1)
    raw = json.loads((v1 / "manifest.json").read_text())
    raw["format_version"] = 1
    del raw["preprocess"]["exposure"]
    del raw["backbone"]["config"]["exposure"]
    raw["backbone"]["config"]["format_version"] = 1
    (v1 / "manifest.json").write_text(json.dumps(raw, indent=2))
    assert artifact.read_manifest(v1).preprocess.exposure is None
    img = read_image(small_bottle.test[-1].path)
    a, b = FittedScorer(off).predict(img), FittedScorer(v1).predict(img)
    assert a.score == b.score
    np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)


def test_exposure_target_is_the_median_of_image_means(tmp_path):
    from PIL import Image

    from npad_edge.errors import DataError
    from npad_edge.pipeline import exposure_target

    paths = []
    for i, v in enumerate([10, 20, 30, 200, 250]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 12, 3), v, np.uint8)).save(p)
        paths.append(p)
    assert exposure_target(paths) == 30.0                  # the median, not the mean (102)
    got = exposure_target(paths, sample=3, seed=1)         # a seeded subset: same seed, same subset
    assert got == exposure_target(paths, sample=3, seed=1) and got in (20.0, 30.0, 200.0)   # median of 3 of them
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(black)
    with pytest.raises(DataError, match="black"):
        exposure_target([black, black])
    with pytest.raises(InvalidInputError):
        exposure_target([])


def test_npad_image_score_and_map_mask_thresholds(small_bottle, tmp_path):
    """N-pad's image score (image_combine="max") is not its map's peak: the fit calibrates the
    mask's own threshold from the held-out images' map peaks, by the image threshold's rule, and
    the Detector masks with it. image_combine="map" keeps one threshold for both."""
    from npad_edge import Detector
    from npad_edge.data import read_image
    from npad_edge.methods import get_method

    small = {"n_centroids": 16, "kmeans_iters": 5, "feature_dim": 16, "gaussian": "knn"}
    out = fit_model(small_bottle, tmp_path / "np", method="npad", image_size=96, holdout=3,
                    method_settings=small, seed=1, progress=False)
    m = artifact.read_manifest(out)
    assert m.method.settings["image_combine"] == "max"      # "auto" with the knn reading, recorded
    calib = m.extra["calibration"]
    peaks, scores = calib["holdout_map_peaks"], calib["holdout_scores"]
    assert len(peaks) == len(scores) == 3
    assert m.extra["pixel_threshold"] == pytest.approx(calibrate_threshold(np.array(peaks)), rel=1e-6)
    assert m.threshold.value == pytest.approx(calibrate_threshold(np.array(scores)), rel=1e-6)
    # max(z_maha, z_eucl) >= their weighted sum at every patch, so the image score is the higher
    assert all(s >= p - 1e-5 for s, p in zip(scores, peaks))
    det = Detector.load(out, "CPU", threads=1)
    assert det.pixel_threshold == m.extra["pixel_threshold"] != det.threshold
    img = read_image(small_bottle.test[-1].path)
    pred = det(img)
    np.testing.assert_array_equal(pred.mask, pred.anomaly_map >= m.extra["pixel_threshold"])
    # the peaks are the map rule's image scores: what image_combine="map" would have scored
    loaded = artifact.load_model(out)
    as_map = get_method("npad", **{**m.method.settings, "image_combine": "map"})
    as_map = type(as_map).from_state({**m.method.settings, "image_combine": "map"}, loaded.arrays)
    assert as_map.image_score_is_map_peak and not type(as_map).from_state(m.method.settings, loaded.arrays).image_score_is_map_peak
    same = fit_model(small_bottle, tmp_path / "np_map", method="npad", image_size=96, holdout=3,
                     method_settings={**small, "image_combine": "map"}, seed=1, progress=False)
    ms = artifact.read_manifest(same)
    assert ms.method.settings["image_combine"] == "map"
    assert "pixel_threshold" not in ms.extra and "holdout_map_peaks" not in ms.extra["calibration"]
    assert ms.extra["calibration"]["holdout_scores"] == pytest.approx(peaks, rel=1e-6)
    assert Detector.load(same, "CPU", threads=1).pixel_threshold == ms.threshold.value
