#include "flat_index.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "../common/errors.h"

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
    for (std::size_t r = 0; r < d; ++r) {
        const float q = std::nearbyint(x[r * stride] * inv);
        codes[r * code_stride] = static_cast<std::int8_t>(std::min(127.f, std::max(-127.f, q)));
    }
}

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

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
std::size_t panels_per_chunk(std::size_t d) {
    const std::size_t budget = 256 * 1024;
    return std::max<std::size_t>(1, budget / (d * kNR * sizeof(float)));
}

// Running k best of one query, kept sorted by (distance, index). Within one worker bank
// indices arrive in increasing order, so a candidate equal to an entry goes after it.
struct TopK {
    float* v;
    std::int64_t* id;
    std::size_t k, n = 0;

    // Returns the new threshold (k-th best so far, +inf until k entries exist).
    float insert(float d, std::int64_t j) {
        if (n == k) {
            if (!(d < v[k - 1])) return v[k - 1];
            --n;
        }
        std::size_t pos = std::upper_bound(v, v + n, d) - v;
        for (std::size_t t = n; t > pos; --t) {
            v[t] = v[t - 1];
            id[t] = id[t - 1];
        }
        v[pos] = d;
        id[pos] = j;
        ++n;
        return n == k ? v[k - 1] : kInf;
    }
};

}  // namespace

FlatIndex::FlatIndex(const float* bank, std::size_t n, std::size_t d, Storage storage)
    : n_(n), d_(d), npanels_((n + kNR - 1) / kNR), storage_(storage) {
    if (n == 0) throw InvalidInput("bank must hold at least one vector; got 0 rows");
    if (d == 0) throw InvalidInput("bank vectors must have at least one dimension; got 0");
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
}

std::size_t FlatIndex::memory_bytes() const {
    return f32_.size() * 4 + f16_.size() * 2 + i8_.size() + scales_.size() * 4 + xnorm_.size() * 4;
}

void FlatIndex::search(const float* queries, std::size_t m, std::size_t k, int threads,
                       float* dist, std::int64_t* idx, Control& ctl) const {
    if (k == 0 || k > n_)
        throw InvalidInput("k must be in [1, ntotal=" + std::to_string(n_) + "]; got " + std::to_string(k));
    if (m == 0) return;
    const Kernels& K = active_kernels();  // dispatch once per call
    const std::size_t d = d_;

    // Pack queries into blocks [d][kMR]; padding rows are zero and never become candidates.
    const std::size_t nblk = (m + kMR - 1) / kMR;
    avector<float> qpack(nblk * d * kMR, 0.f);
    avector<float> qnorm(nblk * kMR, 0.f);
    for (std::size_t i = 0; i < m; ++i) {
        const float* row = queries + i * d;
        check_finite_row(row, d, i, "queries");
        float* dst = qpack.data() + (i / kMR) * d * kMR + (i % kMR);
        for (std::size_t r = 0; r < d; ++r) dst[r * kMR] = row[r];
    }
    for (std::size_t b = 0; b < nblk; ++b) K.packed_sqnorms(qpack.data() + b * d * kMR, d, kMR, qnorm.data() + b * kMR);
    for (std::size_t i = 0; i < m; ++i) check_sqnorm(qnorm[i], i, "queries");

    // Work items: (bank chunk, query group), chunk-major, handed out in increasing order so
    // that every worker sees each query's bank indices in increasing order.
    const std::size_t ppc = panels_per_chunk(d);
    const std::size_t nchunks = (npanels_ + ppc - 1) / ppc;
    std::size_t T = std::max(1, threads);
    const double work = double(m) * double(n_) * double(d);
    if (work < double(1 << 21)) T = 1;  // thread start-up would cost more than it saves
    std::size_t ngroups = 1;
    if (nchunks < 4 * T) ngroups = std::min(nblk, (4 * T + nchunks - 1) / nchunks);
    T = std::min(T, nchunks * ngroups);
    const std::size_t blk_per_group = (nblk + ngroups - 1) / ngroups;
    const std::size_t nitems = nchunks * ngroups;

    std::vector<std::vector<float>> tv(T);
    std::vector<std::vector<std::int64_t>> ti(T);
    std::vector<std::vector<std::size_t>> tn(T);
    std::atomic<std::size_t> next{0};

    parallel_run(static_cast<int>(T), [&](int t) {
        std::vector<float>& vals = tv[t];
        std::vector<std::int64_t>& ids = ti[t];
        vals.assign(m * k, kInf);
        ids.assign(m * k, -1);
        std::vector<std::size_t> cnt(m, 0);
        avector<float> thr(nblk * kMR, -kInf);  // padding rows: nothing passes
        for (std::size_t i = 0; i < m; ++i) thr[i] = kInf;
        avector<float> buf;
        if (storage_ != Storage::F32) buf.resize(ppc * d * kNR);
        alignas(64) float out[kMR * kNR];
        std::uint32_t mask[kMR];
        std::size_t cached_chunk = static_cast<std::size_t>(-1);

        for (;;) {
            if (ctl.stopped()) break;
            const std::size_t item = next.fetch_add(1);
            if (item >= nitems) break;
            const std::size_t c = item / ngroups, g = item % ngroups;
            const std::size_t p0 = c * ppc, p1 = std::min(npanels_, p0 + ppc);
            const float* panels;
            if (storage_ == Storage::F32) {
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
                const float* qp = qpack.data() + b * d * kMR;
                float* bthr = thr.data() + b * kMR;
                for (std::size_t p = p0; p < p1; ++p) {
                    K.tile(qp, panels + (p - p0) * d * kNR, d, qnorm.data() + b * kMR,
                           xnorm_.data() + p * kNR, bthr, out, mask);
                    for (int i = 0; i < kMR; ++i) {
                        std::uint32_t mk = mask[i];
                        if (!mk) continue;
                        const std::size_t qi = b * kMR + i;
                        TopK top{vals.data() + qi * k, ids.data() + qi * k, k, cnt[qi]};
                        while (mk) {
                            const int j = ctz32(mk);
                            mk &= mk - 1;
                            const std::size_t col = p * kNR + j;
                            if (col >= n_) break;  // padding columns (only in the last panel)
                            bthr[i] = top.insert(out[i * kNR + j], static_cast<std::int64_t>(col));
                        }
                        cnt[qi] = top.n;
                    }
                }
            }
            if (t == 0) ctl.maybe_poll(std::min(next.load(), nitems), nitems);
        }
        tn[t] = std::move(cnt);
    }, &ctl, [&] { return std::make_pair(std::min(next.load(), nitems), nitems); });
    ctl.throw_if_stopped();

    // Merge the workers' lists by (distance, index).
    std::vector<std::pair<float, std::int64_t>> cand;
    for (std::size_t i = 0; i < m; ++i) {
        cand.clear();
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t r = 0; r < tn[t][i]; ++r) cand.emplace_back(tv[t][i * k + r], ti[t][i * k + r]);
        const std::size_t take = std::min(k, cand.size());
        std::partial_sort(cand.begin(), cand.begin() + take, cand.end());
        for (std::size_t r = 0; r < k; ++r) {
            dist[i * k + r] = r < take ? cand[r].first : kInf;
            idx[i * k + r] = r < take ? cand[r].second : -1;
        }
    }
}

}  // namespace npad
