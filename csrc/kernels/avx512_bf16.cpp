// AVX512-BF16: the bfloat16 compact tile with VDPBF16PS (32 multiply-adds per instruction,
// 2x the float32 FMA). Only this file is compiled with -mavx512bf16 (CMakeLists.txt); nothing
// here runs unless cpu_features() reports both avx512_bf16 and avx512_vnni (every CPU with
// the first has the second). The rest of the table is avx512_vnni's.
#include "kernels.h"

#if defined(NPAD_HAVE_AVX512_BF16)
#include <immintrin.h>

#include "avx512_epilogue.h"

namespace npad {
namespace {

void tile_bf16(const std::uint32_t* qp, const std::uint32_t* xp, std::size_t d2, const float* qn,
               const float* xn, const float* thr, float* out, std::uint32_t* mask) {
    __m512 c[kMR][2];
    for (int i = 0; i < kMR; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
    const std::uint32_t* q = qp;
    const std::uint32_t* x = xp;
    for (std::size_t r = 0; r < d2; ++r, q += kMR, x += kNR) {
        _mm_prefetch(reinterpret_cast<const char*>(x + 8 * kNR), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(x + 8 * kNR + 16), _MM_HINT_T0);
        const __m512bh b0 = (__m512bh)_mm512_load_si512(x);
        const __m512bh b1 = (__m512bh)_mm512_load_si512(x + 16);
        for (int i = 0; i < kMR; ++i) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(q[i]));  // two bf16 of query i
            c[i][0] = _mm512_dpbf16_ps(c[i][0], a, b0);
            c[i][1] = _mm512_dpbf16_ps(c[i][1], a, b1);
        }
    }
    epilogue_avx512(c, qn, xn, thr, out, mask);
}

}  // namespace

const Kernels* avx512_bf16_kernels() {
    const Kernels* base = avx512_vnni_kernels();
    if (base == nullptr) return nullptr;
    static const Kernels table = [base] {
        Kernels t = *base;
        t.name = "avx512_bf16";
        t.isa = Isa::Avx512Bf16;
        t.tile_bf16 = tile_bf16;
        return t;
    }();
    return &table;
}

}  // namespace npad

#else
namespace npad {
const Kernels* avx512_bf16_kernels() { return nullptr; }
}  // namespace npad
#endif
