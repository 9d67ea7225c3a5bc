"""N-pad (Jang, Hwang, Park, "N-pad: Neighboring Pixel-based Industrial Anomaly Detection", CVPRW 2023).

The paper's method section is not public, so this is the "natural reading" of METHODS.md with
every unpublished choice a named setting:

1. Optional feature reduction to ``feature_dim`` dims (PCA fitted on nominal patches, or a
   seeded Gaussian random projection).
2. Per position (i, j): a Gaussian of the nominal features of all training images at the
   positions of the (2r+1) x (2r+1) window around (i, j) (r = ``radius``; windows are clipped
   at the border). The covariance is shrunk towards a scaled identity,
   ``(1 - shrinkage) * S + shrinkage * tr(S)/D * I``, and stored as the inverse Cholesky factor
   W (lower triangular, packed, float32 or float16) so that ``maha(x) = ||W (x - mu)||``.
3. A centroid set: seeded k-means (``n_centroids``) of all nominal patch features; the
   Euclidean term is the distance to the nearest centroid (``search.FlatIndex``).
4. Each term is normalised with nominal statistics, ``z = (s - mean) / std`` computed on the
   training patches (``normalize="global"``: one mean/std per term; ``"position"``: per position
   for the Mahalanobis term), and combined: ``"sum"`` -> ``weight * z_maha + (1 - weight) * z_eucl``,
   ``"max"`` -> ``max(z_maha, z_eucl)``, or one term alone (``"mahalanobis"``, ``"euclidean"``).
5. Image score (``image_combine``): with the second reading (below) the peak of
   ``max(z_maha, z_eucl)`` per patch, the stronger of the two terms' evidence, while the anomaly
   map keeps the ``combine`` rule (the weighted sum): ranking every pixel gains from averaging
   two estimates, deciding on the one most deviant place gains from the more sensitive one, and
   the local Gaussian of a patch's nearest nominal features is a sensitive test. With the window
   Gaussians (one broad Gaussian per position) the image score is the map's own peak
   (docs/accuracy.md, stop 25).

The second reading of METHODS.md is the setting ``gaussian="knn"``: no Gaussian is stored;
at test time, for each test patch at (i, j), the ``knn_k`` nominal features nearest to it
(Euclidean, after the reduction) among all training features at the positions of the window
around (i, j) form a local Gaussian (mean and shrunk covariance as above, computed in the
K-dimensional span of the neighbours with the Woodbury identity, so it costs O(K^2 D) per
patch instead of O(D^3)); the Mahalanobis term is the distance to that Gaussian. The stored
state is then every reduced training feature (``N*h*w*D`` values in ``precision``). Its
nominal statistics come from training images scored against the others (own image excluded).

Defaults (radius 1, PCA to 64 dims, shrinkage 0.3, one centroid per grid cell, sum with
Mahalanobis weight 0.25 for the map and the stronger term for the image score, fp16 factors;
``gaussian="auto"`` with 64 neighbours) and the measurements behind them: docs/accuracy.md.

Memory of the stored state: ``h*w*D*(D+1)/2`` factor entries (float16: 2 bytes each) plus
``h*w*D`` means plus ``n_centroids*D`` centroids.
"""

from __future__ import annotations

from typing import Any, Mapping

import logging

import numpy as np

from .. import search
from ._kmeans import kmeans
from .base import AnomalyMethod, ProgressFn, require_choice, require_number, to_rows

__all__ = ["NPad", "positional_r2"]

log = logging.getLogger(__name__)


class NPad(AnomalyMethod):
    """Per-position neighbourhood Gaussians + nominal centroid set (see module docstring).

    Settings
    --------
    radius : int >= 0
        Window radius r in feature-grid cells; the window is (2r+1) x (2r+1).
    feature_dim : int | None
        Reduce features to this many dims before modelling (None: keep all).
    reduction : "pca" | "random"
        How to reduce (only used with ``feature_dim``).
    shrinkage : float in [0, 1]
        Covariance shrinkage towards ``tr(S)/D * I``.
    n_centroids : "auto" | int >= 0
        k-means centroids of the nominal set (0: no Euclidean term). ``"auto"`` (default): one
        per cell of the feature grid (1,024 at 256 x 256, the fixed default of earlier models;
        1,600 at 320 x 320, 1,840 at 368 x 320), so the nominal set keeps its density per unit
        of the part's image when the input grows, as PatchCore's bank does
        (docs/accuracy.md, stop 25).
    kmeans_iters, kmeans_sample : int
        Lloyd iterations; at most this many nominal patches (seeded sample) are clustered.
    combine : "sum" | "max" | "mahalanobis" | "euclidean"
    weight : float in [0, 1]
        Weight of the Mahalanobis term with ``combine="sum"``.
    normalize : "global" | "position"
    precision : "float32" | "float16"
        Storage precision of the whitening factors (scoring always runs in float32).
    gaussian : "auto" | "window" | "knn"
        "window": stored per-position Gaussians of the window (first reading); "knn": the
        test-time local Gaussian of the ``knn_k`` nearest nominal features in the window
        (second reading, module docstring); "auto": chosen at fit time by how much of the
        nominal feature variance the position explains (:func:`positional_r2`): "window" if
        at least ``ALIGNED_R2``, else "knn". The fitted model stores the reading it chose.
    image_score : "smoothed" | "max"
        Image score: the largest value of the combined patch-score grid smoothed with a
        Gaussian of ``image_sigma`` cells (``base.smoothed_max``: the peak of the anomaly map),
        or the largest patch score.
    image_combine : "auto" | "max" | "map"
        What the image score takes its peak of: "max" the larger of the two normalised terms
        per patch, ``max(z_maha, z_eucl)`` (the map is still the ``combine`` rule); "map" the
        map's own combined grid; "auto" (default) "max" with the knn reading and "map" with the
        window reading, resolved at fit time and recorded (measured: docs/accuracy.md, stop 25).
        With one term ("mahalanobis" / "euclidean") all are that term.
    image_sigma : float >= 0
        Grid cells of the "smoothed" image score's Gaussian (0.5: the anomaly map's sigma of 4
        input pixels on the stride-8 grid).
    knn_k : int >= 2
        Neighbours of the local Gaussian with ``gaussian="knn"``. The default, 64, equals the
        default ``feature_dim``: a covariance of k samples in D dims has rank at most k - 1, so
        with k < D the shrinkage alone models the remaining directions.
    """

    name = "npad"
    DEFAULTS: Mapping[str, Any] = {
        "radius": 1,
        "feature_dim": 64,
        "reduction": "pca",
        "shrinkage": 0.3,
        "n_centroids": "auto",
        "kmeans_iters": 20,
        "kmeans_sample": 100_000,
        "combine": "sum",
        "weight": 0.25,
        "normalize": "global",
        "precision": "float16",
        "gaussian": "auto",
        "knn_k": 64,
        "image_score": "smoothed",
        "image_combine": "auto",
        "image_sigma": 0.5,
    }
    SAVED_WITHOUT: Mapping[str, Any] = {"image_score": "max", "image_combine": "map"}

    #: training images scored (own image excluded) for the nominal statistics with gaussian="knn"
    KNN_STAT_IMAGES = 24
    #: gaussian="auto" takes the window reading when the position explains at least this share
    #: of the nominal feature variance (a majority: one Gaussian per position is then a model
    #: of the part; below it, the features at a position are a mixture of what the part shows
    #: anywhere, and the local Gaussian of the nearest nominal features is the model).
    #: threads of the core's per-position Mahalanobis (None: the search default); the Detector sets it
    _search_threads: int | None = None
    ALIGNED_R2 = 0.5
    #: query images per call of the local-Gaussian search (bounds its candidate buffers)
    KNN_CHUNK = 8

    def _validate(self, s: dict[str, Any]) -> dict[str, Any]:
        require_number(s, "radius", lo=0, integer=True)
        require_number(s, "feature_dim", lo=1, integer=True, allow_none=True)
        require_choice(s, "reduction", ("pca", "random"))
        require_number(s, "shrinkage", lo=0.0, hi=1.0)
        if s["n_centroids"] != "auto":
            require_number(s, "n_centroids", lo=0, integer=True)
        require_number(s, "kmeans_iters", lo=1, integer=True)
        require_number(s, "kmeans_sample", lo=1, integer=True)
        require_choice(s, "combine", ("sum", "max", "mahalanobis", "euclidean"))
        require_number(s, "weight", lo=0.0, hi=1.0)
        require_choice(s, "normalize", ("global", "position"))
        require_choice(s, "precision", ("float32", "float16"))
        require_choice(s, "gaussian", ("auto", "window", "knn"))
        require_number(s, "knn_k", lo=2, integer=True)
        require_choice(s, "image_score", ("smoothed", "max"))
        require_choice(s, "image_combine", ("auto", "max", "map"))
        require_number(s, "image_sigma", lo=0.0)
        s["image_sigma"] = float(s["image_sigma"])
        s["knn_k"] = int(s["knn_k"])
        for key in ("radius", "kmeans_iters", "kmeans_sample"):
            s[key] = int(s[key])
        if s["n_centroids"] != "auto":
            s["n_centroids"] = int(s["n_centroids"])
        if s["feature_dim"] is not None:
            s["feature_dim"] = int(s["feature_dim"])
        s["shrinkage"] = float(s["shrinkage"])
        s["weight"] = float(s["weight"])
        if s["combine"] in ("sum", "max", "euclidean") and s["n_centroids"] == 0:
            from ..errors import InvalidInputError
            raise InvalidInputError(f"combine={s['combine']!r} needs n_centroids > 0")
        return s

    #: n_centroids="auto": centroids per cell of the feature grid
    CENTROIDS_PER_CELL = 1

    def centroid_count(self, grid_hw: tuple[int, int]) -> int:
        """The number of k-means centroids for a feature grid ``grid_hw`` (``n_centroids``)."""
        n = self.settings["n_centroids"]
        return self.CENTROIDS_PER_CELL * int(grid_hw[0]) * int(grid_hw[1]) if n == "auto" else int(n)

    def _resolve_image_combine(self) -> None:
        """image_combine="auto" -> "max" with the knn reading, "map" with the window reading."""
        s = self.settings
        if s["image_combine"] == "auto" and s["gaussian"] != "auto":
            s["image_combine"] = "max" if s["gaussian"] == "knn" else "map"

    @property
    def image_score_is_map_peak(self) -> bool:
        return not (self.settings["image_combine"] == "max" and self._use_maha and self._use_eucl)

    @property
    def _use_maha(self) -> bool:
        return self.settings["combine"] != "euclidean"

    @property
    def _use_eucl(self) -> bool:
        return self.settings["combine"] != "mahalanobis"

    def _expected_hw(self) -> tuple[int, int] | None:
        return self.feature_hw

    # -- reduction ---------------------------------------------------------------------------
    def _fit_reduction(self, rows: np.ndarray, seed: int) -> None:
        s = self.settings
        d = rows.shape[1]
        if s["feature_dim"] is None or s["feature_dim"] >= d:
            self._proj = None
            self._proj_mean = None
            return
        rng = np.random.default_rng(seed + 1)
        if s["reduction"] == "random":
            proj = rng.standard_normal((d, s["feature_dim"])) / np.sqrt(s["feature_dim"])
            mean = np.zeros(d)
        else:
            sample = rows[np.sort(rng.choice(rows.shape[0], size=min(rows.shape[0], 50_000), replace=False))]
            sample = sample.astype(np.float64)
            mean = sample.mean(axis=0)
            cov = np.cov(sample - mean, rowvar=False)
            evals, evecs = np.linalg.eigh(cov)
            order = np.argsort(-evals, kind="stable")[: s["feature_dim"]]
            proj = evecs[:, order]
            # a deterministic sign per component, so the same data give the same factors
            proj *= np.where(proj[np.abs(proj).argmax(axis=0), np.arange(proj.shape[1])] < 0, -1.0, 1.0)
        self._proj = np.ascontiguousarray(proj, dtype=np.float32)
        self._proj_mean = np.ascontiguousarray(mean, dtype=np.float32)

    def _reduce(self, features: np.ndarray) -> np.ndarray:
        """(N, D, h, w) -> (N, h, w, D') float32 (channels last)."""
        x = features.transpose(0, 2, 3, 1)
        if self._proj is None:
            return np.ascontiguousarray(x)
        return np.ascontiguousarray((x - self._proj_mean) @ self._proj, dtype=np.float32)

    # -- fit ---------------------------------------------------------------------------------
    def _fit(self, features: np.ndarray, seed: int, progress: ProgressFn | None) -> None:
        s = self.settings
        n, _, h, w = features.shape
        self._fit_reduction(to_rows(features), seed)
        x = self._reduce(features)                                   # (N, h, w, D)
        d = x.shape[-1]
        self._means = self._cols = None
        self._centroids = None
        self._nominal = None
        self._local = None
        if s["gaussian"] == "auto":
            # the fitted model's settings name the reading chosen, so its manifest says it
            r2 = positional_r2(x, s["radius"])
            s["gaussian"] = "window" if r2 >= self.ALIGNED_R2 else "knn"
            log.info("N-pad gaussian='auto': positional R2 %.3f -> %r", r2, s["gaussian"])
        self._resolve_image_combine()
        if self._use_maha and s["gaussian"] == "knn":
            self._nominal = np.ascontiguousarray(x.astype(s["precision"]))
        elif self._use_maha:
            self._means, factors = _window_gaussians(x, s["radius"], s["shrinkage"], progress)
            # held only by columns (search.window_mahalanobis' layout), rounded as saved
            self._cols = search.pack_lower_columns(factors.astype(s["precision"]).astype(np.float32))
        if self._use_eucl:
            rows = x.reshape(-1, d)
            rng = np.random.default_rng(seed)
            if rows.shape[0] > s["kmeans_sample"]:
                rows = rows[np.sort(rng.choice(rows.shape[0], size=s["kmeans_sample"], replace=False))]
            cb = None if progress is None else (lambda done, total: progress("kmeans", done, total))
            self._centroids = kmeans(np.ascontiguousarray(rows), self.centroid_count((h, w)), iters=s["kmeans_iters"],
                                     seed=seed, progress=cb)
        self._build_index()
        # nominal statistics of each term, on the training patches
        if self._local is not None:
            # own image excluded, on a seeded subset of the training images (cost: a k-NN per patch)
            rng = np.random.default_rng(seed + 2)
            sub = np.sort(rng.choice(n, size=min(n, self.KNN_STAT_IMAGES), replace=False))
            maha, eucl = self._terms(np.ascontiguousarray(x[sub]), exclude=sub)
        else:
            maha, eucl = self._terms(x)
        self._stats = np.zeros((2, 2), dtype=np.float64)          # [term][mean, std]
        self._pos_stats = None
        if maha is not None:
            self._stats[0] = [maha.mean(), maha.std()]
            if s["normalize"] == "position":
                self._pos_stats = np.stack([maha.mean(axis=0), maha.std(axis=0)]).astype(np.float32)
        if eucl is not None:
            self._stats[1] = [eucl.mean(), eucl.std()]
        self._stats[:, 1] = np.maximum(self._stats[:, 1], 1e-12)

    def _build_index(self) -> None:
        self._index = None if self._centroids is None else search.FlatIndex(self._centroids)
        self._local = None if self._nominal is None else search.LocalGaussianBank(self._nominal)
        # the core holds the features (and gives them back for saving): no second copy here
        self._nominal = None

    # -- score -------------------------------------------------------------------------------
    def _terms(self, x: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """x (B, h, w, D) float32 -> raw Mahalanobis (B, h, w) and Euclidean (B, h, w) or None.

        ``exclude`` (B,) int: with gaussian="knn", the training image each row must not use."""
        b, h, w, d = x.shape
        maha = eucl = None
        if self._local is not None:
            s = self.settings
            maha = np.empty((b, h, w), dtype=np.float32)
            for c0 in range(0, b, self.KNN_CHUNK):
                ex = None if exclude is None else exclude[c0:c0 + self.KNN_CHUNK]
                maha[c0:c0 + self.KNN_CHUNK] = self._local.mahalanobis(
                    np.ascontiguousarray(x[c0:c0 + self.KNN_CHUNK]), radius=s["radius"], k=s["knn_k"],
                    shrinkage=s["shrinkage"], exclude=ex)
        elif self._cols is not None:
            maha = search.window_mahalanobis(np.ascontiguousarray(x.reshape(b, h * w, d)), self._means,
                                             self._cols, threads=self._search_threads).reshape(b, h, w)
        if self._index is not None:
            dist2, _ = self._index.search(np.ascontiguousarray(x.reshape(-1, d)), 1)
            eucl = np.sqrt(np.maximum(dist2[:, 0], 0.0)).reshape(b, h, w)
        return maha, eucl

    def _normalised(self, maha: np.ndarray | None, eucl: np.ndarray | None):
        """Each raw term as a z-score against its nominal statistics (None where absent)."""
        zm = ze = None
        if maha is not None:
            if self._pos_stats is not None:
                zm = (maha - self._pos_stats[0]) / np.maximum(self._pos_stats[1], 1e-12)
            else:
                zm = (maha - self._stats[0, 0]) / self._stats[0, 1]
        if eucl is not None:
            ze = (eucl - self._stats[1, 0]) / self._stats[1, 1]
        return zm, ze

    def _combine(self, zm: np.ndarray | None, ze: np.ndarray | None) -> np.ndarray:
        s = self.settings
        if s["combine"] == "mahalanobis":
            return zm
        if s["combine"] == "euclidean":
            return ze
        if s["combine"] == "max":
            return np.maximum(zm, ze)
        return s["weight"] * zm + (1.0 - s["weight"]) * ze

    def _score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        zm, ze = self._normalised(*self._terms(self._reduce(features)))
        patch = self._combine(zm, ze).astype(np.float32)
        grid = patch
        if self.settings["image_combine"] == "max" and zm is not None and ze is not None:
            grid = np.maximum(zm, ze).astype(np.float32)
        return patch, self.map_peaks(grid)

    def score_terms(self, features: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The raw (unnormalised) Mahalanobis and Euclidean patch maps (B, h, w), for analysis."""
        return self._terms(self._reduce(features))

    # -- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        st: dict[str, np.ndarray] = {"stats": self._stats.astype(np.float64)}
        if self._proj is not None:
            st["proj"] = self._proj
            st["proj_mean"] = self._proj_mean
        if self._local is not None:
            st["nominal"] = self._local.nominal()
        if self._cols is not None:
            st["means"] = self._means
            # saved row by row (np.tril_indices order), as every N-pad model before
            st["factors_packed"] = np.ascontiguousarray(
                self._cols[:, _tril_column_positions(self._means.shape[1])]).astype(self.settings["precision"])
        if self._pos_stats is not None:
            st["pos_stats"] = self._pos_stats
        if self._centroids is not None:
            st["centroids"] = self._centroids
        return st

    def _load(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._stats = np.asarray(arrays["stats"], dtype=np.float64)
        self._proj = np.asarray(arrays["proj"], dtype=np.float32) if "proj" in arrays else None
        self._proj_mean = np.asarray(arrays["proj_mean"], dtype=np.float32) if "proj" in arrays else None
        self._means = self._cols = self._nominal = self._local = None
        if self.settings["gaussian"] == "auto":
            # a model saved before "auto" was the default (or by hand): its arrays say which reading
            self.settings["gaussian"] = "knn" if "nominal" in arrays else "window"
        self._resolve_image_combine()
        if self._use_maha and self.settings["gaussian"] == "knn":
            self._nominal = np.ascontiguousarray(arrays["nominal"])
        elif self._use_maha:
            self._means = np.ascontiguousarray(arrays["means"], dtype=np.float32)
            p, d = self._means.shape
            self._cols = np.empty((p, d * (d + 1) // 2), dtype=np.float32)
            self._cols[:, _tril_column_positions(d)] = np.asarray(arrays["factors_packed"]).astype(np.float32)
        self._pos_stats = np.asarray(arrays["pos_stats"], dtype=np.float32) if "pos_stats" in arrays else None
        self._centroids = np.ascontiguousarray(arrays["centroids"], dtype=np.float32) if self._use_eucl else None
        self._build_index()


def positional_r2(x: np.ndarray, radius: int) -> float:
    """Share of the nominal feature variance that the position explains, x (N, h, w, D).

    ``1 - mean over cells of tr(window covariance) / tr(global covariance)``, the window being
    the (2r+1) x (2r+1) cells around each cell (clipped at the border), pooled over the N
    images: near 1 when every image shows the same thing at the same place (an aligned part),
    near 0 when the features at a position vary as much as over the whole image (a surface, a
    part at any place or angle). Computed from per-cell first and second moments in float64.
    """
    n, h, w, d = x.shape
    m1 = np.zeros((h, w, d))
    m2 = np.zeros((h, w, d))
    for i0 in range(0, n, 64):
        xb = x[i0:i0 + 64].astype(np.float64)
        m1 += xb.sum(axis=0)
        m2 += (xb * xb).sum(axis=0)
    m1 /= n
    m2 /= n
    total = float((m2.reshape(-1, d).mean(axis=0) - m1.reshape(-1, d).mean(axis=0) ** 2).sum())
    if not total > 0.0:
        return 1.0          # constant features: nothing for the position to explain
    c1 = np.pad(np.cumsum(np.cumsum(m1, axis=0), axis=1), ((1, 0), (1, 0), (0, 0)))
    c2 = np.pad(np.cumsum(np.cumsum(m2, axis=0), axis=1), ((1, 0), (1, 0), (0, 0)))
    lo_i = np.clip(np.arange(h) - radius, 0, h)
    hi_i = np.clip(np.arange(h) + radius + 1, 0, h)
    lo_j = np.clip(np.arange(w) - radius, 0, w)
    hi_j = np.clip(np.arange(w) + radius + 1, 0, w)

    def box(c):
        return (c[hi_i][:, hi_j] - c[lo_i][:, hi_j] - c[hi_i][:, lo_j] + c[lo_i][:, lo_j])

    cnt = ((hi_i - lo_i)[:, None] * (hi_j - lo_j)[None, :]).astype(np.float64)[..., None]
    wvar = (box(c2) / cnt - (box(c1) / cnt) ** 2).sum(axis=-1)
    return float(1.0 - wvar.mean() / total)


def _window_gaussians(x: np.ndarray, radius: int, shrinkage: float,
                      progress: ProgressFn | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-position window Gaussians of x (N, h, w, D) float32.

    Returns means (h*w, D) float32 and inverse Cholesky factors W (h*w, D, D) float32 (lower
    triangular) with ``W^T W = inv((1 - shrinkage) * S + shrinkage * tr(S)/D * I)``.

    Second moments are accumulated per grid row in float64 on globally centred data (no
    cancellation) and box-summed over the window with a rolling buffer of 2r+1 rows, so memory
    is O((2r+1) * w * D^2) rather than O(h * w * D^2) for the sums.
    """
    n, h, w, d = x.shape
    gmean = x.reshape(-1, d).mean(axis=0, dtype=np.float64)
    means = np.empty((h * w, d), dtype=np.float32)
    factors = np.empty((h * w, d, d), dtype=np.float32)
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def row_sums(i: int) -> tuple[np.ndarray, np.ndarray]:
        # horizontally box-summed first and second moments of grid row i: (w, D), (w, D, D)
        if i not in cache:
            xr = x[:, i].astype(np.float64) - gmean                 # (N, w, D)
            s1 = xr.sum(axis=0)                                      # (w, D)
            s2 = np.matmul(xr.transpose(1, 2, 0), xr.transpose(1, 0, 2))   # (w, D, D)
            c1 = np.concatenate([np.zeros((1, d)), np.cumsum(s1, axis=0)])
            c2 = np.concatenate([np.zeros((1, d, d)), np.cumsum(s2, axis=0)])
            lo = np.clip(np.arange(w) - radius, 0, w)
            hi = np.clip(np.arange(w) + radius + 1, 0, w)
            cache[i] = (c1[hi] - c1[lo], c2[hi] - c2[lo])
        return cache[i]

    cols = np.clip(np.arange(w) + radius + 1, 0, w) - np.clip(np.arange(w) - radius, 0, w)
    eye = np.eye(d)
    for i in range(h):
        rows = range(max(0, i - radius), min(h, i + radius + 1))
        s1 = sum(row_sums(r)[0] for r in rows)
        s2 = sum(row_sums(r)[1] for r in rows)
        for r in [k for k in cache if k < i - radius + 1]:
            del cache[r]
        cnt = (n * len(rows) * cols).astype(np.float64)                # (w,)
        mu = s1 / cnt[:, None]
        cov = s2 / cnt[:, None, None] - mu[:, :, None] * mu[:, None, :]
        scale = np.trace(cov, axis1=1, axis2=2) / d
        cov = (1.0 - shrinkage) * cov + (shrinkage * scale)[:, None, None] * eye
        # tiny absolute floor: keeps a constant feature (zero variance) from breaking Cholesky
        cov += (1e-9 * np.maximum(scale, 1e-12))[:, None, None] * eye
        chol = np.linalg.cholesky(cov)
        inv = np.linalg.solve(chol, np.broadcast_to(eye, chol.shape))
        means[i * w:(i + 1) * w] = mu + gmean
        factors[i * w:(i + 1) * w] = np.tril(inv)
        if progress is not None:
            progress("gaussians", i + 1, h)
    return means, factors



def _knn_mahalanobis(x: np.ndarray, nominal: np.ndarray, radius: int, k: int, shrinkage: float,
                     exclude: np.ndarray | None = None) -> np.ndarray:
    """Mahalanobis distance of each test patch to the local Gaussian of its k nearest nominal
    features in the window (the "second reading").

    x (B, h, w, D) float32; nominal (N, h, w, D) float32/float16; exclude (B,) int or None (the
    nominal image a row must not use). Returns (B, h, w) float32.

    With Z (k, D) the centred neighbours, S = Z^T Z / (k - 1), lam = shrinkage * tr(S) / D and
    c = (1 - shrinkage) / (k - 1), the shrunk covariance is lam I + c Z^T Z and, by Woodbury,
    ``maha^2 = (|v|^2 - c (Z v)^T (lam I_k + c Z Z^T)^-1 (Z v)) / lam`` with v = x - mean(Z).
    """
    b, h, w, d = x.shape
    n = nominal.shape[0]
    out = np.empty((b, h, w), dtype=np.float32)
    eye = np.eye(k)
    s = float(shrinkage) if shrinkage > 0 else 1e-6
    c = (1.0 - s) / (k - 1)
    for i in range(h):
        i0, i1 = max(0, i - radius), min(h, i + radius + 1)
        for j in range(w):
            j0, j1 = max(0, j - radius), min(w, j + radius + 1)
            cand = nominal[:, i0:i1, j0:j1].reshape(-1, d).astype(np.float32)       # (n * cells, D)
            q = x[:, i, j]                                                        # (B, D)
            d2 = (q * q).sum(1)[:, None] + (cand * cand).sum(1)[None, :] - 2.0 * (q @ cand.T)
            if exclude is not None:
                owner = np.repeat(np.arange(n), (i1 - i0) * (j1 - j0))
                d2[owner[None, :] == np.asarray(exclude)[:, None]] = np.inf
            kk = min(k, cand.shape[0] - (0 if exclude is None else (i1 - i0) * (j1 - j0)))
            nn = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
            z = cand[nn].astype(np.float64)                                        # (B, k, D)
            mu = z.mean(axis=1)
            z -= mu[:, None, :]
            v = q.astype(np.float64) - mu                                          # (B, D)
            lam = s * np.einsum("bkd,bkd->b", z, z) / ((kk - 1) * d)
            lam = np.maximum(lam, 1e-12)
            zv = np.einsum("bkd,bd->bk", z, v)                                     # (B, k)
            g = c * np.matmul(z, z.transpose(0, 2, 1)) + lam[:, None, None] * eye[:kk, :kk]
            sol = np.linalg.solve(g, zv[..., None])[..., 0]
            m2 = ((v * v).sum(1) - c * (zv * sol).sum(1)) / lam
            out[:, i, j] = np.sqrt(np.maximum(m2, 0.0))
    return out


def _tril_column_positions(d: int) -> np.ndarray:
    """For each element (i, j) of a d x d lower triangle in ``np.tril_indices`` order (the saved
    ``factors_packed``), its position in the column packing of ``search.pack_lower_columns``."""
    i, j = np.tril_indices(d)
    return j * d - j * (j - 1) // 2 + (i - j)


def _lower_from_columns(cols: np.ndarray, d: int) -> np.ndarray:
    """(P, d(d+1)/2) column-packed factors -> (P, d, d) lower-triangular (for the oracle)."""
    full = np.zeros((cols.shape[0], d, d), dtype=np.float32)
    i, j = np.tril_indices(d)
    full[:, i, j] = cols[:, _tril_column_positions(d)]
    return full


def _window_mahalanobis(x: np.ndarray, means: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """numpy oracle of the window reading's distance (``search.window_mahalanobis``): x (B, h,
    w, D), means (P, D), factors (P, D, D) lower triangular -> (B, h, w) float32."""
    b, h, w, d = x.shape
    maha = np.empty((b, h * w), dtype=np.float32)
    xp = x.reshape(b, h * w, d).transpose(1, 0, 2)            # (P, B, D)
    step = max(1, 4096 // max(b, 1))                          # positions per block, bounds memory
    for p0 in range(0, h * w, step):
        diff = xp[p0:p0 + step] - means[p0:p0 + step, None, :]
        z = np.matmul(diff, factors[p0:p0 + step].transpose(0, 2, 1))
        maha[:, p0:p0 + step] = np.sqrt(np.einsum("pbd,pbd->bp", z, z))
    return maha.reshape(b, h, w)
