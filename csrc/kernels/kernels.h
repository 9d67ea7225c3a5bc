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

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Neon = 3, Avx512Vnni = 4, Avx512Bf16 = 5 };

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

    // Compact micro-kernels: the same kMR x kNR tile and epilogue as tile (qn, xn, thr are
    // required), on words that each pack several low-precision values of consecutive dims.
    //
    // bfloat16: qp [d2][kMR], xp [d2][kNR] words; word r holds dimension 2r in its low half
    // and 2r + 1 in its high half (compact.h packs them). Each (query, bank) lane accumulates
    // from +0, for r = 0 .. d2-1: acc = fma(q_hi, x_hi, acc); acc = fma(q_lo, x_lo, acc)
    // -- VDPBF16PS's order. A product of two bfloat16 is exact in float32, so each fma equals
    // the instruction's rounded add; packed values have no subnormals (compact.h), so its
    // DAZ / FTZ never act. Then out = max(0, fma(-2, acc, qn[i] + xn[j])), mask as tile.
    void (*tile_bf16)(const std::uint32_t* qp, const std::uint32_t* xp, std::size_t d2,
                      const float* qn, const float* xn, const float* thr, float* out,
                      std::uint32_t* mask);
    // int8: qp [d4][kMR] words of four uint8 (query code + 128, dims 4r .. 4r+3 from the low
    // byte up), xp [d4][kNR] words of four int8 bank codes. acc = the exact int32 sum of the
    // products (VPDPBUSD); dot = float(acc - 128 * xsum[j]) * (qs[i] * xs[j]) with xsum[j]
    // the sum of bank vector j's codes; out = max(0, fma(-2, dot, qn[i] + xn[j])), mask as
    // tile. Exact integer arithmetic, so every instruction set gives the same bits.
    void (*tile_i8)(const std::uint32_t* qp, const std::uint32_t* xp, std::size_t d4,
                    const float* qs, const float* xs, const std::int32_t* xsum, const float* qn,
                    const float* xn, const float* thr, float* out, std::uint32_t* mask);

    // Exact float32 dots for re-ranking: out[l] = q . x_c, c = cols[l], x_c = rows + c * d
    // (a row-major bank), accumulated sequentially over r with fma from +0 -- bit-identical
    // to tile's dot of the same pair. (Row-major, not the panels: a candidate's d values then
    // sit on d / 16 cache lines instead of d.)
    void (*gather_dots)(const float* q, const float* rows, std::size_t d,
                        const std::int64_t* cols, std::size_t n, float* out);

    // Greedy coreset with int8 storage: Euclidean distances from one int8 query to blocks of
    // kI8Block rows, exact in integers. A block is [d4][kI8Block] words: word (r, j) holds row
    // j's codes of dims 4r .. 4r+3 (low byte first), each stored as the unsigned byte
    // code + 128; codes lie in [-127, 127] and padding dims hold code 0. xn[j] = row j's sum of
    // squared codes. q: d4 words of the query's four int8 codes (same order, padding 0), with
    // qn = sum of its squared codes and qsum = sum of its codes. For the nblocks consecutive
    // blocks at x (and their xn), out[16 b + j] = sqrt(float32(D)), D = sum over dims of
    // (x_jk - q_k)^2 computed exactly as an integer (needs D < 2^31: d4 <= kI8MaxD4), converted
    // to float32 rounding to nearest even, then IEEE sqrt. The scalar oracle sums the squared
    // differences; SIMD kernels use D = xn + qn - 2 x.q (VPDPBUSD on the biased bytes, or
    // 16-bit multiply-adds); exact integers, so every instruction set gives the same bits.
    void (*l2_i8_blocks)(const std::uint32_t* x, const std::int32_t* xn, std::size_t nblocks,
                         const std::uint32_t* q, std::int32_t qn, std::int32_t qsum, std::size_t d4,
                         float* out);
    // One greedy step's score update over the nblocks blocks at x (layout as l2_i8_blocks;
    // nblocks < 2^27), rows r = 0 .. 16 nblocks - 1 with score[r] and center[r]: row r is
    // computed unless score[r] == -inf or (center[r] >= 0 and dcs[center[r]] >= margin *
    // score[r]) (the triangle bound); for a computed row, dd = l2_i8_blocks' distance and if
    // dd < score[r] then score[r] = dd, center[r] = step. Then *best_v = the largest score,
    // *best_i = the lowest row holding it (-inf and -1 if every score is -inf). Returns the
    // number of computed rows. Same values and bits on every instruction set.
    std::int64_t (*greedy_step_i8)(const std::uint32_t* x, const std::int32_t* xn, std::size_t nblocks,
                                   const std::uint32_t* q, std::int32_t qn, std::int32_t qsum,
                                   std::size_t d4, float* score, std::int32_t* center, const float* dcs,
                                   float margin, std::int32_t step, float* best_v, std::int64_t* best_i);

    // Solves g x = rhs for a small symmetric positive definite g (k x k, row-major, both
    // triangles) by Cholesky in float64 (spd_solve.h: right-looking, element-wise updates, so
    // the same bits on every instruction set). Overwrites g's lower triangle with the factor and
    // rhs with x; col: k doubles of scratch. Returns false if a pivot is not positive.
    bool (*spd_solve_f64)(double* g, std::size_t k, double* rhs, double* col);

    // The two passes of the antialiased resize (resize_pass.h, image/resize.h), written once
    // and compiled per instruction set; each output is its own in-order sum of rounded
    // products (no FMA), so the same bits on every instruction set.
    // aa_rows_u8: out[x] = sum_t w[t] * float(src[rows[t] * stride + x]), x < len.
    void (*aa_rows_u8)(const std::uint8_t* src, std::size_t stride, const std::int32_t* rows,
                       const float* w, std::size_t k, std::size_t len, float* out);
    // aa_cols_f32: out[j] = sum_t w[t * len + j] * row[idx[t * len + j]], j < len.
    void (*aa_cols_f32)(const float* row, const std::int32_t* idx, const float* w, std::size_t k,
                        std::size_t len, float* out);

    // z = L v for a d x d lower-triangular L stored by columns (column j = rows j .. d-1, then
    // column j + 1; d(d+1)/2 floats): tri_pass.h, compiled per instruction set; each z_i is its
    // own in-order sum over j of rounded products (no FMA), so the same bits everywhere.
    void (*tri_cols_matvec)(const float* cols, const float* v, std::size_t d, float* z);

    // The scan of a float greedy coreset step (coreset/greedy.cpp), n < 2^31 rows.
    // greedy_need_f32: writes to need, in increasing order, the offsets i of the rows that need
    // a distance to the new center: score[i] != -inf and (center[i] < 0 or !(dcs[center[i]] >=
    // margin * score[i])) (the triangle bound; margin * score rounded to float32); returns
    // their count. argmax_f32: *best_v, *best_i = the largest x[i] above -inf and the lowest i
    // holding it (-inf and -1 if none). Exact comparisons: the same result on every ISA.
    std::size_t (*greedy_need_f32)(const float* score, const std::int32_t* center, const float* dcs,
                                   float margin, std::size_t n, std::int32_t* need);
    void (*argmax_f32)(const float* x, std::size_t n, float* best_v, std::int64_t* best_i);

    // Many pairs against one a: out[j] = l2sq_f32(a, y + r_j * d, d) (l2sq_f16 for float16
    // rows), r_j = rows[j], or j when rows == nullptr, for j < n: the same bits as the one-pair
    // kernel (the greedy coreset's distances). A set may interleave rows and prefetch listed
    // ones; l2_rows.h is the plain loop.
    void (*l2sq_f32_rows)(const float* a, const float* y, std::size_t d, const std::int32_t* rows, std::size_t n,
                          float* out);
    void (*l2sq_f16_rows)(const float* a, const std::uint16_t* y, std::size_t d, const std::int32_t* rows,
                          std::size_t n, float* out);

    // aa_rows_u8 on float32 source rows (resize_pass.h; the anomaly map's vertical pass).
    void (*aa_rows_f32)(const float* src, std::size_t stride, const std::int32_t* rows, const float* w,
                        std::size_t k, std::size_t len, float* out);
};

// Rows per block of l2_i8_blocks, and the largest d4 it accepts: 4 d4 x 254^2 < 2^31.
constexpr std::size_t kI8Block = 16;
constexpr std::size_t kI8MaxD4 = 8192;

const Kernels& scalar_kernels();
const Kernels* avx2_kernels();    // nullptr if not compiled in
const Kernels* avx512_kernels();  // nullptr if not compiled in
const Kernels* neon_kernels();    // nullptr if not compiled in
// The AVX-512 table with the compact tiles native: VPDPBUSD (AVX512-VNNI) for int8, and in
// the second also VDPBF16PS (AVX512-BF16) for bfloat16. nullptr if not compiled in.
const Kernels* avx512_vnni_kernels();
const Kernels* avx512_bf16_kernels();

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
// Forces an instruction set by name ("scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16",
// "neon"); "" or "auto" returns to the automatic choice. Throws InvalidInput if it is not available here.
void set_isa(const std::string& name);
const Kernels& kernels_by_name(const std::string& name);  // throws InvalidInput

}  // namespace npad
