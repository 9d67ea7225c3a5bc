"""The self-contained HTML report: sections, inline SVG charts, data-URI images, no URLs."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest

import npad_edge
from npad_edge.report import collect_overlays, worst_indices, write_html_report
from npad_edge.viz import to_png_bytes


def fake_result(paths=None, with_pro=True, seed=0):
    rng = np.random.default_rng(seed)
    n_good, n_bad = 12, 18
    scores = np.concatenate([rng.normal(1.0, 0.1, n_good), rng.normal(2.0, 0.4, n_bad)])
    labels = np.array([0] * n_good + [1] * n_bad)
    types_ = ["good"] * n_good + ["crack"] * 9 + ["stain"] * 9
    order = np.argsort(-scores)
    tpr = np.concatenate([[0], np.cumsum(labels[order]) / n_bad])
    fpr = np.concatenate([[0], np.cumsum(1 - labels[order]) / n_good])
    pf = np.linspace(0, 1, 50)
    if paths is None:
        paths = [f"/data/cat/test/{t}/{i:03d}.png" for i, t in enumerate(types_)]
    return types.SimpleNamespace(
        metrics=dict(image_auroc=0.95, image_auroc_ci95=[0.91, 0.975],
                     pixel_auroc=0.9 if with_pro else None, pro=0.8 if with_pro else None,
                     eval_resolution=[64, 64], threshold=1.3, f1_threshold=1.4, f1=0.9, n_images=len(scores)),
        paths=paths, labels=labels, scores=scores, defect_types=types_, roc=(fpr, tpr),
        pro_curve=(pf, np.sqrt(pf)) if with_pro else None, timings={"ms_per_image": 12.5})


def test_report_sections_svg_and_data_uris(tmp_path):
    png = to_png_bytes(np.full((16, 16, 3), 200, np.uint8))
    out = write_html_report(fake_result(), tmp_path / "sub" / "r.html",
                            overlays=[("good, high score #1", png), ("defective, low score #1", png)],
                            notes=["Defects are synthetic."])
    html = out.read_text(encoding="utf-8")
    for section in ("id='metrics'", "id='curves'", "id='worst'", "Image-level ROC", "PRO curve to 0.3 FPR",
                    "Image scores: good vs defective", "threshold 1.3", "Defects are synthetic."):
        assert section in html
    assert html.count("<svg") == 3
    assert html.count("data:image/png;base64,") == 2
    assert "95.0 %" in html and "80.0 %" in html
    assert "95.0 % (95 % CI 91.0&ndash;97.5 %, DeLong)" in html and "image_auroc_ci95" not in html
    # Self-contained: no network references of any kind.
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not list(out.parent.glob("*.tmp"))


def test_report_without_pro_or_overlays(tmp_path):
    html = write_html_report(fake_result(with_pro=False), tmp_path / "r.html").read_text()
    assert html.count("<svg") == 2
    assert "No PRO curve" in html
    assert "data:image" not in html
    assert "/data/cat/test/good/" in html  # the worst images are still listed by path


def test_report_escapes_text(tmp_path):
    r = fake_result()
    r.defect_types = ["<b>x</b>"] * len(r.scores)
    html = write_html_report(r, tmp_path / "r.html", title="a <script> & b").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_worst_indices():
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.9, 0.5, 0.2, 3.0, 1.0]
    good, bad = worst_indices(labels, scores, 2)
    assert good == [1, 2] and bad == [3, 5]


def test_collect_overlays_reruns_the_detector_on_worst_images(tmp_path, monkeypatch):
    from PIL import Image

    root = tmp_path / "cat"
    paths = []
    r = fake_result()
    for i, t in enumerate(r.defect_types):
        p = root / "test" / t / f"{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40 + i, 50, 3), 90, np.uint8)).save(p)
        paths.append(str(p))
        if t != "good":
            g = root / "ground_truth" / t / f"{i:03d}_mask.png"
            g.parent.mkdir(parents=True, exist_ok=True)
            m = np.zeros((40 + i, 50), np.uint8)
            m[5:15, 5:15] = 255
            Image.fromarray(m).save(g)
    r.paths = paths
    called = []

    class FakeDet:
        threshold = 1.3

        @classmethod
        def load(cls, path, device="CPU", **kw):
            return cls()

        def __call__(self, image):
            called.append(image.shape)
            h, w = image.shape[:2]
            amap = np.zeros((h // 2, w // 2), np.float32)  # another size: must be resized
            return types.SimpleNamespace(score=1.0, is_anomalous=False, anomaly_map=amap,
                                         mask=np.zeros((h // 2, w // 2), bool), timings={})

    monkeypatch.setattr(npad_edge, "Detector", FakeDet, raising=False)
    ov = collect_overlays(r, tmp_path / "model", k=2)
    assert len(ov) == 4 and len(called) == 4
    assert ov[0][0].startswith("good, high score #1") and ov[2][0].startswith("defective, low score #1")
    for _, png in ov:
        assert png[:4] == b"\x89PNG"
    # The ground-truth contour (green) is drawn on defective images.
    import io

    arr = np.asarray(Image.open(io.BytesIO(ov[2][1])).convert("RGB"))
    assert ((arr == (60, 255, 60)).all(axis=2)).any()


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1]])
def test_report_single_class(tmp_path, labels):
    n = len(labels)
    r = types.SimpleNamespace(metrics=dict(image_auroc=None, threshold=1.0, n_images=n), paths=[f"{i}.png" for i in range(n)],
                              labels=np.array(labels), scores=np.linspace(0.5, 1.5, n), defect_types=None,
                              roc=None, pro_curve=None, timings={})
    html = write_html_report(r, tmp_path / "r.html").read_text()
    assert "<svg" in html
