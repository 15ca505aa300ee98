// Minimal std::thread helpers: dynamic scheduling of items and of chunks of a range.
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

// Split [0, n) into chunks of `chunk` elements (a multiple of `align`; by default about 16
// chunks per thread) handed out dynamically: fn(chunk_index, begin, end, thread_id). A
// thread that the OS deschedules holds up one chunk, not a whole share of the work.
template <class F>
void parallel_chunks(int64_t n, int n_threads, int64_t align, F&& fn, int64_t chunk = 0) {
  if (n <= 0) return;
  const int t = std::max(1, n_threads);
  if (chunk <= 0) chunk = (n + 16 * t - 1) / (16 * t);
  chunk = std::max<int64_t>(align, (chunk + align - 1) / align * align);
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  parallel_items(n_chunks, t, [&](int64_t c, int tid) { fn(c, c * chunk, std::min(n, (c + 1) * chunk), tid); });
}

// Number of chunks parallel_chunks(n, n_threads, align, fn, chunk) will use.
inline int64_t chunk_count(int64_t n, int n_threads, int64_t align, int64_t chunk = 0) {
  if (n <= 0) return 0;
  const int t = std::max(1, n_threads);
  if (chunk <= 0) chunk = (n + 16 * t - 1) / (16 * t);
  chunk = std::max<int64_t>(align, (chunk + align - 1) / align * align);
  return (n + chunk - 1) / chunk;
}

}  // namespace fedmm
