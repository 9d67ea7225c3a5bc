// AVX-512 (F, BW, DQ, VL) + F16C kernels. This file alone is compiled with the AVX-512 flags
// (see CMakeLists.txt), so the compiler cannot leak these instructions into code that runs
// before the CPU check. Nothing here runs unless cpu_features().avx512 is true.
#include "kernels.h"

#if defined(NPAD_HAVE_AVX512)
#include <immintrin.h>

#include <algorithm>
#include <limits>

#include "avx512_epilogue.h"
#include "avx512_i8_step.h"
#include "fma_gather_dots.h"
#include "fp16.h"
#include "greedy_scan.h"
#include "band_pass.h"
#include "resize_pass.h"
#include "spd_solve.h"
#include "tri_pass.h"

namespace npad {
namespace {

inline __mmask16 tail_mask(std::size_t n) {
    return static_cast<__mmask16>((n >= 16) ? 0xFFFFu : ((1u << n) - 1u));
}

inline __m512 load_f16(const std::uint16_t* x, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x));
}

// The documented 16-lane order (kernels.h): one zmm holds the 16 lanes; products are rounded
// before the add (no FMA); the tail is masked to zero (adding +0 leaves a lane unchanged);
// then lanes (j, j + 8) (the two 256-bit halves), (j, j + 4), (j, j + 2), (0, 1).
inline float reduce16(__m512 s) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

float l2sq_f32(const float* a, const float* b, std::size_t d) {
    __m512 s = _mm512_setzero_ps();
    for (std::size_t i = 0; i < d; i += 16) {
        const __mmask16 m = tail_mask(d - i);
        const __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        s = _mm512_add_ps(s, _mm512_mul_ps(t, t));
    }
    return reduce16(s);
}

float l2sq_f16(const float* a, const std::uint16_t* b, std::size_t d) {
    __m512 s = _mm512_setzero_ps();
    for (std::size_t i = 0; i < d; i += 16) {
        const __mmask16 m = tail_mask(d - i);
        const __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), load_f16(b + i, m));
        s = _mm512_add_ps(s, _mm512_mul_ps(t, t));
    }
    return reduce16(s);
}

// Many pairs (kernels.h: l2sq_f32_rows / l2sq_f16_rows), 16 rows at a time: each row has its
// own accumulator in the one-pair kernel's lane order, and the 16 accumulators are reduced
// together (reduce16x16) with exactly reduce16's pairings; listed rows (the coreset's sparse
// ones) are prefetched a group ahead, as their addresses are known.
template <class B>
inline __m512 load_row(const B* p, __mmask16 m);
template <>
inline __m512 load_row<float>(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
template <>
inline __m512 load_row<std::uint16_t>(const std::uint16_t* p, __mmask16 m) { return load_f16(p, m); }

// out[r] = reduce16(s[r]) for r < 16, bit for bit: every add below is one of reduce16's,
// (j, j + 8), then (j, j + 4), (j, j + 2), (0, 1), on the same operands; the shuffles only
// bring the operands of four or eight rows into one register. The last vector holds row
// k + 4 m at position 4 k + m, put back in row order by the final permutation.
inline __m512 reduce16x16(const __m512* s) {
    __m512 u[8], v[4], w[2];
    for (int i = 0; i < 8; ++i)  // rows 2i, 2i+1: lanes j + (j + 8), 8 each
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int i = 0; i < 4; ++i)  // rows 4i..4i+3, one per 128-bit lane: j + (j + 4), 4 each
        v[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int i = 0; i < 2; ++i)  // 128-bit lane k: rows 8i + k, 8i + 4 + k: j + (j + 2), 2 each
        w[i] = _mm512_add_ps(_mm512_shuffle_ps(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    // 128-bit lane k: rows k, 4 + k, 8 + k, 12 + k: 0 + 1
    const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, r);
}

template <class B, float (*Pair)(const float*, const B*, std::size_t)>
void l2sq_rows16(const float* a, const B* y, std::size_t d, const std::int32_t* rows, std::size_t n, float* out) {
    constexpr std::size_t kG = 16;
    const std::size_t bytes = d * sizeof(B);
    auto row = [&](std::size_t j) { return y + (rows ? static_cast<std::size_t>(rows[j]) : j) * d; };
    auto prefetch_group = [&](std::size_t j0) {
        if (rows == nullptr) return;  // contiguous rows: the hardware prefetcher sees them
        for (std::size_t j = j0; j < std::min(n, j0 + kG); ++j) {
            const char* p = reinterpret_cast<const char*>(row(j));
            for (std::size_t o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
        }
    };
    prefetch_group(0);
    std::size_t j = 0;
    for (; j + kG <= n; j += kG) {
        prefetch_group(j + kG);
        const B* r[kG];
        __m512 s[kG];
        for (std::size_t u = 0; u < kG; ++u) {
            r[u] = row(j + u);
            s[u] = _mm512_setzero_ps();
        }
        for (std::size_t i = 0; i < d; i += 16) {
            const __mmask16 m = tail_mask(d - i);
            const __m512 q = _mm512_maskz_loadu_ps(m, a + i);
            for (std::size_t u = 0; u < kG; ++u) {
                const __m512 t = _mm512_sub_ps(q, load_row(r[u] + i, m));
                s[u] = _mm512_add_ps(s[u], _mm512_mul_ps(t, t));
            }
        }
        _mm512_storeu_ps(out + j, reduce16x16(s));
    }
    for (; j < n; ++j) out[j] = Pair(a, row(j), d);
}

void f16_to_f32(const std::uint16_t* src, float* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, m, load_f16(src + i, m));
    }
}

void f32_to_f16(const float* src, std::uint16_t* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_mask_storeu_epi16(dst + i, m, h);
    }
}

void dequant_i8_panel(const std::int8_t* codes, const float* scales, std::size_t d, float* out) {
    const __m512 s0 = _mm512_loadu_ps(scales), s1 = _mm512_loadu_ps(scales + 16);
    for (std::size_t r = 0; r < d; ++r) {
        const std::int8_t* c = codes + r * kNR;
        float* o = out + r * kNR;
        const __m512 v0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c))));
        const __m512 v1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16))));
        _mm512_storeu_ps(o, _mm512_mul_ps(v0, s0));
        _mm512_storeu_ps(o + 16, _mm512_mul_ps(v1, s1));
    }
}

void packed_sqnorms(const float* p, std::size_t d, std::size_t w, float* out) {
    for (std::size_t l = 0; l < w; l += 16) {
        const __mmask16 m = tail_mask(w - l);
        __m512 acc = _mm512_setzero_ps();
        for (std::size_t r = 0; r < d; ++r) {
            const __m512 v = _mm512_maskz_loadu_ps(m, p + r * w + l);
            acc = _mm512_fmadd_ps(v, v, acc);
        }
        _mm512_mask_storeu_ps(out + l, m, acc);
    }
}

// The register-blocked micro-kernel: 12 query rows x 32 bank columns = 24 zmm accumulators.
// Per step of the dimension: two aligned loads of the bank panel row, twelve broadcasts of
// the packed query row (folded into the FMAs as memory operands), 24 FMAs.
void tile(const float* qp, const float* xp, std::size_t d, const float* qn, const float* xn,
          const float* thr, float* out, std::uint32_t* mask) {
    __m512 c0a = _mm512_setzero_ps(), c0b = _mm512_setzero_ps();
    __m512 c1a = _mm512_setzero_ps(), c1b = _mm512_setzero_ps();
    __m512 c2a = _mm512_setzero_ps(), c2b = _mm512_setzero_ps();
    __m512 c3a = _mm512_setzero_ps(), c3b = _mm512_setzero_ps();
    __m512 c4a = _mm512_setzero_ps(), c4b = _mm512_setzero_ps();
    __m512 c5a = _mm512_setzero_ps(), c5b = _mm512_setzero_ps();
    __m512 c6a = _mm512_setzero_ps(), c6b = _mm512_setzero_ps();
    __m512 c7a = _mm512_setzero_ps(), c7b = _mm512_setzero_ps();
    __m512 c8a = _mm512_setzero_ps(), c8b = _mm512_setzero_ps();
    __m512 c9a = _mm512_setzero_ps(), c9b = _mm512_setzero_ps();
    __m512 cAa = _mm512_setzero_ps(), cAb = _mm512_setzero_ps();
    __m512 cBa = _mm512_setzero_ps(), cBb = _mm512_setzero_ps();
    const float* q = qp;
    const float* x = xp;
    for (std::size_t r = 0; r < d; ++r, q += kMR, x += kNR) {
        _mm_prefetch(reinterpret_cast<const char*>(x + 8 * kNR), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(x + 8 * kNR + 16), _MM_HINT_T0);
        const __m512 b0 = _mm512_load_ps(x);
        const __m512 b1 = _mm512_load_ps(x + 16);
        __m512 a;
#define NPAD_ROW(I, CA, CB)              \
    a = _mm512_set1_ps(q[I]);            \
    CA = _mm512_fmadd_ps(a, b0, CA);     \
    CB = _mm512_fmadd_ps(a, b1, CB);
        NPAD_ROW(0, c0a, c0b) NPAD_ROW(1, c1a, c1b) NPAD_ROW(2, c2a, c2b) NPAD_ROW(3, c3a, c3b)
        NPAD_ROW(4, c4a, c4b) NPAD_ROW(5, c5a, c5b) NPAD_ROW(6, c6a, c6b) NPAD_ROW(7, c7a, c7b)
        NPAD_ROW(8, c8a, c8b) NPAD_ROW(9, c9a, c9b) NPAD_ROW(10, cAa, cAb) NPAD_ROW(11, cBa, cBb)
#undef NPAD_ROW
    }
    const __m512 acc[kMR][2] = {{c0a, c0b}, {c1a, c1b}, {c2a, c2b}, {c3a, c3b}, {c4a, c4b}, {c5a, c5b},
                                {c6a, c6b}, {c7a, c7b}, {c8a, c8b}, {c9a, c9b}, {cAa, cAb}, {cBa, cBb}};
    if (qn == nullptr) {
        for (int i = 0; i < kMR; ++i) {
            _mm512_storeu_ps(out + i * kNR, acc[i][0]);
            _mm512_storeu_ps(out + i * kNR + 16, acc[i][1]);
        }
        return;
    }
    // Epilogue fused into the tile: distances, clamp at 0, and the candidate mask against
    // each query's current k-th best, so the caller only visits columns that can enter.
    epilogue_avx512(acc, qn, xn, thr, out, mask);
}

// bfloat16 tile without VDPBF16PS: the bf16 halves widened to float32 (a shift, a mask) and
// two FMAs per word, in the instruction's order (kernels.h) -- the same bits at float32 speed.
void tile_bf16(const std::uint32_t* qp, const std::uint32_t* xp, std::size_t d2, const float* qn,
               const float* xn, const float* thr, float* out, std::uint32_t* mask) {
    __m512 acc[kMR][2];
    for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const __m512i himask = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    for (std::size_t r = 0; r < d2; ++r) {
        const __m512i w0 = _mm512_load_si512(xp + r * kNR), w1 = _mm512_load_si512(xp + r * kNR + 16);
        const __m512 h0 = _mm512_castsi512_ps(_mm512_and_si512(w0, himask));
        const __m512 h1 = _mm512_castsi512_ps(_mm512_and_si512(w1, himask));
        const __m512 l0 = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16));
        const __m512 l1 = _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16));
        const std::uint32_t* q = qp + r * kMR;
        for (int i = 0; i < kMR; ++i) {
            const __m512 qh = _mm512_set1_ps(fp32_from_bits(q[i] & 0xFFFF0000u));
            const __m512 ql = _mm512_set1_ps(fp32_from_bits(q[i] << 16));
            acc[i][0] = _mm512_fmadd_ps(ql, l0, _mm512_fmadd_ps(qh, h0, acc[i][0]));
            acc[i][1] = _mm512_fmadd_ps(ql, l1, _mm512_fmadd_ps(qh, h1, acc[i][1]));
        }
    }
    epilogue_avx512(acc, qn, xn, thr, out, mask);
}

// Eight independent scalar FMA chains (fma_gather_dots.h), not a gather per dimension.
void gather_dots(const float* q, const float* rows, std::size_t d, const std::int64_t* cols, std::size_t n,
                 float* out) {
    gather_dots_fma(q, rows, d, cols, n, out);
}

// int8 coreset distances with 16-bit multiply-adds (no VNNI): the 16 lanes are the block's
// rows; per word, the even bytes (dims 4r, 4r+2) and the odd bytes (4r+1, 4r+3) of the biased
// row codes are widened to 16 bits and VPMADDWD'd with the query's codes, so each lane gets
// x.q + 128 sum(q) exactly; then D = xn + qn + 256 qsum - 2 acc (kernels.h).
void l2_i8_blocks(const std::uint32_t* x, const std::int32_t* xn, std::size_t nblocks, const std::uint32_t* q,
                  std::int32_t qn, std::int32_t qsum, std::size_t d4, float* out) {
    const __m512i lo8 = _mm512_set1_epi32(0x00FF00FF);
    // Wrapping 32-bit arithmetic: D itself is < 2^31, so the wrapped intermediates cancel.
    const __m512i k = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(qn) +
                                                         256u * static_cast<std::uint32_t>(qsum)));
    for (std::size_t b = 0; b < nblocks; ++b) {
        const std::uint32_t* blk = x + b * d4 * kI8Block;
        __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
        for (std::size_t r = 0; r < d4; ++r) {
            const __m512i w = _mm512_loadu_si512(blk + r * kI8Block);
            const __m512i qb = _mm512_set1_epi32(static_cast<int>(q[r]));
            const __m512i qe = _mm512_srai_epi16(_mm512_slli_epi16(qb, 8), 8);
            const __m512i qo = _mm512_srai_epi16(qb, 8);
            a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(_mm512_and_si512(w, lo8), qe));
            a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(_mm512_srli_epi16(w, 8), qo));
        }
        const __m512i acc = _mm512_add_epi32(a0, a1);
        const __m512i dd = _mm512_sub_epi32(_mm512_add_epi32(_mm512_loadu_si512(xn + b * kI8Block), k),
                                            _mm512_slli_epi32(acc, 1));
        _mm512_storeu_ps(out + b * kI8Block, _mm512_sqrt_ps(_mm512_cvtepi32_ps(dd)));
    }
}

std::int64_t greedy_step_i8(const std::uint32_t* x, const std::int32_t* xn, std::size_t nblocks,
                            const std::uint32_t* q, std::int32_t qn, std::int32_t qsum, std::size_t d4, float* score,
                            std::int32_t* center, const float* dcs, float margin, std::int32_t step, float* best_v,
                            std::int64_t* best_i) {
    return greedy_step_i8_avx512(l2_i8_blocks, x, xn, nblocks, q, qn, qsum, d4, score, center, dcs, margin, step,
                                 best_v, best_i);
}

// The float greedy scan, 16 rows per step: the bound's gather of dcs[center] under a mask, the
// rows that need a distance compress-stored; then the scalar oracle's loop (greedy_scan.h) for the tail.
std::size_t greedy_need_f32(const float* score, const std::int32_t* center, const float* dcs, float margin,
                            std::size_t n, std::int32_t* need) {
    const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    const __m512 mg = _mm512_set1_ps(margin);
    const __m512i zero = _mm512_setzero_si512();
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    std::size_t m = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(score + i);
        const __m512i c = _mm512_loadu_si512(center + i);
        const __mmask16 valid = _mm512_cmp_ps_mask(v, ninf, _CMP_NEQ_UQ);
        const __mmask16 g = valid & _mm512_cmpge_epi32_mask(c, zero);
        const __m512 d = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), g, c, dcs, 4);
        const __mmask16 skip = _mm512_mask_cmp_ps_mask(g, d, _mm512_mul_ps(mg, v), _CMP_GE_OQ);
        const __mmask16 nd = valid & static_cast<__mmask16>(~skip);
        if (nd) {
            const __m512i idx = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<std::int32_t>(i)));
            // Compress in a register, then a masked store of the popcount lanes: the memory
            // form of VPCOMPRESSD is microcoded and slow on AMD Zen 4.
            const unsigned cnt = static_cast<unsigned>(__builtin_popcount(nd));
            _mm512_mask_storeu_epi32(need + m, static_cast<__mmask16>((1u << cnt) - 1u),
                                     _mm512_maskz_compress_epi32(nd, idx));
            m += cnt;
        }
    }
    return greedy_need_rows(score, center, dcs, margin, i, n, need, m);
}

// Per lane the first strict maximum, then the largest value and, among the lanes holding it,
// the lowest index: the first maximum, as the oracle's loop.
void argmax_f32(const float* x, std::size_t n, float* best_v, std::int64_t* best_i) {
    float bv = -std::numeric_limits<float>::infinity();
    std::int64_t bi = -1;
    std::size_t i = 0;
    if (n >= 16) {
        __m512 vmax = _mm512_set1_ps(bv);
        __m512i imax = _mm512_set1_epi32(-1);
        __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        const __m512i step = _mm512_set1_epi32(16);
        for (; i + 16 <= n; i += 16) {
            const __m512 v = _mm512_loadu_ps(x + i);
            const __mmask16 gt = _mm512_cmp_ps_mask(v, vmax, _CMP_GT_OQ);
            vmax = _mm512_mask_mov_ps(vmax, gt, v);
            imax = _mm512_mask_mov_epi32(imax, gt, idx);
            idx = _mm512_add_epi32(idx, step);
        }
        const float m = _mm512_reduce_max_ps(vmax);
        if (m > bv) {
            const __mmask16 at = _mm512_cmp_ps_mask(vmax, _mm512_set1_ps(m), _CMP_EQ_OQ);
            // the lanes holding m all have an index >= 0; the smallest is the first maximum
            bi = _mm512_mask_reduce_min_epi32(at, imax);
            bv = m;
        }
    }
    argmax_rows(x, i, n, bv, bi);
    *best_v = bv;
    *best_i = bi;
}

const Kernels kAvx512 = {
    "avx512",   Isa::Avx512,      l2sq_f32,       l2sq_f16,  f16_to_f32, f32_to_f16,
    dequant_i8_panel, packed_sqnorms, tile, tile_bf16, nullptr, gather_dots, l2_i8_blocks,
    greedy_step_i8,
    spd_solve_f64,
    aa_rows_u8,
    aa_cols_f32,
    tri_cols_matvec,
    greedy_need_f32,
    argmax_f32,
    l2sq_rows16<float, l2sq_f32>,
    l2sq_rows16<std::uint16_t, l2sq_f16>,
    aa_rows_f32,
};

}  // namespace

const Kernels* avx512_kernels() { return &kAvx512; }

}  // namespace npad

#else
namespace npad {
const Kernels* avx512_kernels() { return nullptr; }
}  // namespace npad
#endif
