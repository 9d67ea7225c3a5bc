"""Nearest-neighbour search and coreset selection, backed by the compiled core ``_core``.

Everything here checks its inputs and raises :class:`~npad_edge.errors.InvalidInputError`
naming what was expected and what came; nothing is silently cast or copied (a float64 or
Fortran-ordered array is an error, not a conversion). Compute runs without the GIL, and long
calls can be interrupted with Ctrl-C (``KeyboardInterrupt``).

Instruction sets: the core picks the best kernel set for this CPU once (``isa()``);
``set_isa(name)`` or the environment variable ``NPAD_EDGE_ISA`` forces one, which is how the
tests run every kernel set on one machine against the scalar oracle.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Tuple

import numpy as np

from . import _core
from .errors import InvalidInputError

__all__ = [
    "isa",
    "available_isas",
    "cpu_features",
    "set_isa",
    "native_computes",
    "FlatIndex",
    "HnswIndex",
    "LocalGaussianBank",
    "window_mahalanobis",
    "pack_lower_columns",
    "greedy_coreset",
    "projection_matrix",
    "coreset_start_indices",
    "default_threads",
    "MAX_SQUARED_NORM",
    "DEFAULT_RERANK",
]

ProgressFn = Callable[[int, int], None]

_log = logging.getLogger(__name__)

# The largest squared norm of a row (bank, query, coreset feature) the core accepts: FLT_MAX / 4,
# so that |q|^2 + |x|^2, 2 q.x and |x - y|^2 all stay finite in float32.
MAX_SQUARED_NORM = float(np.finfo(np.float32).max) / 4

# Candidates per query a compact FlatIndex scan keeps for its exact float32 re-rank. Measured
# on real PatchCore features (tools/compact_rerank.py, docs/search.md: bottle and
# magnetic_tile, 132k queries): k' = 4 was the smallest with no top-1 difference for either
# bfloat16 or int8 (k' = 2: 1-65 differ); 8 keeps a factor 2 of margin for unseen categories.
DEFAULT_RERANK = 8


def isa() -> str:
    """Name of the kernel set calls use now: ``"avx512"``, ``"avx2"``, ``"neon"`` or ``"scalar"``."""
    return _core.isa()


def available_isas() -> list:
    """Kernel sets usable on this machine, best first; ``"scalar"`` is always last."""
    return list(_core.available_isas())


def cpu_features() -> dict:
    """CPU features detected at run time (CPUID, XCR0 and, for AMX, the Linux permission
    request): ``avx2_fma_f16c``, ``avx512`` (F/BW/DQ/VL with OS support), ``avx512_bf16``,
    ``avx512_vnni``, ``amx_tile``, ``amx_bf16``, ``amx_int8``, ``amx_usable`` (tile state enabled
    by the OS and granted to this process), ``neon``. The kernel sets in use are
    :func:`available_isas`; these say which compact-kernel features this CPU offers."""
    return dict(_core.cpu_features())


def set_isa(name: Optional[str]) -> None:
    """Force a kernel set for all later calls (process-wide); ``None`` or ``"auto"`` restores
    the automatic choice. Raises InvalidInputError listing the available ones otherwise."""
    if name is None:
        name = "auto"
    if not isinstance(name, str):
        raise InvalidInputError(f"isa name must be a str or None; got {type(name).__name__}")
    _core.set_isa(name)


# Compact scan arithmetics each kernel set runs natively (csrc/kernels: VPDPBUSD for int8,
# VDPBF16PS for bfloat16). Elsewhere the compact tiles are the scalar oracle's (int8 ~30x
# slower than the float32 tile) or an emulation no faster than float32 (bfloat16 on avx512).
_NATIVE_COMPUTE = {"avx512_bf16": ("int8", "bfloat16"), "avx512_vnni": ("int8",)}


def native_computes() -> list:
    """``FlatIndex`` compute arithmetics with a native kernel in the kernel set in use
    (:func:`isa`): ``"float32"`` always, ``"int8"`` with AVX512-VNNI, ``"bfloat16"`` with
    AVX512-BF16. The others run, with the same results, but slower than float32."""
    return ["float32", *_NATIVE_COMPUTE.get(isa(), ())]


def default_threads() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _threads(threads: Optional[int]) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise InvalidInputError(f"threads must be a positive int or None; got {threads!r}")
    if threads <= 0:
        raise InvalidInputError(f"threads must be >= 1; got {threads}")
    return int(threads)


def _int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{name} must be an int; got {value!r}")
    return int(value)


def _check_matrix(a, name: str, dim: Optional[int] = None, need_finite: bool = False) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise InvalidInputError(f"{name} must be a numpy.ndarray of float32; got {type(a).__name__}")
    if a.dtype != np.float32:
        raise InvalidInputError(f"{name} must have dtype float32; got {a.dtype} (cast explicitly)")
    if a.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (rows, dim); got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise InvalidInputError(f"{name} must be C-contiguous; got a strided view (use np.ascontiguousarray)")
    if dim is not None and a.shape[1] != dim:
        raise InvalidInputError(f"{name} must have dim {dim} (the bank's); got shape {a.shape}")
    if need_finite and not np.isfinite(a).all():
        raise InvalidInputError(f"{name} must be finite; it contains NaN or inf")
    if need_finite and a.size:
        sq = np.einsum("ij,ij->i", a, a, dtype=np.float64)
        bad = np.flatnonzero(~(sq <= MAX_SQUARED_NORM))
        if bad.size:
            raise InvalidInputError(f"{name} row {bad[0]} has a squared norm of {sq[bad[0]]:.3g}, beyond FLT_MAX / 4 "
                                    f"= {MAX_SQUARED_NORM:.2g} where float32 distances overflow: scale the data down")
    return a


def _check_k(k, ntotal: int) -> int:
    k = _int(k, "k")
    if k <= 0 or k > ntotal:
        raise InvalidInputError(f"k must be in [1, ntotal={ntotal}]; got {k}")
    return k


class FlatIndex:
    """Exact k-NN in squared L2 over a fixed bank.

    ``FlatIndex(bank (N, D) float32 C-contiguous finite, *, dtype="float32"|"float16"|"int8",
    threads=None)``. The bank is packed once into the core's panel layout (a copy in the
    chosen storage dtype; the caller's array is not kept). ``float16`` halves the memory,
    ``int8`` (one float32 scale per vector, scale = max|x| / 127, codes rounded to nearest)
    quarters it; distances are then exact to the *stored* vectors.

    Distances are ``max(0, |q|^2 + |x|^2 - 2 q.x)`` computed in float32 (one fused
    multiply-add per term, norms precomputed): they agree with an exact computation to about
    1e-6 relative to |q|^2 + |x|^2, and are bit-identical across instruction sets.
    ``threads`` is the default for :meth:`search`.

    Bank rows and queries must be finite with squared norm at most ``MAX_SQUARED_NORM``
    (FLT_MAX / 4 ~ 8.5e37, i.e. ``|x|`` up to ~9.2e18), so that no distance overflows
    (InvalidInputError otherwise).

    ``compute`` picks the arithmetic of the scan (needs ``dtype="float32"``):

    - ``"float32"`` (default): the exact float32 tile.
    - ``"bfloat16"``: bank and queries rounded to bfloat16, products accumulated in float32
      (VDPBF16PS where the CPU has AVX512-BF16, else the same arithmetic emulated bit for bit).
    - ``"int8"``: bank and queries quantized like ``dtype="int8"`` (per-vector scale), exact
      int32 dot products (VPDPBUSD with AVX512-VNNI).

    With a compact compute, ``rerank`` (default :data:`DEFAULT_RERANK`) candidates per query
    are kept by the compact pass and re-ranked with exact float32 distances, which are then
    bit-identical to ``compute="float32"`` whenever the true k nearest are among them;
    ``rerank=0`` returns the compact pass's own neighbours and distances (those of the
    rounded vectors). The index then keeps the float32 bank row-major (for the re-rank) plus
    the compact words: ``memory_bytes`` grows by 1/2 (bf16) or 1/4 (int8).
    """

    def __init__(self, bank: np.ndarray, *, dtype: str = "float32", threads: Optional[int] = None,
                 compute: str = "float32", rerank: Optional[int] = None):
        _check_matrix(bank, "bank")
        if bank.shape[0] == 0:
            raise InvalidInputError("bank must hold at least one vector; got shape " f"{bank.shape}")
        if bank.shape[1] == 0:
            raise InvalidInputError(f"bank vectors must have at least one dimension; got shape {bank.shape}")
        if dtype not in ("float32", "float16", "int8"):
            raise InvalidInputError(f"dtype must be 'float32', 'float16' or 'int8'; got {dtype!r}")
        if compute not in ("float32", "bfloat16", "int8"):
            raise InvalidInputError(f"compute must be 'float32', 'bfloat16' or 'int8'; got {compute!r}")
        if compute != "float32" and dtype != "float32":
            raise InvalidInputError(f"compute={compute!r} re-ranks against the float32 bank and needs "
                                    f"dtype='float32'; got dtype={dtype!r}")
        rerank = DEFAULT_RERANK if rerank is None else _int(rerank, "rerank")
        if rerank < 0:
            raise InvalidInputError(f"rerank must be >= 0; got {rerank}")
        self._rerank = rerank if compute != "float32" else 0
        self._threads = _threads(threads)
        self._core = _core.FlatIndex(bank, dtype, compute)  # checks finiteness while packing

    @property
    def ntotal(self) -> int:
        """Number of bank vectors N."""
        return self._core.ntotal

    @property
    def dim(self) -> int:
        """Vector dimension D."""
        return self._core.dim

    @property
    def dtype(self) -> str:
        """Storage dtype of the bank: ``"float32"``, ``"float16"`` or ``"int8"``."""
        return self._core.dtype

    @property
    def compute(self) -> str:
        """Arithmetic of the scan: ``"float32"``, ``"bfloat16"`` or ``"int8"``."""
        return self._core.compute

    @property
    def rerank(self) -> int:
        """Candidates per query re-ranked in float32 after a compact scan (0: none)."""
        return self._rerank

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the packed bank, scales and norms."""
        return self._core.memory_bytes

    def search(self, queries: np.ndarray, k: int, *, threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """k nearest bank vectors of each query.

        queries: (M, D) float32 C-contiguous, finite. Returns ``(distances (M, k) float32
        squared L2, indices (M, k) int64)``, nearest first, equal distances in increasing
        index order.
        """
        _check_matrix(queries, "queries", self.dim)
        k = _check_k(k, self.ntotal)
        t = self._threads if threads is None else _threads(threads)
        if self._rerank:
            return self._core.search(queries, k, t, self._rerank)
        return self._core.search(queries, k, t)

    def __repr__(self) -> str:
        extra = f", compute={self.compute!r}, rerank={self.rerank}" if self.compute != "float32" else ""
        return f"FlatIndex(ntotal={self.ntotal}, dim={self.dim}, dtype={self.dtype!r}{extra})"



class LocalGaussianBank:
    """Per-position nominal features, searched by window: N-pad's test-time local Gaussians.

    ``LocalGaussianBank(nominal (N, h, w, D) float32 or float16 C-contiguous finite, *,
    threads=None)`` copies the N nominal feature maps into per-cell panels (same precision).
    :meth:`mahalanobis` gives, for every query feature at cell (i, j), the Mahalanobis
    distance to the Gaussian of its ``k`` nearest nominal features (squared L2) among the N
    images at the cells of the (2r+1) x (2r+1) window around (i, j), with the covariance
    shrunk towards ``tr(S)/D * I`` (the formula of ``methods.npad._knn_mahalanobis``, which is
    its numpy oracle; the Gram matrix of the neighbours is formed in float32, the rest in
    float64, so the results agree to ~1e-6 relative).
    """

    def __init__(self, nominal: np.ndarray, *, threads: Optional[int] = None):
        if not isinstance(nominal, np.ndarray) or nominal.dtype not in (np.float32, np.float16):
            raise InvalidInputError("nominal must be a numpy.ndarray of float32 or float16; got "
                                    f"{getattr(nominal, 'dtype', type(nominal).__name__)}")
        if nominal.ndim != 4:
            raise InvalidInputError(f"nominal must be 4-D (N, h, w, D); got shape {nominal.shape}")
        if not nominal.flags.c_contiguous:
            raise InvalidInputError("nominal must be C-contiguous (use np.ascontiguousarray)")
        self._threads = _threads(threads)
        self._core = _core.LocalGaussianBank(nominal)  # checks finiteness while packing

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        """(N, h, w, D)."""
        return tuple(self._core.shape)

    @property
    def dtype(self) -> str:
        return self._core.dtype

    @property
    def memory_bytes(self) -> int:
        return self._core.memory_bytes

    def nominal(self) -> np.ndarray:
        """The bank as given: (N, h, w, D) float32 or float16, a new array (bit-exact)."""
        return self._core.nominal()

    def mahalanobis(self, x: np.ndarray, *, radius: int, k: int, shrinkage: float,
                    exclude: Optional[np.ndarray] = None, threads: Optional[int] = None) -> np.ndarray:
        """x (B, h, w, D) float32 C-contiguous finite -> (B, h, w) float32.

        ``exclude`` (B,) int64: the nominal image each query image must not use (-1: none),
        for scoring training images against the others."""
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4 or not x.flags.c_contiguous:
            raise InvalidInputError("x must be a C-contiguous (B, h, w, D) float32 numpy.ndarray; got "
                                    f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
        ex = None
        if exclude is not None:
            ex = np.ascontiguousarray(np.asarray(exclude, dtype=np.int64).reshape(-1))
        t = self._threads if threads is None else _threads(threads)
        return self._core.mahalanobis(x, _int(radius, "radius"), _int(k, "k"), float(shrinkage), ex, t)

    def __repr__(self) -> str:
        return f"LocalGaussianBank(shape={self.shape}, dtype={self.dtype!r})"

def pack_lower_columns(factors: np.ndarray) -> np.ndarray:
    """(P, D, D) lower-triangular factors -> (P, D(D+1)/2) float32: each position's factor by
    columns (column j = rows j .. D-1), the layout :func:`window_mahalanobis` reads."""
    if not isinstance(factors, np.ndarray) or factors.ndim != 3 or factors.shape[1] != factors.shape[2]:
        raise InvalidInputError(f"factors must be (P, D, D); got {getattr(factors, 'shape', type(factors).__name__)}")
    r, c = np.triu_indices(factors.shape[1])       # (j, i) with j <= i, by column j then row i
    return np.ascontiguousarray(factors[:, c, r], dtype=np.float32)


def window_mahalanobis(x: np.ndarray, means: np.ndarray, cols: np.ndarray, *,
                       threads: Optional[int] = None) -> np.ndarray:
    """N-pad's per-position Mahalanobis distance: x (B, P, D) float32 -> (B, P) float32 with
    ``out[b, q] = |L_q (x[b, q] - means[q])|``, ``L_q`` lower triangular given by
    :func:`pack_lower_columns` (``cols`` (P, D(D+1)/2)). C++ (``csrc/index/window_gaussian.h``):
    reads the packed factor (half the bytes of the full matrix) once per position, the same bits
    on every instruction set and thread count; equals ``sqrt(sum((diff @ L^T)^2))`` to float32
    rounding."""
    for name, a, nd in (("x", x, 3), ("means", means, 2), ("cols", cols, 2)):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != nd or not a.flags.c_contiguous:
            raise InvalidInputError(f"{name} must be a C-contiguous {nd}-D float32 numpy.ndarray; got "
                                    f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    return _core.window_mahalanobis(x, means, cols, _threads(threads))


class HnswIndex:
    """Approximate k-NN (HNSW graph, squared L2) built with the ``hnswlib`` package.

    ``HnswIndex(bank (N, D) float32, *, M=16, ef_construction=200, ef=64, seed=0,
    threads=None)``. ``search`` has FlatIndex's contract (including the squared-norm bound);
    hnswlib searches with a list of max(ef, k), so ef is set once at construction and never
    changed by ``search``: concurrent searches with different k are safe. Results are sorted
    by (distance, index). With threads > 1 the graph (and so the
    answers to near-ties) can differ between builds; use threads=1 for a reproducible graph.
    The defaults reach recall@1 >= 0.99 on PatchCore-like (low-rank plus noise) banks; see
    tests/test_search_hnsw.py.
    """

    def __init__(
        self,
        bank: np.ndarray,
        *,
        M: int = 16,
        ef_construction: int = 200,
        ef: int = 64,
        seed: int = 0,
        threads: Optional[int] = None,
    ):
        import hnswlib

        _check_matrix(bank, "bank", need_finite=True)
        n, d = bank.shape
        if n == 0 or d == 0:
            raise InvalidInputError(f"bank must be non-empty; got shape {bank.shape}")
        M, ef_construction, ef, seed = (_int(v, name) for v, name in
                                         ((M, "M"), (ef_construction, "ef_construction"), (ef, "ef"), (seed, "seed")))
        for v, name in ((M, "M"), (ef_construction, "ef_construction"), (ef, "ef")):
            if v <= 0:
                raise InvalidInputError(f"{name} must be >= 1; got {v}")
        self._threads = _threads(threads)
        self._ef = ef
        self._n, self._d = n, d
        self._index = hnswlib.Index(space="l2", dim=d)
        self._index.init_index(max_elements=n, ef_construction=ef_construction, M=M, random_seed=seed)
        self._index.add_items(bank, np.arange(n, dtype=np.int64), num_threads=self._threads)
        self._index.set_ef(ef)

    ntotal = property(lambda self: self._n, doc="Number of bank vectors N.")
    dim = property(lambda self: self._d, doc="Vector dimension D.")
    dtype = property(lambda self: "float32", doc="Storage dtype (always float32).")

    def search(self, queries: np.ndarray, k: int, *, threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """As :meth:`FlatIndex.search` (approximate): ``(dist (M, k) float32, idx (M, k) int64)``."""
        _check_matrix(queries, "queries", self._d, need_finite=True)
        k = _check_k(k, self._n)
        t = self._threads if threads is None else _threads(threads)
        if queries.shape[0] == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        # No set_ef here: ef is index-wide state, and changing it per call raced with searches
        # in other threads; hnswlib already uses max(ef, k) per query.
        labels, dist = self._index.knn_query(queries, k=k, num_threads=t)
        labels = labels.astype(np.int64)
        dist = np.maximum(dist.astype(np.float32, copy=False), 0.0)
        order = np.lexsort((labels, dist), axis=-1)  # ties to the lower index
        return np.take_along_axis(dist, order, 1), np.take_along_axis(labels, order, 1)

    def __repr__(self) -> str:
        return f"HnswIndex(ntotal={self._n}, dim={self._d}, ef={self._ef})"


def projection_matrix(dim: int, proj_dim: int, seed: int = 0) -> np.ndarray:
    """The (dim, proj_dim) float32 random projection greedy_coreset uses for ``seed``.

    Entries N(0, 1/proj_dim) from SplitMix64 (state ``seed ^ 0x50524F4A45435431``) and
    Box-Muller in row-major order: per pair, u1 = ((next >> 11) + 1) / 2^53,
    u2 = (next >> 11) / 2^53, r = sqrt(-2 ln u1), entries r cos(2 pi u2), r sin(2 pi u2)
    (float64), times 1/sqrt(proj_dim), rounded to float32. Same on every platform.
    """
    dim, proj_dim, seed = _int(dim, "dim"), _int(proj_dim, "proj_dim"), _int(seed, "seed")
    if dim <= 0 or proj_dim <= 0:
        raise InvalidInputError(f"dim and proj_dim must be >= 1; got {dim}, {proj_dim}")
    return _core.projection_matrix(dim, proj_dim, seed & 0xFFFFFFFFFFFFFFFF)


def coreset_start_indices(n: int, n_starts: int, seed: int = 0) -> np.ndarray:
    """The min(n_starts, n) distinct start points (int64) greedy_coreset uses for ``seed``.

    SplitMix64 (state ``seed ^ 0x5354415254533031``), partial Fisher-Yates over 0..n-1:
    for i < n_starts, j = i + ((next * (n - i)) >> 64), swap a[i], a[j]; returns a[:n_starts].
    """
    n, n_starts, seed = _int(n, "n"), _int(n_starts, "n_starts"), _int(seed, "seed")
    if n <= 0 or n_starts <= 0:
        raise InvalidInputError(f"n and n_starts must be >= 1; got {n}, {n_starts}")
    return _core.start_indices(n, n_starts, seed & 0xFFFFFFFFFFFFFFFF)


def greedy_coreset(
    features: np.ndarray,
    n_select: int,
    *,
    proj_dim: Optional[int] = 128,
    n_starts: int = 10,
    seed: int = 0,
    threads: Optional[int] = None,
    progress: Optional[ProgressFn] = None,
    storage: str = "float32",
    return_info: bool = False,
    bound: str = "auto",
):
    """Greedy k-center selection (PatchCore's approximate greedy coreset).

    features: (N, D) float32 C-contiguous, finite. Returns (n_select,) int64 distinct row
    indices in selection order. Exactly:

    1. If ``proj_dim`` is not None and ``proj_dim < D``: Y = features @ P with
       P = :func:`projection_matrix` (D, proj_dim, seed), in float32; otherwise (``None`` or
       ``proj_dim >= D``, where projecting cannot help) Y = features.
    2. S = :func:`coreset_start_indices` (N, n_starts, seed);
       score_i = mean over s in S of ||Y_i - Y_s|| (Euclidean, float32).
    3. n_select times: sel = argmax(score), ties to the lowest index; append sel; set
       score_sel = -inf (never chosen again, even among exact duplicates);
       score_i = min(score_i, ||Y_i - Y_sel||).

    ``storage="float16"`` rounds Y once to IEEE half (nearest even) after step 1 and runs steps
    2-3 exactly as above on Y' = float32(float16(Y)), distances in float32: the same indices as
    this algorithm on Y', in half the memory; faster on large N where every step streams all of Y
    from memory on some machines (1.4x on an AVX-512 Zen 4 VM) but not on others (slower than
    float32 on an AVX2 Zen 2 VM; docs/search.md). ``"float32"`` (the default) keeps Y as computed.

    If a value of Y is beyond the float16 range (|y| > 65504), ``"float16"`` falls back to
    ``"float32"`` for that call (a warning is logged and ``info["storage"]`` says so): rounding
    it would give inf and NaN distances.

    ``storage="int8"`` quantises Y once after step 1 with one symmetric scale: m = max |Y|,
    Q = clip(rint(Y * float32(127 / m)), -127, 127) (rint: half to even, the product in float32;
    all Q = 0 if m == 0), an (N, proj_dim) int8 matrix, a quarter of float32's memory. Steps 2-3
    then run exactly as above on the integer codes Q with every distance
    sqrt(float32(D)), D = ||Q_i - Q_j||^2 computed exactly in integers (rounded once to float32,
    then IEEE sqrt): the same indices as this algorithm on Q, i.e. on the dequantised rows
    ``info["int8_scale"] * Q`` (scale = m / 127) up to that common factor. Quantisation moves each
    value by up to scale / 2, so the selection differs from float32's as float16's does, more
    (docs/search.md measures the overlap on real features). Needs proj_dim (or D when not
    projecting) <= 32768, where exact int32 distances stay below 2^31. The fastest storage on
    large N: every step reads N x proj_dim bytes (docs/search.md).

    Rows of ``features`` (and of Y) must have squared norm at most ``MAX_SQUARED_NORM``
    (FLT_MAX / 4), where float32 distances would overflow: InvalidInputError otherwise.

    Same seed, same indices, on any thread count and any instruction set: the projection and
    every distance are computed in one fixed float32 order (int8: exact integers) on every
    kernel set (scalar, AVX2, AVX-512, AVX512-VNNI, NEON; tested for the sets the test machine
    has). Memory beyond the input: Y (N x
    proj_dim float32, then N x proj_dim float16 or int8 with ``storage="float16"`` / ``"int8"``)
    and O(N) (with the subspace bound, 16 floats per row more).
    ``progress(done, total)`` is called with the GIL every ~50 ms and at the end; an exception
    it raises (or Ctrl-C) stops the selection and propagates.

    Work, not result: a row's distance to the new point is skipped when the triangle inequality
    (through the point's current center) or, for float32 / float16 storage, the **subspace
    bound** proves it cannot lower the score: 16 coordinates of every row on an orthonormal
    basis near Y's top principal subspace, |U^T (y_i - y_j)| <= |y_i - y_j|, with margins for
    every rounding (docs/search.md, "The subspace bound"). ``bound``: ``"auto"`` (default: on
    when n_select >= 1024 and 32 <= proj_dim (or D) <= 4096), ``"on"`` (whenever the
    dimension allows), ``"off"``. Neither bound changes an index (tested against the same
    selection without them).

    ``return_info=True`` returns ``(indices, info)`` with info a dict: ``"storage"`` (used),
    ``"requested_storage"``, ``"isa"`` (the kernel set that ran), ``"rows_computed"``
    ((n_select,) int64: rows whose distance to the row selected at each step was computed, the
    rest skipped by a bound or already selected; 0 at the last step), ``"bound_dims"``
    (coordinates per row of the subspace bound, 0 when it was not used) and, with
    ``storage="int8"``, ``"int8_scale"`` (m / 127 as a float32 value).
    """
    _check_matrix(features, "features")
    n, d = features.shape
    if n == 0:
        raise InvalidInputError(f"features must hold at least one row; got shape {features.shape}")
    n_select = _int(n_select, "n_select")
    if n_select <= 0 or n_select > n:
        raise InvalidInputError(f"n_select must be in [1, N={n}]; got {n_select}")
    n_starts = _int(n_starts, "n_starts")
    if n_starts <= 0:
        raise InvalidInputError(f"n_starts must be >= 1; got {n_starts}")
    if proj_dim is not None:
        proj_dim = _int(proj_dim, "proj_dim")
        if proj_dim <= 0:
            raise InvalidInputError(f"proj_dim must be >= 1 or None; got {proj_dim}")
    effective_proj = 0 if proj_dim is None or proj_dim >= d else proj_dim
    seed = _int(seed, "seed")
    if progress is not None and not callable(progress):
        raise InvalidInputError(f"progress must be callable(done, total) or None; got {progress!r}")
    if storage not in ("float32", "float16", "int8"):
        raise InvalidInputError(f"storage must be 'float32', 'float16' or 'int8'; got {storage!r}")
    if bound not in ("auto", "on", "off"):
        raise InvalidInputError(f"bound must be 'auto', 'on' or 'off'; got {bound!r}")
    if storage == "int8" and (effective_proj or d) > 32768:
        raise InvalidInputError(f"storage='int8' needs at most 32768 (projected) dimensions, where exact "
                                f"int32 distances stay below 2^31; got {effective_proj or d}")
    indices, info = _core.greedy_coreset(features, n_select, effective_proj, n_starts, seed & 0xFFFFFFFFFFFFFFFF,
                                         _threads(threads), progress, storage, bound)
    info["requested_storage"] = storage
    if info["storage"] != storage:
        _log.warning("greedy_coreset: projected features exceed the float16 range (|y| > 65504); "
                     "selected with float32 storage instead of float16")
    return (indices, info) if return_info else indices
