#include "resize.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "../common/errors.h"
#include "../common/parallel.h"
#include "../kernels/kernels.h"

namespace npad {

ResizeTaps resize_taps(std::size_t n, std::size_t m) {
    if (n == 0 || m == 0) throw InvalidInput("resize: sizes must be >= 1");
    const float scale = static_cast<float>(n) / static_cast<float>(m);
    const float support = std::max(scale, 1.0f);
    ResizeTaps r;
    r.k = static_cast<std::size_t>(std::ceil(support * 2.0f)) + 1;
    r.index.resize(m * r.k);
    r.weight.resize(m * r.k);
    const auto nn = static_cast<std::int64_t>(n);
    for (std::size_t i = 0; i < m; ++i) {
        const float centre = scale * (static_cast<float>(i) + 0.5f);
        const std::int64_t lo = std::max<std::int64_t>(
            static_cast<std::int64_t>(std::floor((centre - support) + 0.5f)), 0);
        const std::int64_t hi = std::min<std::int64_t>(
            static_cast<std::int64_t>(std::floor((centre + support) + 0.5f)), nn);
        float* w = r.weight.data() + i * r.k;
        std::int32_t* idx = r.index.data() + i * r.k;
        float total = 0.0f;
        for (std::size_t t = 0; t < r.k; ++t) {
            const std::int64_t j = lo + static_cast<std::int64_t>(t);
            const float dist = (static_cast<float>(j) + 0.5f) - centre;
            const float v = j < hi ? std::max(1.0f - std::fabs(dist) / support, 0.0f) : 0.0f;
            w[t] = v;
            total += v;
            idx[t] = static_cast<std::int32_t>(std::min(j, nn - 1));
        }
        if (!(total > 0.0f)) throw InvalidInput("resize: an output has no input in its window");
        for (std::size_t t = 0; t < r.k; ++t) w[t] = w[t] / total;
    }
    return r;
}

void resize_aa(const std::uint8_t* src, std::size_t h, std::size_t w, std::size_t c,
               std::size_t src_stride, std::size_t oh, std::size_t ow, float* dst, int threads) {
    if (h == 0 || w == 0 || c == 0 || oh == 0 || ow == 0)
        throw InvalidInput("resize: sizes must be >= 1");
    if (src_stride < w * c) throw InvalidInput("resize: row stride smaller than the row");
    if (w * c >= (std::size_t(1) << 31) || ow * c >= (std::size_t(1) << 31))
        throw InvalidInput("resize: rows of 2^31 values or more are not supported");
    if (threads < 1) throw InvalidInput("threads must be >= 1");
    const ResizeTaps ty = resize_taps(h, oh);
    const ResizeTaps tx = resize_taps(w, ow);
    // Horizontal tables, tap-major and widened to the channels: element (t, j) for output value
    // j = x * c + ch reads source value idx * c + ch of the row.
    const std::size_t len = ow * c;
    std::vector<std::int32_t> cidx(tx.k * len);
    std::vector<float> cw(tx.k * len);
    for (std::size_t t = 0; t < tx.k; ++t)
        for (std::size_t x = 0; x < ow; ++x)
            for (std::size_t ch = 0; ch < c; ++ch) {
                cidx[t * len + x * c + ch] = static_cast<std::int32_t>(tx.index[x * tx.k + t] * c + ch);
                cw[t * len + x * c + ch] = tx.weight[x * tx.k + t];
            }
    // Vertical taps of each output row without its zero-weight ends (adding +0 products changes
    // no bit, so this only saves work).
    std::vector<std::size_t> first(oh), count(oh);
    for (std::size_t y = 0; y < oh; ++y) {
        const float* wy = ty.weight.data() + y * ty.k;
        std::size_t a = 0, b = ty.k;
        while (a + 1 < b && wy[a] == 0.0f) ++a;
        while (b > a + 1 && wy[b - 1] == 0.0f) --b;
        first[y] = a;
        count[y] = b - a;
    }
    const Kernels& K = active_kernels();
    const std::size_t in_len = w * c;
    const int nt = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(threads), oh));
    parallel_run(nt, [&](int t) {
        const std::size_t y0 = oh * static_cast<std::size_t>(t) / nt;
        const std::size_t y1 = oh * static_cast<std::size_t>(t + 1) / nt;
        std::vector<float> tmp(in_len);
        for (std::size_t y = y0; y < y1; ++y) {
            const std::size_t a = first[y];
            K.aa_rows_u8(src, src_stride, ty.index.data() + y * ty.k + a, ty.weight.data() + y * ty.k + a,
                         count[y], in_len, tmp.data());
            K.aa_cols_f32(tmp.data(), cidx.data(), cw.data(), tx.k, len, dst + y * len);
        }
    });
}

}  // namespace npad
