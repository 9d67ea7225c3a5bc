"""Every compiled kernel set against the scalar oracle, through the _core testing hook."""

from __future__ import annotations

import numpy as np
import pytest

from npad_edge import _core, search

ISAS = search.available_isas()
SIMD = [i for i in ISAS if i != "scalar"]
MR, NR = _core.tile_shape()
DIMS = [1, 7, 17, 152, 1024, 1536]


def k(isa, op, *args):
    return _core._kernel(isa, op, *args)


def test_scalar_always_available_and_isa_reported():
    assert ISAS[-1] == "scalar"
    assert search.isa() in ISAS


@pytest.mark.parametrize("isa", SIMD or ["scalar"])
@pytest.mark.parametrize("d", DIMS)
def test_tile_bit_identical_to_scalar(isa, d):
    rng = np.random.default_rng(d)
    qp = rng.standard_normal((d, MR), dtype=np.float32)
    xp = rng.standard_normal((d, NR), dtype=np.float32)
    ref_dots, _ = k("scalar", "tile", qp, xp)
    dots, _ = k(isa, "tile", qp, xp)
    np.testing.assert_array_equal(dots, ref_dots)
    # The dots are real dot products (not just equal garbage).
    np.testing.assert_allclose(ref_dots, qp.T.astype(np.float64) @ xp.astype(np.float64), rtol=1e-4, atol=1e-4 * d)

    qn = (qp.astype(np.float64) ** 2).sum(0).astype(np.float32)
    xn = (xp.astype(np.float64) ** 2).sum(0).astype(np.float32)
    xn[-3:] = np.inf  # padding columns
    thr = np.quantile(ref_dots, 0.5, axis=1).astype(np.float32) + qn  # some pass, some not
    thr[0], thr[1] = np.inf, -np.inf
    ref_d, ref_m = k("scalar", "tile", qp, xp, qn, xn, thr)
    dist, mask = k(isa, "tile", qp, xp, qn, xn, thr)
    np.testing.assert_array_equal(dist, ref_d)
    np.testing.assert_array_equal(mask, ref_m)
    assert (dist >= 0).all()
    expect = np.array([sum(1 << j for j in range(NR) if ref_d[i, j] <= thr[i]) for i in range(MR)], np.uint32)
    np.testing.assert_array_equal(ref_m, expect)
    assert ref_m[1] == 0 and ref_m[0] == 0xFFFFFFFF


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("w", [MR, NR, 5])
def test_packed_sqnorms_bit_identical(isa, w):
    rng = np.random.default_rng(w)
    p = rng.standard_normal((153, w), dtype=np.float32)
    ref = k("scalar", "packed_sqnorms", p)
    np.testing.assert_array_equal(k(isa, "packed_sqnorms", p), ref)
    np.testing.assert_allclose(ref, (p.astype(np.float64) ** 2).sum(0), rtol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_f16_to_f32_all_bit_patterns(isa):
    h = np.arange(1 << 16, dtype=np.uint16)
    got = k(isa, "f16_to_f32", h)
    want = h.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


@pytest.mark.parametrize("isa", ISAS)
def test_f32_to_f16_round_to_nearest_even(isa):
    rng = np.random.default_rng(1)
    x = np.concatenate([
        rng.standard_normal(4001).astype(np.float32) * 10.0 ** rng.integers(-9, 6, 4001),
        np.float16(np.arange(-2048, 2048)).astype(np.float32) + np.float32(0.5) * 2.0**-10,  # ties
        np.array([0.0, -0.0, 65504, 65519, 65520, 1e9, -1e9, 6e-8, 3e-8, 2.9e-8, 1e-10], np.float32),
    ]).astype(np.float32)
    got = k(isa, "f32_to_f16", x)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa", ISAS)
def test_dequant_i8_panel_exact(isa):
    rng = np.random.default_rng(2)
    codes = rng.integers(-127, 128, (37, NR)).astype(np.int8)
    scales = rng.random(NR).astype(np.float32)
    got = k(isa, "dequant_i8_panel", codes, scales)
    np.testing.assert_array_equal(got, codes.astype(np.float32) * scales)


def l2sq_16_lanes(a, b):
    """The documented order of the direct kernels, in numpy float32: lane j (0..15) sums
    t_i * t_i (t = a - b, each product rounded) over i = j mod 16 in increasing i, then the
    lanes are added pairwise: (j, j + 8), (j, j + 4), (j, j + 2), (0, 1)."""
    t = (a - b).astype(np.float32)
    lanes = np.zeros(16, np.float32)
    for i in range(t.size):
        lanes[i % 16] = np.float32(lanes[i % 16] + np.float32(t[i] * t[i]))
    for h in (8, 4, 2, 1):
        lanes = (lanes[:h] + lanes[h:2 * h]).astype(np.float32)
    return lanes[0]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", DIMS + [16, 31, 128])
def test_direct_kernels_bit_identical_in_documented_order(isa, d):
    # greedy_coreset's distances: the same float32 on every ISA, so the same coreset.
    rng = np.random.default_rng(100 + d)
    a = rng.standard_normal(d, dtype=np.float32)
    b = (rng.standard_normal(d, dtype=np.float32) * 3).astype(np.float32)
    want = l2sq_16_lanes(a, b)
    assert k(isa, "l2sq_f32", a, b) == want
    assert k(isa, "l2sq_f32", a, b) == k("scalar", "l2sq_f32", a, b)
    h = b.astype(np.float16)
    assert k(isa, "l2sq_f16", a, h.view(np.uint16)) == l2sq_16_lanes(a, h.astype(np.float32))
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(want, ((a64 - b) ** 2).sum(), rtol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 7, 16, 17, 31, 128, 152])
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 40, 70])
def test_many_pairs_kernels_equal_the_one_pair_kernel(isa, d, n):
    # The coreset's batched distances (16 rows per group, reduced together on AVX-512) keep
    # each pair's documented order: the same bits as the one-pair kernel, listed rows (any
    # order, repeats) or contiguous ones.
    rng = np.random.default_rng(1000 * d + n)
    a = rng.standard_normal(d, dtype=np.float32)
    y = (rng.standard_normal((max(n, 1) + 5, d), dtype=np.float32) * 2).astype(np.float32)
    y[0] = a  # a zero distance
    rows = rng.integers(0, len(y), n).astype(np.int32)
    h = y.astype(np.float16)
    for op, one, yy in (("l2sq_f32_rows", "l2sq_f32", y), ("l2sq_f16_rows", "l2sq_f16", h.view(np.uint16))):
        got = k(isa, op, a, yy, rows)
        want = np.array([k("scalar", one, a, yy[r]) for r in rows], np.float32)
        assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        cont = k(isa, op, a, yy[:n], None)
        want_c = np.array([k("scalar", one, a, yy[r]) for r in range(n)], np.float32)
        np.testing.assert_array_equal(cont.view(np.uint32), want_c.view(np.uint32))
    with pytest.raises(Exception, match="rows out of range"):
        k(isa, "l2sq_f32_rows", a, y, np.array([len(y)], np.int32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "op,args",
    [
        ("l2sq_f32", (np.zeros(100, np.float32), np.zeros(3, np.float32))),
        ("l2sq_f16", (np.zeros(100, np.float32), np.zeros(3, np.uint16))),
        ("tile", (np.zeros((4, 12), np.float32), np.zeros((4, 32), np.float32),
                  np.zeros(1, np.float32), np.zeros(32, np.float32), np.zeros(12, np.float32))),
        ("tile", (np.zeros((4, 12), np.float32), np.zeros((4, 32), np.float32),
                  np.zeros(12, np.float32), np.zeros(31, np.float32), np.zeros(12, np.float32))),
        ("tile", (np.zeros((4, 12), np.float32), np.zeros((4, 32), np.float32),
                  np.zeros(12, np.float32), np.zeros(32, np.float32), np.zeros(2, np.float32))),
        ("tile", (np.zeros((4, 12), np.float32), np.zeros((4, 32), np.float32), np.zeros(12, np.float32))),
    ],
)
def test_kernel_hook_checks_lengths(isa, op, args):
    # Mismatched lengths were read out of bounds instead of refused.
    from npad_edge.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        k(isa, op, *args)


def _isa_objects():
    import glob
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build")
    return {os.path.basename(p).split(".")[0]: p
            for p in glob.glob(os.path.join(root, "*", "CMakeFiles", "_core.dir", "csrc", "kernels", "*.cpp.o"))}


def test_isa_objects_export_only_their_table():
    """ODR guard (faiss's rule): a file built with AVX2 / AVX-512 flags must define no symbol
    another file could also define (an inline function from a shared header, such as fp16.h's
    float_to_half, was a weak global in both avx2.cpp.o and scalar.cpp.o, and the linker may
    keep the AVX2 copy for scalar callers). Checks the object files of the local build."""
    import shutil
    import subprocess

    objs = _isa_objects()
    if not objs or shutil.which("nm") is None:
        pytest.skip("needs the build tree (build/*/CMakeFiles) and nm")
    for name in ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "neon", "scalar"):
        if name not in objs:
            continue
        out = subprocess.run(["nm", "-C", "--defined-only", "--extern-only", objs[name]],
                             capture_output=True, text=True, check=True).stdout
        symbols = sorted(line.split(" ", 2)[2] for line in out.splitlines() if line.strip())
        assert symbols == [f"npad::{name}_kernels()"], f"{name}.cpp.o exports {symbols}"


def test_kernel_hook_rejects_unknown_isa_and_wrong_dtype():
    from npad_edge.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="available"):
        k("sse9", "l2sq_f32", np.zeros(3, np.float32), np.zeros(3, np.float32))
    with pytest.raises(InvalidInputError, match="float32"):
        k("scalar", "l2sq_f32", np.zeros(3), np.zeros(3, np.float32))


def test_set_isa_forces_and_restores():
    from npad_edge.errors import InvalidInputError

    default = search.isa()
    try:
        for name in ISAS:
            search.set_isa(name)
            assert search.isa() == name
        with pytest.raises(InvalidInputError) as e:
            search.set_isa("avx9000")
        for name in ISAS:
            assert name in str(e.value)
        with pytest.raises(InvalidInputError):
            search.set_isa(3)
    finally:
        search.set_isa(None)
    assert search.isa() == default


def test_env_var_forces_isa(tmp_path):
    import os
    import subprocess
    import sys

    code = "from npad_edge import search; print(search.isa())"
    env = dict(os.environ, NPAD_EDGE_ISA="scalar")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"
    env["NPAD_EDGE_ISA"] = "no-such-isa"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "InvalidInputError" in out.stderr and "scalar" in out.stderr


@pytest.mark.slow
def test_neon_kernels_under_qemu(tmp_path):
    """The NEON kernels, which no x86 test run reaches otherwise: cross-compiled with
    csrc/selfcheck/kernel_selfcheck.cpp (every kernel against the scalar oracle, bit for bit)
    and run under qemu-user. Needs aarch64-linux-gnu-g++ and qemu-aarch64(-static), e.g.
    ``apt-get install g++-aarch64-linux-gnu qemu-user-static``; ~20 s."""
    import os
    import shutil
    import subprocess

    cxx = shutil.which("aarch64-linux-gnu-g++")
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if cxx is None or qemu is None:
        pytest.skip("needs aarch64-linux-gnu-g++ and qemu-aarch64")
    csrc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
    srcs = [os.path.join(csrc, "selfcheck", "kernel_selfcheck.cpp")] + [
        os.path.join(csrc, "kernels", f"{n}.cpp") for n in ("scalar", "neon", "avx2", "avx512", "dispatch")]
    exe = str(tmp_path / "selfcheck")
    subprocess.run([cxx, "-std=c++17", "-O2", "-ffp-contract=off", "-static", "-I" + csrc, *srcs, "-o", exe],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([qemu, exe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "neon: bit-identical to scalar" in out.stdout, out.stdout


def _cpuinfo_flags():
    import platform

    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def test_cpu_features_agree_with_the_kernel():
    """The run-time detection of the compact-kernel features (CPUID + XCR0) agrees with what
    the Linux kernel reports in /proc/cpuinfo, on whatever CPU this runs."""
    f = search.cpu_features()
    assert set(f) == {"avx2_fma_f16c", "avx512", "avx512_bf16", "avx512_vnni", "amx_tile",
                      "amx_bf16", "amx_int8", "amx_usable", "neon"}
    assert all(isinstance(v, bool) for v in f.values())
    assert not f["amx_usable"] or f["amx_tile"]
    assert f["avx512"] == ("avx512" in search.available_isas())
    flags = _cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags on this platform")
    avx512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
    assert f["avx512"] == avx512
    assert f["avx512_bf16"] == (avx512 and "avx512_bf16" in flags)
    assert f["avx512_vnni"] == (avx512 and "avx512_vnni" in flags)
    for name in ("amx_tile", "amx_bf16", "amx_int8"):
        assert f[name] == (name in flags), name


# ---- compact kernels (bfloat16 / int8 tiles, re-rank dots) -----------------------------

def _bf16_words(rows):
    """(n, 2r) float32 -> (r, n) uint32 words through the core's rounding (compact.h)."""
    return np.ascontiguousarray(np.stack([k("scalar", "pack_bf16", np.ascontiguousarray(r)) for r in rows], 1))


def _bf16_round_np(x):
    """numpy reference of float_to_bf16: round to nearest even, |x| < 2^-40 -> signed zero."""
    w = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    tiny = (w & 0x7FFFFFFF) < 0x2B800000
    r = ((w + 0x7FFF + ((w >> 16) & 1)) >> 16) << 16
    r = np.where(tiny, w & 0x80000000, r)
    return r.astype(np.uint32).view(np.float32)


def test_pack_bf16_rounds_to_nearest_even_like_numpy():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(4000).astype(np.float32) * 10.0 ** rng.uniform(-45, 30, 4000),
                        np.float32([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 2.0 ** -41, -(2.0 ** -39)])])
    x = x[: x.size // 2 * 2].astype(np.float32)
    w = k("scalar", "pack_bf16", x)
    lo = (w << 16).view(np.float32)
    hi = (w & 0xFFFF0000).view(np.float32)
    got = np.empty_like(x)
    got[0::2], got[1::2] = lo, hi
    np.testing.assert_array_equal(got.view(np.uint32), _bf16_round_np(x).view(np.uint32))


def _raw_dots_bf16(isa, qw, xw):
    """-2 * acc exactly: with qn = xn = 0 the epilogue gives max(0, -2 acc); run q and -q."""
    z12, z32, thr = np.zeros(MR, np.float32), np.zeros(NR, np.float32), np.full(MR, np.inf, np.float32)
    a, _ = k(isa, "tile_bf16", qw, xw, z12, z32, thr)
    b, _ = k(isa, "tile_bf16", qw ^ np.uint32(0x80008000), xw, z12, z32, thr)  # -q: flip both signs
    return a - b


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d2", [1, 3, 76, 512])
def test_tile_bf16_bit_identical_to_scalar_and_to_the_documented_order(isa, d2):
    rng = np.random.default_rng(d2)
    q = (rng.standard_normal((MR, 2 * d2)) * 10.0 ** rng.uniform(-3, 3, (MR, 1))).astype(np.float32)
    x = rng.standard_normal((NR, 2 * d2)).astype(np.float32)
    qw, xw = _bf16_words(q), _bf16_words(x)
    raw = _raw_dots_bf16(isa, qw, xw)
    np.testing.assert_array_equal(raw, _raw_dots_bf16("scalar", qw, xw))
    # The oracle's order (kernels.h): per word, fma(hi) then fma(lo), float32 accumulation.
    qr, xr = _bf16_round_np(q), _bf16_round_np(x)
    acc = np.zeros((MR, NR), np.float32)
    for r in range(d2):
        for t in (2 * r + 1, 2 * r):
            acc = (acc.astype(np.float64) + np.outer(qr[:, t], xr[:, t])).astype(np.float32)  # exact product
    np.testing.assert_array_equal(raw, np.float32(-2) * acc)
    # The full epilogue and mask.
    qn = (qr.astype(np.float64) ** 2).sum(1).astype(np.float32)
    xn = (xr.astype(np.float64) ** 2).sum(1).astype(np.float32)
    thr = np.median(qn[:, None] + xn[None, :], axis=1).astype(np.float32)
    ref_d, ref_m = k("scalar", "tile_bf16", qw, xw, qn, xn, thr)
    dist, mask = k(isa, "tile_bf16", qw, xw, qn, xn, thr)
    np.testing.assert_array_equal(dist, ref_d)
    np.testing.assert_array_equal(mask, ref_m)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d4", [1, 5, 38, 384])
def test_tile_i8_exact_and_bit_identical_to_scalar(isa, d4):
    rng = np.random.default_rng(d4)
    qc = rng.integers(-127, 128, (MR, 4 * d4)).astype(np.int8)
    xc = rng.integers(-127, 128, (NR, 4 * d4)).astype(np.int8)
    qw = np.ascontiguousarray((qc.astype(np.int16) + 128).astype(np.uint8).view(np.uint32).T)
    xw = np.ascontiguousarray(xc.view(np.uint32).T)
    qs = rng.uniform(0.01, 1, MR).astype(np.float32)
    xs = rng.uniform(0.01, 1, NR).astype(np.float32)
    xsum = xc.astype(np.int32).sum(1).astype(np.int32)
    qn = rng.uniform(1e3, 1e4, MR).astype(np.float32)
    xn = rng.uniform(1e3, 1e4, NR).astype(np.float32)
    thr = np.full(MR, np.inf, np.float32)
    thr[0] = -np.inf
    dist, mask = k(isa, "tile_i8", qw, xw, qs, xs, xsum, qn, xn, thr)
    ref_d, ref_m = k("scalar", "tile_i8", qw, xw, qs, xs, xsum, qn, xn, thr)
    np.testing.assert_array_equal(dist, ref_d)
    np.testing.assert_array_equal(mask, ref_m)
    # Reference in numpy: exact integer dot, then the documented float32 steps.
    dot_i = qc.astype(np.int64) @ xc.astype(np.int64).T
    dot = dot_i.astype(np.float32) * (qs[:, None] * xs[None, :])
    expect = np.maximum(np.float32(0), (np.float32(-2) * dot.astype(np.float64) + (qn[:, None] + xn[None, :])
                                        ).astype(np.float32))
    # fma(-2, dot, s): one rounding of an exact -2*dot + s (float64 holds it exactly here).
    np.testing.assert_array_equal(ref_d, expect)
    assert mask[0] == 0 and mask[1] == 0xFFFFFFFF


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 17, 152])
def test_gather_dots_equal_the_tile_dot(isa, d):
    rng = np.random.default_rng(d)
    rows = rng.standard_normal((NR, d)).astype(np.float32)
    q = rng.standard_normal((MR, d)).astype(np.float32)
    tile_dots, _ = k("scalar", "tile", np.ascontiguousarray(q.T), np.ascontiguousarray(rows.T))
    cols = rng.permutation(NR)[:13].astype(np.int64)
    for i in range(MR):
        got = k(isa, "gather_dots", q[i].copy(), rows.ravel().copy(), cols)
        np.testing.assert_array_equal(got, tile_dots[i, cols])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 8, 9, 12, 13, 16, 21])
def test_gather_dots_every_candidate_count(isa, n):
    """Groups of eight chains, then four, then single ones (fma_gather_dots.h): every count
    equals the scalar oracle and the tile's dot, candidates repeated and in any order."""
    rng = np.random.default_rng(100 + n)
    d = 37
    rows = rng.standard_normal((300, d)).astype(np.float32)
    q = rng.standard_normal((MR, d)).astype(np.float32)
    cols = rng.integers(0, 300, n).astype(np.int64)
    for i in range(MR):
        got = k(isa, "gather_dots", q[i].copy(), rows.ravel().copy(), cols)
        ref = k("scalar", "gather_dots", q[i].copy(), rows.ravel().copy(), cols)
        assert got.shape == (n,)
        np.testing.assert_array_equal(got, ref)
    sub = np.ascontiguousarray(rows[:NR].T)
    tile_dots, _ = k("scalar", "tile", np.ascontiguousarray(q.T), sub)
    cols = (np.arange(n) % NR).astype(np.int64)
    for i in range(MR):
        np.testing.assert_array_equal(k(isa, "gather_dots", q[i].copy(), rows.ravel().copy(), cols),
                                      tile_dots[i, cols])


@pytest.mark.parametrize("isa", ISAS)
def test_env_var_forces_each_isa_through_the_compact_search(isa):
    """NPAD_EDGE_ISA=<isa> in a fresh process: the compact computes (int8, bfloat16, with and
    without re-rank) give the in-process scalar oracle's answer bit for bit."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from npad_edge import search\n"
        "rng = np.random.default_rng(3)\n"
        "bank = rng.standard_normal((700, 41)).astype(np.float32)\n"
        "q = rng.standard_normal((30, 41)).astype(np.float32)\n"
        "out = [search.isa()]\n"
        "for c in ('int8', 'bfloat16'):\n"
        "    for r in (0, 8):\n"
        "        d, i = search.FlatIndex(bank, compute=c, rerank=r).search(q, 2)\n"
        "        out.append(d.tobytes().hex() + i.tobytes().hex())\n"
        "print(' '.join(out))\n"
    )
    env = dict(os.environ, NPAD_EDGE_ISA=isa)
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    env["NPAD_EDGE_ISA"] = "scalar"
    ref = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert got[0] == isa and ref[0] == "scalar"
    assert got[1:] == ref[1:]


def pack_i8_blocks(codes):
    """(n, pd) int codes in [-127, 127] -> the l2_i8_blocks layout: x (nb, d4, 16) uint32 words of
    the biased bytes code + 128 (dim 4r + t in byte t of word r), xn (nb * 16,) int32 squared norms;
    rows padded to a multiple of 16 and dims to a multiple of 4 with code 0."""
    n, pd = codes.shape
    d4, nb = (pd + 3) // 4, (n + 15) // 16
    c = np.zeros((nb * 16, d4 * 4), np.int64)
    c[:n, :pd] = codes
    u = (c + 128).astype(np.uint32)
    w = u[:, 0::4] | (u[:, 1::4] << 8) | (u[:, 2::4] << 16) | (u[:, 3::4] << 24)
    x = np.ascontiguousarray(w.reshape(nb, 16, d4).transpose(0, 2, 1)).astype(np.uint32)
    return x, (c**2).sum(1).astype(np.int32)


def pack_i8_query(codes, d4):
    c = np.zeros(4 * d4, np.int64)
    c[: codes.size] = codes
    b = (c & 0xFF).astype(np.uint32)
    return (b[0::4] | (b[1::4] << 8) | (b[2::4] << 16) | (b[3::4] << 24)).astype(np.uint32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("pd,n", [(1, 16), (5, 37), (16, 3), (128, 100), (130, 33), (1000, 20)])
def test_l2_i8_blocks_exact_and_bit_identical_to_scalar(isa, pd, n):
    # greedy_coreset(storage="int8"): exact integer squared distances, one rounding to float32,
    # IEEE sqrt -- the same bits on every ISA (SIMD kernels use |x|^2 + |q|^2 - 2 x.q).
    rng = np.random.default_rng(pd + n)
    codes = rng.integers(-127, 128, (n, pd))
    codes[0] = 127  # extremes: largest |x - q| with the query at -127
    qc = rng.integers(-127, 128, pd)
    qc[: pd // 2] = -127
    x, xn = pack_i8_blocks(codes)
    q = pack_i8_query(qc, x.shape[1])
    args = (x, xn, q, int((qc**2).sum()), int(qc.sum()))
    got = k(isa, "l2_i8_blocks", *args)
    ref = k("scalar", "l2_i8_blocks", *args)
    assert got.dtype == np.float32 and got.shape == (x.shape[0] * 16,)
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))
    want = np.sqrt(((codes - qc) ** 2).sum(1).astype(np.float32))  # int64 exact, then float32
    np.testing.assert_array_equal(ref[:n], want)
    np.testing.assert_array_equal(ref[n:], np.sqrt(np.float32((qc**2).sum())))  # padding rows: code 0


@pytest.mark.parametrize("isa", ISAS)
def test_l2_i8_blocks_largest_distance_stays_exact(isa):
    # The int32 range: D = 4 d4 x 254^2 with d4 = 8192 (the largest accepted) is < 2^31, and
    # beyond 2^24 the conversion to float32 rounds (to nearest even) the same way everywhere.
    d4 = 8192
    codes = np.full((16, 4 * d4), 127)
    codes[1:] = np.random.default_rng(0).integers(-127, 128, (15, 4 * d4))
    qc = np.full(4 * d4, -127)
    x, xn = pack_i8_blocks(codes)
    args = (x, xn, pack_i8_query(qc, d4), int((qc**2).sum()), int(qc.sum()))
    got = k(isa, "l2_i8_blocks", *args)
    np.testing.assert_array_equal(got, np.sqrt(((codes - qc) ** 2).sum(1).astype(np.float32)))
    assert got[0] == np.sqrt(np.float32(4 * d4 * 254**2))


@pytest.mark.parametrize(
    "args",
    [
        (np.zeros((1, 2, 15), np.uint32), np.zeros(16, np.int32), np.zeros(2, np.uint32), 0, 0),
        (np.zeros((1, 2, 16), np.uint32) + 0x80808080, np.zeros(15, np.int32), np.zeros(2, np.uint32), 0, 0),
        (np.zeros((1, 2, 16), np.uint32) + 0x80808080, np.zeros(16, np.int32), np.zeros(3, np.uint32), 0, 0),
        (np.zeros((1, 2, 16), np.uint32), np.zeros(16, np.int32), np.zeros(2, np.uint32), 0, 0),  # code -128
        (np.zeros((1, 2, 16), np.uint32) + 0x80808080, np.zeros(16, np.int32), np.full(2, 0x80, np.uint32), 0, 0),
        (np.zeros((1, 8193, 16), np.uint32) + 0x80808080, np.zeros(16, np.int32), np.zeros(8193, np.uint32), 0, 0),
    ],
)
def test_l2_i8_blocks_hook_refuses_bad_shapes_and_codes(args):
    from npad_edge.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        k("scalar", "l2_i8_blocks", *args)


def greedy_step_reference(codes, qc, score, center, dcs, margin, step):
    """Kernels::greedy_step_i8 as documented, in numpy (float32 throughout)."""
    score, center = score.copy(), center.copy()
    dd = np.sqrt(((codes - qc) ** 2).sum(1).astype(np.float32))
    live = score != -np.inf
    bound = np.where(center >= 0, dcs[np.maximum(center, 0)], np.float32(0))
    need = live & ~((center >= 0) & (bound >= np.float32(margin) * score))
    upd = need & (dd < score)
    score[upd] = dd[upd]
    center[upd] = step
    best_v = score.max()
    best_i = int(np.argmax(score)) if best_v != -np.inf else -1
    return score, center, int(need.sum()), best_v, best_i


STEP_CASES = ["mixed", "all_skipped", "all_neg_inf", "ties"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", STEP_CASES)
def test_greedy_step_i8_bit_identical_to_scalar_and_reference(isa, case):
    rng = np.random.default_rng(STEP_CASES.index(case))
    n, pd = 16 * 9, 20
    codes = rng.integers(-127, 128, (n, pd))
    qc = rng.integers(-127, 128, pd)
    x, xn = pack_i8_blocks(codes)
    q = pack_i8_query(qc, x.shape[1])
    d_true = np.sqrt(((codes - qc) ** 2).sum(1).astype(np.float32))
    dcs = rng.uniform(0, 1000, 50).astype(np.float32)
    score = (d_true * rng.uniform(0.5, 1.5, n)).astype(np.float32)  # about half improve
    center = rng.integers(-1, 50, n).astype(np.int32)
    margin = np.float32(2 * (1 + 1e-4))
    if case == "mixed":
        score[rng.integers(0, n, 20)] = -np.inf
        dcs[:25] = 0  # never skipped
        score[17] = np.inf  # a point with an infinite score is still computed
        center[17] = -1
    elif case == "all_skipped":
        dcs[:] = 1e30
        center[:] = rng.integers(0, 50, n)
    elif case == "all_neg_inf":
        score[:] = -np.inf
    else:  # equal best scores in several lanes and blocks: the lowest row wins
        dcs[:] = 1e30
        center[:] = 0
        score[:] = 1
        score[[37, 5 + 16 * 3, 130]] = 7
    args = (x, xn, q, int((qc**2).sum()), int(qc.sum()), score, center, dcs, float(margin), 42)
    got = k(isa, "greedy_step_i8", *args)
    ref = k("scalar", "greedy_step_i8", *args)
    np.testing.assert_array_equal(got[0].view(np.uint32), ref[0].view(np.uint32))
    np.testing.assert_array_equal(got[1], ref[1])
    assert got[2:] == ref[2:]
    want = greedy_step_reference(codes, qc, score, center, dcs, margin, 42)
    np.testing.assert_array_equal(ref[0], want[0])
    np.testing.assert_array_equal(ref[1], want[1])
    assert ref[2:] == want[2:]
    if case == "ties":
        assert ref[3:] == (7, 37)
    if case == "all_neg_inf":
        assert ref[2:] == (0, -np.inf, -1)


# ----------------------------------------------------------------------------- the float greedy scan
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 15, 16, 17, 100, 4099])
def test_greedy_scan_kernels_equal_their_definition(isa, n):
    """greedy_need_f32 / argmax_f32 (coreset/greedy.cpp's Phase B) against numpy, per ISA:
    -inf scores, centers without a bound (-1), bounds on both sides of the margin, ties."""
    rng = np.random.default_rng(n)
    score = np.abs(rng.standard_normal(n)).astype(np.float32) * 2
    score[rng.random(n) < 0.1] = -np.inf
    ties = np.nonzero(rng.random(n) < 0.1)[0]
    score[ties] = score[np.maximum(ties - 1, 0)]
    score[n // 2] = score.max()                     # the maximum twice at least (when n > 1)
    center = rng.integers(-1, 64, n).astype(np.int32)
    dcs = (np.abs(rng.standard_normal(64)) * 4).astype(np.float32)
    margin = np.float32(2.0002)
    dc = dcs[np.maximum(center, 0)]
    want = np.nonzero((score != -np.inf) & ((center < 0) | ~(dc >= margin * score)))[0]
    got = _core._kernel(isa, "greedy_need_f32", score, center, dcs, float(margin))
    np.testing.assert_array_equal(got, want)
    v, i = _core._kernel(isa, "argmax_f32", score)
    finite = score > -np.inf
    if finite.any():
        assert i == int(np.argmax(score)) and v == score.max()
    else:
        assert i == -1 and v == -np.inf
    v, i = _core._kernel(isa, "argmax_f32", np.full(n, -np.inf, np.float32))
    assert (v, i) == (-np.inf, -1)
