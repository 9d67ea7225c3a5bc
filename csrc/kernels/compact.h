// Packing of the compact (bfloat16, int8) operands of tile_bf16 / tile_i8 (kernels.h).
// Plain integer code, no instruction-set flags; internal linkage, as fp16.h, so the files
// built with ISA flags that include it define no shared symbol.
#pragma once

#include <cstdint>

#include "fp16.h"

namespace npad {
namespace {

// float32 -> bfloat16, round to nearest even, for finite input. Values below 2^-40 in
// magnitude become a signed zero: then every bfloat16 value is a multiple of 2^-47, every
// product of two a multiple of 2^-94 and so is every partial sum, so no product or sum is
// ever subnormal and the hardware's DAZ / FTZ cannot change a result (kernels.h).
inline std::uint16_t float_to_bf16(float f) {
    std::uint32_t w = fp32_to_bits(f);
    if ((w & 0x7FFFFFFFu) < 0x2B800000u) return static_cast<std::uint16_t>((w >> 16) & 0x8000u);
    w += 0x7FFFu + ((w >> 16) & 1u);
    return static_cast<std::uint16_t>(w >> 16);
}

inline float bf16_to_float(std::uint16_t h) { return fp32_from_bits(static_cast<std::uint32_t>(h) << 16); }

inline float bf16_lo(std::uint32_t w) { return fp32_from_bits(w << 16); }
inline float bf16_hi(std::uint32_t w) { return fp32_from_bits(w & 0xFFFF0000u); }

inline std::uint32_t pack_bf16_pair(float lo, float hi) {
    return static_cast<std::uint32_t>(float_to_bf16(lo)) | (static_cast<std::uint32_t>(float_to_bf16(hi)) << 16);
}

// Four int8 codes (low byte = lowest dimension) as one word, and a query's four codes
// shifted to uint8 (code + 128).
inline std::uint32_t pack_i8_quad(const std::int8_t* c) {
    return static_cast<std::uint32_t>(static_cast<std::uint8_t>(c[0])) |
           (static_cast<std::uint32_t>(static_cast<std::uint8_t>(c[1])) << 8) |
           (static_cast<std::uint32_t>(static_cast<std::uint8_t>(c[2])) << 16) |
           (static_cast<std::uint32_t>(static_cast<std::uint8_t>(c[3])) << 24);
}
inline std::uint32_t pack_u8_quad(const std::int8_t* c) {
    std::uint32_t w = 0;
    for (int t = 0; t < 4; ++t) w |= static_cast<std::uint32_t>(static_cast<int>(c[t]) + 128) << (8 * t);
    return w;
}

}  // namespace
}  // namespace npad
