// Standalone check of every compiled kernel set against the scalar oracle, bit for bit, with
// no Python: used to verify the NEON kernels on x86 machines through a cross compiler and
// qemu-user (tests/test_search_kernels.py::test_neon_kernels_under_qemu), and runnable natively.
//
//   aarch64-linux-gnu-g++ -std=c++17 -O2 -ffp-contract=off -static -Icsrc
//       csrc/selfcheck/kernel_selfcheck.cpp csrc/kernels/{scalar,neon,avx2,avx512,dispatch}.cpp
//       -o /tmp/selfcheck && qemu-aarch64-static /tmp/selfcheck
//
// Prints one line per kernel set and exits 0 if every kernel matched, 1 otherwise.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"

using namespace npad;

namespace {

int failures = 0;

void expect(bool ok, const std::string& isa, const char* what, std::size_t d) {
    if (!ok) {
        ++failures;
        std::printf("MISMATCH %s %s d=%zu\n", isa.c_str(), what, d);
    }
}

bool same_bits(const float* a, const float* b, std::size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

void check(const Kernels& S, const Kernels& K) {
    std::mt19937 gen(42);
    std::normal_distribution<float> nd;
    const std::size_t dims[] = {1, 7, 16, 17, 31, 128, 152, 1024};
    for (std::size_t d : dims) {
        std::vector<float> a(d), b(d);
        for (auto& v : a) v = nd(gen);
        for (auto& v : b) v = 3 * nd(gen);
        std::vector<std::uint16_t> h(d);
        S.f32_to_f16(b.data(), h.data(), d);
        const float x = S.l2sq_f32(a.data(), b.data(), d), y = K.l2sq_f32(a.data(), b.data(), d);
        expect(std::memcmp(&x, &y, 4) == 0, K.name, "l2sq_f32", d);
        const float u = S.l2sq_f16(a.data(), h.data(), d), w = K.l2sq_f16(a.data(), h.data(), d);
        expect(std::memcmp(&u, &w, 4) == 0, K.name, "l2sq_f16", d);
        {
            // many pairs: 37 rows (two groups of 16 and a tail), listed in a scattered order
            const std::size_t m = 37;
            std::vector<float> y(m * d), r1(m), r2(m), c1(m), c2(m);
            for (auto& v : y) v = 2 * nd(gen);
            std::vector<std::uint16_t> y16(m * d);
            S.f32_to_f16(y.data(), y16.data(), m * d);
            std::vector<std::int32_t> rows(m);
            for (std::size_t j = 0; j < m; ++j) rows[j] = static_cast<std::int32_t>((j * 11) % m);
            S.l2sq_f32_rows(a.data(), y.data(), d, rows.data(), m, r1.data());
            K.l2sq_f32_rows(a.data(), y.data(), d, rows.data(), m, r2.data());
            S.l2sq_f32_rows(a.data(), y.data(), d, nullptr, m, c1.data());
            K.l2sq_f32_rows(a.data(), y.data(), d, nullptr, m, c2.data());
            bool ok = same_bits(r1.data(), r2.data(), m) && same_bits(c1.data(), c2.data(), m);
            for (std::size_t j = 0; j < m; ++j) {
                const float one = S.l2sq_f32(a.data(), y.data() + rows[j] * d, d);
                ok = ok && std::memcmp(&one, &r1[j], 4) == 0;
            }
            expect(ok, K.name, "l2sq_f32_rows", d);
            S.l2sq_f16_rows(a.data(), y16.data(), d, rows.data(), m, r1.data());
            K.l2sq_f16_rows(a.data(), y16.data(), d, rows.data(), m, r2.data());
            S.l2sq_f16_rows(a.data(), y16.data(), d, nullptr, m, c1.data());
            K.l2sq_f16_rows(a.data(), y16.data(), d, nullptr, m, c2.data());
            expect(same_bits(r1.data(), r2.data(), m) && same_bits(c1.data(), c2.data(), m), K.name, "l2sq_f16_rows", d);
        }

        // tile: packed queries [d][12], panel [d][32] (64-byte aligned, as the index packs it).
        std::vector<float> qp(d * kMR);
        float* xp = static_cast<float*>(::operator new(d * kNR * sizeof(float), std::align_val_t(64)));
        for (auto& v : qp) v = nd(gen);
        for (std::size_t i = 0; i < d * kNR; ++i) xp[i] = nd(gen);
        float qn[kMR], xn[kNR], thr[kMR], o1[kMR * kNR], o2[kMR * kNR];
        std::uint32_t m1[kMR], m2[kMR];
        S.packed_sqnorms(qp.data(), d, kMR, qn);
        K.packed_sqnorms(qp.data(), d, kMR, o2);
        expect(same_bits(qn, o2, kMR), K.name, "packed_sqnorms", d);
        S.packed_sqnorms(xp, d, kNR, xn);
        for (int i = 0; i < kMR; ++i) thr[i] = qn[i] + static_cast<float>(d);
        S.tile(qp.data(), xp, d, nullptr, nullptr, nullptr, o1, nullptr);
        K.tile(qp.data(), xp, d, nullptr, nullptr, nullptr, o2, nullptr);
        expect(same_bits(o1, o2, kMR * kNR), K.name, "tile (dots)", d);
        S.tile(qp.data(), xp, d, qn, xn, thr, o1, m1);
        K.tile(qp.data(), xp, d, qn, xn, thr, o2, m2);
        expect(same_bits(o1, o2, kMR * kNR) && std::memcmp(m1, m2, sizeof m1) == 0, K.name, "tile (dist, mask)", d);

        std::vector<std::int8_t> codes(d * kNR);
        float scales[kNR];
        for (auto& c : codes) c = static_cast<std::int8_t>(static_cast<int>(gen() % 255) - 127);
        for (auto& s : scales) s = std::fabs(nd(gen));
        std::vector<float> d1(d * kNR), d2(d * kNR);
        S.dequant_i8_panel(codes.data(), scales, d, d1.data());
        K.dequant_i8_panel(codes.data(), scales, d, d2.data());
        expect(same_bits(d1.data(), d2.data(), d * kNR), K.name, "dequant_i8_panel", d);
        ::operator delete(xp, std::align_val_t(64));

        // int8 coreset blocks (3 blocks of 16 rows; codes in [-127, 127], stored + 128).
        const std::size_t d4 = (d + 3) / 4, nb = 3, rows = nb * kI8Block;
        std::vector<std::uint32_t> xw(nb * d4 * kI8Block), qw(d4);
        std::vector<std::int32_t> xsq(rows, 0);
        std::int32_t qsq = 0, qsum = 0;
        auto code = [&] { return static_cast<int>(gen() % 255) - 127; };
        for (std::size_t r = 0; r < d4; ++r) {
            std::uint32_t w = 0;
            for (int t = 0; t < 4; ++t) {
                const int c = 4 * r + t < d ? code() : 0;
                qsq += c * c;
                qsum += c;
                w |= static_cast<std::uint32_t>(c & 0xFF) << (8 * t);
            }
            qw[r] = w;
        }
        for (std::size_t i = 0; i < rows; ++i)
            for (std::size_t r = 0; r < d4; ++r) {
                std::uint32_t w = 0;
                for (int t = 0; t < 4; ++t) {
                    const int c = 4 * r + t < d ? code() : 0;
                    xsq[i] += c * c;
                    w |= static_cast<std::uint32_t>(c + 128) << (8 * t);
                }
                xw[(i / kI8Block) * d4 * kI8Block + r * kI8Block + i % kI8Block] = w;
            }
        std::vector<float> e1(rows), e2(rows);
        S.l2_i8_blocks(xw.data(), xsq.data(), nb, qw.data(), qsq, qsum, d4, e1.data());
        K.l2_i8_blocks(xw.data(), xsq.data(), nb, qw.data(), qsq, qsum, d4, e2.data());
        expect(same_bits(e1.data(), e2.data(), rows), K.name, "l2_i8_blocks", d);
        std::vector<float> sc1(rows), sc2, dcs(8);
        std::vector<std::int32_t> ce1(rows), ce2;
        for (std::size_t i = 0; i < rows; ++i) {
            sc1[i] = i % 7 == 0 ? -INFINITY : e1[i] * (0.5f + std::fabs(nd(gen)));
            ce1[i] = static_cast<std::int32_t>(gen() % 9) - 1;
        }
        for (auto& v : dcs) v = e1[0] * std::fabs(nd(gen)) * 2.f;
        sc2 = sc1;
        ce2 = ce1;
        float bv1, bv2;
        std::int64_t bi1, bi2;
        const std::int64_t n1 = S.greedy_step_i8(xw.data(), xsq.data(), nb, qw.data(), qsq, qsum, d4, sc1.data(),
                                                 ce1.data(), dcs.data(), 2.0002f, 9, &bv1, &bi1);
        const std::int64_t n2 = K.greedy_step_i8(xw.data(), xsq.data(), nb, qw.data(), qsq, qsum, d4, sc2.data(),
                                                 ce2.data(), dcs.data(), 2.0002f, 9, &bv2, &bi2);
        expect(same_bits(sc1.data(), sc2.data(), rows) && ce1 == ce2 && n1 == n2 && bi1 == bi2 &&
                   std::memcmp(&bv1, &bv2, 4) == 0,
               K.name, "greedy_step_i8", d);
    }
    // Conversions over every half bit pattern and a spread of floats.
    std::vector<std::uint16_t> all(1 << 16), h1(1 << 16), h2(1 << 16);
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
    std::vector<float> f1(1 << 16), f2(1 << 16);
    S.f16_to_f32(all.data(), f1.data(), all.size());
    K.f16_to_f32(all.data(), f2.data(), all.size());
    expect(same_bits(f1.data(), f2.data(), all.size()), K.name, "f16_to_f32", all.size());
    std::vector<float> src(1 << 16);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = nd(gen) * std::pow(10.f, static_cast<float>(i % 15) - 9.f);
    S.f32_to_f16(src.data(), h1.data(), src.size());
    K.f32_to_f16(src.data(), h2.data(), src.size());
    expect(h1 == h2, K.name, "f32_to_f16", src.size());
    // The float64 SPD solve: g = A A^T + k I (symmetric, both triangles), random right-hand side.
    for (std::size_t k : {std::size_t(1), std::size_t(5), std::size_t(17), std::size_t(64), std::size_t(129)}) {
        std::vector<double> a(k * k), g1(k * k), r1(k), col(k);
        for (auto& v : a) v = nd(gen);
        for (std::size_t i = 0; i < k; ++i)
            for (std::size_t j = 0; j < k; ++j) {
                double acc = i == j ? static_cast<double>(k) : 0.0;
                for (std::size_t t = 0; t < k; ++t) acc += a[i * k + t] * a[j * k + t];
                g1[i * k + j] = acc;
            }
        for (auto& v : r1) v = nd(gen);
        std::vector<double> g2 = g1, r2 = r1;
        const bool ok1 = S.spd_solve_f64(g1.data(), k, r1.data(), col.data());
        const bool ok2 = K.spd_solve_f64(g2.data(), k, r2.data(), col.data());
        expect(ok1 && ok2 && std::memcmp(r1.data(), r2.data(), k * sizeof(double)) == 0 &&
                   std::memcmp(g1.data(), g2.data(), k * k * sizeof(double)) == 0,
               K.name, "spd_solve_f64", k);
    }
    // The resize passes: random uint8 rows with random normalised taps, and a gathered row.
    {
        std::uniform_int_distribution<int> byte(0, 255);
        const std::size_t len = 2701, k = 7, rows_n = 9;
        std::vector<std::uint8_t> src(rows_n * len);
        for (auto& v : src) v = static_cast<std::uint8_t>(byte(gen));
        std::vector<std::int32_t> rows = {0, 3, 8, 1, 1, 5, 2};
        std::vector<float> w(k), o1(len), o2(len);
        for (auto& v : w) v = std::fabs(nd(gen));
        S.aa_rows_u8(src.data(), len, rows.data(), w.data(), k, len, o1.data());
        K.aa_rows_u8(src.data(), len, rows.data(), w.data(), k, len, o2.data());
        expect(same_bits(o1.data(), o2.data(), len), K.name, "aa_rows_u8", len);
        {
            std::vector<float> srcf(src.size()), f1(len), f2(len);
            for (auto& v : srcf) v = nd(gen);
            S.aa_rows_f32(srcf.data(), len, rows.data(), w.data(), k, len, f1.data());
            K.aa_rows_f32(srcf.data(), len, rows.data(), w.data(), k, len, f2.data());
            expect(same_bits(f1.data(), f2.data(), len), K.name, "aa_rows_f32", len);
        }
        const std::size_t olen = 963;
        std::uniform_int_distribution<int> pick(0, static_cast<int>(len) - 1);
        std::vector<std::int32_t> idx(k * olen);
        std::vector<float> cw(k * olen), c1(olen), c2(olen);
        for (auto& v : idx) v = pick(gen);
        for (auto& v : cw) v = nd(gen);
        S.aa_cols_f32(o1.data(), idx.data(), cw.data(), k, olen, c1.data());
        K.aa_cols_f32(o1.data(), idx.data(), cw.data(), k, olen, c2.data());
        expect(same_bits(c1.data(), c2.data(), olen), K.name, "aa_cols_f32", olen);
    }
    // The float greedy scan: scores with -inf, centers with -1, bounds around the margin.
    for (std::size_t n : {std::size_t(1), std::size_t(15), std::size_t(16), std::size_t(100), std::size_t(4099)}) {
        std::uniform_int_distribution<int> cen(-1, 63), coin(0, 9);
        std::vector<float> score(n), dcs(64);
        std::vector<std::int32_t> center(n), n1(n), n2(n);
        for (auto& v : dcs) v = std::fabs(nd(gen)) * 4.f;
        for (std::size_t i = 0; i < n; ++i) {
            score[i] = coin(gen) == 0 ? -std::numeric_limits<float>::infinity() : std::fabs(nd(gen)) * 2.f;
            center[i] = cen(gen);
            if (coin(gen) == 1) score[i] = score[i > 0 ? i - 1 : 0];  // ties for the argmax
        }
        const std::size_t m1 = S.greedy_need_f32(score.data(), center.data(), dcs.data(), 2.0002f, n, n1.data());
        const std::size_t m2 = K.greedy_need_f32(score.data(), center.data(), dcs.data(), 2.0002f, n, n2.data());
        expect(m1 == m2 && std::equal(n1.begin(), n1.begin() + m1, n2.begin()), K.name, "greedy_need_f32", n);
        float v1, v2;
        std::int64_t i1, i2;
        S.argmax_f32(score.data(), n, &v1, &i1);
        K.argmax_f32(score.data(), n, &v2, &i2);
        expect(i1 == i2 && std::memcmp(&v1, &v2, 4) == 0, K.name, "argmax_f32", n);
    }
    // The column-packed triangular product of N-pad's window reading.
    for (std::size_t d : {std::size_t(1), std::size_t(7), std::size_t(16), std::size_t(64), std::size_t(129)}) {
        std::vector<float> cols(d * (d + 1) / 2), v(d), z1(d), z2(d);
        for (auto& x : cols) x = nd(gen);
        for (auto& x : v) x = nd(gen);
        S.tri_cols_matvec(cols.data(), v.data(), d, z1.data());
        K.tri_cols_matvec(cols.data(), v.data(), d, z2.data());
        expect(same_bits(z1.data(), z2.data(), d), K.name, "tri_cols_matvec", d);
    }
}

}  // namespace

int main() {
    const Kernels& S = scalar_kernels();
    for (const std::string& name : available_isas()) {
        const int before = failures;
        check(S, kernels_by_name(name));
        std::printf("%s: %s\n", name.c_str(), failures == before ? "bit-identical to scalar" : "MISMATCH");
    }
    return failures == 0 ? 0 : 1;
}
