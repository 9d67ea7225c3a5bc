// N-pad's first reading at test time: the Mahalanobis distance of each patch to the Gaussian
// of its grid position (window statistics fitted in numpy, methods/npad.py).
#pragma once

#include <cstddef>

namespace npad {

// x: (b, p, d) float32 (b images, p positions, d dims); means: (p, d); cols: (p, d(d+1)/2),
// position q's whitening factor L_q (lower triangular, maha = |L_q (x - mean_q)|) stored by
// columns (Kernels::tri_cols_matvec's layout). out[i * p + q] = sqrt(|L_q (x_iq - mean_q)|^2),
// the difference element-wise in float32, z = L v by tri_cols_matvec, |z|^2 by l2sq_f32 against
// 0 (its documented 16-lane order): the same bits on every instruction set and thread count.
// Positions are split between threads. Throws InvalidInput for d == 0 or threads < 1.
void window_mahalanobis(const float* x, std::size_t b, std::size_t p, std::size_t d, const float* means,
                        const float* cols, int threads, float* out);

}  // namespace npad
