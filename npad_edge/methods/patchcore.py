"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Memory bank = greedy k-center coreset of all nominal patch vectors; patch score = Euclidean
distance to the nearest bank vector; image score = the largest patch score, optionally
reweighted as in the paper (Eq. 7):

    s = (1 - exp(d*) / sum_{m in N_b(m*)} exp(||m_test* - m||)) * d*

where m_test* is the worst test patch, m* its nearest bank vector, d* = ||m_test* - m*|| and
N_b(m*) the b nearest bank vectors of m* (m* itself included, as in the reference
implementations, so the fraction is the softmax weight of m*).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import numpy as np

from .. import search
from ..errors import InvalidInputError
from .base import smoothed_max, AnomalyMethod, ProgressFn, require_choice, require_number, to_rows

__all__ = ["PatchCore", "reweighted_image_scores"]


def reweighted_image_scores(queries: np.ndarray, patch_scores: np.ndarray, nn_idx: np.ndarray,
                            bank: np.ndarray, support_idx_fn, b: int) -> np.ndarray:
    """Paper-reweighted image scores.

    queries (B, P, D) float32, patch_scores (B, P) Euclidean NN distances, nn_idx (B, P) int64
    bank indices of the nearest neighbours, bank (M, D) float32; ``support_idx_fn(vectors (B, D), k)
    -> (B, k) int64`` returns the k nearest bank vectors of bank vectors. Returns (B,) float32.
    """
    bsz = patch_scores.shape[0]
    rows = np.arange(bsz)
    worst = np.argmax(patch_scores, axis=1)                       # m_test* per image
    d_star = patch_scores[rows, worst].astype(np.float64)         # d*
    m_star = bank[nn_idx[rows, worst]]                            # m*, (B, D)
    k = min(int(b), bank.shape[0])
    support = support_idx_fn(np.ascontiguousarray(m_star, dtype=np.float32), k)   # N_b(m*), (B, k)
    q = queries[rows, worst].astype(np.float64)                   # (B, D)
    dist = np.linalg.norm(bank[support].astype(np.float64) - q[:, None, :], axis=2)   # (B, k)
    # exp(d*) / sum exp(dist), computed stably (d* is one of dist up to rounding)
    shift = np.maximum(dist.max(axis=1), d_star)
    frac = np.exp(d_star - shift) / np.exp(dist - shift[:, None]).sum(axis=1)
    return ((1.0 - frac) * d_star).astype(np.float32)


class PatchCore(AnomalyMethod):
    """PatchCore with a greedy coreset bank and exact (or HNSW) nearest-neighbour scoring.

    Settings
    --------
    coreset : float in (0, 1]
        Fraction of all training patch vectors kept in the bank (1.0 keeps all). Default 0.1.
    coreset_max : "auto" | int | None
        Upper bound on the bank size in vectors (None: no bound). The bank is
        ``min(round(coreset * N), coreset_max)`` vectors, so the fit (greedy steps x N) and the
        per-image search (patches x bank) stay bounded when the training set grows, instead of
        growing with it (docs/accuracy.md, "fit cost"). ``"auto"`` (default): ``BANK_PER_CELL``
        (10) vectors per cell of the feature grid, e.g. 10,240 at 256 x 256 (the fixed 10,000
        of earlier models), 16,000 at 320 x 320, 18,400 at 368 x 320, 40,000 for 800 x 320
        strips: the bank keeps the same density per unit of the part's image when the input
        grows, where a fixed cap thinned it (docs/accuracy.md, stop 25). :meth:`bank_plan`.
    coreset_pool : "auto" | int | None
        Greedy candidates (None: all patches; ``"auto"``, the default: ``POOL_PER_BANK`` (4)
        times the bank size, the 40,000 / 10,000 of earlier models). With a pool, the bank is selected in two
        stages: each training image's own greedy k-centers (``ceil(pool / n_images)`` of its
        patches) are pooled, then the greedy runs on that pool. The union of per-part k-center
        sets is a composable coreset for k-center coverage (Indyk et al., PODS 2014): an
        image's rare patches survive the first stage because they are far from its other
        patches, which a uniform sample would not guarantee. Cost: O(patches per image) per
        first-stage step and O(pool) per second-stage step, instead of O(all patches) per step.
    coreset_proj_dim : int
        Random-projection dimension for the greedy distances (paper: 128).
    coreset_starts : int
        Random starting points of the greedy selection (paper reference code: 10).
    coreset_storage : "float16" | "float32" | "int8"
        Precision in which the projected vectors are kept during the greedy selection. The
        projection is itself an approximation of the true distances; rounding it to float16
        halves the memory streamed per greedy step (bottle: 58 s -> 42 s for the selection,
        docs/search.md). Distances are accumulated in float32 either way. ``"int8"``
        quantises the projection with one symmetric scale and computes exact integer
        distances: a quarter of float32's memory, the fastest, with a somewhat different
        selection (overlap with float16 measured in docs/search.md); opt-in.
    bank_dtype : "float32" | "float16"
        Storage and search precision of the bank (float16 halves the model's bank bytes).
    index : "flat" | "hnsw"
        Exact blocked search or approximate HNSW graph search.
    search_compute : "auto" | "float32" | "int8" | "bfloat16"
        Arithmetic of the flat index's scan (``search.FlatIndex(compute=...)``, docs/search.md).
        ``"float32"`` is the exact search. ``"int8"`` / ``"bfloat16"`` scan a compact copy of
        the bank, keep ``search_rerank`` candidates per query and re-rank them with exact
        float32 distances: the patch scores then equal the float32 search's bit for bit
        whenever the true nearest bank vector is among the candidates (at k' = 8 it was for
        every one of 1.16 million test patches of bottle and magnetic_tile, docs/search.md).
        ``"auto"`` (default) is ``"int8"`` where the kernel set in use computes int8 natively
        (``search.native_computes()``: AVX512-VNNI) and ``"float32"`` elsewhere, where the int8
        scan would be the scalar oracle's, ~30x slower; it is resolved when the index is built
        (:attr:`search_arithmetic`), so a saved model picks its own arithmetic on each machine.
        Explicit ``"int8"`` / ``"bfloat16"`` need ``index="flat"`` (``"auto"`` with HNSW is
        ``"float32"``). With ``bank_dtype="float16"`` the compact index re-ranks against the
        float32 copy of the float16-rounded bank, which gives the float16 index's distances
        (same values, same float32 arithmetic); the search memory is then float32 rows plus the
        compact words instead of float16 panels. The neighbours of bank vectors for the
        reweighting come from an exact float32 index either way. The CUDA path
        (``Detector(device="CUDA")``) ignores this setting: it has its own low-precision first
        pass + re-rank per ``inference_precision`` (docs/runtime.md). Models saved without
        this setting (before it existed) load with ``"float32"``, what they were scored with.
    search_rerank : int >= 1
        k', candidates per query kept by a compact scan for the float32 re-rank (default
        ``search.DEFAULT_RERANK`` = 8; unused when the scan is float32).
    hnsw_m, hnsw_ef_construction, hnsw_ef : int
        HNSW graph parameters (used only with ``index="hnsw"``).
    image_score : "smoothed" | "max" | "reweighted"
        Image score: the largest value of the patch-score grid smoothed with a Gaussian of
        ``image_sigma`` cells (``base.smoothed_max``: the peak of the anomaly map), the largest
        patch score, or the paper's reweighting of it.
    image_sigma : float >= 0
        Grid cells of the "smoothed" image score's Gaussian (0.5: the anomaly map's sigma of 4
        input pixels on the stride-8 grid).
    reweight_neighbors : int
        b, the size of N_b(m*) in the reweighting (9, as in the reference code).
    """

    name = "patchcore"
    #: coreset_max="auto": bank vectors per cell of the feature grid
    BANK_PER_CELL = 10
    #: coreset_pool="auto": pool size as a multiple of the bank size
    POOL_PER_BANK = 4
    DEFAULTS: Mapping[str, Any] = {
        "coreset": 0.1,
        "coreset_max": "auto",
        "coreset_pool": "auto",
        "coreset_proj_dim": 128,
        "coreset_starts": 10,
        "coreset_storage": "float16",
        "bank_dtype": "float32",
        "index": "flat",
        "search_compute": "auto",
        "search_rerank": search.DEFAULT_RERANK,
        "hnsw_m": 16,
        "hnsw_ef_construction": 200,
        "hnsw_ef": 64,
        "image_score": "smoothed",
        "image_sigma": 0.5,
        "reweight_neighbors": 9,
    }

    def _validate(self, s: dict[str, Any]) -> dict[str, Any]:
        require_number(s, "coreset", lo=0.0, hi=1.0, lo_open=True)
        for key in ("coreset_max", "coreset_pool"):
            if s[key] != "auto":
                require_number(s, key, lo=1, integer=True, allow_none=True)
        require_number(s, "coreset_proj_dim", lo=1, integer=True)
        require_number(s, "coreset_starts", lo=1, integer=True)
        require_choice(s, "coreset_storage", ("float16", "float32", "int8"))
        require_choice(s, "bank_dtype", ("float32", "float16"))
        require_choice(s, "index", ("flat", "hnsw"))
        require_choice(s, "search_compute", ("auto", "float32", "int8", "bfloat16"))
        if s["search_compute"] in ("int8", "bfloat16") and s["index"] != "flat":
            raise InvalidInputError(f"setting 'search_compute'={s['search_compute']!r} is a scan of the flat index "
                                    f"and needs index='flat'; got index={s['index']!r} (use 'auto' or 'float32')")
        for key in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef", "reweight_neighbors", "search_rerank"):
            require_number(s, key, lo=1, integer=True)
        require_choice(s, "image_score", ("smoothed", "max", "reweighted"))
        require_number(s, "image_sigma", lo=0.0)
        s["image_sigma"] = float(s["image_sigma"])
        s["coreset"] = float(s["coreset"])
        for key in ("coreset_max", "coreset_pool"):
            if s[key] is not None and s[key] != "auto":
                s[key] = int(s[key])
        for key in ("coreset_proj_dim", "coreset_starts", "hnsw_m", "hnsw_ef_construction", "hnsw_ef",
                    "reweight_neighbors", "search_rerank"):
            s[key] = int(s[key])
        return s

    # -- fit -------------------------------------------------------------------------------
    def bank_plan(self, n_images: int, grid_hw: tuple[int, int]) -> tuple[int, int | None]:
        """``(bank size, pool size or None)`` for ``n_images`` training images of a feature grid
        ``grid_hw``: the settings' rule (``coreset``, ``coreset_max``, ``coreset_pool``). The
        pool is None when there is none or it would hold every patch."""
        s = self.settings
        cells = int(grid_hw[0]) * int(grid_hw[1])
        n_rows = int(n_images) * cells
        n_select = max(1, int(round(s["coreset"] * n_rows)))
        cap = s["coreset_max"]
        if cap == "auto":
            cap = self.BANK_PER_CELL * cells
        if cap is not None:
            n_select = min(n_select, int(cap))
        pool = s["coreset_pool"]
        if pool == "auto":
            pool = self.POOL_PER_BANK * n_select
        if pool is not None:
            pool = max(int(pool), n_select)
            if pool >= n_rows:
                pool = None
        return n_select, pool

    def _fit(self, features: np.ndarray, seed: int, progress: ProgressFn | None) -> None:
        s = self.settings
        rows = to_rows(features)
        n_select, pool = self.bank_plan(features.shape[0], features.shape[2:])
        greedy = dict(proj_dim=s["coreset_proj_dim"], n_starts=s["coreset_starts"], seed=seed,
                      storage=s["coreset_storage"])
        if pool is not None:
            rows = self._pool(rows, features.shape[0], pool, greedy, progress)
        if n_select >= rows.shape[0]:
            bank = rows
        else:
            cb = None if progress is None else (lambda done, total: progress("coreset", done, total))
            idx = search.greedy_coreset(rows, n_select, progress=cb, **greedy)
            bank = np.ascontiguousarray(rows[np.sort(np.asarray(idx))])
        self._set_bank(bank.astype(self.settings["bank_dtype"]), seed)

    @staticmethod
    def _pool(rows: np.ndarray, n_images: int, pool: int, greedy: dict, progress: ProgressFn | None) -> np.ndarray:
        """First stage of the two-stage selection: each image's greedy k-centers, pooled in
        row order -> (<= pool, D) float32 (see ``coreset_pool``). The images are independent:
        they run one thread each, ``search.default_threads()`` images at a time (the same
        rows as one after the other)."""
        per_image = rows.shape[0] // n_images
        take = min(per_image, -(-pool // n_images))

        def own(i: int) -> np.ndarray:
            if take >= per_image:
                return i * per_image + np.arange(per_image)
            part = rows[i * per_image:(i + 1) * per_image]
            return i * per_image + np.sort(np.asarray(search.greedy_coreset(part, take, threads=1, **greedy)))

        workers = max(1, min(search.default_threads(), n_images))
        keep = []
        if workers == 1 or take >= per_image:
            for i in range(n_images):
                keep.append(own(i))
                if progress is not None:
                    progress("coreset pool", i + 1, n_images)
        else:
            ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="npad-coreset-pool")
            try:
                futures = [ex.submit(own, i) for i in range(n_images)]
                for i, f in enumerate(futures):
                    keep.append(f.result())
                    if progress is not None:
                        progress("coreset pool", i + 1, n_images)
            finally:
                # an error, Ctrl-C or a progress exception: the images not started are dropped
                ex.shutdown(wait=True, cancel_futures=True)
        return np.ascontiguousarray(rows[np.concatenate(keep)])

    def _set_bank(self, stored: np.ndarray, seed: int = 0) -> None:
        self._stored_bank = np.ascontiguousarray(stored)
        # The search runs on the stored (possibly float16-rounded) values, so a reloaded model
        # scores exactly as the freshly fitted one.
        self._bank = np.ascontiguousarray(stored, dtype=np.float32)
        s = self.settings
        self._exact = None
        if s["index"] == "hnsw":
            self._index = search.HnswIndex(self._bank, M=s["hnsw_m"], ef_construction=s["hnsw_ef_construction"],
                                           ef=s["hnsw_ef"], seed=seed)
        elif self._arithmetic() == "float32":
            self._index = self._exact = search.FlatIndex(self._bank, dtype=s["bank_dtype"])
        else:
            # The float32 copy of the stored values: the same distances as a float16 index over
            # them (exact re-rank), so bank_dtype keeps its meaning for the scores.
            self._index = search.FlatIndex(self._bank, dtype="float32", compute=self._arithmetic(),
                                           rerank=s["search_rerank"])
            if s["image_score"] == "reweighted":
                # The b nearest bank vectors of m* must be exact (k = b may exceed k'); built
                # now, not lazily, so the Detector's thread setting reaches it.
                self._exact = search.FlatIndex(self._bank, dtype=s["bank_dtype"])

    def _arithmetic(self) -> str:
        c, s = self.settings["search_compute"], self.settings
        if c != "auto":
            return c
        return "int8" if s["index"] == "flat" and "int8" in search.native_computes() else "float32"

    @property
    def search_arithmetic(self) -> str:
        """The scan arithmetic this object's index uses: ``"float32"``, ``"int8"`` or
        ``"bfloat16"`` (``search_compute`` with ``"auto"`` resolved; ``"float32"`` for HNSW)."""
        return getattr(self._index, "compute", "float32")

    @property
    def bank(self) -> np.ndarray:
        """The memory bank ``(M, D) float32`` (float16-rounded values when ``bank_dtype="float16"``)."""
        return self._bank

    # -- score -----------------------------------------------------------------------------
    def _score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, d, h, w = features.shape
        q = to_rows(features)
        dist2, idx = self._index.search(q, 1)
        patch = np.sqrt(np.maximum(dist2[:, 0], 0.0)).reshape(b, h * w)
        if self.settings["image_score"] == "max":
            image = patch.max(axis=1)
        elif self.settings["image_score"] == "smoothed":
            image = smoothed_max(patch.reshape(b, h, w).astype(np.float32), self.settings["image_sigma"])
        else:
            image = reweighted_image_scores(q.reshape(b, h * w, d), patch, idx[:, 0].reshape(b, h * w),
                                            self._bank, self._support, self.settings["reweight_neighbors"])
        return patch.reshape(b, h, w), image

    def _support(self, vectors: np.ndarray, k: int) -> np.ndarray:
        if self._exact is None:
            self._exact = search.FlatIndex(self._bank, dtype=self.settings["bank_dtype"])
        return np.asarray(self._exact.search(vectors, k)[1])

    # -- state -----------------------------------------------------------------------------
    #: Settings a saved model may lack (written before the setting existed) and the value it
    #: was fitted and scored with; the defaults of new fits can differ.
    SAVED_WITHOUT: Mapping[str, Any] = {"search_compute": "float32", "image_score": "max"}

    def _state(self) -> dict[str, np.ndarray]:
        return {"bank": self._stored_bank}

    def _load(self, arrays: Mapping[str, np.ndarray]) -> None:
        bank = np.asarray(arrays["bank"])
        if bank.dtype != np.dtype(self.settings["bank_dtype"]):
            bank = bank.astype(self.settings["bank_dtype"])
        self._set_bank(bank)
