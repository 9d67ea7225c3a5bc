// The anomaly map's vertical pass (kernels.h: aa_rows_f32; image/band.h), written once and
// compiled into each instruction set's file as resize_pass.h is. out[x] = sum over t = 0 ..
// k-1 of w[t] * src[rows[t] * stride + x], x = 0 .. len-1 (k >= 1; the sum starts with the t = 0
// product, each product rounded then added: the same bits everywhere). The sums run over blocks
// of outputs held in vector registers, all taps per block: a tap-by-tap pass over the whole
// output row (aa_rows_u8's form), which reads back what the previous pass stored, spent 73 % of
// a 900 x 900 map's time on those loads (profiled on Zen 4). For uint8 rows, widened on the fly,
// the blocked form measured slower, so aa_rows_u8 keeps its loop. Internal linkage (see fp16.h).
#pragma once

#include <cstddef>
#include <cstdint>

namespace npad {
namespace {

constexpr std::size_t kRowBlock = 16;

inline void aa_rows_block(const float* src, std::size_t stride, const std::int32_t* rows, const float* w,
                          std::size_t k, std::size_t len, float* out) {
    auto row = [&](std::size_t t, std::size_t x) { return src + static_cast<std::size_t>(rows[t]) * stride + x; };
    std::size_t x0 = 0;
    // Four blocks at a time: four fixed-length accumulators the compiler keeps in vector
    // registers, four independent chains of adds.
    for (; x0 + 4 * kRowBlock <= len; x0 += 4 * kRowBlock) {
        float a0[kRowBlock], a1[kRowBlock], a2[kRowBlock], a3[kRowBlock];
        {
            const float* s = row(0, x0);
            const float w0 = w[0];
            for (std::size_t j = 0; j < kRowBlock; ++j) a0[j] = w0 * s[j];
            for (std::size_t j = 0; j < kRowBlock; ++j) a1[j] = w0 * s[kRowBlock + j];
            for (std::size_t j = 0; j < kRowBlock; ++j) a2[j] = w0 * s[2 * kRowBlock + j];
            for (std::size_t j = 0; j < kRowBlock; ++j) a3[j] = w0 * s[3 * kRowBlock + j];
        }
        for (std::size_t t = 1; t < k; ++t) {
            const float* s = row(t, x0);
            const float wt = w[t];
            for (std::size_t j = 0; j < kRowBlock; ++j) a0[j] = a0[j] + wt * s[j];
            for (std::size_t j = 0; j < kRowBlock; ++j) a1[j] = a1[j] + wt * s[kRowBlock + j];
            for (std::size_t j = 0; j < kRowBlock; ++j) a2[j] = a2[j] + wt * s[2 * kRowBlock + j];
            for (std::size_t j = 0; j < kRowBlock; ++j) a3[j] = a3[j] + wt * s[3 * kRowBlock + j];
        }
        for (std::size_t j = 0; j < kRowBlock; ++j) out[x0 + j] = a0[j];
        for (std::size_t j = 0; j < kRowBlock; ++j) out[x0 + kRowBlock + j] = a1[j];
        for (std::size_t j = 0; j < kRowBlock; ++j) out[x0 + 2 * kRowBlock + j] = a2[j];
        for (std::size_t j = 0; j < kRowBlock; ++j) out[x0 + 3 * kRowBlock + j] = a3[j];
    }
    for (; x0 + kRowBlock <= len; x0 += kRowBlock) {
        float acc[kRowBlock];
        {
            const float* s = row(0, x0);
            const float w0 = w[0];
            for (std::size_t j = 0; j < kRowBlock; ++j) acc[j] = w0 * s[j];
        }
        for (std::size_t t = 1; t < k; ++t) {
            const float* s = row(t, x0);
            const float wt = w[t];
            for (std::size_t j = 0; j < kRowBlock; ++j) acc[j] = acc[j] + wt * s[j];
        }
        for (std::size_t j = 0; j < kRowBlock; ++j) out[x0 + j] = acc[j];
    }
    // The tail, one value at a time, in the same order.
    for (std::size_t x = x0; x < len; ++x) {
        float a = w[0] * *row(0, x);
        for (std::size_t t = 1; t < k; ++t) a = a + w[t] * *row(t, x);
        out[x] = a;
    }
}

inline void aa_rows_f32(const float* src, std::size_t stride, const std::int32_t* rows, const float* w,
                        std::size_t k, std::size_t len, float* out) {
    aa_rows_block(src, stride, rows, w, k, len, out);
}

}  // namespace
}  // namespace npad
