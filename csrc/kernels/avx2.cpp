// AVX2 + FMA + F16C kernels. Only this file is compiled with those flags (CMakeLists.txt);
// nothing here runs unless cpu_features().avx2_fma_f16c is true.
#include "kernels.h"

#if defined(NPAD_HAVE_AVX2)
#include <immintrin.h>

#include <cstring>

#include "fma_gather_dots.h"
#include "fp16.h"
#include "i8_step.h"
#include "l2_rows.h"
#include "band_pass.h"
#include "resize_pass.h"
#include "spd_solve.h"
#include "tri_pass.h"

namespace npad {
namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline __m256 load_f16(const std::uint16_t* x) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
}

// The documented 16-lane order (kernels.h): s0 holds lanes 0-7, s1 lanes 8-15; products are
// rounded before the add (no FMA); the tail is zero-padded to 16 (adding +0 to a lane leaves
// it unchanged, as in the scalar oracle); then lanes (j, j + 8), (j, j + 4), (j, j + 2), (0, 1).
inline float reduce16(__m256 s0, __m256 s1) { return hsum(_mm256_add_ps(s0, s1)); }

inline void accumulate(__m256 a0, __m256 b0, __m256 a1, __m256 b1, __m256& s0, __m256& s1) {
    const __m256 t0 = _mm256_sub_ps(a0, b0), t1 = _mm256_sub_ps(a1, b1);
    s0 = _mm256_add_ps(s0, _mm256_mul_ps(t0, t0));
    s1 = _mm256_add_ps(s1, _mm256_mul_ps(t1, t1));
}

float l2sq_f32(const float* a, const float* b, std::size_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    std::size_t i = 0;
    for (; i + 16 <= d; i += 16)
        accumulate(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), _mm256_loadu_ps(a + i + 8),
                   _mm256_loadu_ps(b + i + 8), s0, s1);
    if (i < d) {
        alignas(32) float ta[16] = {}, tb[16] = {};
        std::memcpy(ta, a + i, (d - i) * sizeof(float));
        std::memcpy(tb, b + i, (d - i) * sizeof(float));
        accumulate(_mm256_load_ps(ta), _mm256_load_ps(tb), _mm256_load_ps(ta + 8), _mm256_load_ps(tb + 8), s0, s1);
    }
    return reduce16(s0, s1);
}

float l2sq_f16(const float* a, const std::uint16_t* b, std::size_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    std::size_t i = 0;
    for (; i + 16 <= d; i += 16)
        accumulate(_mm256_loadu_ps(a + i), load_f16(b + i), _mm256_loadu_ps(a + i + 8), load_f16(b + i + 8), s0, s1);
    if (i < d) {
        alignas(32) float ta[16] = {};
        alignas(32) std::uint16_t tb[16] = {};
        std::memcpy(ta, a + i, (d - i) * sizeof(float));
        std::memcpy(tb, b + i, (d - i) * sizeof(std::uint16_t));
        accumulate(_mm256_load_ps(ta), load_f16(tb), _mm256_load_ps(ta + 8), load_f16(tb + 8), s0, s1);
    }
    return reduce16(s0, s1);
}

inline __m256 load_i8(const std::int8_t* x) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x))));
}

void f16_to_f32(const std::uint16_t* src, float* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_f16(src + i));
    for (; i < n; ++i) dst[i] = half_to_float(src[i]);
}

void f32_to_f16(const float* src, std::uint16_t* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; ++i) dst[i] = float_to_half(src[i]);
}

void dequant_i8_panel(const std::int8_t* codes, const float* scales, std::size_t d, float* out) {
    __m256 s[4];
    for (int k = 0; k < 4; ++k) s[k] = _mm256_loadu_ps(scales + 8 * k);
    for (std::size_t r = 0; r < d; ++r)
        for (int k = 0; k < 4; ++k)
            _mm256_storeu_ps(out + r * kNR + 8 * k, _mm256_mul_ps(load_i8(codes + r * kNR + 8 * k), s[k]));
}

void packed_sqnorms(const float* p, std::size_t d, std::size_t w, float* out) {
    std::size_t l = 0;
    for (; l + 8 <= w; l += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (std::size_t r = 0; r < d; ++r) {
            const __m256 v = _mm256_loadu_ps(p + r * w + l);
            acc = _mm256_fmadd_ps(v, v, acc);
        }
        _mm256_storeu_ps(out + l, acc);
    }
    for (; l < w; ++l) {
        float acc = 0.f;
        for (std::size_t r = 0; r < d; ++r) acc = _mm_cvtss_f32(_mm_fmadd_ss(
            _mm_set_ss(p[r * w + l]), _mm_set_ss(p[r * w + l]), _mm_set_ss(acc)));
        out[l] = acc;
    }
}

// 6 x 16 sub-tile: 12 ymm accumulators (AVX2 has 16 registers). The 12 x 32 tile is four
// of them; rows are read with stride kMR, columns with stride kNR.
inline void subtile(const float* qp, const float* xp, std::size_t d, float* out) {
    __m256 c[6][2];
    for (int i = 0; i < 6; ++i) c[i][0] = c[i][1] = _mm256_setzero_ps();
    for (std::size_t r = 0; r < d; ++r) {
        const float* q = qp + r * kMR;
        const __m256 b0 = _mm256_loadu_ps(xp + r * kNR);
        const __m256 b1 = _mm256_loadu_ps(xp + r * kNR + 8);
#pragma GCC unroll 6
        for (int i = 0; i < 6; ++i) {
            const __m256 a = _mm256_broadcast_ss(q + i);
            c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
        }
    }
    for (int i = 0; i < 6; ++i) {
        _mm256_storeu_ps(out + i * kNR, c[i][0]);
        _mm256_storeu_ps(out + i * kNR + 8, c[i][1]);
    }
}

void tile(const float* qp, const float* xp, std::size_t d, const float* qn, const float* xn,
          const float* thr, float* out, std::uint32_t* mask) {
    for (int r0 = 0; r0 < kMR; r0 += 6)
        for (int c0 = 0; c0 < kNR; c0 += 16) subtile(qp + r0, xp + c0, d, out + r0 * kNR + c0);
    if (qn == nullptr) return;
    const __m256 m2 = _mm256_set1_ps(-2.f), zero = _mm256_setzero_ps();
    for (int i = 0; i < kMR; ++i) {
        const __m256 qi = _mm256_set1_ps(qn[i]);
        const __m256 ti = _mm256_set1_ps(thr[i]);
        std::uint32_t m = 0;
        for (int k = 0; k < 4; ++k) {
            float* o = out + i * kNR + 8 * k;
            const __m256 t = _mm256_add_ps(qi, _mm256_loadu_ps(xn + 8 * k));
            const __m256 v = _mm256_max_ps(_mm256_fmadd_ps(m2, _mm256_loadu_ps(o), t), zero);
            _mm256_storeu_ps(o, v);
            m |= static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, ti, _CMP_LE_OQ))) << (8 * k);
        }
        mask[i] = m;
    }
}

// int8 coreset distances (kernels.h): as the AVX-512 (BW) kernel, 16-bit multiply-adds of the
// even and odd biased bytes with the query's codes, the block's 16 rows in two ymm of 8 lanes.
void l2_i8_blocks(const std::uint32_t* x, const std::int32_t* xn, std::size_t nblocks, const std::uint32_t* q,
                  std::int32_t qn, std::int32_t qsum, std::size_t d4, float* out) {
    const __m256i lo8 = _mm256_set1_epi32(0x00FF00FF);
    // Wrapping 32-bit arithmetic: D itself is < 2^31, so the wrapped intermediates cancel.
    const __m256i k = _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(qn) +
                                                         256u * static_cast<std::uint32_t>(qsum)));
    for (std::size_t b = 0; b < nblocks; ++b) {
        const std::uint32_t* blk = x + b * d4 * kI8Block;
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
        __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
        for (std::size_t r = 0; r < d4; ++r) {
            const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + r * kI8Block));
            const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + r * kI8Block + 8));
            const __m256i qb = _mm256_set1_epi32(static_cast<int>(q[r]));
            const __m256i qe = _mm256_srai_epi16(_mm256_slli_epi16(qb, 8), 8);
            const __m256i qo = _mm256_srai_epi16(qb, 8);
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_and_si256(w0, lo8), qe));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_and_si256(w1, lo8), qe));
            c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_srli_epi16(w0, 8), qo));
            c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(_mm256_srli_epi16(w1, 8), qo));
        }
        const std::int32_t* n = xn + b * kI8Block;
        const __m256i d0 = _mm256_sub_epi32(
            _mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(n)), k),
            _mm256_slli_epi32(_mm256_add_epi32(a0, c0), 1));
        const __m256i d1 = _mm256_sub_epi32(
            _mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(n + 8)), k),
            _mm256_slli_epi32(_mm256_add_epi32(a1, c1), 1));
        _mm256_storeu_ps(out + b * kI8Block, _mm256_sqrt_ps(_mm256_cvtepi32_ps(d0)));
        _mm256_storeu_ps(out + b * kI8Block + 8, _mm256_sqrt_ps(_mm256_cvtepi32_ps(d1)));
    }
}

// The re-rank dots: eight FMA chains at a time (fma_gather_dots.h); the oracle's per-pair order.
void gather_dots(const float* q, const float* rows, std::size_t d, const std::int64_t* cols, std::size_t n,
                 float* out) {
    gather_dots_fma(q, rows, d, cols, n, out);
}

// The oracle's row loop around the AVX2 block distances.
std::int64_t greedy_step_i8(const std::uint32_t* x, const std::int32_t* xn, std::size_t nblocks,
                            const std::uint32_t* q, std::int32_t qn, std::int32_t qsum, std::size_t d4, float* score,
                            std::int32_t* center, const float* dcs, float margin, std::int32_t step, float* best_v,
                            std::int64_t* best_i) {
    return greedy_step_i8_rows(l2_i8_blocks, x, xn, nblocks, q, qn, qsum, d4, score, center, dcs, margin, step,
                               best_v, best_i);
}

const Kernels kAvx2 = {
    "avx2",     Isa::Avx2,        l2sq_f32,       l2sq_f16, f16_to_f32,
    f32_to_f16, dequant_i8_panel, packed_sqnorms, tile,
    // Compact tiles: none native here; dispatch completes them with the scalar oracle's
    // (bit-identical by definition).
    nullptr,    nullptr,          gather_dots,
    l2_i8_blocks, greedy_step_i8,
    spd_solve_f64,
    aa_rows_u8,
    aa_cols_f32,
    tri_cols_matvec,
    nullptr,  // greedy_need_f32, argmax_f32: the oracle's
    nullptr,
    l2sq_rows_loop<float, l2sq_f32>,
    l2sq_rows_loop<std::uint16_t, l2sq_f16>,
    aa_rows_f32,
};

}  // namespace

const Kernels* avx2_kernels() { return &kAvx2; }

}  // namespace npad

#else
namespace npad {
const Kernels* avx2_kernels() { return nullptr; }
}  // namespace npad
#endif
