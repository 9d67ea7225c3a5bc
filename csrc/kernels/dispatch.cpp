// CPU feature detection (once) and the choice of kernel table. Compiled without ISA flags.
#include <atomic>
#include <cstdlib>
#include <mutex>

#include "../common/errors.h"
#include "kernels.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define NPAD_X86 1
#endif
#if defined(NPAD_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace npad {
namespace {

#if defined(NPAD_X86)
std::uint64_t xgetbv0() {
    std::uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (static_cast<std::uint64_t>(hi) << 32) | lo;
}
#endif

CpuFeatures detect() {
    CpuFeatures f;
#if defined(NPAD_X86)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = c & (1u << 27);
    const bool fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
    if (!osxsave || !avx) return f;
    const std::uint64_t xcr0 = xgetbv0();
    const bool ymm_os = (xcr0 & 0x6) == 0x6;
    const bool zmm_os = (xcr0 & 0xE6) == 0xE6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    const bool avx2 = b & (1u << 5);
    const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17);
    const bool avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
    f.avx2_fma_f16c = ymm_os && avx2 && fma && f16c;
    f.avx512 = f.avx2_fma_f16c && zmm_os && avx512f && avx512dq && avx512bw && avx512vl;
    f.avx512_vnni = f.avx512 && (c & (1u << 11));
    f.amx_bf16 = d & (1u << 22);
    f.amx_tile = d & (1u << 24);
    f.amx_int8 = d & (1u << 25);
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = f.avx512 && (a & (1u << 5));
    if (f.amx_tile) {
        const bool tile_os = (xcr0 & (3ull << 17)) == (3ull << 17);
        bool permitted = false;
#if defined(__linux__)
        // ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 (Linux >= 5.16).
        permitted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#endif
        f.amx_usable = tile_os && permitted;
    }
#elif defined(__aarch64__)
    f.neon = true;
#endif
    return f;
}

// A table with its missing kernels (nullptr: no native version on that instruction set)
// taken from the scalar oracle, so every table the dispatcher hands out is complete.
Kernels completed(const Kernels* k) {
    Kernels t = *k;
    const Kernels& s = scalar_kernels();
    if (!t.tile_bf16) t.tile_bf16 = s.tile_bf16;
    if (!t.tile_i8) t.tile_i8 = s.tile_i8;
    if (!t.gather_dots) t.gather_dots = s.gather_dots;
    if (!t.l2_i8_blocks) t.l2_i8_blocks = s.l2_i8_blocks;
    if (!t.greedy_step_i8) t.greedy_step_i8 = s.greedy_step_i8;
    if (!t.spd_solve_f64) t.spd_solve_f64 = s.spd_solve_f64;
    if (!t.aa_rows_u8) t.aa_rows_u8 = s.aa_rows_u8;
    if (!t.aa_cols_f32) t.aa_cols_f32 = s.aa_cols_f32;
    if (!t.tri_cols_matvec) t.tri_cols_matvec = s.tri_cols_matvec;
    if (!t.greedy_need_f32) t.greedy_need_f32 = s.greedy_need_f32;
    if (!t.argmax_f32) t.argmax_f32 = s.argmax_f32;
    if (!t.l2sq_f32_rows) t.l2sq_f32_rows = s.l2sq_f32_rows;
    if (!t.l2sq_f16_rows) t.l2sq_f16_rows = s.l2sq_f16_rows;
    if (!t.aa_rows_f32) t.aa_rows_f32 = s.aa_rows_f32;
    return t;
}

const Kernels* complete_or_null(const Kernels* k, Kernels& slot, std::once_flag& once) {
    if (k == nullptr) return nullptr;
    std::call_once(once, [&] { slot = completed(k); });
    return &slot;
}

#define NPAD_COMPLETED(getter)                                   \
    [] {                                                         \
        static Kernels slot;                                     \
        static std::once_flag once;                              \
        return complete_or_null(getter, slot, once);             \
    }()

const Kernels* compiled_and_supported(const std::string& name) {
    const CpuFeatures& f = cpu_features();
    if (name == "scalar") return &scalar_kernels();
    if (name == "avx2") return f.avx2_fma_f16c ? NPAD_COMPLETED(avx2_kernels()) : nullptr;
    if (name == "avx512") return f.avx512 ? NPAD_COMPLETED(avx512_kernels()) : nullptr;
    if (name == "avx512_vnni")
        return f.avx512_vnni ? NPAD_COMPLETED(avx512_vnni_kernels()) : nullptr;
    if (name == "avx512_bf16")
        return f.avx512_bf16 && f.avx512_vnni ? NPAD_COMPLETED(avx512_bf16_kernels()) : nullptr;
    if (name == "neon") return f.neon ? NPAD_COMPLETED(neon_kernels()) : nullptr;
    return nullptr;
}

std::atomic<const Kernels*> g_forced{nullptr};

const Kernels& best() {
    static const Kernels* chosen = [] {
        if (const char* env = std::getenv("NPAD_EDGE_ISA")) {
            const std::string name(env);
            if (!name.empty() && name != "auto") {
                // An unknown or unsupported name in the environment is an error at first
                // use, reported by the caller (never a silent fallback).
                if (const Kernels* k = compiled_and_supported(name)) return k;
                return static_cast<const Kernels*>(nullptr);
            }
        }
        return compiled_and_supported(available_isas().front());
    }();
    if (chosen == nullptr) {
        std::string msg = "NPAD_EDGE_ISA='";
        msg += std::getenv("NPAD_EDGE_ISA");
        msg += "' is not available on this machine; available: ";
        for (const auto& n : available_isas()) msg += n + " ";
        throw InvalidInput(msg);
    }
    return *chosen;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures f = detect();
    return f;
}

std::vector<std::string> available_isas() {
    std::vector<std::string> out;
    for (const char* n : {"avx512_bf16", "avx512_vnni", "avx512", "avx2", "neon"})
        if (compiled_and_supported(n)) out.emplace_back(n);
    out.emplace_back("scalar");
    return out;
}

const Kernels& kernels_by_name(const std::string& name) {
    if (const Kernels* k = compiled_and_supported(name)) return *k;
    std::string msg = "instruction set '" + name + "' is not available on this machine; available: ";
    const auto names = available_isas();
    for (std::size_t i = 0; i < names.size(); ++i) msg += (i ? ", " : "") + names[i];
    throw InvalidInput(msg);
}

void set_isa(const std::string& name) {
    if (name.empty() || name == "auto") {
        g_forced.store(nullptr);
        return;
    }
    g_forced.store(&kernels_by_name(name));
}

const Kernels& active_kernels() {
    if (const Kernels* k = g_forced.load(std::memory_order_acquire)) return *k;
    return best();
}

}  // namespace npad
