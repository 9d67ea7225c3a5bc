// Kernels::greedy_step_i8 for the AVX-512 files: the 16 rows of a block are the 16 lanes of
// one zmm, so the skip test, the min update and the running argmax are a few mask
// instructions per block instead of a branchy loop per row; the block distance is the
// including file's (VPMADDWD or VPDPBUSD). Included only by files built with AVX-512 flags;
// internal linkage (see fp16.h for why).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <limits>

#include "kernels.h"

namespace npad {
namespace {

template <class Dist>
inline std::int64_t greedy_step_i8_avx512(Dist dist, const std::uint32_t* x, const std::int32_t* xn,
                                          std::size_t nblocks, const std::uint32_t* q, std::int32_t qn,
                                          std::int32_t qsum, std::size_t d4, float* score,
                                          std::int32_t* center, const float* dcs, float margin,
                                          std::int32_t step, float* best_v, std::int64_t* best_i) {
    static_assert(kI8Block == 16, "one zmm of float32 per block");
    const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    const __m512 vmargin = _mm512_set1_ps(margin);
    const __m512i vstep = _mm512_set1_epi32(step), zero = _mm512_setzero_si512();
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i sixteen = _mm512_set1_epi32(16);
    // Per lane: the largest score so far and its first (lowest) row; row indices as int32
    // relative to the call (the caller passes fewer than 2^27 blocks).
    __m512 bv = neg_inf;
    __m512i bi = _mm512_set1_epi32(-1), row = lane, count = zero;
    const __m512i one = _mm512_set1_epi32(1);
    alignas(64) float dd[kI8Block];
    for (std::size_t b = 0; b < nblocks; ++b, row = _mm512_add_epi32(row, sixteen)) {
        float* s = score + b * kI8Block;
        std::int32_t* c = center + b * kI8Block;
        __m512 v = _mm512_loadu_ps(s);
        __m512i cv = _mm512_loadu_si512(c);
        const __mmask16 live = _mm512_cmp_ps_mask(v, neg_inf, _CMP_NEQ_OQ);
        const __mmask16 has_c = _mm512_mask_cmpge_epi32_mask(live, cv, zero);
        const __m512 dc = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), has_c, cv, dcs, 4);
        // Skipped: the center's distance to the new point is >= margin * score.
        const __mmask16 skip = _mm512_mask_cmp_ps_mask(has_c, dc, _mm512_mul_ps(vmargin, v), _CMP_GE_OQ);
        const __mmask16 need = live & static_cast<__mmask16>(~skip);
        if (need != 0) {
            dist(x + b * d4 * kI8Block, xn + b * kI8Block, 1, q, qn, qsum, d4, dd);
            const __m512 d = _mm512_load_ps(dd);
            const __mmask16 upd = _mm512_mask_cmp_ps_mask(need, d, v, _CMP_LT_OQ);
            v = _mm512_mask_blend_ps(upd, v, d);
            cv = _mm512_mask_blend_epi32(upd, cv, vstep);
            _mm512_mask_storeu_ps(s, upd, v);
            _mm512_mask_storeu_epi32(c, upd, cv);
            count = _mm512_mask_add_epi32(count, need, count, one);
        }
        const __mmask16 gt = _mm512_cmp_ps_mask(v, bv, _CMP_GT_OQ);
        bv = _mm512_mask_blend_ps(gt, bv, v);
        bi = _mm512_mask_blend_epi32(gt, bi, row);
    }
    // The first maximum over all rows: the largest lane value, lowest row among those lanes.
    const float m = _mm512_reduce_max_ps(bv);
    const __mmask16 at_max = _mm512_cmp_ps_mask(bv, _mm512_set1_ps(m), _CMP_EQ_OQ);
    const int i = _mm512_mask_reduce_min_epi32(at_max, bi);
    *best_v = m;
    *best_i = m == -std::numeric_limits<float>::infinity() ? -1 : i;
    return _mm512_reduce_add_epi32(count);
}

}  // namespace
}  // namespace npad
