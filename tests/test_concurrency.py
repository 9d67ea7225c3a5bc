"""One Detector shared by threads and the async queue gives exactly the serial results."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


# --------------------------------------------------------------------------- failures starting work
# On the frozen tiny exported model: no ../shared data needed.

TINY = Path(__file__).parent / "data" / "models" / "v1_exported_tiny"


def _returns_within(fn, timeout: float = 60.0):
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it blocks."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} blocked for {timeout} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


class _BrokenQueue:
    def start_async(self, *args, **kwargs):
        raise RuntimeError("start_async failed (injected)")

    def wait_all(self):
        pass


@pytest.mark.parametrize("where", ["ensure_async", "start_async", "interrupt"])
def test_failed_start_completes_the_future(monkeypatch, where):
    from npad_edge import Detector

    det = Detector.load(TINY, "CPU", threads=1, num_requests=2)
    image = np.zeros((40, 48, 3), np.uint8)
    expected = det(image).score
    if where == "start_async":
        det._ensure_async()  # the real executor; then a queue whose start fails
        monkeypatch.setattr(det, "_queue", _BrokenQueue())
    else:
        exc = RuntimeError("no async queue (injected)") if where == "ensure_async" else KeyboardInterrupt()

        def fail():
            raise exc

        monkeypatch.setattr(det, "_ensure_async", fail)
    if where == "interrupt":
        with pytest.raises(KeyboardInterrupt):
            det.submit(image)
        assert not det._pending  # its future completed (with the interrupt) and was forgotten
    else:
        fut = det.submit(image)
        assert fut.done()
        with pytest.raises(RuntimeError, match="injected"):
            fut.result(timeout=10)
    _returns_within(det.wait)
    _returns_within(det.close)
    _returns_within(lambda: det.__exit__(None, None, None))
    monkeypatch.undo()
    # Still usable afterwards.
    with det:
        assert det.submit(image).result(timeout=60).score == expected


# --------------------------------------------------------------------------- threads bound the search


class _CoreSpy:
    """Wraps a FlatIndex's compiled core; records the thread count of each search."""

    def __init__(self, core):
        self._core, self.threads = core, []

    def search(self, queries, k, threads):
        self.threads.append(threads)
        return self._core.search(queries, k, threads)

    def __getattr__(self, name):
        return getattr(self._core, name)


def test_threads_bound_the_search():
    from npad_edge import Detector, search

    image = np.zeros((40, 48, 3), np.uint8)
    # One more than this process may use: never what the index picks by itself.
    want = search.default_threads() + 1
    for threads, expect in ((want, want), (1, 1), (None, search.default_threads())):
        det = Detector.load(TINY, "CPU", threads=threads)
        index = det.method._index
        assert isinstance(index, search.FlatIndex)
        spy = index._core = _CoreSpy(index._core)
        det(image)
        det.submit(image).result(timeout=60)
        det.close()
        assert spy.threads == [expect, expect], threads
