// NEON (AArch64) kernels. Compiled only on AArch64, where NEON is part of the base ISA, so no
// flags and no runtime check are needed. Not exercised by the x86 CI: the kernel tests run it
// against the scalar oracle wherever it is available.
#include "kernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#include "fp16.h"

namespace npad {
namespace {

float l2sq_f32(const float* a, const float* b, std::size_t d) {
    float32x4_t s = vdupq_n_f32(0.f);
    std::size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        const float32x4_t t = vsubq_f32(vld1q_f32(a + i), vld1q_f32(b + i));
        s = vfmaq_f32(s, t, t);
    }
    float r = vaddvq_f32(s);
    for (; i < d; ++i) r += (a[i] - b[i]) * (a[i] - b[i]);
    return r;
}

float ip_f32(const float* a, const float* b, std::size_t d) {
    float32x4_t s = vdupq_n_f32(0.f);
    std::size_t i = 0;
    for (; i + 4 <= d; i += 4) s = vfmaq_f32(s, vld1q_f32(a + i), vld1q_f32(b + i));
    float r = vaddvq_f32(s);
    for (; i < d; ++i) r += a[i] * b[i];
    return r;
}

inline float32x4_t load_f16(const std::uint16_t* x) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x)));
}

void l2sq_f32_rows(const float* x, std::size_t n, std::size_t d, const float* q, float* out) {
    for (std::size_t i = 0; i < n; ++i) out[i] = l2sq_f32(x + i * d, q, d);
}

float l2sq_f16(const float* q, const std::uint16_t* x, std::size_t d) {
    float32x4_t s = vdupq_n_f32(0.f);
    std::size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        const float32x4_t t = vsubq_f32(vld1q_f32(q + i), load_f16(x + i));
        s = vfmaq_f32(s, t, t);
    }
    float r = vaddvq_f32(s);
    for (; i < d; ++i) {
        const float t = q[i] - half_to_float(x[i]);
        r += t * t;
    }
    return r;
}

float ip_f16(const float* q, const std::uint16_t* x, std::size_t d) {
    float32x4_t s = vdupq_n_f32(0.f);
    std::size_t i = 0;
    for (; i + 4 <= d; i += 4) s = vfmaq_f32(s, vld1q_f32(q + i), load_f16(x + i));
    float r = vaddvq_f32(s);
    for (; i < d; ++i) r += q[i] * half_to_float(x[i]);
    return r;
}

float l2sq_i8(const float* q, const std::int8_t* x, float scale, std::size_t d) {
    float r = 0.f;
    for (std::size_t i = 0; i < d; ++i) {
        const float t = q[i] - scale * static_cast<float>(x[i]);
        r += t * t;
    }
    return r;
}

float ip_i8(const float* q, const std::int8_t* x, float scale, std::size_t d) {
    float r = 0.f;
    for (std::size_t i = 0; i < d; ++i) r += q[i] * static_cast<float>(x[i]);
    return r * scale;
}

void f16_to_f32(const std::uint16_t* src, float* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, load_f16(src + i));
    for (; i < n; ++i) dst[i] = half_to_float(src[i]);
}

void f32_to_f16(const float* src, std::uint16_t* dst, std::size_t n) {
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    for (; i < n; ++i) dst[i] = float_to_half(src[i]);
}

void dequant_i8_panel(const std::int8_t* codes, const float* scales, std::size_t d, float* out) {
    for (std::size_t r = 0; r < d; ++r)
        for (int j = 0; j < kNR; ++j)
            out[r * kNR + j] = static_cast<float>(codes[r * kNR + j]) * scales[j];
}

void packed_sqnorms(const float* p, std::size_t d, std::size_t w, float* out) {
    std::size_t l = 0;
    for (; l + 4 <= w; l += 4) {
        float32x4_t acc = vdupq_n_f32(0.f);
        for (std::size_t r = 0; r < d; ++r) {
            const float32x4_t v = vld1q_f32(p + r * w + l);
            acc = vfmaq_f32(acc, v, v);
        }
        vst1q_f32(out + l, acc);
    }
    for (; l < w; ++l) {
        float acc = 0.f;
        for (std::size_t r = 0; r < d; ++r) acc = vfmas_f32(acc, p[r * w + l], p[r * w + l]);
        out[l] = acc;
    }
}

// 4 x 16 sub-tile, 16 q-register accumulators; the 12 x 32 tile is six of them.
void subtile(const float* qp, const float* xp, std::size_t d, float* out) {
    float32x4_t c[4][4];
    for (int i = 0; i < 4; ++i)
        for (int k = 0; k < 4; ++k) c[i][k] = vdupq_n_f32(0.f);
    for (std::size_t r = 0; r < d; ++r) {
        const float* x = xp + r * kNR;
        const float32x4_t b0 = vld1q_f32(x), b1 = vld1q_f32(x + 4), b2 = vld1q_f32(x + 8), b3 = vld1q_f32(x + 12);
        const float32x4_t a = vld1q_f32(qp + r * kMR);
        c[0][0] = vfmaq_laneq_f32(c[0][0], b0, a, 0); c[0][1] = vfmaq_laneq_f32(c[0][1], b1, a, 0);
        c[0][2] = vfmaq_laneq_f32(c[0][2], b2, a, 0); c[0][3] = vfmaq_laneq_f32(c[0][3], b3, a, 0);
        c[1][0] = vfmaq_laneq_f32(c[1][0], b0, a, 1); c[1][1] = vfmaq_laneq_f32(c[1][1], b1, a, 1);
        c[1][2] = vfmaq_laneq_f32(c[1][2], b2, a, 1); c[1][3] = vfmaq_laneq_f32(c[1][3], b3, a, 1);
        c[2][0] = vfmaq_laneq_f32(c[2][0], b0, a, 2); c[2][1] = vfmaq_laneq_f32(c[2][1], b1, a, 2);
        c[2][2] = vfmaq_laneq_f32(c[2][2], b2, a, 2); c[2][3] = vfmaq_laneq_f32(c[2][3], b3, a, 2);
        c[3][0] = vfmaq_laneq_f32(c[3][0], b0, a, 3); c[3][1] = vfmaq_laneq_f32(c[3][1], b1, a, 3);
        c[3][2] = vfmaq_laneq_f32(c[3][2], b2, a, 3); c[3][3] = vfmaq_laneq_f32(c[3][3], b3, a, 3);
    }
    for (int i = 0; i < 4; ++i)
        for (int k = 0; k < 4; ++k) vst1q_f32(out + i * kNR + 4 * k, c[i][k]);
}

void tile(const float* qp, const float* xp, std::size_t d, const float* qn, const float* xn,
          const float* thr, float* out, std::uint32_t* mask) {
    for (int r0 = 0; r0 < kMR; r0 += 4)
        for (int c0 = 0; c0 < kNR; c0 += 16) subtile(qp + r0, xp + c0, d, out + r0 * kNR + c0);
    if (qn == nullptr) return;
    for (int i = 0; i < kMR; ++i) {
        std::uint32_t m = 0;
        for (int j = 0; j < kNR; ++j) {
            float v = vfmas_f32(qn[i] + xn[j], -2.f, out[i * kNR + j]);
            v = v > 0.f ? v : 0.f;
            out[i * kNR + j] = v;
            if (v <= thr[i]) m |= 1u << j;
        }
        mask[i] = m;
    }
}

const Kernels kNeon = {
    "neon",         Isa::Neon, l2sq_f32,         ip_f32, l2sq_f32_rows,         l2sq_f16, ip_f16,
    l2sq_i8,        ip_i8,     f16_to_f32,       f32_to_f16,     dequant_i8_panel,
    packed_sqnorms, tile,
};

}  // namespace

const Kernels* neon_kernels() { return &kNeon; }

}  // namespace npad

#else
namespace npad {
const Kernels* neon_kernels() { return nullptr; }
}  // namespace npad
#endif
