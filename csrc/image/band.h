// The anomaly map's separable product with banded axis operators (npad_edge/postprocess.py):
// out = Ly . G . Lx^T, where each output row (column) of an axis operator has at most k nonzero
// weights on consecutive grid rows (columns). A dense product costs H x h x W multiply-adds;
// this one H x k x W (a 900 x 900 map from a 40 x 40 grid: k = 6 or 7 against 40).
#pragma once

#include <cstddef>
#include <cstdint>

namespace npad {

// grid: (h, w) float32, contiguous. Vertical taps: ry / wy (H, ky), row-major: output row y is
// sum over t of wy[y, t] * (row ry[y, t] of G Lx^T). Horizontal taps, tap-major: cx / wx (kx, W):
// column j of G Lx^T is sum over t of wx[t, j] * G[:, cx[t, j]]. Indices must be in range
// (the binding checks). Each output value is an in-order sum of float32 products (the kernels'
// aa_cols_f32 / aa_rows_f32: the same bits on every instruction set). out: (H, W) float32.
void separable_band(const float* grid, std::size_t h, std::size_t w, const std::int32_t* ry, const float* wy,
                    std::size_t ky, std::size_t H, const std::int32_t* cx, const float* wx, std::size_t kx,
                    std::size_t W, float* out);

}  // namespace npad
