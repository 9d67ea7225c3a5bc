// The scalar kernels: plain loops, the oracle the SIMD kernels are tested against.
// Compiled without any instruction-set flag; std::fma gives the same single rounding as the
// hardware FMA the SIMD tile kernels use.
#include <cmath>

#include "fp16.h"
#include "kernels.h"

namespace npad {
namespace {

float l2sq_f32(const float* a, const float* b, std::size_t d) {
    float s = 0.f;
    for (std::size_t i = 0; i < d; ++i) {
        const float t = a[i] - b[i];
        s += t * t;
    }
    return s;
}

float ip_f32(const float* a, const float* b, std::size_t d) {
    float s = 0.f;
    for (std::size_t i = 0; i < d; ++i) s += a[i] * b[i];
    return s;
}

void l2sq_f32_rows(const float* x, std::size_t n, std::size_t d, const float* q, float* out) {
    for (std::size_t i = 0; i < n; ++i) out[i] = l2sq_f32(x + i * d, q, d);
}

float l2sq_f16(const float* q, const std::uint16_t* x, std::size_t d) {
    float s = 0.f;
    for (std::size_t i = 0; i < d; ++i) {
        const float t = q[i] - half_to_float(x[i]);
        s += t * t;
    }
    return s;
}

float ip_f16(const float* q, const std::uint16_t* x, std::size_t d) {
    float s = 0.f;
    for (std::size_t i = 0; i < d; ++i) s += q[i] * half_to_float(x[i]);
    return s;
}

float l2sq_i8(const float* q, const std::int8_t* x, float scale, std::size_t d) {
    float s = 0.f;
    for (std::size_t i = 0; i < d; ++i) {
        const float t = q[i] - scale * static_cast<float>(x[i]);
        s += t * t;
    }
    return s;
}

float ip_i8(const float* q, const std::int8_t* x, float scale, std::size_t d) {
    float s = 0.f;
    for (std::size_t i = 0; i < d; ++i) s += q[i] * static_cast<float>(x[i]);
    return s * scale;
}

void f16_to_f32(const std::uint16_t* src, float* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
}

void f32_to_f16(const float* src, std::uint16_t* dst, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = float_to_half(src[i]);
}

void dequant_i8_panel(const std::int8_t* codes, const float* scales, std::size_t d, float* out) {
    for (std::size_t r = 0; r < d; ++r)
        for (int j = 0; j < kNR; ++j)
            out[r * kNR + j] = static_cast<float>(codes[r * kNR + j]) * scales[j];
}

void packed_sqnorms(const float* p, std::size_t d, std::size_t w, float* out) {
    for (std::size_t l = 0; l < w; ++l) {
        float acc = 0.f;
        for (std::size_t r = 0; r < d; ++r) acc = std::fma(p[r * w + l], p[r * w + l], acc);
        out[l] = acc;
    }
}

void tile(const float* qp, const float* xp, std::size_t d, const float* qn, const float* xn,
          const float* thr, float* out, std::uint32_t* mask) {
    float acc[kMR][kNR] = {};
    for (std::size_t r = 0; r < d; ++r) {
        const float* q = qp + r * kMR;
        const float* x = xp + r * kNR;
        for (int i = 0; i < kMR; ++i)
            for (int j = 0; j < kNR; ++j) acc[i][j] = std::fma(q[i], x[j], acc[i][j]);
    }
    if (qn == nullptr) {
        for (int i = 0; i < kMR; ++i)
            for (int j = 0; j < kNR; ++j) out[i * kNR + j] = acc[i][j];
        return;
    }
    for (int i = 0; i < kMR; ++i) {
        std::uint32_t m = 0;
        for (int j = 0; j < kNR; ++j) {
            float v = std::fma(-2.f, acc[i][j], qn[i] + xn[j]);
            v = v > 0.f ? v : 0.f;  // also maps NaN to 0, like max_ps(v, 0)
            out[i * kNR + j] = v;
            if (v <= thr[i]) m |= 1u << j;
        }
        mask[i] = m;
    }
}

const Kernels kScalar = {
    "scalar",       Isa::Scalar, l2sq_f32,         ip_f32, l2sq_f32_rows,         l2sq_f16, ip_f16,
    l2sq_i8,        ip_i8,       f16_to_f32,       f32_to_f16,     dequant_i8_panel,
    packed_sqnorms, tile,
};

}  // namespace

const Kernels& scalar_kernels() { return kScalar; }

}  // namespace npad
