"""One Detector shared by threads and the async queue gives exactly the serial results."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from npad_edge.errors import InvalidInputError
from test_runtime import bottle_images, small_models


@pytest.fixture(scope="module")
def setup(bottle_dir):
    from npad_edge import Detector
    from npad_edge.data import read_image

    det = Detector.load(small_models("fp32")["fp32"], "CPU", threads=2)
    paths = bottle_images("test/broken_small", 3) + bottle_images("test/good", 3)
    # Two sizes, so requests of different shapes interleave too.
    images = [np.ascontiguousarray(read_image(p)[::3, ::3]) for p in paths]
    images += [np.ascontiguousarray(im[::2, ::2]) for im in images[:2]]
    serial = [det(im) for im in images]
    yield det, images, serial
    det.close()


def _same(a, b):
    assert a.score == b.score
    assert a.is_anomalous == b.is_anomalous
    np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_threads_share_one_detector(setup):
    det, images, serial = setup
    order = [i % len(images) for i in range(24)]
    barrier = threading.Barrier(8)

    def work(k):
        barrier.wait()
        return [(i, det(images[i])) for i in order[k::8]]

    with ThreadPoolExecutor(8) as ex:
        results = [r for rs in ex.map(work, range(8)) for r in rs]
    assert len(results) == 24
    for i, p in results:
        _same(p, serial[i])


def test_async_eight_in_flight(setup):
    from npad_edge import Detector

    det0, images, serial = setup
    det = Detector.load(det0.path, "CPU", threads=2, num_requests=8)
    try:
        futures = det.predict_async(images[i % len(images)] for i in range(16))
        for i, f in enumerate(futures):
            _same(f.result(timeout=120), serial[i % len(images)])
        got = []
        done = threading.Event()

        def cb(pred, userdata):
            got.append((userdata, pred))
            if len(got) == len(images):
                done.set()

        for i, im in enumerate(images):
            det.submit(im, cb, userdata=i)
        assert done.wait(120)
        for i, p in got:
            _same(p, serial[i])
    finally:
        det.close()


def test_raising_callback_does_not_deadlock(setup, caplog):
    det, images, serial = setup

    def boom(pred, userdata):
        raise RuntimeError(f"callback failed on {userdata}")

    futures = [det.submit(images[i % 2], boom, userdata=i) for i in range(6)]
    for i, f in enumerate(futures):
        with pytest.raises(RuntimeError, match=f"callback failed on {i}"):
            f.result(timeout=120)
    assert "callback raised" in caplog.text
    # The queue still works afterwards.
    _same(det.submit(images[0]).result(timeout=120), serial[0])
    det.wait()


def test_bad_input_goes_to_its_future(setup, tmp_path):
    det, images, serial = setup
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    futures = det.predict_async([images[0], np.zeros((8, 8), np.uint8), bad, images[1]])
    _same(futures[0].result(timeout=120), serial[0])
    with pytest.raises(InvalidInputError):
        futures[1].result(timeout=120)
    with pytest.raises(Exception, match="bad.png"):
        futures[2].result(timeout=120)
    _same(futures[3].result(timeout=120), serial[1])
