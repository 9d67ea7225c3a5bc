// z = L v for a lower-triangular L stored by columns (tri_cols_matvec, kernels.h), written once
// and compiled into each instruction set's file (like spd_solve.h): z starts at +0 and, for
// j = 0 .. d-1 in order, every z_i with i >= j adds the rounded product v_j * L_ij (the project
// builds with -ffp-contract=off: no FMA), so every instruction set gives the same bits; the
// contiguous update over i is what the compiler vectorises. Internal linkage (see fp16.h).
#pragma once

#include <cstddef>

namespace npad {
namespace {

// cols: column j of L (rows j .. d-1, d - j values) after column j - 1, d(d+1)/2 values in all.
inline void tri_cols_matvec(const float* cols, const float* v, std::size_t d, float* z) {
    for (std::size_t i = 0; i < d; ++i) z[i] = 0.0f;
    for (std::size_t j = 0; j < d; ++j) {
        const float a = v[j];
        float* zj = z + j;
        const std::size_t n = d - j;
        for (std::size_t i = 0; i < n; ++i) zj[i] = zj[i] + a * cols[i];
        cols += n;
    }
}

}  // namespace
}  // namespace npad
