// Greedy k-center ("coreset") selection as in PatchCore's ApproximateGreedyCoresetSampler.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../common/parallel.h"

namespace npad {

// How the (projected) rows are held during the selection. Float16: each value of Y is rounded
// once to IEEE half (nearest even) and every distance is then computed in float32 from the
// rounded values, i.e. exactly the algorithm below run on Y' = float32(float16(Y)). Halves the
// memory streamed per greedy step, which is what bounds its speed.
//
// Int8: Y quantised once with one symmetric scale, codes = clamp(rint(y * (127 / m)), -127, 127)
// with m = max |Y| (rint: half to even; all codes 0 if m == 0), and every distance is
// sqrt(float32(D)) with D = |code_i - code_j|^2 computed exactly in integers (Kernels::
// l2_i8_blocks): the algorithm below run on the integer codes (the dequantised rows
// scale * codes, scale = m / 127, up to that common factor). 1 byte per value, a quarter of
// float32. Needs pd <= 4 * kI8MaxD4 (InvalidInput otherwise).
enum class CoresetStorage { Float32, Float16, Int8 };

// The subspace bound (subspace_bound.h) of the float storages: a second exact pruning that
// never changes the selection, only the work. Auto: on when n_select >= 1024 and
// 32 <= pd <= 4096 (its setup, ~10 ms for 40k x 128 rows, is not repaid by short runs); On: on
// whenever 32 <= pd <= 4096 (tests); Off. Int8 storage has none.
enum class SubspaceBoundMode { Auto, On, Off };

// What a greedy_coreset call did (filled when a pointer is passed).
struct CoresetInfo {
    CoresetStorage storage = CoresetStorage::Float32;  // used: Float16 falls back to Float32
                                                       // when a value of Y is beyond +-65504
    const char* isa = "";                              // the kernel set that ran
    float int8_scale = 0.f;                            // Int8: m / 127 (0 otherwise)
    // rows_computed[s]: rows whose distance to the row selected at step s was computed
    // (the others were skipped by the triangle or the subspace bound, or already selected); 0 at
    // the last step.
    std::vector<std::int64_t> rows_computed;
    std::size_t bound_dims = 0;  // coordinates per row of the subspace bound (0: not used)
};

// features: (n, d) row-major float32, finite, each row's squared norm at most FLT_MAX / 4
// (and so Y's rows: beyond it distances overflow to inf; InvalidInput otherwise). Writes
// n_select distinct indices to out.
//
// 1. If proj_dim > 0: Y = features @ P with P = projection_matrix(d, proj_dim, seed)
//    (float32, accumulated in float32); otherwise Y = features.
// 2. S = start_indices(n, min(n_starts, n), seed); score[i] = (sum over s in S, in order, of
//    sqrt(|Y_i - Y_s|^2)) / |S|, summed in float32.
// 3. Repeat n_select times: sel = argmax(score), ties to the lowest index; emit sel;
//    score[sel] = -inf (so that it is never chosen again, even among exact duplicates);
//    score[i] = min(score[i], sqrt(|Y_i - Y_sel|^2)) for all i.
// Memory beyond the input: Y (n x proj_dim floats, when projecting; then n x pd halves with
// Float16 storage, the float32 copy being freed first; with Int8, n x pd bytes (rows padded to
// 16, dims to 4) plus 4 bytes per row, the float32 copy freed after quantising) and O(n) scores;
// with the subspace bound, 16 floats per row and per selected row more.
// threads >= 1; ctl.poll(done, total) is called from the calling thread now and then.
// Every distance is computed by the direct kernels l2sq_f32 / l2sq_f16 (one pair or many), whose rounding is the
// same on every instruction set (kernels.h), or with Int8 exactly in integers (l2_i8_blocks,
// greedy_step_i8), and the projection by the tile kernel (also bit-identical): same inputs and
// seed, same indices on any ISA and thread count.
void greedy_coreset(const float* features, std::size_t n, std::size_t d, std::size_t n_select,
                    std::size_t proj_dim, std::size_t n_starts, std::uint64_t seed, int threads,
                    Control& ctl, std::int64_t* out, CoresetStorage storage = CoresetStorage::Float32,
                    CoresetInfo* info = nullptr, SubspaceBoundMode bound = SubspaceBoundMode::Auto);

// Y = X @ P for X (n, d) and P (d, pd), float32, using the GEMM tile kernel; checks X finite.
// With ctl, polls it (reporting (0, report_total)) and stops early, leaving y partly
// written, once ctl->stopped(); the caller checks.
void project(const float* x, std::size_t n, std::size_t d, const float* p, std::size_t pd,
             int threads, float* y, Control* ctl = nullptr, std::size_t report_total = 0);

}  // namespace npad
