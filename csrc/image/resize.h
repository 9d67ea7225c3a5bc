// Antialiased bilinear resize of a uint8 image to float32, on the host: the filter of the
// backbone graph's resize (torch's interpolate(mode="bilinear", antialias=True), OpenVINO's
// bilinear_pillow, npad_edge/export/resize.py) without rounding the result back to uint8.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace npad {

// The taps of one axis of length n resized to m (n, m >= 1), computed in float32 as the
// graph's banded resize computes them: scale = n / m, support = max(scale, 1), centre_i =
// scale * (i + 0.5), window [max(floor(centre - support + 0.5), 0), min(floor(centre + support
// + 0.5), n)), weight 1 - |j + 0.5 - centre| / support (at least 0, 0 outside the window),
// normalised to sum 1 over the window (summed in tap order). k = ceil(2 support) + 1 taps per
// output; index[i * k + t] = min(lo_i + t, n - 1), weight[i * k + t] its weight (0 beyond the
// window).
struct ResizeTaps {
    std::size_t k = 0;
    std::vector<std::int32_t> index;
    std::vector<float> weight;
};
ResizeTaps resize_taps(std::size_t n, std::size_t m);

// src: (h, w, c) uint8, rows src_stride bytes apart (>= w * c). dst: (oh, ow, c) float32,
// contiguous, values on the 0..255 scale. Separable: for each output row the vertical taps
// (Kernels::aa_rows_u8 over the w * c values of the source rows), then the horizontal taps
// (Kernels::aa_cols_f32), so dst = rows, then columns, of resize_taps. The kernels give the
// same bits on every instruction set, so the result does not depend on the ISA or on threads
// (output rows are split between them). Throws InvalidInput on empty sizes or w * c >= 2^31.
void resize_aa(const std::uint8_t* src, std::size_t h, std::size_t w, std::size_t c,
               std::size_t src_stride, std::size_t oh, std::size_t ow, float* dst, int threads);

}  // namespace npad
