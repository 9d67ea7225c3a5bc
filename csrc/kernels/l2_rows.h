// The many-pairs direct kernels (kernels.h: l2sq_f32_rows, l2sq_f16_rows) as a plain loop over
// one instruction set's one-pair kernel: the scalar oracle, and the sets without an interleaved
// version (AVX2, NEON). Internal linkage (see fp16.h for why).
#pragma once

#include <cstddef>
#include <cstdint>

namespace npad {
namespace {

template <class B, float (*Pair)(const float*, const B*, std::size_t)>
void l2sq_rows_loop(const float* a, const B* y, std::size_t d, const std::int32_t* rows, std::size_t n, float* out) {
    for (std::size_t j = 0; j < n; ++j) {
        const std::size_t r = rows ? static_cast<std::size_t>(rows[j]) : j;
        out[j] = Pair(a, y + r * d, d);
    }
}

}  // namespace
}  // namespace npad
