#include "greedy.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <limits>
#include <string>
#include <vector>

#include "../common/aligned.h"
#include "../common/errors.h"
#include "../kernels/kernels.h"
#include "random.h"
#include "subspace_bound.h"

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

// The winner of step s from the T workers' slots of parity par. Every worker reads the same
// slots, so all of them compute the same winner and throw at the same step.
inline Best step_winner(const Best* slots, int par, int T, std::size_t n, std::size_t s) {
    Best win = slots[par * T];
    for (int u = 1; u < T; ++u) {
        const Best& c = slots[par * T + u];
        if (better(c.v, c.i, win)) win = c;
    }
    if (win.i < 0 || win.i >= static_cast<std::int64_t>(n))
        throw std::runtime_error("greedy_coreset: no row has a finite score at step " + std::to_string(s) +
                                 " (non-finite distances); this is a bug, please report it");
    return win;
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
    // out[j] = l2sq(q, i0 + rows[j]) (rows == nullptr: i0 + j), j < n.
    void l2sq_rows(const float* q, std::size_t i0, const std::int32_t* rows, std::size_t n, float* out) const {
        K->l2sq_f32_rows(q, y + i0 * pd, pd, rows, n, out);
    }
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
    void l2sq_rows(const float* q, std::size_t i0, const std::int32_t* rows, std::size_t n, float* out) const {
        K->l2sq_f16_rows(q, y + i0 * pd, pd, rows, n, out);
    }
    using Elem = std::uint16_t;
    void copy_row(std::size_t i, Elem* dst) const { std::copy(y + i * pd, y + (i + 1) * pd, dst); }
    F16Rows with_base(const Elem* b) const { return {b, pd, K}; }
};

// Coordinates per row of the subspace bound, and the smallest selection that builds it (its
// setup, ~10 ms for 40k x 128 rows, is not repaid by short runs).
constexpr std::size_t kBoundDims = 16;
constexpr std::size_t kBoundMinSelect = 1024;

template <class Rows>
void run_greedy(const Rows& Y, std::size_t n, std::size_t pd, std::size_t n_select, std::size_t n_starts,
                std::uint64_t seed, int threads, Control& ctl, std::int64_t* out,
                std::vector<std::int64_t>* rows_computed, SubspaceBoundMode mode, std::size_t* bound_dims) {
    // The subspace bound (subspace_bound.h): a row that passes the triangle bound is still
    // skipped if its k coordinates are far enough from the new center's. Exact, as the
    // triangle bound: the same selection with or without it.
    SubspaceBound zb;
    const bool want = mode == SubspaceBoundMode::On || (mode == SubspaceBoundMode::Auto && n_select >= kBoundMinSelect);
    if (want && pd >= 2 * kBoundDims && pd <= 4096)
        zb = subspace_bound([&](std::size_t i, float* o) { Y.load(i, o); }, n, pd, kBoundDims, threads);
    const std::size_t zk = zb.k;
    if (bound_dims) *bound_dims = zk;
    const std::vector<std::int64_t> starts = start_indices(n, n_starts, seed);
    std::vector<float> score(n);
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    const Kernels& K = *Y.K;
    constexpr std::size_t kScanChunk = 4096;  // rows per scan call (its list stays in L1)

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
    // With the subspace bound: the centers' coordinates, in selection order, and per step the
    // squared coordinate distances from the new point to them (each worker its own range).
    avector<float> czs(zk ? n_select * zk : 0), czd(zk ? n_select : 0);
    SpinBarrier barrier(T);
    constexpr float kMargin = 2.f * (1.f + 1e-4f);
    // Work counter: rows computed in Phase B, per worker and step (summed at the end).
    std::vector<std::int64_t> computed(rows_computed ? T * n_select : 0, 0);

    parallel_run(T, [&](int t) {
        const std::size_t lo = n * t / T, hi = n * (t + 1) / T;
        avector<float> q(pd);
        std::vector<std::int32_t> need(std::min(kScanChunk, hi - lo));
        std::vector<float> dist(need.size());
        std::vector<float> zdist(zk ? need.size() : 0);
        std::vector<std::int32_t> clist(zk ? n_select / T + 2 : 0);
        std::vector<float> cdist(clist.size());
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
            const Best win = step_winner(slots.data(), par, T, n, s);
            const std::size_t sel = static_cast<std::size_t>(win.i);
            if (t == 0) out[s] = win.i;
            if (s + 1 == n_select) break;
            Y.load(sel, q.data());
            if (t == 0) Y.copy_row(sel, crows.data() + s * pd);
            if (t == 0 && zk) std::copy(zb.z.data() + sel * zk, zb.z.data() + (sel + 1) * zk, czs.data() + s * zk);
            // Phase A: distances from the new point to the earlier centers, split over workers.
            if (s > 0 && zk == 0) {
                const std::size_t c0 = s * t / T, c1 = s * (t + 1) / T;
                C.l2sq_rows(q.data(), c0, nullptr, c1 - c0, dcs.data() + c0);
                for (std::size_t c = c0; c < c1; ++c) dcs[c] = std::sqrt(dcs[c]);
                barrier.wait();
            } else if (s > 0) {
                // Only the centers the coordinates cannot place beyond kMargin x the largest
                // live score (the winner's, win.v) get their distance; the others get +inf,
                // which the scan treats exactly as it would their distance: every live row
                // centered there is skipped either way (subspace_bound.h; the need lists, and
                // so everything after, are the same as without the bound).
                const std::size_t c0 = s * t / T, c1 = s * (t + 1) / T;
                K.l2sq_f32_rows(zb.z.data() + sel * zk, czs.data() + c0 * zk, zk, nullptr, c1 - c0, czd.data() + c0);
                const float thr = zb.skip_threshold(kMargin * win.v * (1.f + 2e-4f));
                std::size_t m = 0;
                for (std::size_t c = c0; c < c1; ++c) {
                    if (czd[c] >= thr)
                        dcs[c] = std::numeric_limits<float>::infinity();
                    else
                        clist[m++] = static_cast<std::int32_t>(c - c0);
                }
                C.l2sq_rows(q.data(), c0, clist.data(), m, cdist.data());
                for (std::size_t j = 0; j < m; ++j) dcs[c0 + static_cast<std::size_t>(clist[j])] = std::sqrt(cdist[j]);
                barrier.wait();
            }
            // Phase B: update the owned scores, skipping points the bound rules out. Per chunk
            // of rows: the kernel set's scan lists the rows the bound does not rule out, their
            // distances update score / center, then the chunk's first maximum (the same result
            // as one loop doing all three per row, with the scan and the maximum vectorised).
            if (sel >= lo && sel < hi) score[sel] = kNegInf;
            best = {kNegInf, std::numeric_limits<std::int64_t>::max()};
            const auto sc = static_cast<std::int32_t>(s);
            std::int64_t ncomp = 0;
            for (std::size_t a = lo; a < hi; a += kScanChunk) {
                const std::size_t m = std::min(kScanChunk, hi - a);
                std::size_t nn = K.greedy_need_f32(score.data() + a, center.data() + a, dcs.data(), kMargin, m,
                                                         need.data());
                if (zk) {
                    // the subspace bound: keep (in order) the listed rows it does not rule out
                    K.l2sq_f32_rows(zb.z.data() + sel * zk, zb.z.data() + a * zk, zk, need.data(), nn, zdist.data());
                    std::size_t kept = 0;
                    for (std::size_t j = 0; j < nn; ++j) {
                        const std::int32_t r = need[j];
                        if (!(zdist[j] >= zb.skip_threshold(score[a + static_cast<std::size_t>(r)]))) need[kept++] = r;
                    }
                    nn = kept;
                }
                ncomp += static_cast<std::int64_t>(nn);
                Y.l2sq_rows(q.data(), a, need.data(), nn, dist.data());
                for (std::size_t j = 0; j < nn; ++j) {
                    const std::size_t i = a + static_cast<std::size_t>(need[j]);
                    const float dd = std::sqrt(dist[j]);
                    if (dd < score[i]) {
                        score[i] = dd;
                        center[i] = sc;
                    }
                }
                float bv;
                std::int64_t bi;
                K.argmax_f32(score.data() + a, m, &bv, &bi);
                if (bi >= 0 && bv > best.v) best = {bv, static_cast<std::int64_t>(a) + bi};
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

// ---- int8 storage -----------------------------------------------------------------------

// Y quantised once with one symmetric scale: codes = clamp(rint(y * (127 / m)), -127, 127),
// m = max |Y| (all codes 0 if m == 0), rint rounding half to even; held in the blocked layout
// of Kernels::l2_i8_blocks (rows padded to a multiple of kI8Block with code 0).
struct I8Rows {
    std::size_t n = 0, pd = 0, d4 = 0, nb = 0;
    float scale = 0.f;  // m / 127: the dequantised rows are scale * codes
    avector<std::uint32_t> codes;  // nb blocks of [d4][kI8Block] words
    avector<std::int32_t> xn;      // nb * kI8Block squared code norms

    // Row i's codes as query words (the stored bytes minus the bias of 128), its squared
    // norm and its code sum.
    void query(std::size_t i, std::uint32_t* q, std::int32_t& qn, std::int32_t& qsum) const {
        const std::uint32_t* blk = codes.data() + (i / kI8Block) * d4 * kI8Block;
        qsum = 0;
        for (std::size_t r = 0; r < d4; ++r) {
            q[r] = blk[r * kI8Block + i % kI8Block] ^ 0x80808080u;
            for (int t = 0; t < 4; ++t) qsum += static_cast<std::int8_t>((q[r] >> (8 * t)) & 0xFFu);
        }
        qn = xn[i];
    }
};

I8Rows quantize_i8(const float* y, std::size_t n, std::size_t pd, int threads) {
    I8Rows s;
    s.n = n;
    s.pd = pd;
    s.d4 = (pd + 3) / 4;
    s.nb = (n + kI8Block - 1) / kI8Block;
    const int T = static_cast<int>(std::min<std::size_t>(std::max(1, threads), s.nb));
    // |y| as bits: for finite values the unsigned order is the numeric order.
    std::vector<std::uint32_t> part(T, 0);
    parallel_run(T, [&](int t) {
        const std::size_t lo = n * pd * t / T, hi = n * pd * (t + 1) / T;
        std::uint32_t m = 0;
        for (std::size_t k = lo; k < hi; ++k) {
            std::uint32_t b;
            std::memcpy(&b, y + k, 4);
            m = std::max(m, b & 0x7FFFFFFFu);
        }
        part[t] = m;
    });
    const std::uint32_t mb = *std::max_element(part.begin(), part.end());
    float m;
    std::memcpy(&m, &mb, 4);
    const float inv = m > 0.f ? 127.f / m : 0.f;
    s.scale = m / 127.f;
    s.codes.assign(s.nb * s.d4 * kI8Block, 0x80808080u);
    s.xn.assign(s.nb * kI8Block, 0);
    parallel_run(T, [&](int t) {
        std::vector<std::int32_t> c(4 * s.d4, 0);  // one row's codes, padding dims 0
        for (std::size_t b = s.nb * t / T; b < s.nb * (t + 1) / T; ++b) {
            std::uint32_t* blk = s.codes.data() + b * s.d4 * kI8Block;
            for (std::size_t j = 0; j < kI8Block && b * kI8Block + j < n; ++j) {
                const float* row = y + (b * kI8Block + j) * pd;
                std::int32_t norm = 0;
                for (std::size_t k = 0; k < pd; ++k) {
                    // rint (half to even) as x + 1.5 * 2^23 - 1.5 * 2^23, exact for |x| < 2^22
                    // (here |x| <= 127 + rounding), in float32 (no contraction: -ffp-contract=off),
                    // so that the compiler vectorises it.
                    const float v = (row[k] * inv + 12582912.f) - 12582912.f;
                    const auto iv = static_cast<std::int32_t>(v);
                    const std::int32_t cv = iv < -127 ? -127 : (iv > 127 ? 127 : iv);
                    c[k] = cv;
                    norm += cv * cv;
                }
                for (std::size_t r = 0; r < s.d4; ++r)
                    blk[r * kI8Block + j] = static_cast<std::uint32_t>(c[4 * r] + 128) |
                                            static_cast<std::uint32_t>(c[4 * r + 1] + 128) << 8 |
                                            static_cast<std::uint32_t>(c[4 * r + 2] + 128) << 16 |
                                            static_cast<std::uint32_t>(c[4 * r + 3] + 128) << 24;
                s.xn[b * kI8Block + j] = norm;
            }
        }
    });
    return s;
}

// run_greedy on I8Rows: the same algorithm, barriers and triangle bound, with every distance
// sqrt(float32(exact integer squared distance)) from l2_i8_blocks, a block of kI8Block rows
// at a time. Workers own whole blocks; the selected rows are copied into blocks too, so the
// center distances of Phase A are one l2_i8_blocks call per worker.
void run_greedy_i8(const I8Rows& Y, const Kernels& K, std::size_t n_select, std::size_t n_starts,
                   std::uint64_t seed, int threads, Control& ctl, std::int64_t* out,
                   std::vector<std::int64_t>* rows_computed) {
    constexpr std::size_t B = kI8Block;
    const std::size_t n = Y.n, d4 = Y.d4, nb = Y.nb;
    const std::vector<std::int64_t> starts = start_indices(n, n_starts, seed);
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    // Padding rows (index >= n) keep score -inf: never computed, never selected.
    std::vector<float> score(nb * B, kNegInf);
    std::vector<std::int32_t> center(nb * B, -1);
    int T = static_cast<int>(std::min<std::size_t>(std::max(1, threads), (n + 4095) / 4096));
    T = std::max(T, 1);
    std::vector<Best> slots(2 * T);
    std::atomic<bool> stop_flag[2];
    stop_flag[0] = stop_flag[1] = false;
    const std::size_t ncb = (n_select + B - 1) / B;
    std::vector<float> dcs(ncb * B, 0.f);
    avector<std::uint32_t> crows(ncb * d4 * B, 0x80808080u);
    avector<std::int32_t> cxn(ncb * B, 0);
    SpinBarrier barrier(T);
    constexpr float kMargin = 2.f * (1.f + 1e-4f);
    std::vector<std::int64_t> computed(rows_computed ? T * n_select : 0, 0);

    parallel_run(T, [&](int t) {
        const std::size_t b0 = nb * t / T, b1 = nb * (t + 1) / T;
        const std::size_t lo = b0 * B, hi = std::min(b1 * B, n);
        std::vector<std::uint32_t> q(d4);
        std::int32_t qn = 0, qsum = 0;
        constexpr std::size_t kChunk = 64;  // blocks per kernel call in the start scores
        std::vector<float> dist(kChunk * B);
        Best best{kNegInf, std::numeric_limits<std::int64_t>::max()};
        std::fill(score.begin() + lo, score.begin() + hi, 0.f);
        // Every start against one chunk of blocks at a time (128 KB, it stays in cache), so Y
        // is read once; each row still sums its distances in start order.
        const std::size_t nst = starts.size();
        std::vector<std::uint32_t> sq(nst * d4);
        std::vector<std::int32_t> sqn(nst), sqs(nst);
        for (std::size_t k = 0; k < nst; ++k)
            Y.query(static_cast<std::size_t>(starts[k]), sq.data() + k * d4, sqn[k], sqs[k]);
        for (std::size_t b = b0; b < b1; b += kChunk) {
            const std::size_t m = std::min(kChunk, b1 - b);
            const std::size_t e = std::min((b + m) * B, hi);
            for (std::size_t k = 0; k < nst; ++k) {
                K.l2_i8_blocks(Y.codes.data() + b * d4 * B, Y.xn.data() + b * B, m, sq.data() + k * d4, sqn[k],
                               sqs[k], d4, dist.data());
                for (std::size_t i = b * B; i < e; ++i) score[i] += dist[i - b * B];
            }
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
            const Best win = step_winner(slots.data(), par, T, n, s);
            const std::size_t sel = static_cast<std::size_t>(win.i);
            if (t == 0) out[s] = win.i;
            if (s + 1 == n_select) break;
            Y.query(sel, q.data(), qn, qsum);
            // Phase A: distances to the earlier centers, whole center blocks per worker (the
            // lanes >= s of the last block are computed and never read).
            if (s > 0) {
                const std::size_t nc = (s + B - 1) / B;
                const std::size_t c0 = nc * t / T, c1 = nc * (t + 1) / T;
                if (c1 > c0)
                    K.l2_i8_blocks(crows.data() + c0 * d4 * B, cxn.data() + c0 * B, c1 - c0, q.data(), qn, qsum,
                                   d4, dcs.data() + c0 * B);
                barrier.wait();
            }
            // The new center joins the center blocks after Phase A (which reads whole blocks).
            if (t == 0) {
                std::uint32_t* blk = crows.data() + (s / B) * d4 * B;
                for (std::size_t r = 0; r < d4; ++r) blk[r * B + s % B] = q[r] ^ 0x80808080u;
                cxn[s] = qn;
            }
            // Phase B: as run_greedy, in one kernel call (Kernels::greedy_step_i8: a block's
            // distances are computed if any of its rows needs one; only those rows update).
            if (sel >= lo && sel < hi) score[sel] = kNegInf;
            best = {kNegInf, std::numeric_limits<std::int64_t>::max()};
            const auto sc = static_cast<std::int32_t>(s);
            std::int64_t ncomp = 0;
            // The kernel of the dispatched set, in slices of < 2^27 blocks (its row indices are
            // int32); a later slice's best wins only if strictly larger (first maximum).
            constexpr std::size_t kSlice = std::size_t(1) << 26;
            for (std::size_t b = b0; b < b1; b += kSlice) {
                const std::size_t m = std::min(kSlice, b1 - b);
                float bv;
                std::int64_t bi;
                ncomp += K.greedy_step_i8(Y.codes.data() + b * d4 * B, Y.xn.data() + b * B, m, q.data(), qn, qsum,
                                          d4, score.data() + b * B, center.data() + b * B, dcs.data(), kMargin, sc,
                                          &bv, &bi);
                if (bi >= 0 && bv > best.v) best = {bv, static_cast<std::int64_t>(b * B) + bi};
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
// With finite_msg, a non-finite value is reported as such (the first one in row-major order,
// before any norm error, as a separate finiteness scan would); a non-finite value makes the
// row's sum non-finite, so both checks are one pass, split over the threads. Four double
// accumulators per row (dims r mod 4): the sequential sum was a chain of dependent adds and a
// hot spot of short calls in a profile; the check is a threshold, and the order of the sum
// changes its result only by double-precision rounding (each product is exact in double).
void check_rows(const float* y, std::size_t n, std::size_t d, const char* what, int threads, bool finite_msg) {
    constexpr double kMax = std::numeric_limits<float>::max() / 4.0;
    constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();
    const int T = static_cast<int>(std::min<std::size_t>(std::max(1, threads), (n + 4095) / 4096));
    std::vector<std::size_t> first_bad(std::max(T, 1), kNone), first_nonfinite(std::max(T, 1), kNone);
    std::vector<double> bad_sum(std::max(T, 1), 0.0);
    parallel_run(std::max(T, 1), [&](int t) {
        const std::size_t lo = n * t / T, hi = n * (t + 1) / T;
        for (std::size_t i = lo; i < hi; ++i) {
            const float* row = y + i * d;
            double a[4] = {0, 0, 0, 0};
            std::size_t r = 0;
            for (; r + 4 <= d; r += 4)
                for (std::size_t u = 0; u < 4; ++u) a[u] += static_cast<double>(row[r + u]) * row[r + u];
            for (; r < d; ++r) a[0] += static_cast<double>(row[r]) * row[r];
            const double s = (a[0] + a[1]) + (a[2] + a[3]);
            if (s <= kMax) continue;
            bool finite = true;
            for (std::size_t k = 0; k < d && finite; ++k) finite = std::isfinite(row[k]);
            if (!finite && finite_msg) {
                first_nonfinite[t] = i;
                break;  // nothing later in this range can be reported before it
            }
            if (first_bad[t] == kNone) {
                first_bad[t] = i;
                bad_sum[t] = s;
            }
        }
    });
    for (int t = 0; t < T; ++t) {
        const std::size_t i = first_nonfinite[t];
        if (i == kNone) continue;
        std::size_t k = 0;
        while (std::isfinite(y[i * d + k])) ++k;
        throw InvalidInput("features must be finite; row " + std::to_string(i) + ", column " + std::to_string(k) +
                           " is " + (std::isnan(y[i * d + k]) ? "NaN" : "inf"));
    }
    for (int t = 0; t < T; ++t) {
        if (first_bad[t] == kNone) continue;
        char v[32];
        std::snprintf(v, sizeof v, "%.3g", bad_sum[t]);
        throw InvalidInput(std::string(what) + " row " + std::to_string(first_bad[t]) + " has a squared norm of " + v +
                           ", beyond FLT_MAX / 4 = 8.5e37 where float32 distances overflow: scale the "
                           "features down");
    }
}

}  // namespace

void greedy_coreset(const float* features, std::size_t n, std::size_t d, std::size_t n_select,
                    std::size_t proj_dim, std::size_t n_starts, std::uint64_t seed, int threads,
                    Control& ctl, std::int64_t* out, CoresetStorage storage, CoresetInfo* info,
                    SubspaceBoundMode bound) {
    if (n == 0) throw InvalidInput("features must hold at least one row; got 0");
    if (n_select == 0 || n_select > n)
        throw InvalidInput("n_select must be in [1, " + std::to_string(n) + "]; got " + std::to_string(n_select));
    if (n_starts == 0) throw InvalidInput("n_starts must be >= 1; got 0");
    const Kernels& K = active_kernels();  // dispatched once for the whole call
    if (storage == CoresetStorage::Int8 && (proj_dim > 0 ? proj_dim : d) > 4 * kI8MaxD4)
        throw InvalidInput("int8 storage needs at most " + std::to_string(4 * kI8MaxD4) +
                           " (projected) dimensions, where exact int32 distances stay below 2^31; got " +
                           std::to_string(proj_dim > 0 ? proj_dim : d));

    check_rows(features, n, d, "features", threads, true);
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
        check_rows(y, n, pd, "projected features", threads, false);
    }
    std::vector<std::int64_t>* counts = info ? &info->rows_computed : nullptr;
    std::size_t* bdims = info ? &info->bound_dims : nullptr;
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
            run_greedy(F16Rows{y16.data(), pd, &K}, n, pd, n_select, n_starts, seed, threads, ctl, out, counts, bound,
                       bdims);
            storage = CoresetStorage::Float16;
        } else {
            storage = CoresetStorage::Float32;
        }
    }
    if (storage == CoresetStorage::Int8) {
        I8Rows y8 = quantize_i8(y, n, pd, threads);
        std::vector<float>().swap(projected);
        if (info) {
            info->storage = CoresetStorage::Int8;
            info->int8_scale = y8.scale;
        }
        ctl.maybe_poll(0, n_select, true);
        ctl.throw_if_stopped();
        run_greedy_i8(y8, K, n_select, n_starts, seed, threads, ctl, out, counts);
    }
    if (storage == CoresetStorage::Float32) {
        if (info) info->storage = CoresetStorage::Float32;
        ctl.maybe_poll(0, n_select, true);
        ctl.throw_if_stopped();
        run_greedy(F32Rows{y, pd, &K}, n, pd, n_select, n_starts, seed, threads, ctl, out, counts, bound, bdims);
    }
    ctl.throw_if_stopped();
    ctl.maybe_poll(n_select, n_select, true);
    ctl.throw_if_stopped();
}

}  // namespace npad
