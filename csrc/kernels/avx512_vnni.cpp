// AVX512-VNNI: the int8 compact tile with VPDPBUSD (64 multiply-adds per instruction, 4x the
// float32 FMA). Only this file is compiled with -mavx512vnni (CMakeLists.txt); nothing here
// runs unless cpu_features().avx512_vnni is true. The rest of the table is avx512's.
#include "kernels.h"

#if defined(NPAD_HAVE_AVX512_VNNI)
#include <immintrin.h>

#include "avx512_epilogue.h"
#include "avx512_i8_step.h"

namespace npad {
namespace {

// acc += the four u8 x s8 products of each lane (VPDPBUSD). As inline assembly with the
// accumulator tied: with _mm512_dpbusd_epi32 GCC 12 copied every accumulator through a spare
// register and the stack each iteration (the tile ran 2.4x slower than the bf16 one).
inline void dpbusd(__m512i& acc, __m512i a, __m512i b) {
#if defined(__GNUC__) || defined(__clang__)
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
#else
    acc = _mm512_dpbusd_epi32(acc, a, b);
#endif
}

void tile_i8(const std::uint32_t* qp, const std::uint32_t* xp, std::size_t d4, const float* qs,
             const float* xs, const std::int32_t* xsum, const float* qn, const float* xn, const float* thr,
             float* out, std::uint32_t* mask) {
    // kMR = 12 rows of two accumulators, named one by one: an array of them (as in the
    // float32 tile) was kept on the stack by GCC 12 here, loaded and stored every step.
    static_assert(kMR == 12, "the unrolled rows below assume kMR == 12");
    __m512i c0_0 = _mm512_setzero_si512(), c0_1 = _mm512_setzero_si512();
    __m512i c1_0 = _mm512_setzero_si512(), c1_1 = _mm512_setzero_si512();
    __m512i c2_0 = _mm512_setzero_si512(), c2_1 = _mm512_setzero_si512();
    __m512i c3_0 = _mm512_setzero_si512(), c3_1 = _mm512_setzero_si512();
    __m512i c4_0 = _mm512_setzero_si512(), c4_1 = _mm512_setzero_si512();
    __m512i c5_0 = _mm512_setzero_si512(), c5_1 = _mm512_setzero_si512();
    __m512i c6_0 = _mm512_setzero_si512(), c6_1 = _mm512_setzero_si512();
    __m512i c7_0 = _mm512_setzero_si512(), c7_1 = _mm512_setzero_si512();
    __m512i c8_0 = _mm512_setzero_si512(), c8_1 = _mm512_setzero_si512();
    __m512i c9_0 = _mm512_setzero_si512(), c9_1 = _mm512_setzero_si512();
    __m512i c10_0 = _mm512_setzero_si512(), c10_1 = _mm512_setzero_si512();
    __m512i c11_0 = _mm512_setzero_si512(), c11_1 = _mm512_setzero_si512();
    const std::uint32_t* q = qp;
    const std::uint32_t* x = xp;
    for (std::size_t r = 0; r < d4; ++r, q += kMR, x += kNR) {
        _mm_prefetch(reinterpret_cast<const char*>(x + 8 * kNR), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(x + 8 * kNR + 16), _MM_HINT_T0);
        const __m512i b0 = _mm512_load_si512(x), b1 = _mm512_load_si512(x + 16);
        __m512i a;  // four uint8 of query i, broadcast
        a = _mm512_set1_epi32(static_cast<int>(q[0]));
        dpbusd(c0_0, a, b0);
        dpbusd(c0_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[1]));
        dpbusd(c1_0, a, b0);
        dpbusd(c1_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[2]));
        dpbusd(c2_0, a, b0);
        dpbusd(c2_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[3]));
        dpbusd(c3_0, a, b0);
        dpbusd(c3_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[4]));
        dpbusd(c4_0, a, b0);
        dpbusd(c4_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[5]));
        dpbusd(c5_0, a, b0);
        dpbusd(c5_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[6]));
        dpbusd(c6_0, a, b0);
        dpbusd(c6_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[7]));
        dpbusd(c7_0, a, b0);
        dpbusd(c7_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[8]));
        dpbusd(c8_0, a, b0);
        dpbusd(c8_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[9]));
        dpbusd(c9_0, a, b0);
        dpbusd(c9_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[10]));
        dpbusd(c10_0, a, b0);
        dpbusd(c10_1, a, b1);
        a = _mm512_set1_epi32(static_cast<int>(q[11]));
        dpbusd(c11_0, a, b0);
        dpbusd(c11_1, a, b1);
    }
    __m512i c[kMR][2];
    c[0][0] = c0_0;
    c[0][1] = c0_1;
    c[1][0] = c1_0;
    c[1][1] = c1_1;
    c[2][0] = c2_0;
    c[2][1] = c2_1;
    c[3][0] = c3_0;
    c[3][1] = c3_1;
    c[4][0] = c4_0;
    c[4][1] = c4_1;
    c[5][0] = c5_0;
    c[5][1] = c5_1;
    c[6][0] = c6_0;
    c[6][1] = c6_1;
    c[7][0] = c7_0;
    c[7][1] = c7_1;
    c[8][0] = c8_0;
    c[8][1] = c8_1;
    c[9][0] = c9_0;
    c[9][1] = c9_1;
    c[10][0] = c10_0;
    c[10][1] = c10_1;
    c[11][0] = c11_0;
    c[11][1] = c11_1;
    // dot = float(acc - 128 * xsum) * (qs * xs), then the shared epilogue.
    const __m512i s0 = _mm512_slli_epi32(_mm512_loadu_si512(xsum), 7);
    const __m512i s1 = _mm512_slli_epi32(_mm512_loadu_si512(xsum + 16), 7);
    const __m512 xs0 = _mm512_loadu_ps(xs), xs1 = _mm512_loadu_ps(xs + 16);
    __m512 dot[kMR][2];
    for (int i = 0; i < kMR; ++i) {
        const __m512 qi = _mm512_set1_ps(qs[i]);
        dot[i][0] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[i][0], s0)), _mm512_mul_ps(qi, xs0));
        dot[i][1] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[i][1], s1)), _mm512_mul_ps(qi, xs1));
    }
    epilogue_avx512(dot, qn, xn, thr, out, mask);
}

// int8 coreset distances (kernels.h) with VPDPBUSD: the block's 16 rows are the lanes, the
// biased row bytes the unsigned operand and the query word (four int8 codes, broadcast) the
// signed one, so each lane accumulates x.q + 128 sum(q) exactly, 64 products per instruction.
// Four accumulators (integer sums: any order is exact) hide the instruction's latency.
void l2_i8_blocks(const std::uint32_t* x, const std::int32_t* xn, std::size_t nblocks, const std::uint32_t* q,
                  std::int32_t qn, std::int32_t qsum, std::size_t d4, float* out) {
    // Wrapping 32-bit arithmetic: D itself is < 2^31, so the wrapped intermediates cancel.
    const __m512i k = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(qn) +
                                                         256u * static_cast<std::uint32_t>(qsum)));
    for (std::size_t b = 0; b < nblocks; ++b) {
        const std::uint32_t* blk = x + b * d4 * kI8Block;
        __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
        __m512i a2 = _mm512_setzero_si512(), a3 = _mm512_setzero_si512();
        std::size_t r = 0;
        for (; r + 4 <= d4; r += 4) {
            const std::uint32_t* w = blk + r * kI8Block;
            dpbusd(a0, _mm512_loadu_si512(w), _mm512_set1_epi32(static_cast<int>(q[r])));
            dpbusd(a1, _mm512_loadu_si512(w + kI8Block), _mm512_set1_epi32(static_cast<int>(q[r + 1])));
            dpbusd(a2, _mm512_loadu_si512(w + 2 * kI8Block), _mm512_set1_epi32(static_cast<int>(q[r + 2])));
            dpbusd(a3, _mm512_loadu_si512(w + 3 * kI8Block), _mm512_set1_epi32(static_cast<int>(q[r + 3])));
        }
        for (; r < d4; ++r)
            dpbusd(a0, _mm512_loadu_si512(blk + r * kI8Block), _mm512_set1_epi32(static_cast<int>(q[r])));
        const __m512i acc = _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3));
        const __m512i dd = _mm512_sub_epi32(_mm512_add_epi32(_mm512_loadu_si512(xn + b * kI8Block), k),
                                            _mm512_slli_epi32(acc, 1));
        _mm512_storeu_ps(out + b * kI8Block, _mm512_sqrt_ps(_mm512_cvtepi32_ps(dd)));
    }
}

std::int64_t greedy_step_i8(const std::uint32_t* x, const std::int32_t* xn, std::size_t nblocks,
                            const std::uint32_t* q, std::int32_t qn, std::int32_t qsum, std::size_t d4, float* score,
                            std::int32_t* center, const float* dcs, float margin, std::int32_t step, float* best_v,
                            std::int64_t* best_i) {
    return greedy_step_i8_avx512(l2_i8_blocks, x, xn, nblocks, q, qn, qsum, d4, score, center, dcs, margin, step,
                                 best_v, best_i);
}

}  // namespace

const Kernels* avx512_vnni_kernels() {
    const Kernels* base = avx512_kernels();
    if (base == nullptr) return nullptr;
    static const Kernels table = [base] {
        Kernels t = *base;
        t.name = "avx512_vnni";
        t.isa = Isa::Avx512Vnni;
        t.tile_i8 = tile_i8;
        t.l2_i8_blocks = l2_i8_blocks;
        t.greedy_step_i8 = greedy_step_i8;
        return t;
    }();
    return &table;
}

}  // namespace npad

#else
namespace npad {
const Kernels* avx512_vnni_kernels() { return nullptr; }
}  // namespace npad
#endif
