#include "band.h"

#include <vector>

#include "../kernels/kernels.h"

namespace npad {

void separable_band(const float* grid, std::size_t h, std::size_t w, const std::int32_t* ry, const float* wy,
                    std::size_t ky, std::size_t H, const std::int32_t* cx, const float* wx, std::size_t kx,
                    std::size_t W, float* out) {
    const Kernels& K = active_kernels();
    // G Lx^T, one grid row at a time (h x W floats: a few KB per row, stays in cache).
    std::vector<float> tmp(h * W);
    for (std::size_t r = 0; r < h; ++r) K.aa_cols_f32(grid + r * w, cx, wx, kx, W, tmp.data() + r * W);
    for (std::size_t y = 0; y < H; ++y) K.aa_rows_f32(tmp.data(), W, ry + y * ky, wy + y * ky, ky, W, out + y * W);
}

}  // namespace npad
