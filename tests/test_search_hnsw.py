"""HnswIndex: the FlatIndex contract, approximate, with recall measured at the defaults."""

from __future__ import annotations

import numpy as np
import pytest

from npad_edge import search
from npad_edge.errors import InvalidInputError


def patchcore_like(n, d, rank, seed, noise=0.1):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d)).astype(np.float32)
    coef = np.abs(rng.standard_normal((n, rank))).astype(np.float32)
    return (coef @ basis + noise * rng.standard_normal((n, d))).astype(np.float32)


def test_recall_at_defaults_on_patchcore_like_data():
    data = patchcore_like(8500, 128, 32, seed=0)
    bank, queries = data[:8000], data[8000:]
    _, exact = search.FlatIndex(bank).search(queries, 1)
    index = search.HnswIndex(bank)
    dist, idx = index.search(queries, 1)
    recall = (idx[:, 0] == exact[:, 0]).mean()
    assert recall >= 0.99, f"recall@1 {recall:.4f}"


def test_contract_sorted_ties_and_k():
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((300, 16), dtype=np.float32)
    bank[150] = bank[20]  # a duplicate pair: the lower index must come first
    index = search.HnswIndex(bank, ef=10)
    assert (index.ntotal, index.dim, index.dtype) == (300, 16, "float32")
    dist, idx = index.search(bank[[20, 5]].copy(), 40)  # k > ef: ef is raised to k
    assert dist.shape == idx.shape == (2, 40) and dist.dtype == np.float32 and idx.dtype == np.int64
    assert (np.diff(dist, axis=1) >= 0).all()
    assert idx[0, 0] == 20 and idx[0, 1] == 150 and dist[0, 0] == 0
    exact_d, exact_i = search.FlatIndex(bank).search(bank[[20, 5]].copy(), 40)
    np.testing.assert_allclose(dist, exact_d, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"M": 0}, "M must be"), ({"ef": -1}, "ef must be"), ({"threads": 0}, "threads"), ({"seed": 1.5}, "seed")],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        search.HnswIndex(np.zeros((4, 3), np.float32), **kwargs)


def test_bad_inputs():
    with pytest.raises(InvalidInputError, match="float32"):
        search.HnswIndex(np.zeros((4, 3)))
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        search.HnswIndex(np.array([[np.nan, 0, 0]], np.float32))
    with pytest.raises(InvalidInputError, match="non-empty"):
        search.HnswIndex(np.zeros((0, 3), np.float32))
    index = search.HnswIndex(np.eye(4, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="dim 4"):
        index.search(np.zeros((1, 3), np.float32), 1)
    with pytest.raises(InvalidInputError, match="k must be"):
        index.search(np.zeros((1, 4), np.float32), 5)
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        index.search(np.full((1, 4), np.inf, np.float32), 1)


def test_concurrent_searches_with_different_k_do_not_share_ef():
    # search() raised the shared index's ef to k and lowered it again: a k=1 search running in
    # another thread meanwhile ran with the other call's ef and answered differently.
    import threading

    data = patchcore_like(4000, 32, 16, seed=3, noise=1.0)
    bank, queries = data[:3000], data[3000:]
    index = search.HnswIndex(bank, M=4, ef_construction=20, ef=1, threads=1)
    ref = index.search(queries, 1, threads=1)
    high_ef = search.HnswIndex(bank, M=4, ef_construction=20, ef=300, threads=1).search(queries, 1, threads=1)
    assert (high_ef[1] != ref[1]).any()  # ef matters on this data: the race is observable
    stop = threading.Event()
    errors = []

    def big_k():
        try:
            while not stop.is_set():
                index.search(queries[:4], 300, threads=1)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=big_k)
    t.start()
    try:
        for _ in range(30):
            dist, idx = index.search(queries, 1, threads=1)
            np.testing.assert_array_equal(idx, ref[1])
            np.testing.assert_array_equal(dist, ref[0])
    finally:
        stop.set()
        t.join()
    assert not errors
