// Portable IEEE half <-> single conversions (round to nearest even, subnormals, inf, NaN),
// after Marat Dukhan's FP16 library. They match F16C's vcvtps2ph(imm=0) / vcvtph2ps bit for
// bit, which the kernel tests check. Needs plain IEEE float arithmetic (no fast-math).
//
// Internal linkage on purpose (anonymous namespace): this header is included by files built
// with different instruction-set flags (scalar.cpp, avx2.cpp, avx512.cpp). With external
// linkage the inline functions were weak symbols in each object, and the linker could keep
// the AVX2 copy for callers in scalar.cpp, which must run on any x86-64 (tested:
// test_isa_objects_export_only_their_table).
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>

namespace npad {
namespace {

inline float fp32_from_bits(std::uint32_t w) {
    float f;
    std::memcpy(&f, &w, sizeof f);
    return f;
}
inline std::uint32_t fp32_to_bits(float f) {
    std::uint32_t w;
    std::memcpy(&w, &f, sizeof w);
    return w;
}

inline float half_to_float(std::uint16_t h) {
    const std::uint32_t w = static_cast<std::uint32_t>(h) << 16;
    const std::uint32_t sign = w & 0x80000000u;
    const std::uint32_t two_w = w + w;
    const std::uint32_t exp_offset = 0xE0u << 23;
    const float normalized = fp32_from_bits((two_w >> 4) + exp_offset) * 0x1.0p-112f;
    const float denormalized = fp32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
    const std::uint32_t cutoff = 1u << 27;
    const std::uint32_t result =
        sign | (two_w < cutoff ? fp32_to_bits(denormalized) : fp32_to_bits(normalized));
    return fp32_from_bits(result);
}

inline std::uint16_t float_to_half(float f) {
    float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const std::uint32_t w = fp32_to_bits(f);
    const std::uint32_t shl1_w = w + w;
    const std::uint32_t sign = w & 0x80000000u;
    std::uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = fp32_from_bits((bias >> 1) + 0x07800000u) + base;
    const std::uint32_t bits = fp32_to_bits(base);
    const std::uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const std::uint32_t mantissa_bits = bits & 0x00000FFFu;
    const std::uint32_t nonsign = exp_bits + mantissa_bits;
    return static_cast<std::uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

}  // namespace
}  // namespace npad
