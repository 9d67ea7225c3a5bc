#include "local_gaussian.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../common/errors.h"
#include "../kernels/fp16.h"
#include "topk.h"

namespace npad {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// The squared norm bound of FlatIndex: beyond it |q|^2 + |x|^2 - 2 q.x could overflow.
constexpr float kMaxSqNorm = std::numeric_limits<float>::max() / 4;

}  // namespace

LocalGaussianBank::LocalGaussianBank(const float* f32, const std::uint16_t* f16, std::size_t n,
                                     std::size_t h, std::size_t w, std::size_t d)
    : n_(n), h_(h), w_(w), d_(d), npanels_((n + kNR - 1) / kNR), half_(f16 != nullptr) {
    if ((f32 == nullptr) == (f16 == nullptr)) throw InvalidInput("give the bank as float32 or as float16");
    if (n == 0 || h == 0 || w == 0 || d == 0)
        throw InvalidInput("the nominal bank must be (n, h, w, d) with every size >= 1");
    if (n > 0xFFFFFFFFu) throw InvalidInput("the nominal bank holds at most 2^32 - 1 images");
    const Kernels& K = active_kernels();
    const std::size_t cells = h * w, panel = d * kNR;
    // float32 panels whatever the input: a float16 bank is widened once here (exactly), not on
    // every call (the widening took ~15 % of a call, and the neighbours' gather read one
    // float16 per cache line with a software conversion).
    f32_.assign(cells * npanels_ * panel, 0.f);
    xnorm_.assign(cells * npanels_ * kNR, kInf);
    // A row-major copy per cell ([cell][n][d], as given) for the neighbours' gather: a vector's
    // d values then sit on d * 2 (or 4) / 64 cache lines, where the panels spread them over d
    // lines (the strided gather from the panels was a third of the solve, profiled).
    if (half_)
        r16_.resize(cells * n * d);
    else
        r32_.resize(cells * n * d);
    for (std::size_t img = 0; img < n; ++img)
        for (std::size_t c = 0; c < cells; ++c) {
            const std::size_t src = (img * cells + c) * d, dst = (c * n + img) * d;
            if (half_)
                std::copy(f16 + src, f16 + src + d, r16_.begin() + dst);
            else
                std::copy(f32 + src, f32 + src + d, r32_.begin() + dst);
        }
    avector<float> wide(panel);
    std::vector<float> row(d);
    for (std::size_t c = 0; c < cells; ++c) {
        for (std::size_t p = 0; p < npanels_; ++p) {
            std::fill(wide.begin(), wide.end(), 0.f);
            const std::size_t cols = std::min<std::size_t>(kNR, n - p * kNR);
            for (std::size_t j = 0; j < cols; ++j) {
                const std::size_t img = p * kNR + j;
                const std::size_t off = (img * cells + c) * d;
                if (half_)
                    K.f16_to_f32(f16 + off, row.data(), d);
                else
                    std::copy(f32 + off, f32 + off + d, row.begin());
                for (std::size_t r = 0; r < d; ++r) {
                    if (!std::isfinite(row[r]))
                        throw InvalidInput("nominal bank image " + std::to_string(img) + ", cell " +
                                           std::to_string(c) + " holds a non-finite value");
                    wide[r * kNR + j] = row[r];
                }
            }
            const std::size_t base = (c * npanels_ + p) * panel;
            std::copy(wide.begin(), wide.end(), f32_.begin() + base);
            float norms[kNR];
            K.packed_sqnorms(wide.data(), d, kNR, norms);
            for (std::size_t j = 0; j < cols; ++j) {
                if (!(norms[j] <= kMaxSqNorm))
                    throw InvalidInput("nominal bank image " + std::to_string(p * kNR + j) +
                                       " has a squared norm beyond FLT_MAX / 4: scale the data down");
                xnorm_[(c * npanels_ + p) * kNR + j] = norms[j];
            }
        }
    }
}

void LocalGaussianBank::export_nominal(void* dst) const {
    const std::size_t cells = h_ * w_;
    for (std::size_t c = 0; c < cells; ++c)
        for (std::size_t img = 0; img < n_; ++img) {
            const std::size_t src = (c * n_ + img) * d_, off = (img * cells + c) * d_;
            if (half_)
                std::copy(r16_.begin() + src, r16_.begin() + src + d_, static_cast<std::uint16_t*>(dst) + off);
            else
                std::copy(r32_.begin() + src, r32_.begin() + src + d_, static_cast<float*>(dst) + off);
        }
}

void LocalGaussianBank::gather(const Kernels& K, std::size_t cell, std::size_t img, float* tmp, double* dst) const {
    const std::size_t base = (cell * n_ + img) * d_;
    const float* src = r32_.data() + base;
    if (half_) {
        K.f16_to_f32(r16_.data() + base, tmp, d_);
        src = tmp;
    }
    for (std::size_t r = 0; r < d_; ++r) dst[r] = src[r];
}

void LocalGaussianBank::mahalanobis(const float* x, std::size_t b, int radius, int k, double shrinkage,
                                    const std::int64_t* exclude, int threads, float* out,
                                    Control& ctl) const {
    if (radius < 0) throw InvalidInput("radius must be >= 0; got " + std::to_string(radius));
    if (k < 2) throw InvalidInput("k must be >= 2; got " + std::to_string(k));
    if (!(shrinkage >= 0.0 && shrinkage <= 1.0)) throw InvalidInput("shrinkage must be in [0, 1]");
    if (b == 0) return;
    const Kernels& K = active_kernels();  // dispatch once per call
    const std::size_t d = d_, h = h_, w = w_, cells = h * w;
    const std::size_t R = static_cast<std::size_t>(radius), side = 2 * R + 1, S = side * side;
    if (static_cast<double>(S) * static_cast<double>(n_) >= 4294967295.0)
        throw InvalidInput("the window holds too many candidates (window cells x images must be < 2^32)");
    const std::size_t kq = static_cast<std::size_t>(k), cap = 2 * kq;
    const std::size_t nq = b * cells;

    for (std::size_t i = 0; i < nq * d; ++i)
        if (!std::isfinite(x[i]))
            throw InvalidInput("queries hold a non-finite value at row " + std::to_string(i / d));

    // Work items: blocks of grid rows. A worker scans, for the queries of its rows (all b
    // images), every bank cell of their windows (rows [r0 - R, r1 + R)), each cell's panels once
    // against the block's queries whose window holds it; each query keeps ONE candidate buffer
    // across its window's cells (its threshold carries from cell to cell), cut back to its k
    // best with nth_element when full; then the worker solves the block's local Gaussians while
    // its cells are still warm. Keys: distance bits << 32 | (slot * n + image), so the k best
    // are exact by (distance, window cell, image) whatever the order of the scan.
    const std::size_t rows_per_item = std::max<std::size_t>(2 * R + 2, (h + 2 * threads - 1) / (2 * threads));
    const std::size_t nitems = (h + rows_per_item - 1) / rows_per_item;
    std::atomic<std::size_t> next{0}, done{0};
    const int T = std::max(1, std::min<int>(threads, static_cast<int>(nitems)));
    const double s = shrinkage > 0.0 ? shrinkage : 1e-6;
    const double cw = (1.0 - s) / static_cast<double>(k - 1);

    parallel_run(T, [&](int t) {
        std::vector<std::uint64_t> cbuf;   // [query of the block][cap]
        std::vector<std::size_t> ccnt;
        avector<float> thr;                // per query of the block: its current k-th best
        std::vector<std::size_t> qloc;     // packed row -> query of the block
        std::vector<std::uint32_t> qslot;  // packed row -> slot of the cell in its window
        avector<float> qpack, qnorm, qthr;
        alignas(64) float tout[kMR * kNR];
        std::uint32_t mask[kMR];
        // Woodbury scratch
        std::vector<std::pair<std::uint64_t, std::uint32_t>> cand;
        std::vector<double> z, zt, mu(d), v(d), zv, g, sol, col, zsq;
        std::vector<std::size_t> roff, coff;
        std::vector<float> ztmp(d);
        avector<float> zr, zc;
        alignas(64) float gout[kMR * kNR];
        std::uint32_t gmask[kMR];
        for (;;) {
            if (ctl.stopped()) break;
            const std::size_t item = next.fetch_add(1);
            if (item >= nitems) break;
            const std::size_t r0 = item * rows_per_item, r1 = std::min(h, r0 + rows_per_item);
            const std::size_t bq = (r1 - r0) * w;          // queries per image in the block
            const std::size_t mq = b * bq;                 // block query l = bb * bq + (i - r0) * w + j
            cbuf.assign(mq * cap, kEmptyKey);
            ccnt.assign(mq, 0);
            thr.assign(mq, kInf);
            const std::size_t c0 = r0 >= R ? r0 - R : 0, c1 = std::min(h, r1 + R);
            std::size_t next_row = r0;
            // Query row qi's local Gaussians (all b images), once every cell of its windows is
            // scanned: right after the last of them, while their panels are still in cache.
            auto solve_row = [&](std::size_t qi) {
                for (std::size_t u = 0; u < b * w; ++u) {
                    if (ctl.stopped()) return;
                    const std::size_t bb = u / w, j = u % w, i = qi;
                    const std::size_t l = bb * bq + (qi - r0) * w + j, pos = qi * w + j;
                    const std::size_t q = bb * cells + pos;
                    std::uint64_t* vb = cbuf.data() + l * cap;
                    const std::size_t cnt = ccnt[l];
                    cand.clear();
                    for (std::size_t r = 0; r < cnt; ++r) {
                        const std::uint32_t lo = static_cast<std::uint32_t>(vb[r] & 0xFFFFFFFFu);
                        const std::size_t slot = lo / n_, img = lo % n_;
                        const std::size_t ci = i + slot / side - R, cj = j + slot % side - R;
                        cand.emplace_back((vb[r] & 0xFFFFFFFF00000000ull) | static_cast<std::uint32_t>(ci * w + cj),
                                          static_cast<std::uint32_t>(img));
                    }
                    const std::size_t kk = std::min<std::size_t>(static_cast<std::size_t>(k), cand.size());
                    float result = 0.f;
                    if (kk >= 2) {
                        std::partial_sort(cand.begin(), cand.begin() + kk, cand.end());
                        // zt: the neighbours transposed, (d, kk), so that the products below run over
                        // contiguous independent lanes.
                        z.resize(d);
                        zt.assign(d * kk, 0.0);
                        std::fill(mu.begin(), mu.end(), 0.0);
                        for (std::size_t r = 0; r < kk; ++r) {
                            gather(K, cand[r].first & 0xFFFFFFFFu, cand[r].second, ztmp.data(), z.data());
                            for (std::size_t e = 0; e < d; ++e) {
                                zt[e * kk + r] = z[e];
                                mu[e] += z[e];
                            }
                        }
                        double zz = 0.0, vv = 0.0;
                        const float* xq = x + q * d;
                        for (std::size_t e = 0; e < d; ++e) {
                            mu[e] /= static_cast<double>(kk);
                            v[e] = static_cast<double>(xq[e]) - mu[e];
                            vv += v[e] * v[e];
                        }
                        // Z Z^T with the dispatched tile kernel on the centred neighbours rounded to
                        // float32 (rows packed [d][kMR], columns [d][kNR]); exactly symmetric, since
                        // every dot runs the same fma sequence. zv, |Z|^2 and |v|^2 stay in double.
                        const std::size_t nbr = (kk + kMR - 1) / kMR, nbc = (kk + kNR - 1) / kNR;
                        zr.assign(nbr * d * kMR, 0.f);
                        zc.assign(nbc * d * kNR, 0.f);
                        zv.assign(kk, 0.0);
                        roff.resize(kk);
                        coff.resize(kk);
                        for (std::size_t r = 0; r < kk; ++r) {  // packed offsets (no division in the loop below)
                            roff[r] = (r / kMR) * d * kMR + r % kMR;
                            coff[r] = (r / kNR) * d * kNR + r % kNR;
                        }
                        for (std::size_t e = 0; e < d; ++e) {
                            double* ze = zt.data() + e * kk;
                            const double me = mu[e], ve = v[e];
                            float* zre = zr.data() + e * kMR;
                            float* zce = zc.data() + e * kNR;
                            for (std::size_t r = 0; r < kk; ++r) {
                                ze[r] -= me;
                                zv[r] += ze[r] * ve;
                                const float f = static_cast<float>(ze[r]);
                                zre[roff[r]] = f;
                                zce[coff[r]] = f;
                            }
                        }
                        // |Z|_F^2 in float64 with independent partial sums per lane of r
                        zsq.assign(kk, 0.0);
                        for (std::size_t e = 0; e < d; ++e) {
                            const double* ze = zt.data() + e * kk;
                            for (std::size_t r = 0; r < kk; ++r) zsq[r] += ze[r] * ze[r];
                        }
                        for (std::size_t r = 0; r < kk; ++r) zz += zsq[r];
                        g.assign(kk * kk, 0.0);
                        for (std::size_t br = 0; br < nbr; ++br)
                            for (std::size_t bc = 0; bc < nbc; ++bc) {
                                K.tile(zr.data() + br * d * kMR, zc.data() + bc * d * kNR, d, nullptr, nullptr, nullptr,
                                       gout, gmask);
                                for (std::size_t i = 0; i < kMR && br * kMR + i < kk; ++i)
                                    for (std::size_t j = 0; j < kNR && bc * kNR + j < kk; ++j)
                                        g[(br * kMR + i) * kk + bc * kNR + j] = cw * static_cast<double>(gout[i * kNR + j]);
                            }
                        const double lam = std::max(s * zz / (static_cast<double>(kk - 1) * static_cast<double>(d)), 1e-12);
                        for (std::size_t r = 0; r < kk; ++r) g[r * kk + r] += lam;
                        sol = zv;
                        col.resize(kk);
                        double m2 = vv / lam;
                        if (K.spd_solve_f64(g.data(), kk, sol.data(), col.data())) {
                            double corr = 0.0;
                            for (std::size_t r = 0; r < kk; ++r) corr += zv[r] * sol[r];
                            m2 = (vv - cw * corr) / lam;
                        }
                        result = static_cast<float>(std::sqrt(std::max(m2, 0.0)));
                    }
                    out[q] = result;
                }
            };
            for (std::size_t ci = c0; ci < c1; ++ci) {
                for (std::size_t cj = 0; cj < w; ++cj) {
                    const std::size_t c = ci * w + cj;
                    qloc.clear();
                    qslot.clear();
                    const std::size_t i0 = std::max(r0, ci >= R ? ci - R : 0), i1 = std::min(r1, ci + R + 1);
                    const std::size_t j0 = cj >= R ? cj - R : 0, j1 = std::min(w, cj + R + 1);
                    for (std::size_t bb = 0; bb < b; ++bb)
                        for (std::size_t i = i0; i < i1; ++i)
                            for (std::size_t j = j0; j < j1; ++j) {
                                qloc.push_back(bb * bq + (i - r0) * w + j);
                                qslot.push_back(static_cast<std::uint32_t>((ci + R - i) * side + (cj + R - j)));
                            }
                    const std::size_t m = qloc.size();
                    if (m == 0) continue;
                    const std::size_t nblk = (m + kMR - 1) / kMR;
                    qpack.assign(nblk * d * kMR, 0.f);
                    qnorm.assign(nblk * kMR, 0.f);
                    qthr.assign(nblk * kMR, -kInf);  // padding rows: nothing passes
                    for (std::size_t q = 0; q < m; ++q) {
                        const std::size_t l = qloc[q], bb = l / bq, pos = (l % bq) + r0 * w;
                        const float* src = x + (bb * cells + pos) * d;
                        float* dst = qpack.data() + (q / kMR) * d * kMR + (q % kMR);
                        for (std::size_t e = 0; e < d; ++e) dst[e * kMR] = src[e];
                        qthr[q] = thr[l];
                    }
                    for (std::size_t bl = 0; bl < nblk; ++bl) {
                        K.packed_sqnorms(qpack.data() + bl * d * kMR, d, kMR, qnorm.data() + bl * kMR);
                        for (std::size_t q = bl * kMR; q < std::min(m, (bl + 1) * kMR); ++q)
                            if (!(qnorm[q] <= kMaxSqNorm))
                                throw InvalidInput("a query has a squared norm beyond FLT_MAX / 4: scale the data down");
                    }
                    const float* panels = f32_.data() + c * npanels_ * d * kNR;
                    const float* xn_all = xnorm_.data() + c * npanels_ * kNR;
                    for (std::size_t bl = 0; bl < nblk; ++bl) {
                        float* bthr = qthr.data() + bl * kMR;
                        for (std::size_t p = 0; p < npanels_; ++p) {
                            K.tile(qpack.data() + bl * d * kMR, panels + p * d * kNR, d, qnorm.data() + bl * kMR,
                                   xn_all + p * kNR, bthr, tout, mask);
                            for (int i = 0; i < kMR; ++i) {
                                std::uint32_t mk = mask[i];
                                if (!mk) continue;
                                const std::size_t q = bl * kMR + i, l = qloc[q];
                                const std::int64_t ex = exclude ? exclude[l / bq] : -1;
                                const std::uint64_t base = static_cast<std::uint64_t>(qslot[q]) * n_;
                                std::uint64_t* vb = cbuf.data() + l * cap;
                                std::size_t& cnt = ccnt[l];
                                while (mk) {
                                    const int j = ctz32(mk);
                                    mk &= mk - 1;
                                    const std::size_t col = p * kNR + j;
                                    if (col >= n_) break;  // padding columns (only in the last panel)
                                    if (static_cast<std::int64_t>(col) == ex) continue;
                                    vb[cnt++] = (std::uint64_t{fp32_to_bits(tout[i * kNR + j])} << 32) | (base + col);
                                    if (cnt == cap) {
                                        std::nth_element(vb, vb + kq - 1, vb + cap);
                                        cnt = kq;
                                        bthr[i] = key_distance(vb[kq - 1]);
                                    }
                                }
                            }
                        }
                    }
                    for (std::size_t q = 0; q < m; ++q) thr[qloc[q]] = qthr[q];
                }
                // rows whose windows end at this cell row (or every remaining row at the last)
                while (next_row < r1 && (next_row + R <= ci || ci + 1 == c1)) solve_row(next_row++);
            }
            done.fetch_add(1);
            if (t == 0) ctl.maybe_poll(done.load(), nitems);
        }
    }, &ctl, [&] { return std::make_pair(done.load(), nitems); });
    ctl.throw_if_stopped();
}

}  // namespace npad
