// Threads and cancellation shared by the index and the coreset code. No Python here: the
// bindings hand in a poll callback that checks for signals and reports progress.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "errors.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace npad {

// Cancellation and progress. poll(done, total) is only ever called from the calling thread
// (worker 0), at most every interval; returning false stops the call, which then throws
// Cancelled after all workers have finished.
class Control {
public:
    Control() = default;
    explicit Control(std::function<bool(std::size_t, std::size_t)> poll,
                     std::chrono::milliseconds interval = std::chrono::milliseconds(50))
        : poll_(std::move(poll)), interval_(interval), last_(std::chrono::steady_clock::now()) {}

    // Worker 0 calls this between blocks of work. Cheap when no poll is due.
    void maybe_poll(std::size_t done, std::size_t total, bool force = false) {
        if (!poll_ || stop_.load(std::memory_order_relaxed)) return;
        auto now = std::chrono::steady_clock::now();
        if (!force && now - last_ < interval_) return;
        last_ = now;
        if (!poll_(done, total)) stop_.store(true, std::memory_order_relaxed);
    }
    bool stopped() const { return stop_.load(std::memory_order_relaxed); }
    void throw_if_stopped() const {
        if (stopped()) throw Cancelled();
    }

private:
    std::function<bool(std::size_t, std::size_t)> poll_;
    std::chrono::milliseconds interval_{50};
    std::chrono::steady_clock::time_point last_{};
    std::atomic<bool> stop_{false};
};

// Runs fn(t) for t in [0, n_threads); t == 0 runs on the calling thread (so it may poll).
// Exceptions from any worker are rethrown in the caller after all have joined.
//
// If ctl is given, worker 0 keeps polling it (ctl->maybe_poll(progress())) after its own
// fn(0) has returned, until every other worker has finished: so Ctrl-C is seen, and the other
// workers told to stop through ctl->stopped(), while the slowest worker is still busy, instead
// of after it. The wait ends as soon as the last worker finishes (no sleep on the way out).
inline void parallel_run(int n_threads, const std::function<void(int)>& fn, Control* ctl = nullptr,
                         const std::function<std::pair<std::size_t, std::size_t>()>& progress = nullptr) {
    if (n_threads <= 1) {
        fn(0);
        return;
    }
    std::exception_ptr err;
    std::mutex err_mu;
    auto guarded = [&](int t) {
        try {
            fn(t);
        } catch (...) {
            std::lock_guard<std::mutex> lock(err_mu);
            if (!err) err = std::current_exception();
        }
    };
    std::mutex mu;
    std::condition_variable cv;
    int running = n_threads - 1;
    std::vector<std::thread> pool;
    pool.reserve(n_threads - 1);
    for (int t = 1; t < n_threads; ++t)
        pool.emplace_back([&, t] {
            guarded(t);
            {
                std::lock_guard<std::mutex> lock(mu);
                --running;
            }
            cv.notify_one();
        });
    guarded(0);
    if (ctl != nullptr) {
        std::unique_lock<std::mutex> lock(mu);
        while (!cv.wait_for(lock, std::chrono::milliseconds(5), [&] { return running == 0; })) {
            lock.unlock();
            try {
                const auto p = progress ? progress() : std::pair<std::size_t, std::size_t>(0, 0);
                ctl->maybe_poll(p.first, p.second);
            } catch (...) {
                std::lock_guard<std::mutex> elock(err_mu);
                if (!err) err = std::current_exception();
            }
            lock.lock();
        }
    }
    for (auto& th : pool) th.join();
    if (err) std::rethrow_exception(err);
}

// Sense-reversing spin barrier for per-step synchronisation of a fixed group of workers.
// Spins briefly, then yields: the machines this runs on are often oversubscribed.
class SpinBarrier {
public:
    explicit SpinBarrier(int n) : n_(n) {}
    void wait() {
        const unsigned gen = gen_.load(std::memory_order_acquire);
        if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
            count_.store(0, std::memory_order_relaxed);
            gen_.fetch_add(1, std::memory_order_acq_rel);
            return;
        }
        int spins = 0;
        while (gen_.load(std::memory_order_acquire) == gen) {
            if (++spins < 2000) {
#if defined(__x86_64__) || defined(_M_X64)
                _mm_pause();
#endif
            } else {
                std::this_thread::yield();
            }
        }
    }

private:
    const int n_;
    std::atomic<int> count_{0};
    std::atomic<unsigned> gen_{0};
};

}  // namespace npad
