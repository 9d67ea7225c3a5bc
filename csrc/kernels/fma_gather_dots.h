// gather_dots (kernels.h) for the x86 sets with FMA3 (avx2.cpp, avx512.cpp and the tables built
// on avx512's): eight candidates at a time, each its own scalar FMA chain (vfmadd231ss) over
// r = 0 .. d-1 from +0, i.e. exactly the oracle's sequence per pair.
//
// Why not SIMD lanes: every pair's d FMAs must run in order (bit-identical to the tile's dot),
// so one chain costs d x the FMA latency whatever its width; eight independent chains keep
// both FMA pipes busy (latency 4 x 2 pipes) with plain loads. The AVX-512 version it replaces
// put the eight candidates in one ymm filled by a VGATHERQPS per dimension: one chain, and a
// gather per step (~45 cycles per dimension on Zen 4, profiled), ~10x slower.
//
// Included only by files built with -mfma; internal linkage (see fp16.h for why).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace npad {
namespace {

template <int W>
inline void fma_dots_w(const float* q, const float* const* x, std::size_t d, float* out) {
    __m128 acc[W];
    for (int l = 0; l < W; ++l) acc[l] = _mm_setzero_ps();
    for (std::size_t r = 0; r < d; ++r) {
        const __m128 qr = _mm_load_ss(q + r);
        for (int l = 0; l < W; ++l) acc[l] = _mm_fmadd_ss(qr, _mm_load_ss(x[l] + r), acc[l]);
    }
    for (int l = 0; l < W; ++l) out[l] = _mm_cvtss_f32(acc[l]);
}

inline void gather_dots_fma(const float* q, const float* rows, std::size_t d, const std::int64_t* cols,
                            std::size_t n, float* out) {
    const float* x[8];
    std::size_t l0 = 0;
    for (; l0 + 8 <= n; l0 += 8) {
        for (int l = 0; l < 8; ++l) x[l] = rows + static_cast<std::size_t>(cols[l0 + l]) * d;
        fma_dots_w<8>(q, x, d, out + l0);
    }
    if (n - l0 >= 4) {
        for (int l = 0; l < 4; ++l) x[l] = rows + static_cast<std::size_t>(cols[l0 + l]) * d;
        fma_dots_w<4>(q, x, d, out + l0);
        l0 += 4;
    }
    for (; l0 < n; ++l0) {
        x[0] = rows + static_cast<std::size_t>(cols[l0]) * d;
        fma_dots_w<1>(q, x, d, out + l0);
    }
}

}  // namespace
}  // namespace npad
