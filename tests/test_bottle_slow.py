"""Full real bottle category, end to end (fit_model -> evaluate_model). Slow: run with -m slow.

Lower bounds are a few points under what docs/accuracy.md reports (the default backbone,
EfficientNet-Lite2 since stop 26, and input, maps at the model input), so a regression fails while
run-to-run noise (threads, BLAS) does not.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.slow

BOUNDS = {
    # method: (image AUROC, pixel AUROC, PRO) lower bounds
    "patchcore": (0.99, 0.975, 0.92),
    "npad": (0.99, 0.975, 0.92),
}


@pytest.mark.parametrize("method", sorted(BOUNDS))
def test_full_bottle(method, bottle_dir, tmp_path):
    from npad_edge import artifact
    from npad_edge.evaluation import evaluate_model
    from npad_edge.pipeline import DEFAULT_BACKBONE, fit_model

    path = fit_model(bottle_dir, tmp_path / method, method=method, progress=False)
    man = artifact.read_manifest(path)
    res = evaluate_model(path, bottle_dir, progress=False)
    m = res.metrics
    img, pix, pro = BOUNDS[method]
    assert m["eval_resolution"] == list(man.preprocess.image_size) == [320, 320]
    assert man.backbone.name == DEFAULT_BACKBONE == "efficientnet_lite2"
    assert m["n_images"] == 83 and m["n_defective"] == 63
    assert m["image_auroc"] >= img, m
    assert m["pixel_auroc"] >= pix, m
    assert m["pro"] >= pro, m
    # the calibrated threshold flags no more than a few of the 20 good test images
    good_flagged = int(((res.scores >= m["threshold"]) & (res.labels == 0)).sum())
    assert good_flagged <= 4, (good_flagged, m["threshold"])
    # The work the fit did, counted (its duration is a benchmark figure, not a test): every
    # train image extracted once, the hold-out kept out of the fit, and for PatchCore a bank
    # of exactly the configured coreset fraction of the fitted patches (capped at coreset_max).
    extra = man.extra
    assert extra["n_train_images"] == 209
    n_hold = man.threshold.n_images
    assert n_hold and extra["n_fit_images"] + n_hold == 209
    if method == "patchcore":
        d, h, w = extra["feature_shape"]
        lm = artifact.load_model(path)
        n_patches = extra["n_fit_images"] * h * w
        from npad_edge.methods import get_method
        want, _ = get_method("patchcore", **man.method.settings).bank_plan(extra["n_fit_images"], (h, w))
        assert want == min(max(1, round(man.method.settings["coreset"] * n_patches)), 10 * h * w)
        assert lm.arrays["bank"].shape == (want, d)
