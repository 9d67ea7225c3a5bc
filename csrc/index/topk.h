// The running k best of one query during a blocked scan (FlatIndex, LocalGaussianBank).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../kernels/fp16.h"

namespace npad {

// The scan's running k best of one query, as 64-bit keys (distance bits << 32 | bank index):
// distances are finite and >= +0 (the tiles clamp with max(0, .) and never return -0), so
// their bit patterns order as unsigned integers do and the keys order exactly by (distance,
// index). Unused slots hold kEmptyKey (+inf, index 0xFFFFFFFF), above every real key, so the
// threshold is the distance of slot k - 1 (+inf until k entries exist).
constexpr std::uint64_t kEmptyKey = (std::uint64_t{0x7F800000u} << 32) | 0xFFFFFFFFu;

inline std::uint64_t topk_key(float d, std::size_t col) {
    return (std::uint64_t{fp32_to_bits(d)} << 32) | static_cast<std::uint64_t>(col);
}
inline float key_distance(std::uint64_t key) { return fp32_from_bits(static_cast<std::uint32_t>(key >> 32)); }
inline std::int64_t key_index(std::uint64_t key) { return static_cast<std::int64_t>(key & 0xFFFFFFFFu); }

// Inserts x into the sorted v[0..k-1], dropping the largest; a key above v[k - 1] changes
// nothing. Branch-free: slot t becomes max(v[t - 1], min(v[t], x)), which is v[t - 1] where x
// goes below it, x where it lands, v[t] above (two cmovs per slot). The binary search and
// shift it replaces mispredicted on most of the ~70 insertions per query of a k' = 8 scan
// (profiled: ~100 cycles each, 2 ms of a 19 ms search at 1024 x 19,000 x 152). Returns the
// new threshold.
inline float topk_insert(std::uint64_t* v, std::size_t k, std::uint64_t x) {
    for (std::size_t t = k - 1; t > 0; --t) v[t] = std::max(v[t - 1], std::min(v[t], x));
    v[0] = std::min(v[0], x);
    return key_distance(v[k - 1]);
}


}  // namespace npad
