// 64-byte aligned storage for packed panels (the AVX-512 micro-kernel uses aligned loads).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace npad {

template <class T>
struct AlignedAllocator {
    using value_type = T;
    AlignedAllocator() = default;
    template <class U>
    AlignedAllocator(const AlignedAllocator<U>&) {}
    T* allocate(std::size_t n) {
        return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)));
    }
    void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
    template <class U>
    bool operator==(const AlignedAllocator<U>&) const { return true; }
    template <class U>
    bool operator!=(const AlignedAllocator<U>&) const { return false; }
};

template <class T>
using avector = std::vector<T, AlignedAllocator<T>>;

}  // namespace npad

#if defined(_MSC_VER)
#include <intrin.h>
#endif

namespace npad {
inline int ctz32(unsigned x) {  // x != 0
#if defined(_MSC_VER)
    unsigned long i;
    _BitScanForward(&i, x);
    return static_cast<int>(i);
#else
    return __builtin_ctz(x);
#endif
}

// A hint to bring the cache line holding p into L2 (prefetcht1 on x86; no instruction-set
// flag needed). Into L2 rather than L1: tens of lines in flight at once are more than L1's
// miss buffers take (measured on Zen 4: T0 hints for the re-rank's rows gained nothing).
inline void prefetch_l2(const void* p) {
#if defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
#elif defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 0, 2);
#else
    (void)p;
#endif
}
}  // namespace npad
