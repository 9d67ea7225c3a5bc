#include "window_gaussian.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/errors.h"
#include "../common/parallel.h"
#include "../kernels/kernels.h"

namespace npad {

void window_mahalanobis(const float* x, std::size_t b, std::size_t p, std::size_t d, const float* means,
                        const float* cols, int threads, float* out) {
    if (d == 0) throw InvalidInput("window_mahalanobis: d must be >= 1");
    if (threads < 1) throw InvalidInput("threads must be >= 1");
    if (b == 0 || p == 0) return;
    const Kernels& K = active_kernels();
    const std::size_t dd = d * (d + 1) / 2;
    const int nt = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(threads), p));
    parallel_run(nt, [&](int t) {
        const std::size_t q0 = p * static_cast<std::size_t>(t) / nt;
        const std::size_t q1 = p * static_cast<std::size_t>(t + 1) / nt;
        std::vector<float> diff(d), z(d), zero(d, 0.0f);
        for (std::size_t q = q0; q < q1; ++q) {
            const float* mq = means + q * d;
            const float* cq = cols + q * dd;
            for (std::size_t i = 0; i < b; ++i) {
                const float* xi = x + (i * p + q) * d;
                for (std::size_t k = 0; k < d; ++k) diff[k] = xi[k] - mq[k];
                K.tri_cols_matvec(cq, diff.data(), d, z.data());
                out[i * p + q] = std::sqrt(K.l2sq_f32(z.data(), zero.data(), d));
            }
        }
    });
}

}  // namespace npad
