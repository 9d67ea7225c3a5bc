// Test-time local Gaussians over a per-position nominal bank (N-pad's "second reading").
//
// The bank holds n nominal feature maps (n, h, w, d). For a query feature q at grid cell
// (i, j), the candidates are the n * cells vectors of the bank at the cells of the
// (2r+1) x (2r+1) window around (i, j) (clipped at the border); the k nearest of them
// (squared L2, ties to the lower (cell, image)) form a local Gaussian, and the result is the
// Mahalanobis distance of q to it, with the covariance shrunk towards a scaled identity:
//
//   Z (k x d) the neighbours centred on their mean mu, v = q - mu,
//   lam = s * |Z|_F^2 / ((k_eff - 1) d),  c = (1 - s) / (k - 1),
//   Sigma = lam I + c Z^T Z,   maha^2 = (|v|^2 - c (Z v)^T (lam I + c Z Z^T)^-1 (Z v)) / lam
//
// (Woodbury: O(k^2 d) per query instead of O(d^3)). The neighbour search runs per bank cell,
// GEMM-shaped: every query whose window contains the cell is scanned against the cell's
// packed panels with the dispatched tile kernel, so each cell's vectors are read once per call.
// Distances are computed as in FlatIndex (|q|^2 + |x|^2 - 2 q.x, fused, clamped at 0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../common/aligned.h"
#include "../common/parallel.h"
#include "flat_index.h"

namespace npad {

class LocalGaussianBank {
public:
    // nominal: (n, h, w, d) row-major, float32 (f32 != nullptr) or float16 bits (f16 != nullptr),
    // finite. Copied into per-cell float32 panels (a float16 bank is widened exactly).
    LocalGaussianBank(const float* f32, const std::uint16_t* f16, std::size_t n, std::size_t h,
                      std::size_t w, std::size_t d);

    // x: (b, h, w, d) float32 queries, finite. exclude: nullptr or (b,) bank image per query
    // image that must not be a neighbour (-1: none). Writes out (b, h, w) float32.
    // radius >= 0, k >= 2, shrinkage in [0, 1] (0 is treated as 1e-6, so lam > 0).
    void mahalanobis(const float* x, std::size_t b, int radius, int k, double shrinkage,
                     const std::int64_t* exclude, int threads, float* out, Control& ctl) const;

    // The bank as given, (n, h, w, d) row-major, into dst (float32 or float16 bits as given).
    void export_nominal(void* dst) const;

    std::size_t n() const { return n_; }
    std::size_t h() const { return h_; }
    std::size_t w() const { return w_; }
    std::size_t dim() const { return d_; }
    bool half() const { return half_; }
    std::size_t memory_bytes() const {
        return f32_.size() * 4 + xnorm_.size() * 4 + r32_.size() * 4 + r16_.size() * 2;
    }

private:
    // Row `img` of cell `cell` into dst (d values); tmp: d floats of scratch.
    void gather(const Kernels& K, std::size_t cell, std::size_t img, float* tmp, double* dst) const;

    std::size_t n_, h_, w_, d_, npanels_;
    bool half_;  // the bank was given as float16 (reported; stored widened)
    avector<float> f32_;          // [cells][npanels][d][kNR]
    avector<float> xnorm_;        // [cells][npanels * kNR], +inf in padding columns
    std::vector<float> r32_;          // [cells][n][d] row-major copy (the gather), float32 banks
    std::vector<std::uint16_t> r16_;  // the same as given, float16 banks
};

}  // namespace npad
