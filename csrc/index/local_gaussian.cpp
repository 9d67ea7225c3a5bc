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

// Cholesky solve of the SPD system g x = rhs in place (g: kk x kk row-major, symmetric; its
// lower triangle is overwritten by L). Right-looking, so every inner loop is a contiguous
// update with independent lanes (it vectorises without reassociating a sum). col: kk scratch.
// Returns false if a pivot is not positive (then the caller falls back to |v|^2 / lam).
bool cholesky_solve(double* g, std::size_t kk, double* rhs, double* col) {
    for (std::size_t j = 0; j < kk; ++j) {
        const double pivot = g[j * kk + j];
        if (!(pivot > 0.0)) return false;
        const double l = std::sqrt(pivot);
        g[j * kk + j] = l;
        for (std::size_t i = j + 1; i < kk; ++i) col[i] = g[i * kk + j] / l;
        for (std::size_t i = j + 1; i < kk; ++i) {
            g[i * kk + j] = col[i];
            const double a = col[i];
            double* gi = g + i * kk;
            for (std::size_t t = j + 1; t <= i; ++t) gi[t] -= a * col[t];
        }
    }
    for (std::size_t i = 0; i < kk; ++i) {  // L y = rhs (column-oriented)
        rhs[i] /= g[i * kk + i];
        const double yi = rhs[i];
        for (std::size_t t = i + 1; t < kk; ++t) rhs[t] -= g[t * kk + i] * yi;
    }
    for (std::size_t i = kk; i-- > 0;) {  // L^T x = y (row i of L is column i of L^T)
        rhs[i] /= g[i * kk + i];
        const double xi = rhs[i];
        const double* li = g + i * kk;
        for (std::size_t t = 0; t < i; ++t) rhs[t] -= li[t] * xi;
    }
    return true;
}

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
    if (half_)
        f16_.assign(cells * npanels_ * panel, 0);
    else
        f32_.assign(cells * npanels_ * panel, 0.f);
    xnorm_.assign(cells * npanels_ * kNR, kInf);
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
            if (half_)
                for (std::size_t r = 0; r < d; ++r)
                    for (std::size_t j = 0; j < cols; ++j)
                        f16_[base + r * kNR + j] = f16[((p * kNR + j) * cells + c) * d + r];
            else
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

void LocalGaussianBank::gather(std::size_t cell, std::size_t img, double* dst) const {
    const std::size_t p = img / kNR, j = img % kNR;
    const std::size_t base = (cell * npanels_ + p) * d_ * kNR + j;
    if (half_)
        for (std::size_t r = 0; r < d_; ++r) dst[r] = half_to_float(f16_[base + r * kNR]);
    else
        for (std::size_t r = 0; r < d_; ++r) dst[r] = f32_[base + r * kNR];
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
    const std::size_t R = static_cast<std::size_t>(radius), S = (2 * R + 1) * (2 * R + 1);
    // Per (cell, query) the cell's kc best: one more than k when an image is excluded, so the
    // k best of the others are always among them.
    const std::size_t kc = std::min<std::size_t>(static_cast<std::size_t>(k) + (exclude ? 1 : 0), n_);
    const std::size_t nq = b * cells;

    for (std::size_t i = 0; i < nq * d; ++i)
        if (!std::isfinite(x[i]))
            throw InvalidInput("queries hold a non-finite value at row " + std::to_string(i / d));

    // keys[(query * S + slot) * kc ..]: the kc best of the query's window cell `slot`.
    std::vector<std::uint64_t> keys(nq * S * kc, kEmptyKey);
    std::atomic<std::size_t> next{0}, done{0};
    const int T = std::max(1, std::min<int>(threads, static_cast<int>(cells)));

    // Phase 1: per bank cell, every query whose window holds the cell, against the cell's panels.
    parallel_run(T, [&](int t) {
        std::vector<std::size_t> qrow;  // query index per packed row
        std::vector<std::size_t> qslot;
        std::vector<std::uint64_t> cbuf;
        std::vector<std::size_t> ccnt;
        avector<float> qpack, qnorm, thr, buf(half_ ? npanels_ * d * kNR : 0);
        alignas(64) float tout[kMR * kNR];
        std::uint32_t mask[kMR];
        for (;;) {
            if (ctl.stopped()) break;
            const std::size_t c = next.fetch_add(1);
            if (c >= cells) break;
            const std::size_t ci = c / w, cj = c % w;
            qrow.clear();
            qslot.clear();
            const std::size_t i0 = ci >= R ? ci - R : 0, i1 = std::min(h, ci + R + 1);
            const std::size_t j0 = cj >= R ? cj - R : 0, j1 = std::min(w, cj + R + 1);
            for (std::size_t bb = 0; bb < b; ++bb)
                for (std::size_t i = i0; i < i1; ++i)
                    for (std::size_t j = j0; j < j1; ++j) {
                        qrow.push_back((bb * h + i) * w + j);
                        // the cell's slot in the query's window: offset (ci - i, cj - j) + R
                        qslot.push_back((ci + R - i) * (2 * R + 1) + (cj + R - j));
                    }
            const std::size_t m = qrow.size(), nblk = (m + kMR - 1) / kMR;
            qpack.assign(nblk * d * kMR, 0.f);
            qnorm.assign(nblk * kMR, 0.f);
            thr.assign(nblk * kMR, -kInf);  // padding rows: nothing passes
            for (std::size_t q = 0; q < m; ++q) {
                const float* src = x + qrow[q] * d;
                float* dst = qpack.data() + (q / kMR) * d * kMR + (q % kMR);
                for (std::size_t r = 0; r < d; ++r) dst[r * kMR] = src[r];
                thr[q] = kInf;
            }
            for (std::size_t bl = 0; bl < nblk; ++bl) {
                K.packed_sqnorms(qpack.data() + bl * d * kMR, d, kMR, qnorm.data() + bl * kMR);
                for (std::size_t q = bl * kMR; q < std::min(m, (bl + 1) * kMR); ++q)
                    if (!(qnorm[q] <= kMaxSqNorm))
                        throw InvalidInput("a query has a squared norm beyond FLT_MAX / 4: scale the data down");
            }
            const float* panels;
            if (half_) {
                K.f16_to_f32(f16_.data() + c * npanels_ * d * kNR, buf.data(), npanels_ * d * kNR);
                panels = buf.data();
            } else {
                panels = f32_.data() + c * npanels_ * d * kNR;
            }
            const float* xn_all = xnorm_.data() + c * npanels_ * kNR;
            // Each query's candidates in a buffer of 2 kc keys, cut back to its kc best
            // (nth_element) when it fills: O(1) per candidate instead of an insertion into a
            // sorted list of kc (which profiled at a third of the call with kc = 32).
            const std::size_t cap = 2 * kc;
            cbuf.assign(m * cap, kEmptyKey);
            ccnt.assign(m, 0);
            for (std::size_t bl = 0; bl < nblk; ++bl) {
                float* bthr = thr.data() + bl * kMR;
                for (std::size_t p = 0; p < npanels_; ++p) {
                    K.tile(qpack.data() + bl * d * kMR, panels + p * d * kNR, d, qnorm.data() + bl * kMR,
                           xn_all + p * kNR, bthr, tout, mask);
                    for (int i = 0; i < kMR; ++i) {
                        std::uint32_t mk = mask[i];
                        if (!mk) continue;
                        const std::size_t q = bl * kMR + i;
                        std::uint64_t* v = cbuf.data() + q * cap;
                        std::size_t& cnt = ccnt[q];
                        while (mk) {
                            const int j = ctz32(mk);
                            mk &= mk - 1;
                            const std::size_t col = p * kNR + j;
                            if (col >= n_) break;  // padding columns (only in the last panel)
                            v[cnt++] = topk_key(tout[i * kNR + j], col);
                            if (cnt == cap) {
                                std::nth_element(v, v + kc - 1, v + cap);
                                cnt = kc;
                                bthr[i] = key_distance(v[kc - 1]);
                            }
                        }
                    }
                }
            }
            for (std::size_t q = 0; q < m; ++q) {
                std::uint64_t* v = cbuf.data() + q * cap;
                std::size_t cnt = ccnt[q];
                if (cnt > kc) {
                    std::nth_element(v, v + kc - 1, v + cnt);
                    cnt = kc;
                }
                std::uint64_t* dst = keys.data() + (qrow[q] * S + qslot[q]) * kc;
                std::copy(v, v + cnt, dst);  // the rest stays kEmptyKey
            }
            done.fetch_add(1);
            if (t == 0) ctl.maybe_poll(done.load(), cells + nq);
        }
    }, &ctl, [&] { return std::make_pair(done.load(), cells + nq); });
    ctl.throw_if_stopped();

    // Phase 2: per query, the k best over its window's cells, then the Woodbury form.
    const double s = shrinkage > 0.0 ? shrinkage : 1e-6;
    const double cw = (1.0 - s) / static_cast<double>(k - 1);
    next.store(0);
    const int T2 = std::max(1, std::min<int>(threads, static_cast<int>(nq)));
    parallel_run(T2, [&](int t) {
        // (distance bits, cell, image) ordered as a tuple: ties go to the lower cell, then image
        std::vector<std::pair<std::uint64_t, std::uint32_t>> cand;
        std::vector<double> z, zt, mu(d), v(d), zv, g, sol, col, zsq;
        std::vector<std::size_t> roff, coff;
        avector<float> zr, zc;
        alignas(64) float gout[kMR * kNR];
        std::uint32_t gmask[kMR];
        for (;;) {
            if (ctl.stopped()) break;
            const std::size_t q = next.fetch_add(1);
            if (q >= nq) break;
            const std::size_t bb = q / cells, pos = q % cells, i = pos / w, j = pos % w;
            const std::int64_t ex = exclude ? exclude[bb] : -1;
            cand.clear();
            const std::size_t i0 = i >= R ? i - R : 0, i1 = std::min(h, i + R + 1);
            const std::size_t j0 = j >= R ? j - R : 0, j1 = std::min(w, j + R + 1);
            for (std::size_t ci = i0; ci < i1; ++ci)
                for (std::size_t cj = j0; cj < j1; ++cj) {
                    const std::size_t slot = (ci + R - i) * (2 * R + 1) + (cj + R - j);
                    const std::uint64_t* v8 = keys.data() + (q * S + slot) * kc;
                    for (std::size_t r = 0; r < kc; ++r) {
                        if (v8[r] == kEmptyKey) break;
                        if (key_index(v8[r]) == ex) continue;
                        // re-key: distance bits high, then (cell, image) order below
                        cand.emplace_back((v8[r] & 0xFFFFFFFF00000000ull) | static_cast<std::uint32_t>(ci * w + cj),
                                          static_cast<std::uint32_t>(key_index(v8[r])));
                    }
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
                    gather(cand[r].first & 0xFFFFFFFFu, cand[r].second, z.data());
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
                if (cholesky_solve(g.data(), kk, sol.data(), col.data())) {
                    double corr = 0.0;
                    for (std::size_t r = 0; r < kk; ++r) corr += zv[r] * sol[r];
                    m2 = (vv - cw * corr) / lam;
                }
                result = static_cast<float>(std::sqrt(std::max(m2, 0.0)));
            }
            out[q] = result;
            if (t == 0 && (q & 255) == 0) ctl.maybe_poll(cells + std::min(next.load(), nq), cells + nq);
        }
    }, &ctl, [&] { return std::make_pair(cells + std::min(next.load(), nq), cells + nq); });
    ctl.throw_if_stopped();
}

}  // namespace npad
