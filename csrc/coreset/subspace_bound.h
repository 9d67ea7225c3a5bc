// A second exact bound for the float greedy coreset (greedy.cpp): a k-dimensional orthonormal
// basis U near the rows' top principal subspace, and every row's coordinates z_i = U^T y_i.
// Since U has orthonormal columns, |z_i - z_j| <= |y_i - y_j|: a row whose coordinates are far
// enough from the new center's cannot have its score lowered by it, and its full row is not read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "../common/aligned.h"

namespace npad {

struct SubspaceBound {
    std::size_t k = 0;       // coordinates per row (0: no bound)
    avector<float> z;        // n x k, row-major, float32(U^T y_i) with U^T y_i summed in double
    float delta = 0.f;       // >= the error of any computed |z_i - z_j| (see the .cpp)
    float margin = 0.f;      // relative margin on the score (rounding of the full distance)

    // Row i needs no full distance to the new center c when
    // l2sq_f32(z_c, z_i, k) >= skip_threshold(score_i): then every float32 distance the direct
    // kernels compute for the pair is >= score_i, and the min cannot change.
    float skip_threshold(float score) const {
        const float r = score * margin + 2.f * delta;
        return r * r;
    }
};

// load(i, out) writes row i (pd floats: exactly the values the distances use). Samples at most
// 1024 rows for the covariance, 24 rounds of subspace iteration from a fixed start, Gram-Schmidt
// twice in double; the coordinates are computed over `threads` workers. Requires k <= pd <= 4096.
SubspaceBound subspace_bound(const std::function<void(std::size_t, float*)>& load, std::size_t n, std::size_t pd,
                             std::size_t k, int threads);

}  // namespace npad
