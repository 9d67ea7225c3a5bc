// The epilogue of the AVX-512 tiles (float32, bfloat16, int8): distances from the dots,
// clamped at 0, and the candidate mask against each query's threshold. Included only by files
// built with AVX-512 flags; internal linkage (see fp16.h for why).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels.h"

namespace npad {
namespace {

inline void epilogue_avx512(const __m512 (&acc)[kMR][2], const float* qn, const float* xn, const float* thr,
                            float* out, std::uint32_t* mask) {
    const __m512 xn0 = _mm512_loadu_ps(xn), xn1 = _mm512_loadu_ps(xn + 16);
    const __m512 m2 = _mm512_set1_ps(-2.f), zero = _mm512_setzero_ps();
    for (int i = 0; i < kMR; ++i) {
        const __m512 qi = _mm512_set1_ps(qn[i]);
        const __m512 ti = _mm512_set1_ps(thr[i]);
        const __m512 d0 = _mm512_max_ps(_mm512_fmadd_ps(m2, acc[i][0], _mm512_add_ps(qi, xn0)), zero);
        const __m512 d1 = _mm512_max_ps(_mm512_fmadd_ps(m2, acc[i][1], _mm512_add_ps(qi, xn1)), zero);
        _mm512_storeu_ps(out + i * kNR, d0);
        _mm512_storeu_ps(out + i * kNR + 16, d1);
        const std::uint32_t lo = _mm512_cmp_ps_mask(d0, ti, _CMP_LE_OQ);
        const std::uint32_t hi = _mm512_cmp_ps_mask(d1, ti, _CMP_LE_OQ);
        mask[i] = lo | (hi << 16);
    }
}

}  // namespace
}  // namespace npad
