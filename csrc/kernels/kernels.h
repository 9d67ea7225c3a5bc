// Distance kernels: one table of function pointers per instruction set.
//
// The scalar table is the oracle every other table is tested against, and every kernel here
// returns bit-identical results on every instruction set (tested):
// - the GEMM-shaped tile kernel and the packed-norm kernel accumulate every (query, bank)
//   pair strictly sequentially over the dimension with fused multiply-adds;
// - the direct kernels (one pair at a time, used by the greedy coreset) follow one fixed
//   16-lane order, see l2sq_f32 below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace npad {

// Tile shape of the blocked exact search: kMR queries x kNR bank vectors per micro-kernel call.
// Fixed across instruction sets so that a packed bank is valid whichever kernel later runs.
constexpr int kMR = 12;
constexpr int kNR = 32;

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };

struct Kernels {
    const char* name;
    Isa isa;

    // Direct kernels, one pair at a time: |a - b|^2 in float32, in this order on every
    // instruction set: t_i = a_i - b_i; lane j (0..15) accumulates t_i * t_i (product rounded,
    // then added; no FMA) over i = j mod 16 in increasing i, from +0; then the lanes are added
    // pairwise, lane j += lane j + h for h = 8, 4, 2, 1; the result is lane 0. A 16-wide SIMD
    // accumulator (or two 8-wide, four 4-wide) does this naturally, and so the greedy coreset
    // selects the same rows whichever kernel set runs.
    float (*l2sq_f32)(const float* a, const float* b, std::size_t d);
    // The same with b stored as float16 bits (widened exactly to float32 first).
    float (*l2sq_f16)(const float* a, const std::uint16_t* b, std::size_t d);

    // Conversions (round to nearest even; bit-exact across instruction sets).
    void (*f16_to_f32)(const std::uint16_t* src, float* dst, std::size_t n);
    void (*f32_to_f16)(const float* src, std::uint16_t* dst, std::size_t n);
    // One packed int8 panel (d rows of kNR codes) to float32: out[r][j] = codes[r][j] * scales[j].
    void (*dequant_i8_panel)(const std::int8_t* codes, const float* scales, std::size_t d, float* out);

    // Squared norms of the w lanes of a packed block p[d][w] (w = kMR or kNR), each lane
    // accumulated sequentially over d with fma.
    void (*packed_sqnorms)(const float* p, std::size_t d, std::size_t w, float* out);

    // The micro-kernel. qp: packed queries [d][kMR]; xp: packed bank panel [d][kNR].
    // If qn == nullptr: out[i][j] = q_i . x_j (raw dots; thr and mask unused).
    // Otherwise out[i][j] = max(0, fma(-2, q_i . x_j, qn[i] + xn[j])) and bit j of mask[i]
    // is set where out[i][j] <= thr[i].
    void (*tile)(const float* qp, const float* xp, std::size_t d, const float* qn,
                 const float* xn, const float* thr, float* out, std::uint32_t* mask);
};

const Kernels& scalar_kernels();
const Kernels* avx2_kernels();    // nullptr if not compiled in
const Kernels* avx512_kernels();  // nullptr if not compiled in
const Kernels* neon_kernels();    // nullptr if not compiled in

// CPU capabilities, detected once.
struct CpuFeatures {
    bool avx2_fma_f16c = false;
    bool avx512 = false;  // F, BW, DQ, VL and OS support for the ZMM state
    bool neon = false;
    // Features of the compact (bf16 / int8) kernels, detected and reported; used only where a
    // kernel for them is compiled in. AVX512-BF16: VDPBF16PS; AVX512-VNNI: VPDPBUSD.
    bool avx512_bf16 = false;
    bool avx512_vnni = false;
    // AMX: CPUID says the tile unit exists; *_usable adds that the OS enabled the tile state
    // (XCR0 bits 17-18) and granted this process permission (Linux arch_prctl
    // ARCH_REQ_XCOMP_PERM, requested once at detection).
    bool amx_tile = false;
    bool amx_bf16 = false;
    bool amx_int8 = false;
    bool amx_usable = false;
};
const CpuFeatures& cpu_features();

// Dispatch: the table every call uses, chosen once from the CPU (or NPAD_EDGE_ISA) and
// overridable with set_isa. Calls read the table once at their start, never per distance.
const Kernels& active_kernels();
std::vector<std::string> available_isas();  // best first, "scalar" last
// Forces an instruction set by name ("scalar", "avx2", "avx512", "neon"); "" or "auto"
// returns to the automatic choice. Throws InvalidInput if it is not available here.
void set_isa(const std::string& name);
const Kernels& kernels_by_name(const std::string& name);  // throws InvalidInput

}  // namespace npad
