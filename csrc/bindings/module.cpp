// pybind11 bindings of the npad_edge core: array checks, GIL release, signal polling and
// exception translation only. Every algorithm lives in kernels/, index/ and coreset/.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "../common/errors.h"
#include "../common/parallel.h"
#include "../coreset/greedy.h"
#include "../coreset/random.h"
#include "../image/band.h"
#include "../image/resize.h"
#include "../index/flat_index.h"
#include "../index/local_gaussian.h"
#include "../index/window_gaussian.h"
#include "../kernels/compact.h"
#include "../kernels/kernels.h"

namespace py = pybind11;
using namespace npad;

namespace {

const char* dtype_name(const py::array& a) {
    static thread_local std::string s;
    s = py::str(a.dtype()).cast<std::string>();
    return s.c_str();
}

// Checks without converting: a wrong dtype or layout is an error, never a silent copy.
template <class T>
void check_array(const py::array& a, const char* name, int ndim) {
    // dtype equality, not identity: an unpickled array (e.g. from a Ray worker) carries an
    // equal copy of numpy's dtype object
    if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().equal(py::dtype::of<T>()))
        throw InvalidInput(std::string(name) + " must have dtype " +
                           py::str(py::dtype::of<T>()).cast<std::string>() + "; got " + dtype_name(a));
    if (a.ndim() != ndim)
        throw InvalidInput(std::string(name) + " must be " + std::to_string(ndim) + "-D; got " +
                           std::to_string(a.ndim()) + "-D");
    if (!(a.flags() & py::array::c_style))
        throw InvalidInput(std::string(name) + " must be C-contiguous (use np.ascontiguousarray)");
}

// Polls for Ctrl-C (and calls the progress callback) from the calling thread with the GIL.
// The first Python exception is kept and re-raised once the C++ call has unwound.
struct PyPoll {
    std::optional<py::function> progress;
    std::shared_ptr<py::error_already_set> error;

    std::function<bool(std::size_t, std::size_t)> fn() {
        return [this](std::size_t done, std::size_t total) {
            py::gil_scoped_acquire gil;
            if (PyErr_CheckSignals() != 0) {
                error = std::make_shared<py::error_already_set>();
                return false;
            }
            if (progress) {
                try {
                    (*progress)(done, total);
                } catch (py::error_already_set& e) {
                    error = std::make_shared<py::error_already_set>(std::move(e));
                    return false;
                }
            }
            return true;
        };
    }
    void rethrow() {
        if (error) throw *error;
    }
};

int check_threads(int threads) {
    if (threads <= 0) throw InvalidInput("threads must be >= 1; got " + std::to_string(threads));
    return threads;
}

class PyFlatIndex {
public:
    PyFlatIndex(const py::array& bank, const std::string& dtype, const std::string& compute) {
        check_array<float>(bank, "bank", 2);
        const Storage s = storage_from_name(dtype);
        const Compute c = compute_from_name(compute);
        const auto n = static_cast<std::size_t>(bank.shape(0)), d = static_cast<std::size_t>(bank.shape(1));
        const float* p = static_cast<const float*>(bank.data());
        py::gil_scoped_release nogil;
        index_ = std::make_unique<FlatIndex>(p, n, d, s, c);
    }

    py::tuple search(const py::array& queries, long long k, int threads, long long rerank) {
        if (rerank < 0) throw InvalidInput("rerank must be >= 0; got " + std::to_string(rerank));
        check_array<float>(queries, "queries", 2);
        check_threads(threads);
        if (static_cast<std::size_t>(queries.shape(1)) != index_->dim())
            throw InvalidInput("queries must have " + std::to_string(index_->dim()) + " columns (the bank's dim); got " +
                               std::to_string(queries.shape(1)));
        if (k <= 0 || static_cast<std::size_t>(k) > index_->ntotal())
            throw InvalidInput("k must be in [1, ntotal=" + std::to_string(index_->ntotal()) + "]; got " + std::to_string(k));
        const auto m = static_cast<std::size_t>(queries.shape(0));
        py::array_t<float> dist({m, static_cast<std::size_t>(k)});
        py::array_t<std::int64_t> idx({m, static_cast<std::size_t>(k)});
        const float* q = static_cast<const float*>(queries.data());
        float* dp = dist.mutable_data();
        std::int64_t* ip = idx.mutable_data();
        PyPoll poll;
        Control ctl(poll.fn());
        try {
            py::gil_scoped_release nogil;
            index_->search(q, m, static_cast<std::size_t>(k), threads, dp, ip, ctl,
                           static_cast<std::size_t>(rerank));
        } catch (const Cancelled&) {
            poll.rethrow();
            throw;
        }
        return py::make_tuple(dist, idx);
    }

    std::size_t ntotal() const { return index_->ntotal(); }
    std::size_t dim() const { return index_->dim(); }
    std::string dtype() const { return storage_name(index_->storage()); }
    std::string compute() const { return compute_name(index_->compute()); }
    std::size_t memory_bytes() const { return index_->memory_bytes(); }

private:
    std::unique_ptr<FlatIndex> index_;
};

py::tuple py_greedy_coreset(const py::array& features, long long n_select, long long proj_dim,
                                            long long n_starts, std::uint64_t seed, int threads,
                                            std::optional<py::function> progress, const std::string& storage,
                                            const std::string& bound) {
    check_array<float>(features, "features", 2);
    check_threads(threads);
    const auto n = static_cast<std::size_t>(features.shape(0)), d = static_cast<std::size_t>(features.shape(1));
    if (n == 0) throw InvalidInput("features must hold at least one row; got 0");
    if (n_select <= 0 || static_cast<std::size_t>(n_select) > n)
        throw InvalidInput("n_select must be in [1, " + std::to_string(n) + "]; got " + std::to_string(n_select));
    if (proj_dim < 0) throw InvalidInput("proj_dim must be >= 1 or None; got " + std::to_string(proj_dim));
    if (n_starts <= 0) throw InvalidInput("n_starts must be >= 1; got " + std::to_string(n_starts));
    CoresetStorage st;
    if (storage == "float32") st = CoresetStorage::Float32;
    else if (storage == "float16") st = CoresetStorage::Float16;
    else if (storage == "int8") st = CoresetStorage::Int8;
    else throw InvalidInput("storage must be 'float32', 'float16' or 'int8'; got '" + storage + "'");
    SubspaceBoundMode bm;
    if (bound == "auto") bm = SubspaceBoundMode::Auto;
    else if (bound == "on") bm = SubspaceBoundMode::On;
    else if (bound == "off") bm = SubspaceBoundMode::Off;
    else throw InvalidInput("bound must be 'auto', 'on' or 'off'; got '" + bound + "'");
    py::array_t<std::int64_t> out(static_cast<std::size_t>(n_select));
    const float* x = static_cast<const float*>(features.data());
    std::int64_t* o = out.mutable_data();
    PyPoll poll;
    poll.progress = std::move(progress);
    Control ctl(poll.fn());
    CoresetInfo info;
    try {
        py::gil_scoped_release nogil;
        greedy_coreset(x, n, d, static_cast<std::size_t>(n_select), static_cast<std::size_t>(proj_dim),
                       static_cast<std::size_t>(n_starts), seed, threads, ctl, o, st, &info, bm);
    } catch (const Cancelled&) {
        poll.rethrow();
        throw;
    }
    py::array_t<std::int64_t> rows(info.rows_computed.size());
    std::copy(info.rows_computed.begin(), info.rows_computed.end(), rows.mutable_data());
    py::dict d_info;
    d_info["storage"] = info.storage == CoresetStorage::Float16 ? "float16"
                        : info.storage == CoresetStorage::Int8  ? "int8"
                                                                 : "float32";
    if (info.storage == CoresetStorage::Int8) d_info["int8_scale"] = info.int8_scale;
    d_info["isa"] = std::string(info.isa);
    d_info["rows_computed"] = rows;
    d_info["bound_dims"] = info.bound_dims;
    return py::make_tuple(out, d_info);
}

// ---- testing hooks: run one kernel of a named instruction set on small arrays ----------

template <class T>
const T* data_of(const py::array& a, const char* name, int ndim) {
    check_array<T>(a, name, ndim);
    return static_cast<const T*>(a.data());
}

py::object kernel_call(const std::string& isa, const std::string& op, py::args args) {
    const Kernels& K = kernels_by_name(isa);
    auto arr = [&](std::size_t i) {
        if (i >= args.size()) throw InvalidInput("kernel '" + op + "' needs more arguments");
        return args[i].cast<py::array>();
    };
    // Every length is checked against the first array's: the kernels trust them.
    if (op == "l2sq_f32") {
        const py::array a = arr(0), b = arr(1);
        auto pa = data_of<float>(a, "a", 1), pb = data_of<float>(b, "b", 1);
        if (b.shape(0) != a.shape(0)) throw InvalidInput("a and b must have the same length");
        return py::float_(K.l2sq_f32(pa, pb, a.shape(0)));
    }
    if (op == "l2sq_f16") {
        const py::array a = arr(0), b = arr(1);
        auto pa = data_of<float>(a, "a", 1);
        auto pb = data_of<std::uint16_t>(b, "b", 1);
        if (b.shape(0) != a.shape(0)) throw InvalidInput("a and b must have the same length");
        return py::float_(K.l2sq_f16(pa, pb, a.shape(0)));
    }
    if (op == "l2sq_f32_rows" || op == "l2sq_f16_rows") {  // a (d,), y (m, d), rows (n,) int32 or None
        const py::array a = arr(0), y = arr(1);
        auto pa = data_of<float>(a, "a", 1);
        const bool f16 = op == "l2sq_f16_rows";
        if (f16)
            check_array<std::uint16_t>(y, "y", 2);
        else
            check_array<float>(y, "y", 2);
        const std::size_t d = a.shape(0), m = y.shape(0);
        if (static_cast<std::size_t>(y.shape(1)) != d) throw InvalidInput("y must have a's length per row");
        const std::int32_t* pr = nullptr;
        std::size_t n = m;
        py::array rows;
        if (args.size() > 2 && !args[2].is_none()) {
            rows = arr(2);
            pr = data_of<std::int32_t>(rows, "rows", 1);
            n = rows.shape(0);
            for (std::size_t j = 0; j < n; ++j)
                if (pr[j] < 0 || static_cast<std::size_t>(pr[j]) >= m) throw InvalidInput("rows out of range");
        }
        py::array_t<float> out(n);
        if (f16)
            K.l2sq_f16_rows(pa, static_cast<const std::uint16_t*>(y.data()), d, pr, n, out.mutable_data());
        else
            K.l2sq_f32_rows(pa, static_cast<const float*>(y.data()), d, pr, n, out.mutable_data());
        return std::move(out);
    }
    if (op == "f16_to_f32") {
        const py::array a = arr(0);
        auto p = data_of<std::uint16_t>(a, "x", 1);
        py::array_t<float> out(a.shape(0));
        K.f16_to_f32(p, out.mutable_data(), a.shape(0));
        return std::move(out);
    }
    if (op == "f32_to_f16") {
        const py::array a = arr(0);
        auto p = data_of<float>(a, "x", 1);
        py::array_t<std::uint16_t> out(a.shape(0));
        K.f32_to_f16(p, out.mutable_data(), a.shape(0));
        return std::move(out);
    }
    if (op == "dequant_i8_panel") {  // codes (d, kNR) int8, scales (kNR,) float32
        const py::array c = arr(0), s = arr(1);
        auto pc = data_of<std::int8_t>(c, "codes", 2);
        auto ps = data_of<float>(s, "scales", 1);
        if (c.shape(1) != kNR || s.shape(0) != kNR) throw InvalidInput("panel must be (d, 32) with 32 scales");
        py::array_t<float> out({c.shape(0), c.shape(1)});
        K.dequant_i8_panel(pc, ps, c.shape(0), out.mutable_data());
        return std::move(out);
    }
    if (op == "packed_sqnorms") {  // p (d, w)
        const py::array p = arr(0);
        auto pp = data_of<float>(p, "p", 2);
        py::array_t<float> out(p.shape(1));
        K.packed_sqnorms(pp, p.shape(0), p.shape(1), out.mutable_data());
        return std::move(out);
    }
    if (op == "tile") {  // qp (d, 12), xp (d, 32) [, qn (12,), xn (32,), thr (12,)]
        const py::array qp = arr(0), xp = arr(1);
        auto pq = data_of<float>(qp, "qp", 2);
        auto px = data_of<float>(xp, "xp", 2);
        if (qp.shape(1) != kMR || xp.shape(1) != kNR || qp.shape(0) != xp.shape(0))
            throw InvalidInput("tile needs qp (d, 12) and xp (d, 32)");
        // The AVX-512 kernel uses aligned loads: copy the panel into aligned storage.
        avector<float> xa(px, px + xp.shape(0) * kNR);
        py::array_t<float> out({kMR, kNR});
        py::array_t<std::uint32_t> mask(kMR);
        if (args.size() == 2) {
            K.tile(pq, xa.data(), qp.shape(0), nullptr, nullptr, nullptr, out.mutable_data(), nullptr);
            return py::make_tuple(out, py::none());
        }
        if (args.size() != 5) throw InvalidInput("tile takes qp, xp [, qn, xn, thr]");
        const py::array aqn = arr(2), axn = arr(3), athr = arr(4);
        auto qn = data_of<float>(aqn, "qn", 1);
        auto xn = data_of<float>(axn, "xn", 1);
        auto thr = data_of<float>(athr, "thr", 1);
        if (aqn.shape(0) != kMR || axn.shape(0) != kNR || athr.shape(0) != kMR)
            throw InvalidInput("tile needs qn (12,), xn (32,) and thr (12,)");
        K.tile(pq, xa.data(), qp.shape(0), qn, xn, thr, out.mutable_data(), mask.mutable_data());
        return py::make_tuple(out, mask);
    }
    if (op == "greedy_need_f32") {  // score (n,), center (n,) int32, dcs (m,), margin
        const py::array sc = arr(0), ce = arr(1), dc = arr(2);
        auto ps = data_of<float>(sc, "score", 1);
        auto pc = data_of<std::int32_t>(ce, "center", 1);
        auto pd = data_of<float>(dc, "dcs", 1);
        if (args.size() != 4) throw InvalidInput("greedy_need_f32 takes score, center, dcs, margin");
        const float margin = args[3].cast<float>();
        const auto n = static_cast<std::size_t>(sc.shape(0));
        if (static_cast<std::size_t>(ce.shape(0)) != n) throw InvalidInput("score and center must have the same length");
        for (std::size_t i = 0; i < n; ++i)
            if (pc[i] >= dc.shape(0)) throw InvalidInput("center indices must be < len(dcs)");
        std::vector<std::int32_t> need(n);
        const std::size_t m = K.greedy_need_f32(ps, pc, pd, margin, n, need.data());
        py::array_t<std::int32_t> out(m);
        std::copy(need.begin(), need.begin() + m, out.mutable_data());
        return std::move(out);
    }
    if (op == "argmax_f32") {
        const py::array x = arr(0);
        auto px = data_of<float>(x, "x", 1);
        float v;
        std::int64_t i;
        K.argmax_f32(px, x.shape(0), &v, &i);
        return py::make_tuple(v, i);
    }
    if (op == "pack_bf16") {  // x (2 r,) float32 -> (r,) words (compact.h's rounding)
        const py::array a = arr(0);
        auto p = data_of<float>(a, "x", 1);
        if (a.shape(0) % 2) throw InvalidInput("pack_bf16 needs an even length");
        py::array_t<std::uint32_t> out(a.shape(0) / 2);
        for (py::ssize_t r = 0; r < a.shape(0) / 2; ++r) out.mutable_data()[r] = pack_bf16_pair(p[2 * r], p[2 * r + 1]);
        return std::move(out);
    }
    if (op == "tile_bf16" || op == "tile_i8") {
        // bf16: qp (d2, 12), xp (d2, 32) uint32, qn (12,), xn (32,), thr (12,)
        // i8:   qp (d4, 12), xp (d4, 32) uint32, qs (12,), xs (32,), xsum (32,) int32, qn, xn, thr
        const bool i8 = op == "tile_i8";
        const std::size_t nargs = i8 ? 8 : 5;
        if (args.size() != nargs) throw InvalidInput(op + " takes " + std::to_string(nargs) + " arrays");
        const py::array qp = arr(0), xp = arr(1);
        auto pq = data_of<std::uint32_t>(qp, "qp", 2);
        auto px = data_of<std::uint32_t>(xp, "xp", 2);
        if (qp.shape(1) != kMR || xp.shape(1) != kNR || qp.shape(0) != xp.shape(0))
            throw InvalidInput(op + " needs qp (dc, 12) and xp (dc, 32)");
        avector<std::uint32_t> xa(px, px + xp.shape(0) * kNR);  // aligned loads
        const std::size_t o = i8 ? 5 : 2;
        const py::array aqn = arr(o), axn = arr(o + 1), athr = arr(o + 2);
        auto qn = data_of<float>(aqn, "qn", 1);
        auto xn = data_of<float>(axn, "xn", 1);
        auto thr = data_of<float>(athr, "thr", 1);
        if (aqn.shape(0) != kMR || axn.shape(0) != kNR || athr.shape(0) != kMR)
            throw InvalidInput(op + " needs qn (12,), xn (32,) and thr (12,)");
        py::array_t<float> out({kMR, kNR});
        py::array_t<std::uint32_t> mask(kMR);
        if (!i8) {
            K.tile_bf16(pq, xa.data(), qp.shape(0), qn, xn, thr, out.mutable_data(), mask.mutable_data());
        } else {
            const py::array aqs = arr(2), axs = arr(3), asum = arr(4);
            auto qs = data_of<float>(aqs, "qs", 1);
            auto xs = data_of<float>(axs, "xs", 1);
            auto xsum = data_of<std::int32_t>(asum, "xsum", 1);
            if (aqs.shape(0) != kMR || axs.shape(0) != kNR || asum.shape(0) != kNR)
                throw InvalidInput("tile_i8 needs qs (12,), xs (32,), xsum (32,)");
            K.tile_i8(pq, xa.data(), qp.shape(0), qs, xs, xsum, qn, xn, thr, out.mutable_data(), mask.mutable_data());
        }
        return py::make_tuple(out, mask);
    }
    if (op == "l2_i8_blocks" || op == "greedy_step_i8") {
        // x (nblocks, d4, 16) uint32, xn (nblocks * 16,) int32, q (d4,) uint32, qn, qsum
        // greedy_step_i8 also: score (nblocks * 16,) float32, center (same) int32, dcs float32,
        // margin, step; returns (score, center, computed, best_v, best_i) on copies.
        const bool step_op = op == "greedy_step_i8";
        if (args.size() != (step_op ? 10u : 5u))
            throw InvalidInput(op + (step_op ? " takes x, xn, q, qn, qsum, score, center, dcs, margin, step"
                                             : " takes x, xn, q, qn, qsum"));
        const py::array x = arr(0), xn = arr(1), q = arr(2);
        auto px = data_of<std::uint32_t>(x, "x", 3);
        auto pn = data_of<std::int32_t>(xn, "xn", 1);
        auto pq = data_of<std::uint32_t>(q, "q", 1);
        const auto nblocks = static_cast<std::size_t>(x.shape(0)), d4 = static_cast<std::size_t>(x.shape(1));
        if (x.shape(2) != static_cast<py::ssize_t>(kI8Block) || xn.shape(0) != x.shape(0) * x.shape(2) ||
            q.shape(0) != x.shape(1))
            throw InvalidInput("l2_i8_blocks needs x (nblocks, d4, 16), xn (nblocks * 16,) and q (d4,)");
        if (d4 == 0 || d4 > kI8MaxD4) throw InvalidInput("d4 must be in [1, " + std::to_string(kI8MaxD4) + "]");
        // The kernel's contract: codes in [-127, 127], i.e. no stored byte 0 and no query byte 0x80.
        for (std::size_t k = 0; k < nblocks * d4 * kI8Block; ++k)
            for (int t = 0; t < 4; ++t)
                if (((px[k] >> (8 * t)) & 0xFFu) == 0) throw InvalidInput("x holds a code of -128");
        for (std::size_t r = 0; r < d4; ++r)
            for (int t = 0; t < 4; ++t)
                if (((pq[r] >> (8 * t)) & 0xFFu) == 0x80u) throw InvalidInput("q holds a code of -128");
        const auto qn = args[3].cast<std::int32_t>(), qsum = args[4].cast<std::int32_t>();
        if (!step_op) {
            py::array_t<float> out(nblocks * kI8Block);
            K.l2_i8_blocks(px, pn, nblocks, pq, qn, qsum, d4, out.mutable_data());
            return std::move(out);
        }
        const py::array sc = arr(5), ce = arr(6), dc = arr(7);
        auto psc = data_of<float>(sc, "score", 1);
        auto pce = data_of<std::int32_t>(ce, "center", 1);
        auto pdc = data_of<float>(dc, "dcs", 1);
        if (sc.shape(0) != xn.shape(0) || ce.shape(0) != xn.shape(0))
            throw InvalidInput("score and center need nblocks * 16 entries");
        for (py::ssize_t i = 0; i < ce.shape(0); ++i)
            if (pce[i] >= dc.shape(0)) throw InvalidInput("center indices must be < len(dcs)");
        py::array_t<float> score(sc.shape(0));
        py::array_t<std::int32_t> center(ce.shape(0));
        std::copy(psc, psc + sc.shape(0), score.mutable_data());
        std::copy(pce, pce + ce.shape(0), center.mutable_data());
        float bv = 0.f;
        std::int64_t bi = 0;
        const std::int64_t computed =
            K.greedy_step_i8(px, pn, nblocks, pq, qn, qsum, d4, score.mutable_data(), center.mutable_data(), pdc,
                             args[8].cast<float>(), args[9].cast<std::int32_t>(), &bv, &bi);
        return py::make_tuple(score, center, computed, bv, bi);
    }
    if (op == "gather_dots") {  // q (d,), rows (n * d,) row-major float32, cols (n,) int64
        const py::array q = arr(0), b = arr(1), c = arr(2);
        auto pq = data_of<float>(q, "q", 1);
        auto pb = data_of<float>(b, "bank", 1);
        auto pc = data_of<std::int64_t>(c, "cols", 1);
        const std::size_t d = q.shape(0);
        if (d == 0 || b.shape(0) % d) throw InvalidInput("rows must be whole rows of d");
        const std::size_t ncols = b.shape(0) / d;
        for (py::ssize_t l = 0; l < c.shape(0); ++l)
            if (pc[l] < 0 || static_cast<std::size_t>(pc[l]) >= ncols) throw InvalidInput("cols out of range");
        py::array_t<float> out(c.shape(0));
        K.gather_dots(pq, pb, d, pc, c.shape(0), out.mutable_data());
        return std::move(out);
    }
    throw InvalidInput("unknown kernel '" + op + "'");
}

}  // namespace

class PyLocalGaussianBank {
public:
    // nominal: (n, h, w, d) float32 or float16 (numpy's float16 is the IEEE half the core reads).
    explicit PyLocalGaussianBank(const py::array& nominal) {
        const bool half = nominal.dtype().equal(py::dtype("float16"));
        if (half) {
            if (nominal.ndim() != 4) throw InvalidInput("nominal must be 4-D (n, h, w, d); got " + std::to_string(nominal.ndim()) + "-D");
            if (!(nominal.flags() & py::array::c_style))
                throw InvalidInput("nominal must be C-contiguous (use np.ascontiguousarray)");
        } else {
            check_array<float>(nominal, "nominal", 4);
        }
        const auto n = static_cast<std::size_t>(nominal.shape(0)), h = static_cast<std::size_t>(nominal.shape(1)),
                   w = static_cast<std::size_t>(nominal.shape(2)), d = static_cast<std::size_t>(nominal.shape(3));
        const void* p = nominal.data();
        py::gil_scoped_release nogil;
        bank_ = std::make_unique<LocalGaussianBank>(half ? nullptr : static_cast<const float*>(p),
                                                    half ? static_cast<const std::uint16_t*>(p) : nullptr, n, h, w, d);
    }

    py::array_t<float> mahalanobis(const py::array& x, int radius, int k, double shrinkage,
                                   const std::optional<py::array>& exclude, int threads) {
        check_array<float>(x, "x", 4);
        check_threads(threads);
        if (static_cast<std::size_t>(x.shape(1)) != bank_->h() || static_cast<std::size_t>(x.shape(2)) != bank_->w() ||
            static_cast<std::size_t>(x.shape(3)) != bank_->dim())
            throw InvalidInput("x must be (b, " + std::to_string(bank_->h()) + ", " + std::to_string(bank_->w()) + ", " +
                               std::to_string(bank_->dim()) + "), the bank's grid and dim");
        const auto b = static_cast<std::size_t>(x.shape(0));
        const std::int64_t* ex = nullptr;
        if (exclude) {
            check_array<std::int64_t>(*exclude, "exclude", 1);
            if (static_cast<std::size_t>(exclude->shape(0)) != b)
                throw InvalidInput("exclude must hold one entry per query image");
            ex = static_cast<const std::int64_t*>(exclude->data());
        }
        py::array_t<float> out({b, bank_->h(), bank_->w()});
        const float* xp = static_cast<const float*>(x.data());
        float* op = out.mutable_data();
        PyPoll poll;
        Control ctl(poll.fn());
        try {
            py::gil_scoped_release nogil;
            bank_->mahalanobis(xp, b, radius, k, shrinkage, ex, threads, op, ctl);
        } catch (const Cancelled&) {
            poll.rethrow();
            throw;
        }
        return out;
    }

    py::tuple shape() const { return py::make_tuple(bank_->n(), bank_->h(), bank_->w(), bank_->dim()); }

    py::array nominal() const {
        const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(bank_->n()), static_cast<py::ssize_t>(bank_->h()),
                                             static_cast<py::ssize_t>(bank_->w()), static_cast<py::ssize_t>(bank_->dim())};
        py::array out(py::dtype(bank_->half() ? "float16" : "float32"), shape);
        void* dst = out.mutable_data();
        py::gil_scoped_release nogil;
        bank_->export_nominal(dst);
        return out;
    }
    std::string dtype() const { return bank_->half() ? "float16" : "float32"; }
    std::size_t memory_bytes() const { return bank_->memory_bytes(); }

private:
    std::unique_ptr<LocalGaussianBank> bank_;
};

PYBIND11_MODULE(_core, m) {
    m.doc() = "npad_edge compiled core (private; use npad_edge.search)";

    // C++ exceptions -> npad_edge.errors classes.
    py::object invalid = py::module_::import("npad_edge.errors").attr("InvalidInputError");
    static py::handle invalid_h = invalid.release();
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const InvalidInput& e) {
            PyErr_SetString(invalid_h.ptr(), e.what());
        } catch (const Cancelled&) {
            PyErr_SetString(PyExc_KeyboardInterrupt, "cancelled");
        }
    });

    m.def("isa", [] { return std::string(active_kernels().name); }, "Name of the kernel set calls use now.");
    m.def("available_isas", &available_isas, "Instruction sets usable on this machine, best first.");
    m.def("cpu_features", [] {
        const CpuFeatures& f = cpu_features();
        py::dict d;
        d["avx2_fma_f16c"] = f.avx2_fma_f16c;
        d["avx512"] = f.avx512;
        d["avx512_bf16"] = f.avx512_bf16;
        d["avx512_vnni"] = f.avx512_vnni;
        d["amx_tile"] = f.amx_tile;
        d["amx_bf16"] = f.amx_bf16;
        d["amx_int8"] = f.amx_int8;
        d["amx_usable"] = f.amx_usable;
        d["neon"] = f.neon;
        return d;
    }, "CPU features the kernels detect at run time (not what they were compiled for).");
    m.def("set_isa", &set_isa, py::arg("name"), "Force an instruction set ('' or 'auto' for the default).");
    m.def("tile_shape", [] { return py::make_tuple(kMR, kNR); });

    py::class_<PyFlatIndex>(m, "FlatIndex")
        .def(py::init<const py::array&, const std::string&, const std::string&>(), py::arg("bank"), py::arg("dtype"),
             py::arg("compute") = "float32")
        .def("search", &PyFlatIndex::search, py::arg("queries"), py::arg("k"), py::arg("threads"),
             py::arg("rerank") = 0)
        .def_property_readonly("compute", &PyFlatIndex::compute)
        .def_property_readonly("ntotal", &PyFlatIndex::ntotal)
        .def_property_readonly("dim", &PyFlatIndex::dim)
        .def_property_readonly("dtype", &PyFlatIndex::dtype)
        .def_property_readonly("memory_bytes", &PyFlatIndex::memory_bytes);

    py::class_<PyLocalGaussianBank>(m, "LocalGaussianBank")
        .def(py::init<const py::array&>(), py::arg("nominal"))
        .def("mahalanobis", &PyLocalGaussianBank::mahalanobis, py::arg("x"), py::arg("radius"), py::arg("k"),
             py::arg("shrinkage"), py::arg("exclude") = py::none(), py::arg("threads") = 1)
        .def("nominal", &PyLocalGaussianBank::nominal)
        .def_property_readonly("shape", &PyLocalGaussianBank::shape)
        .def_property_readonly("dtype", &PyLocalGaussianBank::dtype)
        .def_property_readonly("memory_bytes", &PyLocalGaussianBank::memory_bytes);

    m.def("greedy_coreset", &py_greedy_coreset, py::arg("features"), py::arg("n_select"), py::arg("proj_dim"),
          py::arg("n_starts"), py::arg("seed"), py::arg("threads"), py::arg("progress") = py::none(), py::arg("storage") = "float32",
          py::arg("bound") = "auto");
    m.def("projection_matrix", [](std::size_t dim, std::size_t proj_dim, std::uint64_t seed) {
        if (dim == 0 || proj_dim == 0) throw InvalidInput("dim and proj_dim must be >= 1");
        const std::vector<float> p = projection_matrix(dim, proj_dim, seed);
        py::array_t<float> out({dim, proj_dim});
        std::copy(p.begin(), p.end(), out.mutable_data());
        return out;
    }, py::arg("dim"), py::arg("proj_dim"), py::arg("seed"));
    m.def("start_indices", [](std::size_t n, std::size_t n_starts, std::uint64_t seed) {
        const auto s = start_indices(n, n_starts, seed);
        py::array_t<std::int64_t> out(s.size());
        std::copy(s.begin(), s.end(), out.mutable_data());
        return out;
    }, py::arg("n"), py::arg("n_starts"), py::arg("seed"));
    m.def("project", [](const py::array& x, const py::array& p, int threads) {
        check_array<float>(x, "x", 2);
        check_array<float>(p, "p", 2);
        check_threads(threads);
        if (x.shape(1) != p.shape(0)) throw InvalidInput("x columns must equal p rows");
        py::array_t<float> y({x.shape(0), p.shape(1)});
        const float* px = static_cast<const float*>(x.data());
        const float* pp = static_cast<const float*>(p.data());
        float* py_ = y.mutable_data();
        const std::size_t n = x.shape(0), d = x.shape(1), pd = p.shape(1);
        {
            py::gil_scoped_release nogil;
            project(px, n, d, pp, pd, threads, py_);
        }
        return y;
    }, py::arg("x"), py::arg("p"), py::arg("threads"));
    m.def("_quantize_i8", [](const py::array& x) {
        // Testing hook: FlatIndex's int8 quantization of each row of x (n, d) float32.
        check_array<float>(x, "x", 2);
        const auto n = static_cast<std::size_t>(x.shape(0)), d = static_cast<std::size_t>(x.shape(1));
        py::array_t<std::int8_t> codes({n, d});
        py::array_t<float> scales(n);
        const float* px = static_cast<const float*>(x.data());
        for (std::size_t i = 0; i < n; ++i)
            quantize_i8(px + i * d, d, 1, codes.mutable_data() + i * d, 1, scales.mutable_data() + i);
        return py::make_tuple(codes, scales);
    }, py::arg("x"));
    m.def("_poll_probe", [](int threads, long long iterations, const py::array& done) {
        // Testing hook for interrupts: the calling thread (worker 0) has no work and the other
        // workers run `iterations` 1 ms steps each, stopping early once the call is cancelled;
        // done[t] = steps worker t completed. The same worker pool and Control as FlatIndex.
        check_threads(threads);
        check_array<std::int64_t>(done, "done", 1);
        if (done.shape(0) != threads) throw InvalidInput("done must have one entry per thread");
        std::int64_t* out = static_cast<std::int64_t*>(const_cast<void*>(done.data()));
        PyPoll poll;
        Control ctl(poll.fn(), std::chrono::milliseconds(10));
        try {
            py::gil_scoped_release nogil;
            parallel_run(threads, [&](int t) {
                std::int64_t i = 0;
                if (t == 0) {
                    ctl.maybe_poll(0, 1, true);
                } else {
                    for (; i < iterations && !ctl.stopped(); ++i)
                        std::this_thread::sleep_for(std::chrono::milliseconds(1));
                }
                out[t] = i;
            }, &ctl);
            ctl.throw_if_stopped();
        } catch (const Cancelled&) {
            poll.rethrow();
            throw;
        }
    }, py::arg("threads"), py::arg("iterations"), py::arg("done"));
    m.def("window_mahalanobis", [](const py::array& x, const py::array& means, const py::array& cols, int threads) {
        check_array<float>(x, "x", 3);
        check_array<float>(means, "means", 2);
        check_array<float>(cols, "cols", 2);
        check_threads(threads);
        const auto b = static_cast<std::size_t>(x.shape(0)), p = static_cast<std::size_t>(x.shape(1)),
                   d = static_cast<std::size_t>(x.shape(2));
        if (static_cast<std::size_t>(means.shape(0)) != p || static_cast<std::size_t>(means.shape(1)) != d)
            throw InvalidInput("means must be (p, d), the positions and dims of x");
        if (static_cast<std::size_t>(cols.shape(0)) != p || static_cast<std::size_t>(cols.shape(1)) != d * (d + 1) / 2)
            throw InvalidInput("cols must be (p, d(d+1)/2): each position's factor by columns");
        py::array_t<float> out({b, p});
        const float* px = static_cast<const float*>(x.data());
        const float* pm = static_cast<const float*>(means.data());
        const float* pc = static_cast<const float*>(cols.data());
        float* po = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            window_mahalanobis(px, b, p, d, pm, pc, threads, po);
        }
        return out;
    }, py::arg("x"), py::arg("means"), py::arg("cols"), py::arg("threads") = 1,
       "(b, p, d) -> (b, p): |L_q (x - mean_q)| per position (index/window_gaussian.h).");
    m.def("resize_aa", [](const py::array& src, std::size_t oh, std::size_t ow, int threads) {
        check_array<std::uint8_t>(src, "image", 3);
        check_threads(threads);
        const std::size_t h = src.shape(0), w = src.shape(1), c = src.shape(2);
        if (oh == 0 || ow == 0) throw InvalidInput("resize: the output size must be >= 1 x 1");
        py::array_t<float> out({oh, ow, c});
        const auto* ps = static_cast<const std::uint8_t*>(src.data());
        float* po = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            resize_aa(ps, h, w, c, w * c, oh, ow, po, threads);
        }
        return out;
    }, py::arg("image"), py::arg("out_h"), py::arg("out_w"), py::arg("threads") = 1,
       "(h, w, c) uint8 -> (out_h, out_w, c) float32, antialiased bilinear (image/resize.h).");
    m.def("separable_band", [](const py::array& grid, const py::array& ry, const py::array& wy, const py::array& cx,
                               const py::array& wx, py::array out) {
        check_array<float>(grid, "grid", 2);
        check_array<std::int32_t>(ry, "ry", 2);
        check_array<float>(wy, "wy", 2);
        check_array<std::int32_t>(cx, "cx", 2);
        check_array<float>(wx, "wx", 2);
        check_array<float>(out, "out", 2);
        if (!out.writeable()) throw InvalidInput("out must be writable");
        const std::size_t h = grid.shape(0), w = grid.shape(1), H = ry.shape(0), ky = ry.shape(1);
        const std::size_t kx = cx.shape(0), W = cx.shape(1);
        if (h == 0 || w == 0 || H == 0 || W == 0 || ky == 0 || kx == 0) throw InvalidInput("separable_band: empty size");
        if (static_cast<std::size_t>(wy.shape(0)) != H || static_cast<std::size_t>(wy.shape(1)) != ky ||
            static_cast<std::size_t>(wx.shape(0)) != kx || static_cast<std::size_t>(wx.shape(1)) != W)
            throw InvalidInput("separable_band: tap weights must have their indices' shapes");
        if (static_cast<std::size_t>(out.shape(0)) != H || static_cast<std::size_t>(out.shape(1)) != W)
            throw InvalidInput("separable_band: out must be (H, W) = the taps' output sizes");
        if (w >= (std::size_t(1) << 31) || W >= (std::size_t(1) << 31)) throw InvalidInput("separable_band: too wide");
        const auto* pry = static_cast<const std::int32_t*>(ry.data());
        const auto* pcx = static_cast<const std::int32_t*>(cx.data());
        for (std::size_t i = 0; i < H * ky; ++i)
            if (pry[i] < 0 || static_cast<std::size_t>(pry[i]) >= h) throw InvalidInput("separable_band: row tap out of range");
        for (std::size_t i = 0; i < kx * W; ++i)
            if (pcx[i] < 0 || static_cast<std::size_t>(pcx[i]) >= w) throw InvalidInput("separable_band: column tap out of range");
        const auto* pg = static_cast<const float*>(grid.data());
        const auto* pwy = static_cast<const float*>(wy.data());
        const auto* pwx = static_cast<const float*>(wx.data());
        auto* po = static_cast<float*>(out.mutable_data());
        {
            py::gil_scoped_release nogil;
            separable_band(pg, h, w, pry, pwy, ky, H, pcx, pwx, kx, W, po);
        }
        return out;
    }, py::arg("grid"), py::arg("ry"), py::arg("wy"), py::arg("cx"), py::arg("wx"), py::arg("out"),
       "(h, w) grid -> out (H, W) = Ly G Lx^T with banded taps (image/band.h).");
    m.def("_resize_taps", [](std::size_t n, std::size_t m) {
        const ResizeTaps t = resize_taps(n, m);
        py::array_t<std::int32_t> idx({m, t.k});
        py::array_t<float> w({m, t.k});
        std::copy(t.index.begin(), t.index.end(), idx.mutable_data());
        std::copy(t.weight.begin(), t.weight.end(), w.mutable_data());
        return py::make_tuple(idx, w);
    }, py::arg("n"), py::arg("m"), "Testing hook: the taps of one resize axis.");
    m.def("_kernel", &kernel_call, py::arg("isa"), py::arg("op"),
          "Testing hook: run one kernel of the named instruction set.");
}
