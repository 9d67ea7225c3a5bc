// The two passes of the antialiased (triangle-filter) resize (image/resize.h), written once and
// compiled into each instruction set's file, so the compiler vectorises the contiguous loops
// with that file's flags (SSE2 in scalar.cpp, AVX2 / AVX-512 in theirs). Every output value is
// its own sum, over the taps in order, of a product rounded to float32 then added (the project
// builds with -ffp-contract=off, so no FMA is formed): every instruction set gives the scalar
// file's bits. Internal linkage (see fp16.h for why).
#pragma once

#include <cstddef>
#include <cstdint>

namespace npad {
namespace {

// Vertical pass: out[x] = sum over t = 0 .. k-1 of w[t] * float(src[rows[t] * stride + x]),
// x = 0 .. len-1 (k >= 1; the sum starts with the t = 0 product).
inline void aa_rows_u8(const std::uint8_t* src, std::size_t stride, const std::int32_t* rows,
                       const float* w, std::size_t k, std::size_t len, float* out) {
    {
        const std::uint8_t* s = src + static_cast<std::size_t>(rows[0]) * stride;
        const float w0 = w[0];
        for (std::size_t x = 0; x < len; ++x) out[x] = w0 * static_cast<float>(s[x]);
    }
    for (std::size_t t = 1; t < k; ++t) {
        const std::uint8_t* s = src + static_cast<std::size_t>(rows[t]) * stride;
        const float wt = w[t];
        for (std::size_t x = 0; x < len; ++x) out[x] = out[x] + wt * static_cast<float>(s[x]);
    }
}

// Horizontal pass on one row: out[j] = sum over t = 0 .. k-1 of w[t * len + j] * row[idx[t *
// len + j]], j = 0 .. len-1 (tap-major tables, k >= 1; the sum starts with the t = 0 product).
inline void aa_cols_f32(const float* row, const std::int32_t* idx, const float* w, std::size_t k,
                        std::size_t len, float* out) {
    for (std::size_t j = 0; j < len; ++j) out[j] = w[j] * row[idx[j]];
    for (std::size_t t = 1; t < k; ++t) {
        const std::int32_t* it = idx + t * len;
        const float* wt = w + t * len;
        for (std::size_t j = 0; j < len; ++j) out[j] = out[j] + wt[j] * row[it[j]];
    }
}

}  // namespace
}  // namespace npad
