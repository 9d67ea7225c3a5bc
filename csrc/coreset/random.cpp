#include "random.h"

#include <cmath>
#include <algorithm>
#include <numeric>

namespace npad {

std::uint64_t SplitMix64::below(std::uint64_t m) {
    // 64 x 64 -> high 64 bits, without relying on a 128-bit integer type.
    const std::uint64_t x = next();
    const std::uint64_t xl = x & 0xFFFFFFFFull, xh = x >> 32;
    const std::uint64_t ml = m & 0xFFFFFFFFull, mh = m >> 32;
    const std::uint64_t ll = xl * ml, lh = xl * mh, hl = xh * ml, hh = xh * mh;
    const std::uint64_t mid = (ll >> 32) + (lh & 0xFFFFFFFFull) + (hl & 0xFFFFFFFFull);
    return hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
}

std::vector<float> projection_matrix(std::size_t dim, std::size_t proj_dim, std::uint64_t seed) {
    SplitMix64 rng(seed ^ kProjectionStream);
    const std::size_t n = dim * proj_dim;
    std::vector<float> out(n);
    const double scale = 1.0 / std::sqrt(static_cast<double>(proj_dim));
    const double two_pi = 6.283185307179586476925286766559;
    for (std::size_t i = 0; i < n; i += 2) {
        const double u1 = static_cast<double>((rng.next() >> 11) + 1) * 0x1.0p-53;
        const double u2 = static_cast<double>(rng.next() >> 11) * 0x1.0p-53;
        const double r = std::sqrt(-2.0 * std::log(u1));
        out[i] = static_cast<float>(r * std::cos(two_pi * u2) * scale);
        if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(two_pi * u2) * scale);
    }
    return out;
}

std::vector<std::int64_t> start_indices(std::size_t n, std::size_t n_starts, std::uint64_t seed) {
    SplitMix64 rng(seed ^ kStartStream);
    std::vector<std::int64_t> a(n);
    std::iota(a.begin(), a.end(), std::int64_t{0});
    for (std::size_t i = 0; i < n_starts && i < n; ++i) {
        const std::size_t j = i + static_cast<std::size_t>(rng.below(n - i));
        std::swap(a[i], a[j]);
    }
    a.resize(std::min(n, n_starts));
    return a;
}

}  // namespace npad
