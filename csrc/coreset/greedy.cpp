#include "greedy.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <limits>
#include <string>
#include <vector>

#include "../common/aligned.h"
#include "../common/errors.h"
#include "../kernels/kernels.h"
#include "random.h"

namespace npad {

namespace {

struct alignas(64) Best {
    float v;
    std::int64_t i;
};

// Larger score wins; equal scores go to the lower index.
inline bool better(float v, std::int64_t i, const Best& b) {
    return v > b.v || (v == b.v && i < b.i);
}

}  // namespace

void project(const float* x, std::size_t n, std::size_t d, const float* p, std::size_t pd,
             int threads, float* y, Control* ctl, std::size_t report_total) {
    const Kernels& K = active_kernels();
    // P's columns play the queries (packed once, blocks [d][kMR]) and feature rows the bank
    // (packed per panel of kNR rows): each feature element is transposed once and then used
    // by pd / kMR tiles, which keeps the packing cost small next to the FMAs.
    const std::size_t nqb = (pd + kMR - 1) / kMR;
    avector<float> ppack(nqb * d * kMR, 0.f);
    for (std::size_t r = 0; r < d; ++r)
        for (std::size_t c = 0; c < pd; ++c) ppack[(c / kMR) * d * kMR + r * kMR + c % kMR] = p[r * pd + c];
    const std::size_t npanels = (n + kNR - 1) / kNR;
    std::atomic<std::size_t> next{0};
    const int T = static_cast<int>(std::min<std::size_t>(std::max(1, threads), npanels));
    parallel_run(T, [&](int t) {
        avector<float> xp(d * kNR);
        alignas(64) float out[kMR * kNR];
        for (;;) {
            if (ctl != nullptr && ctl->stopped()) break;
            const std::size_t b = next.fetch_add(1);
            if (b >= npanels) break;
            const std::size_t rows = std::min<std::size_t>(kNR, n - b * kNR);
            if (rows < kNR) std::fill(xp.begin(), xp.end(), 0.f);
            for (std::size_t j = 0; j < rows; ++j) {
                const float* row = x + (b * kNR + j) * d;
                for (std::size_t r = 0; r < d; ++r) {
                    if (!std::isfinite(row[r]))
                        throw InvalidInput("features must be finite; row " + std::to_string(b * kNR + j) +
                                           ", column " + std::to_string(r) + " is " +
                                           (std::isnan(row[r]) ? "NaN" : "inf"));
                    xp[r * kNR + j] = row[r];
                }
            }
            for (std::size_t qb = 0; qb < nqb; ++qb) {
                K.tile(ppack.data() + qb * d * kMR, xp.data(), d, nullptr, nullptr, nullptr, out, nullptr);
                const std::size_t cols = std::min<std::size_t>(kMR, pd - qb * kMR);
                for (std::size_t j = 0; j < rows; ++j) {
                    float* dst = y + (b * kNR + j) * pd + qb * kMR;
                    for (std::size_t i = 0; i < cols; ++i) dst[i] = out[i * kNR + j];
                }
            }
            if (t == 0 && ctl != nullptr) ctl->maybe_poll(0, report_total);
        }
    }, ctl, [&] { return std::make_pair(std::size_t(0), report_total); });
}

namespace {

// Rows of Y as stored: float32, or float16 bits widened to float32 in registers. The query
// (the newly selected row) is always widened once into a float32 buffer, so every distance is
// |q - x|^2 with q, x the exact stored values, computed in float32.
struct F32Rows {
    const float* y;
    std::size_t pd;
    const Kernels* K;
    void load(std::size_t i, float* q) const { std::copy(y + i * pd, y + (i + 1) * pd, q); }
    float l2sq(const float* q, std::size_t i) const { return K->l2sq_f32(y + i * pd, q, pd); }
    using Elem = float;
    void copy_row(std::size_t i, Elem* dst) const { std::copy(y + i * pd, y + (i + 1) * pd, dst); }
    F32Rows with_base(const Elem* b) const { return {b, pd, K}; }
};

struct F16Rows {
    const std::uint16_t* y;
    std::size_t pd;
    const Kernels* K;
    void load(std::size_t i, float* q) const { K->f16_to_f32(y + i * pd, q, pd); }
    float l2sq(const float* q, std::size_t i) const { return K->l2sq_f16(q, y + i * pd, pd); }
    using Elem = std::uint16_t;
    void copy_row(std::size_t i, Elem* dst) const { std::copy(y + i * pd, y + (i + 1) * pd, dst); }
    F16Rows with_base(const Elem* b) const { return {b, pd, K}; }
};

template <class Rows>
void run_greedy(const Rows& Y, std::size_t n, std::size_t pd, std::size_t n_select, std::size_t n_starts,
                std::uint64_t seed, int threads, Control& ctl, std::int64_t* out,
                std::vector<std::int64_t>* rows_computed) {
    const std::vector<std::int64_t> starts = start_indices(n, n_starts, seed);
    std::vector<float> score(n);
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();

    // Each worker owns a contiguous range of points: its scores stay in its cache and only
    // the per-step winner is exchanged, through a double-buffered slot and a barrier.
    //
    // Exact pruning (triangle inequality): every point remembers the selected point (its
    // "center") that gave its current score, score_i = |Y_i - Y_c|. If |Y_c - Y_sel| >=
    // 2 score_i then |Y_i - Y_sel| >= score_i and the min cannot change, so the row of Y is
    // not even read. A relative margin of 1e-4 covers float32 rounding of both distances,
    // so the result is the same as without pruning. Points still holding their initial
    // (mean-distance) score have no center and are always computed.
    int T = static_cast<int>(std::min<std::size_t>(std::max(1, threads), (n + 4095) / 4096));
    T = std::max(T, 1);
    std::vector<Best> slots(2 * T);
    std::atomic<bool> stop_flag[2];
    stop_flag[0] = stop_flag[1] = false;
    std::vector<std::int32_t> center(n, -1);
    std::vector<float> dcs(n_select, 0.f);  // |Y_sel - Y_center(c)| for the centers so far
    // The selected rows, copied in selection order: Phase A then streams them sequentially
    // instead of gathering rows scattered over Y (it is most of a step's time late in a run,
    // when the bound skips ~99% of Phase B's distances).
    avector<typename Rows::Elem> crows(n_select * pd);
    const Rows C = Y.with_base(crows.data());
    SpinBarrier barrier(T);
    constexpr float kMargin = 2.f * (1.f + 1e-4f);
    // Work counter: rows computed in Phase B, per worker and step (summed at the end).
    std::vector<std::int64_t> computed(rows_computed ? T * n_select : 0, 0);

    parallel_run(T, [&](int t) {
        const std::size_t lo = n * t / T, hi = n * (t + 1) / T;
        avector<float> q(pd);
        Best best{kNegInf, std::numeric_limits<std::int64_t>::max()};
        // Initial score: mean distance to the start points, summed in start order.
        std::fill(score.begin() + lo, score.begin() + hi, 0.f);
        for (std::int64_t s : starts) {
            Y.load(static_cast<std::size_t>(s), q.data());
            for (std::size_t i = lo; i < hi; ++i) score[i] += std::sqrt(Y.l2sq(q.data(), i));
        }
        const float ns = static_cast<float>(starts.size());
        for (std::size_t i = lo; i < hi; ++i) {
            const float v = score[i] / ns;
            score[i] = v;
            if (better(v, static_cast<std::int64_t>(i), best)) best = {v, static_cast<std::int64_t>(i)};
        }
        slots[t] = best;
        for (std::size_t s = 0; s < n_select; ++s) {
            const int par = static_cast<int>(s & 1);
            if (t == 0) {
                ctl.maybe_poll(s, n_select);
                stop_flag[par].store(ctl.stopped(), std::memory_order_relaxed);
            }
            barrier.wait();
            if (stop_flag[par].load(std::memory_order_relaxed)) break;
            Best win = slots[par * T];
            for (int u = 1; u < T; ++u) {
                const Best& c = slots[par * T + u];
                if (better(c.v, c.i, win)) win = c;
            }
            // Every worker sees the same slots, so all of them throw at the same step.
            if (win.i < 0 || win.i >= static_cast<std::int64_t>(n))
                throw std::runtime_error("greedy_coreset: no row has a finite score at step " + std::to_string(s) +
                                         " (non-finite distances); this is a bug, please report it");
            const std::size_t sel = static_cast<std::size_t>(win.i);
            if (t == 0) out[s] = win.i;
            if (s + 1 == n_select) break;
            Y.load(sel, q.data());
            if (t == 0) Y.copy_row(sel, crows.data() + s * pd);
            // Phase A: distances from the new point to the earlier centers, split over workers.
            if (s > 0) {
                const std::size_t c0 = s * t / T, c1 = s * (t + 1) / T;
                for (std::size_t c = c0; c < c1; ++c) dcs[c] = std::sqrt(C.l2sq(q.data(), c));
                barrier.wait();
            }
            // Phase B: update the owned scores, skipping points the bound rules out.
            if (sel >= lo && sel < hi) score[sel] = kNegInf;
            best = {kNegInf, std::numeric_limits<std::int64_t>::max()};
            const auto sc = static_cast<std::int32_t>(s);
            std::int64_t ncomp = 0;
            for (std::size_t i = lo; i < hi; ++i) {
                float v = score[i];
                const std::int32_t c = center[i];
                if (v != kNegInf && (c < 0 || !(dcs[c] >= kMargin * v))) {
                    ++ncomp;
                    const float dd = std::sqrt(Y.l2sq(q.data(), i));
                    if (dd < v) {
                        v = dd;
                        score[i] = v;
                        center[i] = sc;
                    }
                }
                if (v > best.v) best = {v, static_cast<std::int64_t>(i)};
            }
            slots[(par ^ 1) * T + t] = best;
            if (!computed.empty()) computed[t * n_select + s] = ncomp;
        }
    });
    if (rows_computed) {
        rows_computed->assign(n_select, 0);
        for (int t = 0; t < T; ++t)
            for (std::size_t s = 0; s < n_select; ++s) (*rows_computed)[s] += computed[t * n_select + s];
    }
}

// Squared norm of each row (in double, so that the check itself cannot overflow) at most
// FLT_MAX / 4: then every |Y_i - Y_j|^2 <= 2 |Y_i|^2 + 2 |Y_j|^2 stays finite in float32.
void check_sqnorms(const float* y, std::size_t n, std::size_t d, const char* what) {
    constexpr double kMax = std::numeric_limits<float>::max() / 4.0;
    for (std::size_t i = 0; i < n; ++i) {
        double s = 0;
        for (std::size_t r = 0; r < d; ++r) s += static_cast<double>(y[i * d + r]) * y[i * d + r];
        if (!(s <= kMax)) {
            char v[32];
            std::snprintf(v, sizeof v, "%.3g", s);
            throw InvalidInput(std::string(what) + " row " + std::to_string(i) + " has a squared norm of " + v +
                               ", beyond FLT_MAX / 4 = 8.5e37 where float32 distances overflow: scale the "
                               "features down");
        }
    }
}

}  // namespace

void greedy_coreset(const float* features, std::size_t n, std::size_t d, std::size_t n_select,
                    std::size_t proj_dim, std::size_t n_starts, std::uint64_t seed, int threads,
                    Control& ctl, std::int64_t* out, CoresetStorage storage, CoresetInfo* info) {
    if (n == 0) throw InvalidInput("features must hold at least one row; got 0");
    if (n_select == 0 || n_select > n)
        throw InvalidInput("n_select must be in [1, " + std::to_string(n) + "]; got " + std::to_string(n_select));
    if (n_starts == 0) throw InvalidInput("n_starts must be >= 1; got 0");
    const Kernels& K = active_kernels();  // dispatched once for the whole call

    for (std::size_t i = 0; i < n * d; ++i)
        if (!std::isfinite(features[i]))
            throw InvalidInput("features must be finite; row " + std::to_string(i / d) + ", column " +
                               std::to_string(i % d) + " is " + (std::isnan(features[i]) ? "NaN" : "inf"));
    check_sqnorms(features, n, d, "features");
    std::vector<float> projected;
    const float* y = features;
    std::size_t pd = d;
    if (proj_dim > 0) {
        const std::vector<float> P = projection_matrix(d, proj_dim, seed);
        projected.resize(n * proj_dim);
        project(features, n, d, P.data(), proj_dim, threads, projected.data(), &ctl, n_select);
        ctl.throw_if_stopped();
        y = projected.data();
        pd = proj_dim;
        check_sqnorms(y, n, pd, "projected features");
    }
    std::vector<std::int64_t>* counts = info ? &info->rows_computed : nullptr;
    if (info) info->isa = K.name;
    if (storage == CoresetStorage::Float16) {
        // Rounded once (to nearest even). A value beyond the float16 range (|y| > 65504)
        // would become inf and every distance to it NaN: then the selection runs on the
        // float32 rows instead (reported in info; the Python layer logs it).
        avector<std::uint16_t> y16(n * pd);
        K.f32_to_f16(y, y16.data(), n * pd);
        bool in_range = true;
        for (std::size_t i = 0; i < n * pd && in_range; ++i) in_range = (y16[i] & 0x7C00u) != 0x7C00u;
        if (in_range) {
            std::vector<float>().swap(projected);  // the float32 copy is released first
            if (info) info->storage = CoresetStorage::Float16;
            ctl.maybe_poll(0, n_select, true);
            ctl.throw_if_stopped();
            run_greedy(F16Rows{y16.data(), pd, &K}, n, pd, n_select, n_starts, seed, threads, ctl, out, counts);
            storage = CoresetStorage::Float16;
        } else {
            storage = CoresetStorage::Float32;
        }
    }
    if (storage == CoresetStorage::Float32) {
        if (info) info->storage = CoresetStorage::Float32;
        ctl.maybe_poll(0, n_select, true);
        ctl.throw_if_stopped();
        run_greedy(F32Rows{y, pd, &K}, n, pd, n_select, n_starts, seed, threads, ctl, out, counts);
    }
    ctl.throw_if_stopped();
    ctl.maybe_poll(n_select, n_select, true);
    ctl.throw_if_stopped();
}

}  // namespace npad
