#include "flat_index.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "../common/errors.h"
#include "../kernels/compact.h"
#include "topk.h"

namespace npad {

Storage storage_from_name(const std::string& name) {
    if (name == "float32") return Storage::F32;
    if (name == "float16") return Storage::F16;
    if (name == "int8") return Storage::I8;
    throw InvalidInput("dtype must be one of 'float32', 'float16', 'int8'; got '" + name + "'");
}

const char* storage_name(Storage s) {
    switch (s) {
        case Storage::F32: return "float32";
        case Storage::F16: return "float16";
        case Storage::I8: return "int8";
    }
    return "?";
}

Compute compute_from_name(const std::string& name) {
    if (name == "float32") return Compute::F32;
    if (name == "bfloat16") return Compute::BF16;
    if (name == "int8") return Compute::I8;
    throw InvalidInput("compute must be one of 'float32', 'bfloat16', 'int8'; got '" + name + "'");
}

const char* compute_name(Compute c) {
    switch (c) {
        case Compute::F32: return "float32";
        case Compute::BF16: return "bfloat16";
        case Compute::I8: return "int8";
    }
    return "?";
}

void quantize_i8(const float* x, std::size_t d, std::size_t stride, std::int8_t* codes,
                 std::size_t code_stride, float* scale) {
    float amax = 0.f;
    for (std::size_t r = 0; r < d; ++r) amax = std::max(amax, std::fabs(x[r * stride]));
    const float s = amax / 127.f;
    const float inv = 1.f / s;
    if (!(s > 0.f) || !std::isfinite(inv)) {
        // All zero, or so tiny (max|x| below ~127 / FLT_MAX ~ 3.7e-37) that 1 / scale
        // overflows (then 0 * inf = NaN would clamp to -127): stored as the zero vector.
        *scale = 0.f;
        for (std::size_t r = 0; r < d; ++r) codes[r * code_stride] = 0;
        return;
    }
    *scale = s;
    // lrint rounds to nearest even in the default rounding mode, as nearbyint does; |x * inv| is
    // at most ~127, so it cannot overflow. One cvtss2si on x86-64 instead of a libm call per
    // value (nearbyint needs SSE4.1's roundss): this runs for every query of a search.
    for (std::size_t r = 0; r < d; ++r) {
        const long q = std::lrint(x[r * stride] * inv);
        codes[r * code_stride] = static_cast<std::int8_t>(std::min(127L, std::max(-127L, q)));
    }
}

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr std::size_t kMaxRows = 0xFFFFFFFFu;

void check_finite_row(const float* row, std::size_t d, std::size_t i, const char* what) {
    for (std::size_t r = 0; r < d; ++r)
        if (!std::isfinite(row[r]))
            throw InvalidInput(std::string(what) + " must be finite; row " + std::to_string(i) +
                               ", column " + std::to_string(r) + " is " +
                               (std::isnan(row[r]) ? "NaN" : "inf"));
}

// Squared norms above FLT_MAX / 4 are refused (bank and queries): then |q|^2 + |x|^2 <= FLT_MAX / 2
// and |2 q.x| <= 2 |q| |x| <= FLT_MAX / 2, so no distance overflows. Beyond it a norm of inf
// gave fma(-2, inf, inf) = NaN, which the epilogue clamps to 0: a far vector read as a match.
constexpr float kMaxSqNorm = std::numeric_limits<float>::max() / 4;

void check_sqnorm(float sqnorm, std::size_t i, const char* what) {
    if (!(sqnorm <= kMaxSqNorm)) {
        char v[32];
        std::snprintf(v, sizeof v, "%.3g", static_cast<double>(sqnorm));
        throw InvalidInput(std::string(what) + " row " + std::to_string(i) + " has a squared norm of " + v +
                           " in float32, beyond FLT_MAX / 4 = 8.5e37 (|x| up to ~9.2e18): scale the data down");
    }
}

// Bank vectors per chunk: the float32 panels of one chunk should stay in L2 while every
// query block streams past them. 256 KiB is a choice (half of a 512 KiB L2, a quarter of a
// 1 MiB one), not a measured optimum.
std::size_t panels_per_chunk(std::size_t panel_bytes) {
    const std::size_t budget = 256 * 1024;
    return std::max<std::size_t>(1, budget / panel_bytes);
}

// VPDPBUSD sums 255 * 127 * 4 per word into int32: d4 words stay exact up to d < 2^31 / 32385.
constexpr std::size_t kMaxI8Dim = 65536;

}  // namespace

FlatIndex::FlatIndex(const float* bank, std::size_t n, std::size_t d, Storage storage, Compute compute)
    : n_(n), d_(d), npanels_((n + kNR - 1) / kNR), storage_(storage), compute_(compute) {
    if (n == 0) throw InvalidInput("bank must hold at least one vector; got 0 rows");
    if (d == 0) throw InvalidInput("bank vectors must have at least one dimension; got 0");
    if (n > kMaxRows)  // the scan keeps each candidate's index in 32 bits (topk_key)
        throw InvalidInput("bank must hold at most " + std::to_string(kMaxRows) + " vectors; got " + std::to_string(n));
    if (compute != Compute::F32 && storage != Storage::F32)
        throw InvalidInput(std::string("compute='") + compute_name(compute) +
                           "' keeps the float32 bank for its exact re-rank and needs dtype='float32'; got dtype='" +
                           storage_name(storage) + "'");
    if (compute == Compute::I8 && d > kMaxI8Dim)
        throw InvalidInput("compute='int8' supports dim <= " + std::to_string(kMaxI8Dim) +
                           " (int32 accumulation); got " + std::to_string(d));
    const Kernels& K = active_kernels();
    const std::size_t panel = d * kNR;
    xnorm_.assign(npanels_ * kNR, kInf);
    avector<float> tmp(panel);  // one float32 panel, for the compact formats
    if (storage == Storage::F32) f32_.assign(npanels_ * panel, 0.f);
    if (storage == Storage::F16) f16_.assign(npanels_ * panel, 0);
    if (storage == Storage::I8) {
        i8_.assign(npanels_ * panel, 0);
        scales_.assign(npanels_ * kNR, 0.f);
    }
    for (std::size_t p = 0; p < npanels_; ++p) {
        float* dst = storage == Storage::F32 ? f32_.data() + p * panel : tmp.data();
        std::fill(dst, dst + panel, 0.f);
        const std::size_t cols = std::min<std::size_t>(kNR, n - p * kNR);
        for (std::size_t j = 0; j < cols; ++j) {
            const std::size_t row_id = p * kNR + j;
            const float* row = bank + row_id * d;
            check_finite_row(row, d, row_id, "bank");
            for (std::size_t r = 0; r < d; ++r) dst[r * kNR + j] = row[r];
        }
        if (storage == Storage::F16) {
            std::uint16_t* h = f16_.data() + p * panel;
            K.f32_to_f16(dst, h, panel);
            for (std::size_t t = 0; t < panel; ++t)
                if ((h[t] & 0x7C00u) == 0x7C00u)
                    throw InvalidInput("bank value out of float16 range (|x| > 65504) in row " +
                                       std::to_string(p * kNR + t % kNR) +
                                       "; use dtype='float32'");
            K.f16_to_f32(h, dst, panel);  // norms of what is stored, not of the input
        } else if (storage == Storage::I8) {
            std::int8_t* c = i8_.data() + p * panel;
            float* sc = scales_.data() + p * kNR;
            for (std::size_t j = 0; j < cols; ++j) quantize_i8(dst + j, d, kNR, c + j, kNR, sc + j);
            K.dequant_i8_panel(c, sc, d, dst);
        }
        float norms[kNR];
        K.packed_sqnorms(dst, d, kNR, norms);
        for (std::size_t j = 0; j < cols; ++j) {
            check_sqnorm(norms[j], p * kNR + j, "bank");  // of the stored (rounded) vector
            xnorm_[p * kNR + j] = norms[j];
        }
    }
    if (compute_ == Compute::F32) return;

    // The compact first pass: words of the rounded bank and the norms of what they hold.
    dc_ = compute_ == Compute::BF16 ? (d + 1) / 2 : (d + 3) / 4;
    const std::size_t per = compute_ == Compute::BF16 ? 2 : 4;
    cw_.assign(npanels_ * dc_ * kNR, 0u);
    cnorm_.assign(npanels_ * kNR, kInf);
    if (compute_ == Compute::I8) {
        cscale_.assign(npanels_ * kNR, 0.f);
        cxsum_.assign(npanels_ * kNR, 0);
    }
    avector<float> wide(dc_ * per * kNR);  // the rounded panel widened to float32, [dc*per][kNR]
    std::vector<std::int8_t> codes(dc_ * 4, 0);
    for (std::size_t p = 0; p < npanels_; ++p) {
        const float* src = f32_.data() + p * panel;  // [d][kNR]
        std::uint32_t* w = cw_.data() + p * dc_ * kNR;
        std::fill(wide.begin(), wide.end(), 0.f);
        const std::size_t cols = std::min<std::size_t>(kNR, n - p * kNR);
        for (std::size_t j = 0; j < cols; ++j) {
            if (compute_ == Compute::BF16) {
                for (std::size_t r = 0; r < dc_; ++r) {
                    const float lo = src[(2 * r) * kNR + j];
                    const float hi = 2 * r + 1 < d ? src[(2 * r + 1) * kNR + j] : 0.f;
                    const std::uint32_t word = pack_bf16_pair(lo, hi);
                    w[r * kNR + j] = word;
                    wide[(2 * r) * kNR + j] = bf16_lo(word);
                    wide[(2 * r + 1) * kNR + j] = bf16_hi(word);
                }
            } else {
                float sc;
                quantize_i8(src + j, d, kNR, codes.data(), 1, &sc);
                std::int32_t sum = 0;
                for (std::size_t r = 0; r < d; ++r) {
                    sum += codes[r];
                    wide[r * kNR + j] = static_cast<float>(codes[r]) * sc;
                }
                for (std::size_t r = 0; r < dc_; ++r) w[r * kNR + j] = pack_i8_quad(codes.data() + 4 * r);
                cscale_[p * kNR + j] = sc;
                cxsum_[p * kNR + j] = sum;
            }
        }
        float norms[kNR];
        K.packed_sqnorms(wide.data(), dc_ * per, kNR, norms);
        for (std::size_t j = 0; j < cols; ++j) cnorm_[p * kNR + j] = norms[j];
    }
    rows_.assign(bank, bank + n * d);  // checked finite above
    avector<float>().swap(f32_);
}

std::size_t FlatIndex::memory_bytes() const {
    return f32_.size() * 4 + f16_.size() * 2 + i8_.size() + scales_.size() * 4 + xnorm_.size() * 4 +
           cw_.size() * 4 + cnorm_.size() * 4 + cscale_.size() * 4 + cxsum_.size() * 4 + rows_.size() * 4;
}

void FlatIndex::search(const float* queries, std::size_t m, std::size_t k, int threads,
                       float* dist, std::int64_t* idx, Control& ctl, std::size_t rerank) const {
    if (k == 0 || k > n_)
        throw InvalidInput("k must be in [1, ntotal=" + std::to_string(n_) + "]; got " + std::to_string(k));
    if (m == 0) return;
    const Kernels& K = active_kernels();  // dispatch once per call
    const std::size_t d = d_;

    // Pack queries into blocks [d][kMR]; padding rows are zero and never become candidates.
    // Split over the workers by block (each writes only its own blocks; ~0.5 ms serial for
    // 1600 x 176 queries, profiled); the input errors are then raised by the serial checks,
    // which run only if a worker saw one, so the error names the same row as before.
    const std::size_t nblk = (m + kMR - 1) / kMR;
    avector<float> qpack(nblk * d * kMR, 0.f);
    avector<float> qnorm(nblk * kMR, 0.f);
    const int TP = m * d < (std::size_t(1) << 16) ? 1 : std::max(1, std::min<int>(threads, static_cast<int>(nblk)));
    std::atomic<bool> bad{false};
    parallel_run(TP, [&](int t) {
        bool seen = false;
        for (std::size_t b = static_cast<std::size_t>(t); b < nblk; b += static_cast<std::size_t>(TP)) {
            for (std::size_t i = b * kMR; i < std::min(m, (b + 1) * kMR); ++i) {
                const float* row = queries + i * d;
                float* dst = qpack.data() + b * d * kMR + (i % kMR);
                for (std::size_t r = 0; r < d; ++r) {
                    dst[r * kMR] = row[r];
                    seen |= !std::isfinite(row[r]);
                }
            }
            K.packed_sqnorms(qpack.data() + b * d * kMR, d, kMR, qnorm.data() + b * kMR);
            for (std::size_t i = b * kMR; i < std::min(m, (b + 1) * kMR); ++i) seen |= !(qnorm[i] <= kMaxSqNorm);
        }
        if (seen) bad.store(true);
    });
    if (bad.load()) {
        for (std::size_t i = 0; i < m; ++i) check_finite_row(queries + i * d, d, i, "queries");
        for (std::size_t i = 0; i < m; ++i) check_sqnorm(qnorm[i], i, "queries");
    }

    if (compute_ == Compute::F32) {
        scan(qpack.data(), nullptr, qnorm.data(), nullptr, m, nblk, k, threads, dist, idx, ctl);
        return;
    }

    // Compact queries: the same rounding as the bank, and the norms of the rounded queries.
    const std::size_t per = compute_ == Compute::BF16 ? 2 : 4;
    avector<std::uint32_t> cq(nblk * dc_ * kMR, 0u);
    avector<float> cqnorm(nblk * kMR, 0.f);
    avector<float> cqscale(compute_ == Compute::I8 ? nblk * kMR : 0, 0.f);
    // Split over the workers by block as above: serial, this took ~1 ms of a ~16 ms int8
    // search at 1024 x 19,000 x 152 on one thread (profiled).
    parallel_run(TP, [&](int t) {
        avector<float> wide(dc_ * per * kMR);
        std::vector<float> row(dc_ * per, 0.f);
        std::vector<std::int8_t> codes(dc_ * 4, 0);
        for (std::size_t b = static_cast<std::size_t>(t); b < nblk; b += static_cast<std::size_t>(TP)) {
            std::fill(wide.begin(), wide.end(), 0.f);
            std::uint32_t* w = cq.data() + b * dc_ * kMR;
            for (int i = 0; i < kMR; ++i) {
                const std::size_t qi = b * kMR + i;
                if (qi >= m) {
                    // Padding rows: int8 words of code 0 (+128); never candidates (thr = -inf).
                    if (compute_ == Compute::I8)
                        for (std::size_t r = 0; r < dc_; ++r) w[r * kMR + i] = 0x80808080u;
                    continue;
                }
                std::copy(queries + qi * d, queries + qi * d + d, row.begin());
                if (compute_ == Compute::BF16) {
                    for (std::size_t r = 0; r < dc_; ++r) {
                        const std::uint32_t word = pack_bf16_pair(row[2 * r], row[2 * r + 1]);
                        w[r * kMR + i] = word;
                        wide[(2 * r) * kMR + i] = bf16_lo(word);
                        wide[(2 * r + 1) * kMR + i] = bf16_hi(word);
                    }
                } else {
                    float sc;
                    quantize_i8(row.data(), d, 1, codes.data(), 1, &sc);
                    for (std::size_t r = 0; r < d; ++r) wide[r * kMR + i] = static_cast<float>(codes[r]) * sc;
                    for (std::size_t r = 0; r < dc_; ++r) w[r * kMR + i] = pack_u8_quad(codes.data() + 4 * r);
                    cqscale[qi] = sc;
                }
            }
            K.packed_sqnorms(wide.data(), dc_ * per, kMR, cqnorm.data() + b * kMR);
        }
    });

    if (rerank == 0) {
        scan(nullptr, cq.data(), cqnorm.data(), cqscale.data(), m, nblk, k, threads, dist, idx, ctl);
        return;
    }
    // Compact pass keeping kk candidates, then exact float32 distances for those.
    const std::size_t kk = std::min(n_, std::max(k, rerank));
    std::vector<float> cv(m * kk);
    std::vector<std::int64_t> ci(m * kk);
    scan(nullptr, cq.data(), cqnorm.data(), cqscale.data(), m, nblk, kk, threads, cv.data(), ci.data(), ctl);
    // The re-rank, split over the workers by query (each writes only its own rows).
    const int T = m * kk * d < (std::size_t(1) << 18) ? 1 : std::max(1, threads);
    // The candidates' rows are scattered over a bank larger than L2 (and often out of a shared
    // L3 by then): their lines are requested into L2 kAhead queries before they are needed
    // (1024 x 8 dots of 152 dims after evicting the caches: 0.61 ms -> 0.40 ms, Zen 4).
    constexpr std::size_t kAhead = 4;
    const std::size_t row_bytes = d * sizeof(float);
    auto prefetch_rows = [&](std::size_t i) {
        if (i >= m) return;
        const std::int64_t* cols = ci.data() + i * kk;
        for (std::size_t r = 0; r < kk && cols[r] >= 0; ++r) {
            const char* p = reinterpret_cast<const char*>(rows_.data() + static_cast<std::size_t>(cols[r]) * d);
            for (std::size_t off = 0; off < row_bytes; off += 64) prefetch_l2(p + off);
            prefetch_l2(p + row_bytes - 1);
        }
    };
    parallel_run(T, [&](int t) {
        std::vector<float> dots(kk);
        std::vector<std::pair<float, std::int64_t>> cand(kk);
        for (std::size_t a = 0; a < kAhead; ++a) prefetch_rows(static_cast<std::size_t>(t) + a * static_cast<std::size_t>(T));
        for (std::size_t i = static_cast<std::size_t>(t); i < m; i += static_cast<std::size_t>(T)) {
            prefetch_rows(i + kAhead * static_cast<std::size_t>(T));
            const std::int64_t* cols = ci.data() + i * kk;
            std::size_t nc = 0;
            while (nc < kk && cols[nc] >= 0) ++nc;
            K.gather_dots(queries + i * d, rows_.data(), d, cols, nc, dots.data());
            const float qn = qnorm[i];
            for (std::size_t r = 0; r < nc; ++r) {
                const float s = qn + xnorm_[cols[r]];
                cand[r] = {std::max(0.f, std::fma(-2.f, dots[r], s)), cols[r]};
            }
            const std::size_t take = std::min(k, nc);
            std::partial_sort(cand.begin(), cand.begin() + take, cand.begin() + nc);
            for (std::size_t r = 0; r < k; ++r) {
                dist[i * k + r] = r < take ? cand[r].first : kInf;
                idx[i * k + r] = r < take ? cand[r].second : -1;
            }
        }
    });
}

void FlatIndex::scan(const float* qpack, const std::uint32_t* cq, const float* qnorm, const float* qscale,
                     std::size_t m, std::size_t nblk, std::size_t k, int threads, float* dist,
                     std::int64_t* idx, Control& ctl) const {
    const Kernels& K = active_kernels();
    const std::size_t d = d_;
    const bool compact = compute_ != Compute::F32;
    const float* xn_all = compact ? cnorm_.data() : xnorm_.data();
    const std::size_t panel_words = compact ? dc_ * kNR : d * kNR;  // 4-byte words per panel
    const std::size_t qblock_words = compact ? dc_ * kMR : d * kMR;

    // Work items: (bank chunk, query group), chunk-major, handed out in increasing order so
    // that every worker sees each query's bank indices in increasing order.
    const std::size_t ppc = panels_per_chunk(panel_words * 4);
    const std::size_t nchunks = (npanels_ + ppc - 1) / ppc;
    std::size_t T = std::max(1, threads);
    const double work = double(m) * double(n_) * double(compact ? dc_ : d);
    if (work < double(1 << 21)) T = 1;  // thread start-up would cost more than it saves
    std::size_t ngroups = 1;
    if (nchunks < 4 * T) ngroups = std::min(nblk, (4 * T + nchunks - 1) / nchunks);
    T = std::min(T, nchunks * ngroups);
    const std::size_t blk_per_group = (nblk + ngroups - 1) / ngroups;
    const std::size_t nitems = nchunks * ngroups;

    std::vector<std::vector<std::uint64_t>> tkeys(T);
    std::atomic<std::size_t> next{0};

    parallel_run(static_cast<int>(T), [&](int t) {
        std::vector<std::uint64_t>& keys = tkeys[t];
        keys.assign(m * k, kEmptyKey);
        avector<float> thr(nblk * kMR, -kInf);  // padding rows: nothing passes
        for (std::size_t i = 0; i < m; ++i) thr[i] = kInf;
        avector<float> buf;
        if (!compact && storage_ != Storage::F32) buf.resize(ppc * d * kNR);
        alignas(64) float out[kMR * kNR];
        std::uint32_t mask[kMR];
        std::size_t cached_chunk = static_cast<std::size_t>(-1);

        for (;;) {
            if (ctl.stopped()) break;
            const std::size_t item = next.fetch_add(1);
            if (item >= nitems) break;
            const std::size_t c = item / ngroups, g = item % ngroups;
            const std::size_t p0 = c * ppc, p1 = std::min(npanels_, p0 + ppc);
            const float* panels = nullptr;
            if (compact) {
                // read straight from cw_ below
            } else if (storage_ == Storage::F32) {
                panels = f32_.data() + p0 * d * kNR;
            } else {
                if (cached_chunk != c) {  // expand the compact chunk once per worker
                    if (storage_ == Storage::F16)
                        K.f16_to_f32(f16_.data() + p0 * d * kNR, buf.data(), (p1 - p0) * d * kNR);
                    else
                        for (std::size_t p = p0; p < p1; ++p)
                            K.dequant_i8_panel(i8_.data() + p * d * kNR, scales_.data() + p * kNR, d,
                                               buf.data() + (p - p0) * d * kNR);
                    cached_chunk = c;
                }
                panels = buf.data();
            }
            const std::size_t b0 = g * blk_per_group, b1 = std::min(nblk, b0 + blk_per_group);
            for (std::size_t b = b0; b < b1; ++b) {
                float* bthr = thr.data() + b * kMR;
                const float* bqn = qnorm + b * kMR;
                for (std::size_t p = p0; p < p1; ++p) {
                    const float* xn = xn_all + p * kNR;
                    switch (compute_) {
                        case Compute::F32:
                            K.tile(qpack + b * qblock_words, panels + (p - p0) * panel_words, d, bqn, xn, bthr,
                                   out, mask);
                            break;
                        case Compute::BF16:
                            K.tile_bf16(cq + b * qblock_words, cw_.data() + p * panel_words, dc_, bqn, xn, bthr,
                                        out, mask);
                            break;
                        case Compute::I8:
                            K.tile_i8(cq + b * qblock_words, cw_.data() + p * panel_words, dc_, qscale + b * kMR,
                                      cscale_.data() + p * kNR, cxsum_.data() + p * kNR, bqn, xn, bthr, out,
                                      mask);
                            break;
                    }
                    for (int i = 0; i < kMR; ++i) {
                        std::uint32_t mk = mask[i];
                        if (!mk) continue;
                        std::uint64_t* v = keys.data() + (b * kMR + i) * k;
                        while (mk) {
                            const int j = ctz32(mk);
                            mk &= mk - 1;
                            const std::size_t col = p * kNR + j;
                            if (col >= n_) break;  // padding columns (only in the last panel)
                            bthr[i] = topk_insert(v, k, topk_key(out[i * kNR + j], col));
                        }
                    }
                }
            }
            if (t == 0) ctl.maybe_poll(std::min(next.load(), nitems), nitems);
        }
    }, &ctl, [&] { return std::make_pair(std::min(next.load(), nitems), nitems); });
    ctl.throw_if_stopped();

    // Merge the workers' lists by (distance, index): their keys' order.
    std::vector<std::uint64_t> cand;
    for (std::size_t i = 0; i < m; ++i) {
        cand.clear();
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t r = 0; r < k && tkeys[t][i * k + r] != kEmptyKey; ++r) cand.push_back(tkeys[t][i * k + r]);
        const std::size_t take = std::min(k, cand.size());
        std::partial_sort(cand.begin(), cand.begin() + take, cand.end());
        for (std::size_t r = 0; r < k; ++r) {
            dist[i * k + r] = r < take ? key_distance(cand[r]) : kInf;
            idx[i * k + r] = r < take ? key_index(cand[r]) : -1;
        }
    }
}

}  // namespace npad
