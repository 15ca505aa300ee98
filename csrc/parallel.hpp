// Minimal std::thread helpers: static range splitting and dynamic item scheduling.
// Exceptions thrown by a worker are captured and the first one is rethrown on the
// calling thread after every worker has joined.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace fedmm {

// Number of worker threads to use: `requested` if > 0, else hardware_concurrency (>= 1).
inline int resolve_threads(int requested) {
  if (requested > 0) return requested;
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

namespace detail {
class ErrorSlot {
 public:
  void capture() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!err_) err_ = std::current_exception();
  }
  void rethrow() const {
    if (err_) std::rethrow_exception(err_);
  }

 private:
  std::mutex mu_;
  std::exception_ptr err_;
};
}  // namespace detail

// Split [0, n) into at most `n_threads` contiguous ranges whose boundaries are multiples
// of `align`; call fn(begin, end, thread_id) for each range (range 0 on the calling thread).
template <class F>
void parallel_ranges(int64_t n, int n_threads, int64_t align, F&& fn) {
  if (n <= 0) return;
  int64_t blocks = (n + align - 1) / align;
  int t = static_cast<int>(std::min<int64_t>(std::max(1, n_threads), blocks));
  if (t == 1) {
    fn(int64_t{0}, n, 0);
    return;
  }
  detail::ErrorSlot errors;
  auto bound = [&](int k) { return std::min(n, (blocks * k / t) * align); };
  std::vector<std::thread> workers;
  workers.reserve(t - 1);
  for (int k = 1; k < t; ++k) {
    workers.emplace_back([&, k] {
      try {
        fn(bound(k), bound(k + 1), k);
      } catch (...) {
        errors.capture();
      }
    });
  }
  try {
    fn(int64_t{0}, bound(1), 0);
  } catch (...) {
    errors.capture();
  }
  for (auto& w : workers) w.join();
  errors.rethrow();
}

// Call fn(item, thread_id) for every item in [0, n), handing items out dynamically.
template <class F>
void parallel_items(int64_t n, int n_threads, F&& fn) {
  if (n <= 0) return;
  int t = static_cast<int>(std::min<int64_t>(std::max(1, n_threads), n));
  std::atomic<int64_t> next{0};
  detail::ErrorSlot errors;
  auto work = [&](int tid) {
    try {
      for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, tid);
    } catch (...) {
      errors.capture();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(t - 1);
  for (int k = 1; k < t; ++k) workers.emplace_back(work, k);
  work(0);
  for (auto& w : workers) w.join();
  errors.rethrow();
}

}  // namespace fedmm
