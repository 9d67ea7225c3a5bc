// The greedy step over int8 blocks (Kernels::greedy_step_i8) written plainly around a block
// distance function: the scalar oracle, and the AVX2 kernel with AVX2 distances. Included
// only by kernel files; internal linkage (see fp16.h for why).
#pragma once

#include <cstdint>
#include <limits>

#include "kernels.h"

namespace npad {
namespace {

template <class Dist>
inline std::int64_t greedy_step_i8_rows(Dist dist, const std::uint32_t* x, const std::int32_t* xn,
                                        std::size_t nblocks, const std::uint32_t* q, std::int32_t qn,
                                        std::int32_t qsum, std::size_t d4, float* score, std::int32_t* center,
                                        const float* dcs, float margin, std::int32_t step, float* best_v,
                                        std::int64_t* best_i) {
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    float bv = kNegInf;
    std::int64_t bi = -1;
    std::int64_t computed = 0;
    float dd[kI8Block];
    for (std::size_t b = 0; b < nblocks; ++b) {
        float* s = score + b * kI8Block;
        std::int32_t* c = center + b * kI8Block;
        std::uint32_t need = 0;
        for (std::size_t j = 0; j < kI8Block; ++j) {
            const bool skip = s[j] == kNegInf || (c[j] >= 0 && dcs[c[j]] >= margin * s[j]);
            need |= static_cast<std::uint32_t>(!skip) << j;
        }
        if (need != 0) {
            dist(x + b * d4 * kI8Block, xn + b * kI8Block, 1, q, qn, qsum, d4, dd);
            for (std::size_t j = 0; j < kI8Block; ++j) {
                if (!((need >> j) & 1u)) continue;
                ++computed;
                if (dd[j] < s[j]) {
                    s[j] = dd[j];
                    c[j] = step;
                }
            }
        }
        for (std::size_t j = 0; j < kI8Block; ++j)
            if (s[j] > bv) {
                bv = s[j];
                bi = static_cast<std::int64_t>(b * kI8Block + j);
            }
    }
    *best_v = bv;
    *best_i = bi;
    return computed;
}

}  // namespace
}  // namespace npad
