"""The offline demo: bundled data, seeded synthetic defects, the whole workflow (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from npad_edge import demo
from npad_edge.errors import InvalidInputError

DEMO_DATA = Path(demo.__file__).parent / "demo_data"


def test_bundled_data_is_small_and_documented():
    files = [p for p in DEMO_DATA.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 300_000
    readme = (DEMO_DATA / "README.md").read_text()
    assert demo.SOURCE in readme and "CC BY 2.0" in readme
    img = demo.source_image()
    assert img.dtype == np.uint8 and img.ndim == 3 and min(img.shape[:2]) >= 128


@pytest.mark.parametrize("kind", demo.DEFECT_KINDS)
def test_synthetic_defect_changes_only_near_mask(kind):
    rng = np.random.default_rng(1)
    img = demo.source_image()[:112, :112].copy()
    out, mask = demo.synthetic_defect(img, kind, rng)
    assert out.shape == img.shape and out.dtype == np.uint8 and mask.shape == img.shape[:2] and mask.dtype == bool
    assert 0.003 < mask.mean() < 0.25
    diff = np.abs(out.astype(int) - img.astype(int)).sum(axis=2)
    assert diff[mask].mean() > 40, "the defect must be visible"
    # Outside a small margin around the mask the image is (nearly) untouched.
    grown = mask.copy()
    for _ in range(12):
        grown[1:] |= grown[:-1]
        grown[:-1] |= grown[1:]
        grown[:, 1:] |= grown[:, :-1]
        grown[:, :-1] |= grown[:, 1:]
    assert diff[~grown].mean() < 3


def test_synthetic_defect_rejects_unknown_kind():
    with pytest.raises(InvalidInputError):
        demo.synthetic_defect(np.zeros((32, 32, 3), np.uint8), "dent", np.random.default_rng(0))


def test_make_demo_dataset_layout_and_seed(tmp_path):
    a = demo.make_demo_dataset(tmp_path / "a", n_train=4, n_test_good=2, n_per_defect=1, crop=64, seed=3)
    b = demo.make_demo_dataset(tmp_path / "b", n_train=4, n_test_good=2, n_per_defect=1, crop=64, seed=3)
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*.png"))
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*.png"))
    assert len(list((a / "train" / "good").glob("*.png"))) == 4
    for kind in demo.DEFECT_KINDS:
        assert (a / "test" / kind / "000.png").is_file()
        m = np.asarray(Image.open(a / "ground_truth" / kind / "000_mask.png"))
        assert m.shape == (64, 64) and m.max() == 255
    for n in names:  # same seed, same bytes
        assert (a / n).read_bytes() == (b / n).read_bytes()


def test_demo_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="--overwrite"):
        demo._prepare_out(tmp_path, overwrite=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.slow
def test_full_demo_through_the_cli(tmp_path, capsys):
    from npad_edge.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text and "image AUROC" in text and "ms/image" in text
    summary = json.loads((out / "summary.json").read_text())
    assert 0.5 <= summary["image_auroc"] <= 1.0
    assert (out / "report.html").stat().st_size > 10_000
    assert len(list((out / "predictions" / "overlays").rglob("*.png"))) == summary["n_test"]
    # A second run into the same folder replaces it without --overwrite.
    assert main(["demo", "--out", str(out), "-q"]) == 0
