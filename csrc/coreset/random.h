// Platform-independent random numbers for the coreset: SplitMix64, Box-Muller, and a partial
// Fisher-Yates shuffle. Defined bit for bit here (no std:: distributions, whose output
// differs between standard libraries) so that a numpy reference can reproduce them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace npad {

class SplitMix64 {
public:
    explicit SplitMix64(std::uint64_t seed) : s_(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // floor(next() * m / 2^64): an integer in [0, m). Slightly biased (< m / 2^64), which is
    // irrelevant here and keeps it trivially reproducible.
    std::uint64_t below(std::uint64_t m);

private:
    std::uint64_t s_;
};

// Stream constants: the projection and the start points use independent streams.
constexpr std::uint64_t kProjectionStream = 0x50524F4A45435431ull;  // "PROJECT1"
constexpr std::uint64_t kStartStream = 0x5354415254533031ull;       // "STARTS01"

// (dim, proj_dim) row-major float32 matrix with entries N(0, 1/proj_dim):
// rng = SplitMix64(seed ^ kProjectionStream); entries are filled in row-major order from
// Box-Muller pairs: u1 = ((next() >> 11) + 1) * 2^-53, u2 = (next() >> 11) * 2^-53,
// r = sqrt(-2 ln u1), z0 = r cos(2 pi u2), z1 = r sin(2 pi u2) (in double), each scaled by
// 1/sqrt(proj_dim) and rounded to float32; a trailing odd entry uses z0 and drops z1.
std::vector<float> projection_matrix(std::size_t dim, std::size_t proj_dim, std::uint64_t seed);

// n_starts distinct indices in [0, n): rng = SplitMix64(seed ^ kStartStream), a = 0..n-1,
// for i < n_starts: j = i + below(n - i), swap(a[i], a[j]); returns a[0:n_starts].
std::vector<std::int64_t> start_indices(std::size_t n, std::size_t n_starts, std::uint64_t seed);

}  // namespace npad
