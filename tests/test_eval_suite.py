"""tools/eval_suite.py: the table survives categories without masks and categories that fail."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("eval_suite", REPO / "tools" / "eval_suite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def row(cat, img, pix, pro):
    return {"category": cat, "method": "npad", "hw": "320x320", "image_auroc": img, "pixel_auroc": pix, "pro": pro,
            "fit_s": 12.0, "rss_mb": None, "ms": 20.5, "bank": "7.0 MB", "eval_resolution": "own"}


def test_lines_with_undefined_metrics(suite):
    line = suite.result_line(row("plain", 0.9, None, None))
    assert "| plain | npad | 320x320 | 90.00 | - | - | - | 12 | - | 20.5 |" in line
    with_ci = dict(row("ci", 0.9, 0.8, 0.7), image_auroc_ci95=[0.85, 0.93])
    assert "| ci | npad | 320x320 | 90.00 | 85.00-93.00 | 80.00 | 70.00 |" in suite.result_line(with_ci)
    mean = suite.mean_line("npad", [row("a", 1.0, 0.98, 0.96), row("b", 0.9, None, None)])
    # image AUROC over both; the pixel metrics over the one category that has masks, said so
    assert "| 95.00 | | 98.00 (1 of 2) | 96.00 (1 of 2) |" in mean
    assert "(2 categories)" in mean
    failed = {"category": "c", "method": "npad", "error": "DataError: no images"}
    assert "failed: DataError: no images" in suite.result_line(failed)
    # a failed category is in no mean, and the count says so
    assert "| 100.00 (1 of 2) | | 98.00 (1 of 2) | 96.00 (1 of 2) |" in suite.mean_line(
        "npad", [row("a", 1.0, 0.98, 0.96), failed])


def test_a_failing_category_does_not_stop_the_others(suite, tmp_path, monkeypatch, capsys):
    for name in ("alpha", "beta"):
        (tmp_path / name / "train" / "good").mkdir(parents=True)
    seen = []

    def fake_run_one(cat, method, *a):
        seen.append((cat.name, method))
        if cat.name == "alpha":
            raise ValueError("alpha has a corrupt image\nsecond line")
        return row(cat.name, 0.97, 0.9, 0.8)

    monkeypatch.setattr(suite, "run_one", fake_run_one)
    out = tmp_path / "table.md"
    rc = suite.main(["--data", str(tmp_path), "--methods", "npad", "--out", str(out), "--workdir", str(tmp_path / "w")])
    assert rc == 1
    assert seen == [("alpha", "npad"), ("beta", "npad")]
    text = out.read_text()
    assert "| alpha | npad | - | failed: ValueError: alpha has a corrupt image |" in text
    assert "| beta | npad | 320x320 | 97.00 | - | 90.00 | 80.00 |" in text
    assert "| 97.00 (1 of 2) | | 90.00 (1 of 2) | 80.00 (1 of 2) |" in text.splitlines()[-1]
    assert all(line.count("|") == text.splitlines()[0].count("|") for line in text.splitlines())
