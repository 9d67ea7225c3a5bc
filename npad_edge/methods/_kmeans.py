"""Seeded Lloyd k-means in numpy with assignment by the exact k-NN core (``search.FlatIndex``)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .. import search

__all__ = ["kmeans"]


def kmeans(x: np.ndarray, k: int, *, iters: int = 20, seed: int = 0, tol: float = 1e-4,
           progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Cluster ``x (N, D) float32`` into ``k`` centroids ``(k, D) float32``.

    Initialisation: greedy k-center (farthest-point) selection of k rows by the C++ core
    (``search.greedy_coreset``, seeded), which spreads the initial centroids over the whole
    nominal set (random rows can start two centroids in one mode and never leave). Empty clusters are
    re-seeded with the points farthest from their centroid, so exactly k distinct centroids come
    back whenever x has at least k distinct rows. Stops after ``iters`` iterations or when the
    mean squared distance improves by less than ``tol`` (relative).
    """
    n = x.shape[0]
    k = int(min(k, n))
    rng = np.random.default_rng(seed)
    if 1 < k < n:
        # the greedy start point is "covered" but not returned: add it as the first centroid
        start = np.asarray(search.coreset_start_indices(n, 1, seed=seed))
        rest = np.asarray(search.greedy_coreset(x, k - 1, proj_dim=min(128, x.shape[1]), n_starts=1, seed=seed))
        init = np.unique(np.concatenate([start, rest]))
        if init.size < k:   # duplicates rows: top up with seeded random rows
            extra = rng.permutation(np.setdiff1d(np.arange(n), init))[: k - init.size]
            init = np.concatenate([init, extra])
    else:
        init = rng.permutation(n)[:k]
    cent = np.ascontiguousarray(x[np.sort(init)], dtype=np.float32)
    prev = np.inf
    for it in range(int(iters)):
        dist2, idx = search.FlatIndex(cent).search(x, 1)
        dist2, idx = dist2[:, 0], np.asarray(idx[:, 0])
        inertia = float(dist2.mean())
        counts = np.bincount(idx, minlength=k).astype(np.float64)
        sums = np.zeros((k, x.shape[1]), dtype=np.float64)
        np.add.at(sums, idx, x) if n < 4096 else _scatter_add(sums, idx, x)
        empty = np.flatnonzero(counts == 0)
        new = cent.astype(np.float64)
        nz = counts > 0
        new[nz] = sums[nz] / counts[nz, None]
        if empty.size:
            far = np.argsort(-dist2, kind="stable")[: empty.size]
            new[empty] = x[far]
        cent = np.ascontiguousarray(new, dtype=np.float32)
        if progress is not None:
            progress(it + 1, int(iters))
        if empty.size == 0 and prev - inertia <= tol * max(prev, 1e-30):
            break
        prev = inertia
    return cent


def _scatter_add(sums: np.ndarray, idx: np.ndarray, x: np.ndarray) -> None:
    # Sorting then reduceat is much faster than np.add.at for large N.
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    starts = np.flatnonzero(np.r_[True, sidx[1:] != sidx[:-1]])
    sums[sidx[starts]] = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
