// The scalar kernels: plain loops, the oracle the SIMD kernels are tested against.
// Compiled without any instruction-set flag; std::fma gives the same single rounding as the
// hardware FMA the SIMD tile kernels use.
#include <cmath>
#include <limits>

#include "compact.h"
#include "fp16.h"
#include "greedy_scan.h"
#include "i8_step.h"
#include "kernels.h"
#include "l2_rows.h"
#include "band_pass.h"
#include "resize_pass.h"
#include "spd_solve.h"
#include "tri_pass.h"

namespace npad {
namespace {

// The documented 16-lane order (kernels.h); a SIMD kernel reproduces it bit for bit.
constexpr std::size_t kLanes = 16;

inline float reduce_lanes(float* lane) {
    for (std::size_t h = kLanes / 2; h >= 1; h /= 2)
        for (std::size_t j = 0; j < h; ++j) lane[j] = lane[j] + lane[j + h];
    return lane[0];
}

float l2sq_f32(const float* a, const float* b, std::size_t d) {
    float lane[kLanes] = {};
    for (std::size_t i = 0; i < d; ++i) {
        const float t = a[i] - b[i];
        const float p = t * t;
        lane[i % kLanes] = lane[i % kLanes] + p;
    }
    return reduce_lanes(lane);
}

float l2sq_f16(const float* a, const std::uint16_t* b, std::size_t d) {
    float lane[kLanes] = {};
    for (std::size_t i = 0; i < d; ++i) {
        const float t = a[i] - half_to_float(b[i]);
        const float p = t * t;
        lane[i % kLanes] = lane[i % kLanes] + p;
    }
    return reduce_lanes(lane);
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

// The epilogue of every tile (float32, bfloat16, int8): distances from the dots, clamped at 0
// (which also maps NaN to 0, like max_ps(v, 0)), and the candidate mask.
void epilogue(const float (*dot)[kNR], const float* qn, const float* xn, const float* thr, float* out,
              std::uint32_t* mask) {
    for (int i = 0; i < kMR; ++i) {
        std::uint32_t m = 0;
        for (int j = 0; j < kNR; ++j) {
            float v = std::fma(-2.f, dot[i][j], qn[i] + xn[j]);
            v = v > 0.f ? v : 0.f;
            out[i * kNR + j] = v;
            if (v <= thr[i]) m |= 1u << j;
        }
        mask[i] = m;
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
    epilogue(acc, qn, xn, thr, out, mask);
}

// VDPBF16PS, one lane at a time, in the documented order (high half, then low half).
void tile_bf16(const std::uint32_t* qp, const std::uint32_t* xp, std::size_t d2, const float* qn,
               const float* xn, const float* thr, float* out, std::uint32_t* mask) {
    float acc[kMR][kNR] = {};
    for (std::size_t r = 0; r < d2; ++r) {
        const std::uint32_t* q = qp + r * kMR;
        const std::uint32_t* x = xp + r * kNR;
        for (int i = 0; i < kMR; ++i)
            for (int j = 0; j < kNR; ++j) {
                acc[i][j] = std::fma(bf16_hi(q[i]), bf16_hi(x[j]), acc[i][j]);
                acc[i][j] = std::fma(bf16_lo(q[i]), bf16_lo(x[j]), acc[i][j]);
            }
    }
    epilogue(acc, qn, xn, thr, out, mask);
}

// VPDPBUSD in exact integers, then the documented float epilogue.
void tile_i8(const std::uint32_t* qp, const std::uint32_t* xp, std::size_t d4, const float* qs,
             const float* xs, const std::int32_t* xsum, const float* qn, const float* xn, const float* thr,
             float* out, std::uint32_t* mask) {
    std::int32_t acc[kMR][kNR] = {};
    for (std::size_t r = 0; r < d4; ++r) {
        const std::uint32_t* q = qp + r * kMR;
        const std::uint32_t* x = xp + r * kNR;
        for (int i = 0; i < kMR; ++i)
            for (int j = 0; j < kNR; ++j)
                for (int t = 0; t < 4; ++t)
                    acc[i][j] += static_cast<std::int32_t>((q[i] >> (8 * t)) & 0xFFu) *
                                 static_cast<std::int32_t>(static_cast<std::int8_t>((x[j] >> (8 * t)) & 0xFFu));
    }
    float dot[kMR][kNR];
    for (int i = 0; i < kMR; ++i)
        for (int j = 0; j < kNR; ++j)
            dot[i][j] = static_cast<float>(acc[i][j] - 128 * xsum[j]) * (qs[i] * xs[j]);
    epilogue(dot, qn, xn, thr, out, mask);
}

void gather_dots(const float* q, const float* bank, std::size_t d, const std::int64_t* cols, std::size_t n,
                 float* out) {
    for (std::size_t l = 0; l < n; ++l) {
        const std::size_t c = static_cast<std::size_t>(cols[l]);
        const float* x = bank + c * d;
        float acc = 0.f;
        for (std::size_t r = 0; r < d; ++r) acc = std::fma(q[r], x[r], acc);
        out[l] = acc;
    }
}

// The definition itself: the sum of squared code differences, in int64 (D < 2^31 is the
// caller's contract, so the conversion below is exact), then one rounding to float32.
// xn, qn and qsum are not needed here.
void l2_i8_blocks(const std::uint32_t* x, const std::int32_t*, std::size_t nblocks, const std::uint32_t* q,
                  std::int32_t, std::int32_t, std::size_t d4, float* out) {
    for (std::size_t b = 0; b < nblocks; ++b) {
        const std::uint32_t* blk = x + b * d4 * kI8Block;
        for (std::size_t j = 0; j < kI8Block; ++j) {
            std::int64_t acc = 0;
            for (std::size_t r = 0; r < d4; ++r) {
                const std::uint32_t w = blk[r * kI8Block + j];
                for (int t = 0; t < 4; ++t) {
                    const std::int64_t xc = static_cast<std::int64_t>((w >> (8 * t)) & 0xFFu) - 128;
                    const std::int64_t qc = static_cast<std::int8_t>((q[r] >> (8 * t)) & 0xFFu);
                    acc += (xc - qc) * (xc - qc);
                }
            }
            out[b * kI8Block + j] = std::sqrt(static_cast<float>(static_cast<std::int32_t>(acc)));
        }
    }
}

std::int64_t greedy_step_i8(const std::uint32_t* x, const std::int32_t* xn, std::size_t nblocks,
                            const std::uint32_t* q, std::int32_t qn, std::int32_t qsum, std::size_t d4, float* score,
                            std::int32_t* center, const float* dcs, float margin, std::int32_t step, float* best_v,
                            std::int64_t* best_i) {
    return greedy_step_i8_rows(l2_i8_blocks, x, xn, nblocks, q, qn, qsum, d4, score, center, dcs, margin, step,
                               best_v, best_i);
}

std::size_t greedy_need_f32(const float* score, const std::int32_t* center, const float* dcs, float margin,
                            std::size_t n, std::int32_t* need) {
    return greedy_need_rows(score, center, dcs, margin, 0, n, need, 0);
}

void argmax_f32(const float* x, std::size_t n, float* best_v, std::int64_t* best_i) {
    float bv = -std::numeric_limits<float>::infinity();
    std::int64_t bi = -1;
    argmax_rows(x, 0, n, bv, bi);
    *best_v = bv;
    *best_i = bi;
}

const Kernels kScalar = {
    "scalar",   Isa::Scalar,      l2sq_f32,       l2sq_f16,  f16_to_f32, f32_to_f16,
    dequant_i8_panel, packed_sqnorms, tile, tile_bf16, tile_i8, gather_dots, l2_i8_blocks,
    greedy_step_i8,
    spd_solve_f64,
    aa_rows_u8,
    aa_cols_f32,
    tri_cols_matvec,
    greedy_need_f32,
    argmax_f32,
    l2sq_rows_loop<float, l2sq_f32>,
    l2sq_rows_loop<std::uint16_t, l2sq_f16>,
    aa_rows_f32,
};

}  // namespace

const Kernels& scalar_kernels() { return kScalar; }

}  // namespace npad
