// NEON (AArch64) kernels. Compiled only on AArch64, where NEON is part of the base ISA, so no
// flags and no runtime check are needed. Not exercised by the x86 CI: the kernel tests run it
// against the scalar oracle wherever it is available.
#include "kernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "fp16.h"
#include "l2_rows.h"

namespace npad {
namespace {

inline float32x4_t load_f16(const std::uint16_t* x) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x)));
}

// The documented 16-lane order (kernels.h): c[k] holds lanes 4k..4k+3; products are rounded
// before the add (no FMA); the tail is zero-padded to 16; then lanes (j, j + 8), (j, j + 4),
// (j, j + 2), (0, 1).
inline void accumulate(const float32x4_t* a, const float32x4_t* b, float32x4_t* c) {
    for (int k = 0; k < 4; ++k) {
        const float32x4_t t = vsubq_f32(a[k], b[k]);
        c[k] = vaddq_f32(c[k], vmulq_f32(t, t));
    }
}

inline float reduce16(const float32x4_t* c) {
    const float32x4_t g = vaddq_f32(vaddq_f32(c[0], c[2]), vaddq_f32(c[1], c[3]));
    const float32x2_t p = vadd_f32(vget_low_f32(g), vget_high_f32(g));
    return vget_lane_f32(p, 0) + vget_lane_f32(p, 1);
}

float l2sq_f32(const float* a, const float* b, std::size_t d) {
    float32x4_t c[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
    float32x4_t va[4], vb[4];
    std::size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        for (int k = 0; k < 4; ++k) va[k] = vld1q_f32(a + i + 4 * k), vb[k] = vld1q_f32(b + i + 4 * k);
        accumulate(va, vb, c);
    }
    if (i < d) {
        float ta[16] = {}, tb[16] = {};
        std::memcpy(ta, a + i, (d - i) * sizeof(float));
        std::memcpy(tb, b + i, (d - i) * sizeof(float));
        for (int k = 0; k < 4; ++k) va[k] = vld1q_f32(ta + 4 * k), vb[k] = vld1q_f32(tb + 4 * k);
        accumulate(va, vb, c);
    }
    return reduce16(c);
}

float l2sq_f16(const float* a, const std::uint16_t* b, std::size_t d) {
    float32x4_t c[4] = {vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f), vdupq_n_f32(0.f)};
    float32x4_t va[4], vb[4];
    std::size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        for (int k = 0; k < 4; ++k) va[k] = vld1q_f32(a + i + 4 * k), vb[k] = load_f16(b + i + 4 * k);
        accumulate(va, vb, c);
    }
    if (i < d) {
        float ta[16] = {};
        std::uint16_t tb[16] = {};
        std::memcpy(ta, a + i, (d - i) * sizeof(float));
        std::memcpy(tb, b + i, (d - i) * sizeof(std::uint16_t));
        for (int k = 0; k < 4; ++k) va[k] = vld1q_f32(ta + 4 * k), vb[k] = load_f16(tb + 4 * k);
        accumulate(va, vb, c);
    }
    return reduce16(c);
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
    // int8 -> int32 -> float32 is exact and the product is rounded once: identical to scalar.
    float32x4_t sc[8];
    for (int k = 0; k < 8; ++k) sc[k] = vld1q_f32(scales + 4 * k);
    for (std::size_t r = 0; r < d; ++r) {
        const std::int8_t* c = codes + r * kNR;
        float* o = out + r * kNR;
        for (int h = 0; h < 2; ++h) {
            const int8x16_t v = vld1q_s8(c + 16 * h);
            const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_s8(vget_high_s8(v));
            const int32x4_t w[4] = {vmovl_s16(vget_low_s16(lo)), vmovl_s16(vget_high_s16(lo)),
                                    vmovl_s16(vget_low_s16(hi)), vmovl_s16(vget_high_s16(hi))};
            for (int k = 0; k < 4; ++k) vst1q_f32(o + 16 * h + 4 * k, vmulq_f32(vcvtq_f32_s32(w[k]), sc[4 * h + k]));
        }
    }
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
        for (std::size_t r = 0; r < d; ++r) acc = std::fma(p[r * w + l], p[r * w + l], acc);
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
            float v = std::fma(-2.f, out[i * kNR + j], qn[i] + xn[j]);
            v = v > 0.f ? v : 0.f;
            out[i * kNR + j] = v;
            if (v <= thr[i]) m |= 1u << j;
        }
        mask[i] = m;
    }
}

const Kernels kNeon = {
    "neon",     Isa::Neon,        l2sq_f32,       l2sq_f16, f16_to_f32,
    f32_to_f16, dequant_i8_panel, packed_sqnorms, tile,
    // Compact tiles and re-rank dots: none native here; dispatch completes them with the
    // scalar oracle's (bit-identical by definition).
    nullptr,    nullptr,          nullptr,
    // l2_i8_blocks .. argmax_f32: the oracle's
    nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
    l2sq_rows_loop<float, l2sq_f32>,
    l2sq_rows_loop<std::uint16_t, l2sq_f16>,
};

}  // namespace

const Kernels* neon_kernels() { return &kNeon; }

}  // namespace npad

#else
namespace npad {
const Kernels* neon_kernels() { return nullptr; }
}  // namespace npad
#endif
