// Profiling driver for FlatIndex::search without Python (perf needs symbols; the shipped module
// is stripped). Builds the index on PatchCore-like synthetic data (non-negative rank-32 part +
// noise, as tests/benchmarks/test_bench_compact.py, with its own generator) and prints the
// best of `reps` searches. Used for the compact-search profile in docs/search.md:
//
//   S=csrc; F="-O3 -g -std=gnu++17 -ffp-contract=off -fno-math-errno -I$S -DNPAD_HAVE_AVX2 -DNPAD_HAVE_AVX512 -DNPAD_HAVE_AVX512_VNNI -DNPAD_HAVE_AVX512_BF16"
//   A="-mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c"
//   for f in dispatch scalar neon; do g++ $F -c $S/kernels/$f.cpp -o /tmp/p_$f.o; done
//   g++ $F -mavx2 -mfma -mf16c -c $S/kernels/avx2.cpp -o /tmp/p_avx2.o
//   g++ $F $A -c $S/kernels/avx512.cpp -o /tmp/p_avx512.o
//   g++ $F $A -mavx512vnni -c $S/kernels/avx512_vnni.cpp -o /tmp/p_vnni.o
//   g++ $F $A -mavx512vnni -mavx512bf16 -c $S/kernels/avx512_bf16.cpp -o /tmp/p_bf16.o
//   g++ $F -c $S/index/flat_index.cpp -o /tmp/p_flat.o
//   g++ $F -c tools/compact_profile.cpp -o /tmp/p_main.o && g++ /tmp/p_*.o -o /tmp/compact_profile -lpthread
//   /tmp/compact_profile 1024 19000 152 int8 8 7 1        # M N D compute rerank reps threads
//   perf record -e cpu-clock -F 5000 /tmp/compact_profile 1024 19000 152 int8 8 30 1 && perf report
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "index/flat_index.h"

int main(int argc, char** argv) {
    if (argc < 7) {
        std::fprintf(stderr, "usage: %s M N D float32|bfloat16|int8 rerank reps [threads]\n", argv[0]);
        return 2;
    }
    const std::size_t m = std::atoi(argv[1]), n = std::atoi(argv[2]), d = std::atoi(argv[3]);
    const std::size_t rerank = std::atoi(argv[5]);
    const int reps = std::atoi(argv[6]), threads = argc > 7 ? std::atoi(argv[7]) : 1;
    std::mt19937 g(19);
    std::normal_distribution<float> nd;
    std::vector<float> basis(32 * d), x((n + m) * d);
    for (auto& v : basis) v = nd(g);
    for (std::size_t i = 0; i < n + m; ++i) {
        float c[32];
        for (auto& v : c) v = std::fabs(nd(g));
        for (std::size_t r = 0; r < d; ++r) {
            float s = 0;
            for (int t = 0; t < 32; ++t) s += c[t] * basis[t * d + r];
            x[i * d + r] = s + 0.1f * nd(g);
        }
    }
    npad::FlatIndex index(x.data(), n, d, npad::Storage::F32, npad::compute_from_name(argv[4]));
    std::vector<float> dist(m);
    std::vector<std::int64_t> idx(m);
    npad::Control ctl;
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        index.search(x.data() + n * d, m, 1, threads, dist.data(), idx.data(), ctl, rerank);
        best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("%zu x %zu x %zu %s k'=%zu threads=%d: best of %d %.2f ms\n", m, n, d, argv[4], rerank, threads, reps, best);
    return 0;
}
