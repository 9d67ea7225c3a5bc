// The float greedy scan's row loops (kernels.h: greedy_need_f32, argmax_f32), written once:
// the whole scalar oracle, and the tail after the SIMD kernels' 16-row blocks. Internal linkage
// (see fp16.h for why).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

namespace npad {
namespace {

// Rows i in [i0, n) that need a distance, appended to need from position m; returns the new m.
inline std::size_t greedy_need_rows(const float* score, const std::int32_t* center, const float* dcs, float margin,
                                    std::size_t i0, std::size_t n, std::int32_t* need, std::size_t m) {
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    for (std::size_t i = i0; i < n; ++i) {
        const float v = score[i];
        const std::int32_t c = center[i];
        if (v != kNegInf && (c < 0 || !(dcs[c] >= margin * v))) need[m++] = static_cast<std::int32_t>(i);
    }
    return m;
}

// The first maximum of x[i0, n) above the running (bv, bi), updated in place.
inline void argmax_rows(const float* x, std::size_t i0, std::size_t n, float& bv, std::int64_t& bi) {
    for (std::size_t i = i0; i < n; ++i)
        if (x[i] > bv) {
            bv = x[i];
            bi = static_cast<std::int64_t>(i);
        }
}

}  // namespace
}  // namespace npad
