"""runtime._torch_search.TorchFlatIndex (the CUDA path's search) against the C++ FlatIndex.

The index is device-agnostic: the default tests run it on CPU tensors; the ``cuda``-marked
ones repeat the comparisons on a GPU (skipped with a reason where torch sees none).
Tolerances are the ones the module docstring states.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from npad_edge.errors import InvalidInputError  # noqa: E402
from npad_edge.runtime._torch_search import TorchFlatIndex  # noqa: E402
from npad_edge.search import FlatIndex  # noqa: E402

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason=f"torch {torch.__version__} sees no CUDA GPU on this machine")


def _data(n=2000, d=64, m=300, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    # low-rank plus noise, like patch features: neighbours are close, distances are not all alike
    basis = rng.standard_normal((8, d))
    bank = (rng.standard_normal((n, 8)) @ basis + 0.3 * rng.standard_normal((n, d))) * scale
    q = (rng.standard_normal((m, 8)) @ basis + 0.3 * rng.standard_normal((m, d))) * scale
    return bank.astype(np.float32), q.astype(np.float32)


def _tol(q, bank, idx):
    qn = (q.astype(np.float64) ** 2).sum(1)[:, None]
    xn = (bank.astype(np.float64) ** 2).sum(1)[idx]
    return 1e-5 * (qn + xn)


def _check_against_flat(bank, q, k, device, dtype="float32", **kw):
    ref_d, ref_i = FlatIndex(bank, threads=1).search(q, k)
    d, i = TorchFlatIndex(bank, device=device, dtype=dtype, **kw).search(q, k)
    assert d.dtype == np.float32 and i.dtype == np.int64 and d.shape == i.shape == (q.shape[0], k)
    tol = _tol(q, bank, ref_i)
    # distances equal FlatIndex's within the stated tolerance, nearest first
    assert np.all(np.abs(d - ref_d) <= tol)
    assert np.all(np.diff(d, axis=1) >= 0)
    # indices equal, except where two rows are within the tolerance of each other
    diff = i != ref_i
    assert np.all(np.abs(d[diff] - ref_d[diff]) <= tol[diff])
    # and every returned distance is the exact distance of the returned row
    exact = ((q[:, None, :].astype(np.float64) - bank[i].astype(np.float64)) ** 2).sum(2)
    assert np.all(np.abs(d - exact) <= tol)
    return d, i, ref_d, ref_i


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("bank_block", [None, 97])
def test_fp32_matches_flat_index(k, bank_block):
    bank, q = _data()
    _, i, _, ref_i = _check_against_flat(bank, q, k, "cpu", bank_block=bank_block)
    assert (i == ref_i).mean() > 0.999


def test_blocks_smaller_than_bank_and_query_blocks():
    """Bank blocks of 7 rows (last one partial, narrower than k'), query blocks of 3 rows."""
    bank, q = _data(n=200, d=16, m=50)
    for k in (1, 4, 11):
        _, i, _, ref_i = _check_against_flat(bank, q, k, "cpu", bank_block=7, block_elems=21)
        assert (i == ref_i).all()


def test_k_equals_ntotal_and_tiny_bank():
    bank, q = _data(n=5, d=3, m=20)
    d, i, _, ref_i = _check_against_flat(bank, q, 5, "cpu", bank_block=2)
    assert (np.sort(i, axis=1) == np.arange(5)).all()
    d1, i1 = TorchFlatIndex(bank[:1]).search(q, 1)
    assert (i1 == 0).all()


def test_ties_lower_index_first():
    """Exact duplicates: equal distances come in increasing index order, as in FlatIndex."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((10, 8)).astype(np.float32)
    # rows 2, 10, 11, 15 are equal; so are 5, 12, 18; and 7, 20
    bank = np.concatenate([base, base[[2, 2, 5]], base]).astype(np.float32)
    q = np.ascontiguousarray(base[[2, 5, 7]])
    ref_d, ref_i = FlatIndex(bank).search(q, 3)
    assert ref_i[:2].tolist() == [[2, 10, 11], [5, 12, 18]] and ref_i[2, :2].tolist() == [7, 20]
    for bb in (None, 3, 4):
        d, i = TorchFlatIndex(bank, bank_block=bb).search(q, 3)
        assert i.tolist() == ref_i.tolist()
        np.testing.assert_array_equal(d[:2], 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_first_pass_reranked_equals_fp32_top1(dtype):
    bank, q = _data(n=3000, d=96, m=400, seed=1)
    d32, i32 = TorchFlatIndex(bank).search(q, 1)
    d, i, _, ref_i = _check_against_flat(bank, q, 1, "cpu", dtype=dtype, bank_block=512)
    assert (i == i32).all() and (i == ref_i).all()
    # re-ranked distances are the float32 ones, not the low-precision first pass
    np.testing.assert_allclose(d, d32, rtol=1e-6, atol=0)


def test_float16_scaling_keeps_large_values_in_range():
    """|q.x| far beyond float16's 65504 before scaling: the power-of-two scales keep the
    first pass finite and the answers exact."""
    bank, q = _data(n=500, d=32, m=60, seed=2, scale=300.0)
    assert float(np.abs(q @ bank.T).max()) > 65504
    _, i, _, ref_i = _check_against_flat(bank, q, 3, "cpu", dtype="float16")
    assert (i[:, 0] == ref_i[:, 0]).all()


def test_without_rerank_margin_low_precision_can_miss():
    """The re-rank margin matters: with extra=0 the bf16 first pass alone picks a wrong
    neighbour on a dense bank (so the default test above is not passing by luck)."""
    rng = np.random.default_rng(4)
    bank = (10.0 + 0.01 * rng.standard_normal((4000, 64))).astype(np.float32)   # dense cluster
    q = (10.0 + 0.01 * rng.standard_normal((200, 64))).astype(np.float32)
    ref_i = FlatIndex(bank).search(q, 1)[1]
    miss0 = (TorchFlatIndex(bank, dtype="bfloat16", extra=0).search(q, 1)[1] != ref_i).mean()
    assert miss0 > 0.2


def test_tensor_in_tensor_out_and_errors():
    bank, q = _data(n=100, d=8, m=10)
    ix = TorchFlatIndex(torch.from_numpy(bank))
    d, i = ix.search(torch.from_numpy(q), 2)
    assert isinstance(d, torch.Tensor) and d.dtype == torch.float32 and i.dtype == torch.int64
    assert ix.ntotal == 100 and ix.dim == 8 and ix.memory_bytes == 100 * 8 * 4 + 100 * 4
    e_d, e_i = ix.search(np.zeros((0, 8), np.float32), 1)
    assert e_d.shape == (0, 1)
    with pytest.raises(InvalidInputError, match="float32"):
        TorchFlatIndex(bank.astype(np.float64))
    with pytest.raises(InvalidInputError, match="finite"):
        TorchFlatIndex(np.full((3, 2), np.nan, np.float32))
    with pytest.raises(InvalidInputError, match="dtype must be one of"):
        TorchFlatIndex(bank, dtype="int8")
    with pytest.raises(InvalidInputError, match=r"shape \(M, 8\)"):
        ix.search(q[:, :4].copy(), 1)
    with pytest.raises(InvalidInputError, match="k must be"):
        ix.search(q, 101)
    with pytest.raises(InvalidInputError, match="finite"):
        ix.search(np.full((1, 8), np.inf, np.float32), 1)
    with pytest.raises(InvalidInputError, match="bank_block"):
        TorchFlatIndex(bank, bank_block=0)


# ------------------------------------------------------------------------ on a real GPU

@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("k", [1, 9])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_matches_flat_index(k, dtype):
    bank, q = _data(n=20000, d=152, m=4096, seed=5)
    _, i, _, ref_i = _check_against_flat(bank, q, k, "cuda", dtype=dtype, bank_block=4096)
    assert (i[:, 0] == ref_i[:, 0]).mean() > 0.999


@pytest.mark.cuda
@needs_cuda
def test_cuda_ties_and_blocks():
    bank, q = _data(n=200, d=16, m=50)
    _check_against_flat(bank, q, 4, "cuda", bank_block=7, block_elems=21)
    base = np.random.default_rng(3).standard_normal((10, 8)).astype(np.float32)
    dup = np.concatenate([base, base[[2, 2]], base]).astype(np.float32)
    i = TorchFlatIndex(dup, device="cuda", bank_block=3).search(np.ascontiguousarray(base[[2]]), 3)[1]
    assert i.tolist() == [[2, 10, 11]]
