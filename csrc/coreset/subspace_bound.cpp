#include "subspace_bound.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "../common/parallel.h"
#include "random.h"

namespace npad {

namespace {

// Columns of Q (pd x k, column j at q[j * pd]) made orthonormal: modified Gram-Schmidt, twice
// (the second pass brings the loss of orthogonality of the first to the rounding level). A
// column that vanishes is replaced by a unit vector not yet in the span.
void orthonormalize(std::vector<double>& q, std::size_t pd, std::size_t k) {
    std::size_t next_axis = 0;
    for (int pass = 0; pass < 2; ++pass) {
        for (std::size_t j = 0; j < k;) {
            double* c = q.data() + j * pd;
            double n0 = 0.0;
            for (std::size_t r = 0; r < pd; ++r) n0 += c[r] * c[r];
            for (std::size_t i = 0; i < j; ++i) {
                const double* b = q.data() + i * pd;
                double dot = 0.0;
                for (std::size_t r = 0; r < pd; ++r) dot += b[r] * c[r];
                for (std::size_t r = 0; r < pd; ++r) c[r] -= dot * b[r];
            }
            double nrm = 0.0;
            for (std::size_t r = 0; r < pd; ++r) nrm += c[r] * c[r];
            nrm = std::sqrt(nrm);
            if (!(nrm > 1e-6 * std::sqrt(n0)) && next_axis < pd) {
                // degenerate (rank-deficient data): the next coordinate axis instead, redone
                // against the earlier columns (k <= pd axes cannot all lie in their span)
                std::fill(c, c + pd, 0.0);
                c[next_axis++] = 1.0;
                continue;
            }
            for (std::size_t r = 0; r < pd; ++r) c[r] /= nrm;
            ++j;
        }
    }
}

}  // namespace

// Correctness does not depend on how close U is to the principal subspace, only on the
// orthonormality of its columns (to ~1e-15 after two Gram-Schmidt passes in double):
// |U^T v| <= (1 + 1e-13) |v|. Errors of the stored coordinates: U^T y_i is summed in double
// (error <= pd 2^-53 sum_r |U_rj| |y_ir| <= pd 2^-53 |y_i|, as |U_j| = 1), then rounded to
// float32 (<= 2^-24 |y_i|), so each component is within 2^-23 R of the exact value (R = the
// largest row norm, pd <= 4096) and a difference of two rows' coordinates within
// sqrt(k) 2^-22 R in norm: delta, rounded up. skip_threshold's 2 delta leaves one delta for the
// float32 evaluation of |z_c - z_i|^2 (relative error < 1e-5 for k <= 64) and margin = 1 + 1e-4
// covers the relative error of the full float32 distance (< (pd / 16 + 7) 2^-24 < 2e-5 for
// pd <= 4096 in the kernels' 16-lane order) with room to spare.
SubspaceBound subspace_bound(const std::function<void(std::size_t, float*)>& load, std::size_t n, std::size_t pd,
                             std::size_t k, int threads) {
    if (k == 0 || k > pd || pd > 4096) throw std::invalid_argument("subspace_bound: need 0 < k <= pd <= 4096");
    SubspaceBound b;
    b.k = k;
    // Covariance of up to 1024 rows, evenly spaced.
    const std::size_t m = std::min<std::size_t>(n, 1024);
    std::vector<float> row(pd);
    std::vector<double> samples(m * pd), mean(pd, 0.0), cov(pd * pd, 0.0);
    for (std::size_t s = 0; s < m; ++s) {
        load(s * n / m, row.data());
        for (std::size_t r = 0; r < pd; ++r) samples[s * pd + r] = row[r];
        for (std::size_t r = 0; r < pd; ++r) mean[r] += row[r];
    }
    for (double& v : mean) v /= static_cast<double>(m);
    for (std::size_t s = 0; s < m; ++s) {
        double* x = samples.data() + s * pd;
        for (std::size_t r = 0; r < pd; ++r) x[r] -= mean[r];
        for (std::size_t r = 0; r < pd; ++r) {
            const double xr = x[r];
            double* c = cov.data() + r * pd;
            for (std::size_t u = r; u < pd; ++u) c[u] += xr * x[u];
        }
    }
    for (std::size_t r = 0; r < pd; ++r)
        for (std::size_t u = 0; u < r; ++u) cov[r * pd + u] = cov[u * pd + r];
    // Subspace iteration Q <- orth(C Q) from a fixed pseudo-random start.
    std::vector<double> q(k * pd), t(k * pd);
    SplitMix64 rng(0x53554253504143ull);  // "SUBSPAC"
    for (double& v : q) v = static_cast<double>(rng.next() >> 11) * 0x1.0p-53 - 0.5;
    orthonormalize(q, pd, k);
    for (int it = 0; it < 24; ++it) {
        for (std::size_t j = 0; j < k; ++j) {
            const double* c = q.data() + j * pd;
            double* o = t.data() + j * pd;
            for (std::size_t r = 0; r < pd; ++r) {
                const double* cr = cov.data() + r * pd;
                double acc = 0.0;
                for (std::size_t u = 0; u < pd; ++u) acc += cr[u] * c[u];
                o[r] = acc;
            }
        }
        q.swap(t);
        orthonormalize(q, pd, k);
    }
    // The bound rests on the orthonormality of U: checked, and no bound if it failed (a
    // pathological input; the selection is then exactly as without it, only slower).
    for (std::size_t i = 0; i < k; ++i)
        for (std::size_t j = 0; j <= i; ++j) {
            double dot = 0.0;
            for (std::size_t r = 0; r < pd; ++r) dot += q[i * pd + r] * q[j * pd + r];
            if (!(std::fabs(dot - (i == j ? 1.0 : 0.0)) < 1e-12)) return SubspaceBound{};
        }
    // The coordinates of every row, and the largest row norm.
    b.z.assign(n * k, 0.f);
    const int T = static_cast<int>(std::min<std::size_t>(std::max(1, threads), (n + 4095) / 4096));
    std::vector<double> rmax(std::max(T, 1), 0.0);
    parallel_run(std::max(T, 1), [&](int w) {
        std::vector<float> y(pd);
        const std::size_t lo = n * w / T, hi = n * (w + 1) / T;
        double r2 = 0.0;
        for (std::size_t i = lo; i < hi; ++i) {
            load(i, y.data());
            double nr = 0.0;
            for (std::size_t r = 0; r < pd; ++r) nr += static_cast<double>(y[r]) * y[r];
            r2 = std::max(r2, nr);
            for (std::size_t j = 0; j < k; ++j) {
                const double* c = q.data() + j * pd;
                double acc = 0.0;
                for (std::size_t r = 0; r < pd; ++r) acc += c[r] * y[r];
                b.z[i * k + j] = static_cast<float>(acc);
            }
        }
        rmax[w] = r2;
    });
    const double R = std::sqrt(*std::max_element(rmax.begin(), rmax.end()));
    const double delta = std::sqrt(static_cast<double>(k)) * std::ldexp(R, -22) * (1.0 + 1e-6);
    b.delta = static_cast<float>(delta);
    if (static_cast<double>(b.delta) < delta) b.delta = std::nextafter(b.delta, std::numeric_limits<float>::infinity());
    b.margin = 1.f + 1e-4f;
    return b;
}

}  // namespace npad
