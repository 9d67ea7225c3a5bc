"""Detector tiling of large frames (npad_edge.data.geometry.Tiling) on a small real-bottle model."""

from __future__ import annotations

import numpy as np
import pytest

from npad_edge.data.geometry import Tiling, merge_tiles, tile_grid

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def model(bottle_dir, tmp_path_factory):
    pytest.importorskip("torch")
    import dataclasses

    from npad_edge.data import load_dataset
    from npad_edge.export import export_model
    from npad_edge.pipeline import fit_model

    ds = load_dataset(bottle_dir)
    ds = dataclasses.replace(ds, train=ds.train[:6])
    root = tmp_path_factory.mktemp("tiling")
    fitted = fit_model(ds, root / "f", image_size=64, holdout=2, method_settings={"coreset": 0.1}, progress=False)
    return export_model(fitted, root / "fp32", progress=False)


@pytest.fixture(scope="module")
def image(bottle_dir):
    from npad_edge.data import read_image

    return read_image(sorted((bottle_dir / "test" / "broken_large").glob("*.png"))[0])


def test_one_tile_equals_the_untiled_path(model, image):
    from npad_edge import Detector

    plain = Detector.load(model, threads=2)
    tiled = Detector.load(model, threads=2, tiling=Tiling(size=(1000, 1000)))   # the 900 x 900 frame fits
    a, b = plain(image), tiled(image)
    assert a.score == b.score
    assert np.array_equal(a.anomaly_map, b.anomaly_map) and np.array_equal(a.mask, b.mask)


def test_big_frame_map_at_full_size_equals_tile_by_tile(model, image):
    """A 3000 x 4000 frame (the bottle image upsampled: a functional test, not an accuracy
    claim): the map is at full size and equals the max-merge of the tiles scored one by one."""
    from PIL import Image

    from npad_edge import Detector

    big = np.asarray(Image.fromarray(image).resize((4000, 3000), Image.BILINEAR))
    tiling = Tiling(scale=16.0, overlap=0.25)                 # 1024 x 1024 source px per tile
    det = Detector.load(model, threads=2, tiling=tiling)
    plain = Detector.load(model, threads=2)
    pred = det(big)
    assert pred.anomaly_map.shape == pred.mask.shape == (3000, 4000)
    assert np.isfinite(pred.anomaly_map).all()
    tiles = tile_grid((3000, 4000), (1024, 1024), 0.25)
    assert len(tiles) == 20
    singles = [plain(np.ascontiguousarray(big[y:y + h, x:x + w])) for y, x, h, w in tiles]
    ref = merge_tiles((3000, 4000), tiles, [s.anomaly_map for s in singles], "max")
    span = float(ref.max() - ref.min())
    assert np.abs(pred.anomaly_map - ref).max() <= 1e-4 * span + 1e-6      # batched vs single IR calls
    assert pred.score == pytest.approx(max(s.score for s in singles), rel=1e-4)
    assert pred.is_anomalous == (pred.score >= det.threshold)
    # the async path gives the same
    fut = det.submit(big)
    np.testing.assert_allclose(fut.result().anomaly_map, pred.anomaly_map, rtol=1e-5, atol=1e-6)
    mean = Detector.load(model, threads=2, tiling=Tiling(scale=16.0, overlap=0.25, merge="mean"))(big)
    assert (mean.anomaly_map <= pred.anomaly_map + 1e-5).all()


def test_tiling_argument_checked(model):
    from npad_edge import Detector
    from npad_edge.errors import InvalidInputError

    assert Detector.load(model, tiling=4).tiling == Tiling(scale=4.0)
    assert Detector.load(model, tiling={"size": (512, 512), "overlap": 0.5}).tiling.size == (512, 512)
    for bad in ("big", 0.1, {"merge": "min"}):
        with pytest.raises(InvalidInputError):
            Detector.load(model, tiling=bad)
