// spd_solve_f64 (kernels.h): the Cholesky solve of a small symmetric positive definite system,
// in float64, written once and compiled into each instruction set's file, so the compiler
// vectorises the contiguous updates with that file's flags (SSE2 in scalar.cpp, AVX2 / AVX-512
// in theirs). The updates are element-wise (every lane its own multiply and subtract, in the
// same order; the project builds with -ffp-contract=off), so every instruction set gives the
// same bits, and the scalar file is the oracle. Internal linkage (see fp16.h for why).
#pragma once

#include <cmath>
#include <cstddef>

namespace npad {
namespace {

// g: k x k row-major, symmetric (both triangles); its lower triangle is overwritten by L with
// L L^T = g. rhs: k values, overwritten by the solution of g x = rhs. col: k doubles of
// scratch. Right-looking: after column j of L, the trailing rows are updated with contiguous
// element-wise loops. Returns false (rhs partly overwritten) if a pivot is not positive.
inline bool spd_solve_f64(double* g, std::size_t k, double* rhs, double* col) {
    for (std::size_t j = 0; j < k; ++j) {
        const double pivot = g[j * k + j];
        if (!(pivot > 0.0)) return false;
        const double l = std::sqrt(pivot);
        g[j * k + j] = l;
        for (std::size_t i = j + 1; i < k; ++i) col[i] = g[i * k + j] / l;
        for (std::size_t i = j + 1; i < k; ++i) {
            g[i * k + j] = col[i];
            const double a = col[i];
            double* gi = g + i * k;
            for (std::size_t t = j + 1; t <= i; ++t) gi[t] = gi[t] - a * col[t];
        }
    }
    for (std::size_t i = 0; i < k; ++i) {  // L y = rhs, column-oriented
        rhs[i] /= g[i * k + i];
        const double yi = rhs[i];
        for (std::size_t t = i + 1; t < k; ++t) rhs[t] = rhs[t] - g[t * k + i] * yi;
    }
    for (std::size_t i = k; i-- > 0;) {  // L^T x = y: row i of L is column i of L^T
        rhs[i] /= g[i * k + i];
        const double xi = rhs[i];
        const double* li = g + i * k;
        for (std::size_t t = 0; t < i; ++t) rhs[t] = rhs[t] - li[t] * xi;
    }
    return true;
}

}  // namespace
}  // namespace npad
