"""Exact k-NN in squared L2 with torch tensors, for the CUDA runtime path (device-agnostic).

``TorchFlatIndex(bank, device=..., dtype=...)`` keeps the memory bank on the device and answers
``search(queries, k)`` with the contract of :class:`npad_edge.search.FlatIndex`: squared L2
distances ``(M, k) float32``, nearest first, bank indices ``(M, k) int64``, equal distances in
increasing index order. The same code runs on CPU tensors, which is how it is tested against
the C++ FlatIndex on machines without a GPU (tests/test_cuda_search.py).

How (faiss's GEMM-shaped search, in blocks):

1. **First pass, candidates.** For a block of queries and a block of bank rows the ranking key
   ``|x|^2 - 2 q.x`` (``|q|^2`` is constant per query, so it does not change the order) is one
   matrix product plus a broadcast add; a running top-``k'`` over bank blocks keeps
   ``k' = k + extra`` candidates per query. The full ``M x N`` matrix never exists: one block
   is at most ``block_elems`` values. The product runs in the index's ``dtype``: ``float32``
   (exact float32 products; TF32 is torch's default-off setting and is not touched here), or
   ``float16`` / ``bfloat16`` (tensor cores; the bank and each query block are scaled by a
   power of two so that every product fits float16's range, which changes no ranking).
2. **Exact re-rank.** The ``k'`` candidates' distances are recomputed in float32 as
   ``sum((q - x)^2)`` (no cancellation, more exact than the expansion of step 1) against the
   float32 bank, sorted by (distance, index), and the first ``k`` are returned.

Tolerances (stated, and asserted by the tests): with ``dtype="float32"`` the distances agree
with FlatIndex's to ``1e-5 * (|q|^2 + |x|^2)`` and the indices are the same except where two
bank rows are within that tolerance of each other. With ``float16`` / ``bfloat16`` the first
pass ranks with a relative error of about ``2^-11`` / ``2^-8`` of ``|q| |x|``; the true
neighbours are kept unless more than ``extra`` other rows fall inside that error band, and the
returned distances are the exact float32 ones of the rows returned. Ties: among rows with
equal exact distances the lower index comes first, provided all tied rows are among the
``k'`` candidates (more than ``extra`` exact duplicates of one row can drop the lowest index).

This module imports torch when an index is built, not when it is imported.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ..errors import InvalidInputError

__all__ = ["TorchFlatIndex", "DTYPES", "default_block_elems"]

#: Storage/compute dtypes of the first pass.
DTYPES = ("float32", "float16", "bfloat16")

# Default candidates beyond k: enough that exact duplicates and rounding near-ties are settled
# by the float32 re-rank; the low-precision passes need a wider net.
_EXTRA = {"float32": 3, "float16": 15, "bfloat16": 31}

# float16: |q|, |x| are scaled to at most 2^7, so |q.x| <= 2^14, far inside float16's 65504.
_F16_NORM_EXP = 7


def default_block_elems(device: Any) -> int:
    """Values in one (query block x bank block) distance block: 2^26 (256 MiB of float32) on a
    GPU, 2^22 (16 MiB, about an L2/L3 cache's worth) on the CPU."""
    return 1 << 26 if str(device).startswith("cuda") else 1 << 22


def _torch():
    import torch

    return torch


def _pow2_scale(max_norm, torch):
    # 2^(7 - ceil(log2 max_norm)) as a tensor: no host sync for the data-dependent scale.
    e = torch.ceil(torch.log2(torch.clamp(max_norm, min=1e-30)))
    return torch.exp2(_F16_NORM_EXP - e)


class TorchFlatIndex:
    """Exact k-NN over a fixed bank, on a torch device.

    Args:
        bank: ``(N, D) float32`` numpy array or torch tensor, finite, N >= 1, D >= 1. Copied to
            ``device`` (as float32, plus a scaled low-precision copy for float16/bfloat16).
        device: a torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``torch.device``).
        dtype: first-pass precision, one of :data:`DTYPES`.
        bank_block: bank rows per block (default ``min(N, 8192)``).
        block_elems: values per distance block (default :func:`default_block_elems`); the
            query block is ``max(1, block_elems // bank_block)`` rows.
        extra: candidates beyond k kept for the exact re-rank (default 3 for float32, 15 for
            float16, 31 for bfloat16).
    """

    def __init__(self, bank: Any, *, device: Any = "cpu", dtype: str = "float32", bank_block: Optional[int] = None,
                 block_elems: Optional[int] = None, extra: Optional[int] = None) -> None:
        torch = _torch()
        if dtype not in DTYPES:
            raise InvalidInputError(f"dtype must be one of {list(DTYPES)}; got {dtype!r}")
        if isinstance(bank, np.ndarray):
            if bank.dtype != np.float32:
                raise InvalidInputError(f"bank must have dtype float32; got {bank.dtype} (cast explicitly)")
            bank_t = torch.from_numpy(np.ascontiguousarray(bank))
        elif isinstance(bank, torch.Tensor):
            if bank.dtype != torch.float32:
                raise InvalidInputError(f"bank must have dtype float32; got {bank.dtype} (cast explicitly)")
            bank_t = bank
        else:
            raise InvalidInputError(f"bank must be a numpy array or torch tensor (N, D) float32; got {type(bank).__name__}")
        if bank_t.ndim != 2 or bank_t.shape[0] < 1 or bank_t.shape[1] < 1:
            raise InvalidInputError(f"bank must be 2-D (N >= 1, D >= 1); got shape {tuple(bank_t.shape)}")
        if not bool(torch.isfinite(bank_t).all()):
            raise InvalidInputError("bank must be finite; it contains NaN or inf")
        self.device = torch.device(device)
        self.dtype = dtype
        n, d = (int(s) for s in bank_t.shape)
        self._n, self._d = n, d
        x = bank_t.to(self.device, dtype=torch.float32).contiguous()
        self._x = x
        # Norms in float64, rounded once: the first pass's |x|^2 term is then correctly rounded.
        self._xn = (x.double() ** 2).sum(1).float()
        if not bool(torch.isfinite(self._xn).all()):
            raise InvalidInputError("bank rows must have a finite squared norm (|x|^2 overflows float32)")
        if dtype == "float32":
            self._xlo, self._sx = None, None
        else:
            tdt = torch.float16 if dtype == "float16" else torch.bfloat16
            self._sx = _pow2_scale(self._xn.max().sqrt(), torch) if dtype == "float16" else torch.ones((), device=self.device)
            self._xlo = (x * self._sx).to(tdt).contiguous()
        self.bank_block = _positive(bank_block, "bank_block", min(n, 8192))
        self.block_elems = _positive(block_elems, "block_elems", default_block_elems(self.device))
        self.extra = _nonneg(extra, "extra", _EXTRA[dtype])

    @property
    def ntotal(self) -> int:
        """Number of bank vectors N."""
        return self._n

    @property
    def dim(self) -> int:
        """Vector dimension D."""
        return self._d

    @property
    def bank(self):
        """The float32 bank on the device, ``(N, D)`` (read it, do not write it)."""
        return self._x

    @property
    def memory_bytes(self) -> int:
        """Device bytes held: float32 bank, norms and the low-precision copy."""
        b = self._x.numel() * 4 + self._xn.numel() * 4
        return b + (self._xlo.numel() * 2 if self._xlo is not None else 0)

    def __repr__(self) -> str:
        return f"TorchFlatIndex(ntotal={self._n}, dim={self._d}, dtype={self.dtype!r}, device={str(self.device)!r})"

    def search(self, queries: Any, k: int, *, check_finite: bool = True) -> Tuple[Any, Any]:
        """k nearest bank vectors of each query.

        queries: ``(M, D) float32``, numpy (answers are numpy) or a torch tensor (answers are
        tensors on the index's device; a tensor elsewhere is moved). ``check_finite=False``
        skips the NaN/inf check (a host synchronisation on a GPU) for callers that checked.
        Returns ``(distances (M, k) float32, indices (M, k) int64)``, nearest first.
        """
        torch = _torch()
        as_numpy = isinstance(queries, np.ndarray)
        if as_numpy:
            if queries.dtype != np.float32:
                raise InvalidInputError(f"queries must have dtype float32; got {queries.dtype} (cast explicitly)")
            q = torch.from_numpy(np.ascontiguousarray(queries))
        elif isinstance(queries, torch.Tensor):
            if queries.dtype != torch.float32:
                raise InvalidInputError(f"queries must have dtype float32; got {queries.dtype} (cast explicitly)")
            q = queries
        else:
            raise InvalidInputError(f"queries must be a numpy array or torch tensor (M, D) float32; got "
                                    f"{type(queries).__name__}")
        if q.ndim != 2 or q.shape[1] != self._d:
            raise InvalidInputError(f"queries must have shape (M, {self._d}) (the bank's dim); got {tuple(q.shape)}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= self._n:
            raise InvalidInputError(f"k must be an int in [1, ntotal={self._n}]; got {k!r}")
        k = int(k)
        q = q.to(self.device).contiguous()
        if check_finite and not bool(torch.isfinite(q).all()):
            raise InvalidInputError("queries must be finite; they contain NaN or inf")
        m = int(q.shape[0])
        if m == 0:
            dist = torch.empty((0, k), dtype=torch.float32, device=self.device)
            idx = torch.empty((0, k), dtype=torch.int64, device=self.device)
        else:
            dist, idx = self._search(q, k)
        if as_numpy:
            return dist.cpu().numpy(), idx.cpu().numpy()
        return dist, idx

    # ------------------------------------------------------------------------------ internals
    def _search(self, q, k: int):
        torch = _torch()
        kp = min(self._n, k + self.extra)
        nb = min(self.bank_block, self._n)
        mq = max(1, self.block_elems // nb)
        out_d, out_i = [], []
        if self._xlo is not None:
            tdt = self._xlo.dtype
        for q0 in range(0, q.shape[0], mq):
            qb = q[q0:q0 + mq]
            if self._xlo is not None:
                if self.dtype == "float16":
                    sq = _pow2_scale((qb * qb).sum(1).max().sqrt(), torch)
                else:
                    sq = torch.ones((), device=self.device)
                qlo = (qb * sq).to(tdt)
                inv = -2.0 / (sq * self._sx)
            cand_key = cand_idx = None
            for j0 in range(0, self._n, nb):
                j1 = min(self._n, j0 + nb)
                if self._xlo is None:
                    # |x|^2 - 2 q.x, one fused GEMM with a broadcast bias
                    key = torch.addmm(self._xn[j0:j1].unsqueeze(0), qb, self._x[j0:j1].T, alpha=-2.0)
                else:
                    key = torch.mm(qlo, self._xlo[j0:j1].T).float().mul_(inv).add_(self._xn[j0:j1])
                kk = min(kp, j1 - j0)
                if kk == 1:
                    bkey, bidx = key.min(dim=1, keepdim=True)
                else:
                    bkey, bidx = torch.topk(key, kk, dim=1, largest=False, sorted=False)
                bidx = bidx + j0
                if cand_key is None:
                    cand_key, cand_idx = bkey, bidx
                else:
                    cand_key = torch.cat([cand_key, bkey], dim=1)
                    cand_idx = torch.cat([cand_idx, bidx], dim=1)
                    if cand_key.shape[1] > kp:
                        cand_key, sel = torch.topk(cand_key, kp, dim=1, largest=False, sorted=False)
                        cand_idx = torch.gather(cand_idx, 1, sel)
            d, i = self._rerank(qb, cand_idx, k)
            out_d.append(d)
            out_i.append(i)
        if len(out_d) == 1:
            return out_d[0], out_i[0]
        return torch.cat(out_d), torch.cat(out_i)

    def _rerank(self, qb, cand_idx, k: int):
        """Exact float32 distances of the candidates, sorted by (distance, index)."""
        torch = _torch()
        c = cand_idx.shape[1]
        # bound the (rows, c, D) difference tensor like a distance block
        rows = max(1, self.block_elems // max(1, c * self._d))
        ds = []
        for r0 in range(0, qb.shape[0], rows):
            diff = qb[r0:r0 + rows, None, :] - self._x[cand_idx[r0:r0 + rows]]
            ds.append((diff * diff).sum(2))
        dist = ds[0] if len(ds) == 1 else torch.cat(ds)
        # (distance, index) order: sort by index, then a stable sort by distance
        idx_sorted, o1 = torch.sort(cand_idx, dim=1)
        dist = torch.gather(dist, 1, o1)
        dist, o2 = torch.sort(dist, dim=1, stable=True)
        idx = torch.gather(idx_sorted, 1, o2)
        return dist[:, :k].contiguous(), idx[:, :k].contiguous()


def _positive(v: Optional[int], name: str, default: int) -> int:
    if v is None:
        return int(default)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise InvalidInputError(f"{name} must be a positive int or None; got {v!r}")
    return int(v)


def _nonneg(v: Optional[int], name: str, default: int) -> int:
    if v is None:
        return int(default)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise InvalidInputError(f"{name} must be an int >= 0 or None; got {v!r}")
    return int(v)

