// Exact k-nearest-neighbour search in squared L2, GEMM-shaped and cache-blocked.
//
// d(q, x) = max(0, fma(-2, q.x, |q|^2 + |x|^2)), with |x|^2 precomputed at construction.
// The bank is packed once into panels of kNR vectors laid out [dim][kNR]; queries are packed
// per call into blocks of kMR laid out [dim][kMR]. The micro-kernel computes a kMR x kNR tile
// of distances and a candidate mask against each query's current k-th best, so the M x N
// distance matrix never exists. Compact banks (float16, int8 with a per-vector scale) are
// expanded to float32 panels one L2-sized chunk at a time, per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "../common/aligned.h"
#include "../common/parallel.h"
#include "../kernels/kernels.h"

namespace npad {

enum class Storage { F32, F16, I8 };

Storage storage_from_name(const std::string& name);  // throws InvalidInput
const char* storage_name(Storage s);

// Arithmetic of the scan. F32: the float32 tile on the stored panels. BF16 / I8: a compact
// first pass (tile_bf16 on bfloat16-rounded bank and queries; tile_i8 on int8 codes with a
// per-vector scale, queries quantized the same way per query), whose distances are exact
// for the rounded vectors; optionally followed by an exact float32 re-rank of the compact
// pass's candidates (search's rerank argument), whose distances then equal the F32 path's
// bit for bit for every candidate the compact pass kept.
enum class Compute { F32, BF16, I8 };
Compute compute_from_name(const std::string& name);  // throws InvalidInput
const char* compute_name(Compute c);

// int8 quantization of one vector of d finite values x[r * stride]: scale = max|x| / 127,
// codes[r * code_stride] = clamp(round_nearest(x / scale), -127, 127). FlatIndex packs its
// int8 banks with exactly this.
void quantize_i8(const float* x, std::size_t d, std::size_t stride, std::int8_t* codes,
                 std::size_t code_stride, float* scale);

class FlatIndex {
public:
    // bank: (n, d) row-major float32, all finite, n < 2^32 (throws InvalidInput otherwise). Copied into
    // the packed storage; the caller's array is not referenced afterwards.
    // A compact compute (BF16, I8) needs Storage::F32 (the re-rank reads the float32 panels).
    FlatIndex(const float* bank, std::size_t n, std::size_t d, Storage storage,
              Compute compute = Compute::F32);

    // queries: (m, d) row-major float32, finite. Writes (m, k) distances (nearest first, ties
    // to the lower index) and indices. threads >= 1; the calling thread is worker 0 and the
    // only one that calls ctl's poll. rerank (compact computes only; ignored for F32): 0 =
    // the compact pass's own k best and distances; r > 0 = the compact pass keeps
    // max(k, r) candidates (at most ntotal), which are re-ranked with exact float32 distances.
    void search(const float* queries, std::size_t m, std::size_t k, int threads, float* dist,
                std::int64_t* idx, Control& ctl, std::size_t rerank = 0) const;

    std::size_t ntotal() const { return n_; }
    std::size_t dim() const { return d_; }
    Storage storage() const { return storage_; }
    Compute compute() const { return compute_; }
    std::size_t memory_bytes() const;

private:
    std::size_t n_, d_, npanels_;
    Storage storage_;
    avector<float> f32_;          // [npanels][d][kNR]; released after construction for compact computes
    avector<std::uint16_t> f16_;  // same layout, float16 bits
    avector<std::int8_t> i8_;     // same layout, int8 codes
    avector<float> scales_;       // [npanels * kNR], int8 only
    avector<float> xnorm_;        // [npanels * kNR], +inf in padding columns
    // Compact first pass (Compute::BF16 / I8): words [npanels][dc][kNR], dc = ceil(d / 2)
    // (bf16 pairs) or ceil(d / 4) (int8 quads), zero-padded; the norms of the rounded
    // vectors (+inf padding); for int8 the per-vector scales and code sums.
    Compute compute_ = Compute::F32;
    std::size_t dc_ = 0;
    avector<std::uint32_t> cw_;
    avector<float> cnorm_;
    avector<float> cscale_;
    avector<std::int32_t> cxsum_;
    avector<float> rows_;  // compact computes: the float32 bank row-major (for the re-rank), no panels

    void scan(const float* qpack_f32, const std::uint32_t* qpack_c, const float* qnorm,
              const float* qscale, std::size_t m, std::size_t nblk, std::size_t kk, int threads,
              float* vals_out, std::int64_t* ids_out, Control& ctl) const;
};

}  // namespace npad
