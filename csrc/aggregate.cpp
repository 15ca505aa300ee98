// Aggregation kernels. Work is split into contiguous coordinate ranges, one per thread;
// inside a range, coordinates are processed in tiles small enough to stay in L1/L2.
// Non-finite inputs are detected inside the same pass (x - x is NaN only for NaN/Inf).
#include "aggregate.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "parallel.hpp"
#include "sortnet.hpp"

// Tile kernels, once per instruction set (functions inherit the region's target).
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace fedmm::isa_avx512 {
#include "agg_kernels.hpp"
}
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2")
namespace fedmm::isa_avx2 {
#include "agg_kernels.hpp"
}
#pragma GCC pop_options
namespace fedmm::isa_base {
#include "agg_kernels.hpp"
}

namespace fedmm {
namespace {

// Elements per tile for the selection kernels: K rows of this many values per tile.
template <class T>
constexpr int kNetTile = 512 / sizeof(T);

// The tile kernels of the best instruction set this CPU supports.
template <class T>
struct TileOps {
  void (*network)(const Comparator*, int, T*);
  bool (*gather)(const T* const*, int, int64_t, int, T*);
  void (*median)(const T*, int, bool, T*, int);
  void (*trimmed)(const T*, int, int, T*, int);
  bool (*sq_dists)(const T* const*, int, int, double*);
};

#define FEDMM_TILE_OPS(NS)                                                               \
  TileOps<T> {                                                                           \
    &NS::network_tile<T, kNetTile<T>>, &NS::gather_tile<T, kNetTile<T>>,                 \
        &NS::median_tile<T, kNetTile<T>>, &NS::trimmed_tile<T, kNetTile<T>>, &NS::sq_dists_tile<T> \
  }

template <class T>
TileOps<T> tile_ops() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return FEDMM_TILE_OPS(isa_avx512);
  if (__builtin_cpu_supports("avx2")) return FEDMM_TILE_OPS(isa_avx2);
  return FEDMM_TILE_OPS(isa_base);
}
#undef FEDMM_TILE_OPS

// ---- weighted mean ------------------------------------------------------------------
template <class T, class Acc>
bool mean_range(const std::vector<const T*>& bufs, const std::vector<double>& w, int64_t begin,
                int64_t end, T* out) {
  constexpr int kTile = 2048;
  alignas(64) Acc acc[kTile];
  const int K = static_cast<int>(bufs.size());
  int bad = 0;
  for (int64_t p0 = begin; p0 < end; p0 += kTile) {
    const int len = static_cast<int>(std::min<int64_t>(kTile, end - p0));
    const T* __restrict__ x0 = bufs[0] + p0;
    const Acc w0 = static_cast<Acc>(w[0]);
    for (int t = 0; t < len; ++t) acc[t] = w0 * static_cast<Acc>(x0[t]);
    int k = 1;
    for (; k + 3 < K; k += 4) {  // four clients per sweep over the accumulator
      const T* __restrict__ a = bufs[k] + p0;
      const T* __restrict__ b = bufs[k + 1] + p0;
      const T* __restrict__ c = bufs[k + 2] + p0;
      const T* __restrict__ d = bufs[k + 3] + p0;
      const Acc wa = w[k], wb = w[k + 1], wc = w[k + 2], wd = w[k + 3];
      for (int t = 0; t < len; ++t) {
        acc[t] += (wa * static_cast<Acc>(a[t]) + wb * static_cast<Acc>(b[t])) +
                  (wc * static_cast<Acc>(c[t]) + wd * static_cast<Acc>(d[t]));
      }
    }
    for (; k < K; ++k) {
      const T* __restrict__ a = bufs[k] + p0;
      const Acc wa = w[k];
      for (int t = 0; t < len; ++t) acc[t] += wa * static_cast<Acc>(a[t]);
    }
    T* __restrict__ o = out + p0;
    for (int t = 0; t < len; ++t) {
      o[t] = static_cast<T>(acc[t]);
      bad |= !(acc[t] - acc[t] == Acc(0));  // NaN/Inf input (or overflow) poisons acc
    }
  }
  return bad == 0;
}

// ---- selection-network kernels (median, trimmed mean) ---------------------------------
// Per tile: copy K client slices into rows[K][tile], run the network pruned to ranks
// [lo, hi), then finish(rows, p0, len) writes out[p0 : p0 + len].
template <class T, class Finish>
bool network_kernel(const std::vector<const T*>& bufs, int64_t n, int lo, int hi, int n_threads,
                    Finish finish) {
  const int K = static_cast<int>(bufs.size());
  const std::vector<Comparator> net = selection_network(K, lo, hi);
  const TileOps<T> ops = tile_ops<T>();
  std::atomic<bool> ok{true};
  parallel_ranges(n, n_threads, kNetTile<T>, [&](int64_t begin, int64_t end, int) {
    // rows [K, tile], 64-byte aligned: unaligned rows split every SIMD access in two.
    std::vector<T> storage(static_cast<size_t>(K) * kNetTile<T> + 64 / sizeof(T), T(0));
    T* rows = reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~uintptr_t{63});
    bool fine = true;
    for (int64_t p0 = begin; p0 < end; p0 += kNetTile<T>) {
      const int len = static_cast<int>(std::min<int64_t>(kNetTile<T>, end - p0));
      fine &= ops.gather(bufs.data(), K, p0, len, rows);
      ops.network(net.data(), static_cast<int>(net.size()), rows);  // full tile; extra lanes ignored
      finish(ops, rows, p0, len);
    }
    if (!fine) ok = false;
  });
  return ok;
}

}  // namespace

template <class T>
bool weighted_mean(const std::vector<const T*>& bufs, const std::vector<double>& w, int64_t n,
                   T* out, bool acc64, int n_threads) {
  if (bufs.empty() || bufs.size() != w.size()) throw std::invalid_argument("weighted_mean: bad sizes");
  std::atomic<bool> ok{true};
  parallel_ranges(n, n_threads, 2048, [&](int64_t begin, int64_t end, int) {
    bool fine = acc64 ? mean_range<T, double>(bufs, w, begin, end, out)
                      : mean_range<T, T>(bufs, w, begin, end, out);
    if (!fine) ok = false;
  });
  return ok;
}

template <class T>
bool coordinate_median(const std::vector<const T*>& bufs, int64_t n, T* out, int n_threads) {
  const int K = static_cast<int>(bufs.size());
  if (K == 0) throw std::invalid_argument("coordinate_median: no buffers");
  const int m = K / 2;
  const bool even = K % 2 == 0;
  return network_kernel(bufs, n, even ? m - 1 : m, m + 1, n_threads,
                        [&](const TileOps<T>& ops, const T* rows, int64_t p0, int len) {
                          ops.median(rows, m, even, out + p0, len);
                        });
}

template <class T>
bool trimmed_mean(const std::vector<const T*>& bufs, int64_t n, int n_trim, T* out, int n_threads) {
  const int K = static_cast<int>(bufs.size());
  if (n_trim < 0 || 2 * n_trim >= K) throw std::invalid_argument("trimmed_mean: need 0 <= 2 * n_trim < K");
  return network_kernel(bufs, n, n_trim, K - n_trim, n_threads,
                        [&](const TileOps<T>& ops, const T* rows, int64_t p0, int len) {
                          ops.trimmed(rows, n_trim, K - n_trim, out + p0, len);
                        });
}

template <class T>
bool pairwise_sq_dists(const std::vector<const T*>& bufs, int64_t n, double* dist, int n_threads) {
  const int K = static_cast<int>(bufs.size());
  constexpr int kTile = 512;
  const int n_workers = resolve_threads(n_threads);
  const TileOps<T> ops = tile_ops<T>();
  std::vector<std::vector<double>> partial(n_workers, std::vector<double>(static_cast<size_t>(K) * K, 0.0));
  std::atomic<bool> ok{true};
  parallel_ranges(n, n_workers, kTile, [&](int64_t begin, int64_t end, int tid) {
    std::vector<const T*> x(K);  // tile start of each client
    bool fine = true;
    for (int64_t p0 = begin; p0 < end; p0 += kTile) {
      const int len = static_cast<int>(std::min<int64_t>(kTile, end - p0));
      for (int k = 0; k < K; ++k) x[k] = bufs[k] + p0;
      fine &= ops.sq_dists(x.data(), K, len, partial[tid].data());
    }
    if (!fine) ok = false;
  });
  for (int a = 0; a < K; ++a) {
    dist[a * K + a] = 0.0;
    for (int b = a + 1; b < K; ++b) {
      double s = 0;
      for (const auto& P : partial) s += P[a * K + b];
      dist[a * K + b] = dist[b * K + a] = s;
    }
  }
  return ok;
}

std::vector<double> krum_from_dists(const double* dist, int K, int n_byzantine) {
  std::vector<double> scores(K, 0.0);
  if (K <= 1) return scores;
  const int m = std::min(std::max(K - n_byzantine - 2, 1), K - 1);
  std::vector<double> row;
  for (int a = 0; a < K; ++a) {
    row.clear();
    for (int b = 0; b < K; ++b)
      if (b != a) row.push_back(dist[a * K + b]);
    std::nth_element(row.begin(), row.begin() + (m - 1), row.end());
    std::sort(row.begin(), row.begin() + m);  // deterministic summation order
    double s = 0;
    for (int i = 0; i < m; ++i) s += row[i];
    scores[a] = s;
  }
  return scores;
}

template <class T>
std::pair<int64_t, int64_t> find_nonfinite(const std::vector<const T*>& bufs, int64_t n) {
  for (size_t k = 0; k < bufs.size(); ++k)
    for (int64_t p = 0; p < n; ++p)
      if (!std::isfinite(bufs[k][p])) return {static_cast<int64_t>(k), p};
  return {-1, -1};
}

#define FEDMM_INSTANTIATE(T)                                                                       \
  template bool weighted_mean<T>(const std::vector<const T*>&, const std::vector<double>&, int64_t, \
                                 T*, bool, int);                                                   \
  template bool coordinate_median<T>(const std::vector<const T*>&, int64_t, T*, int);              \
  template bool trimmed_mean<T>(const std::vector<const T*>&, int64_t, int, T*, int);              \
  template bool pairwise_sq_dists<T>(const std::vector<const T*>&, int64_t, double*, int);         \
  template std::pair<int64_t, int64_t> find_nonfinite<T>(const std::vector<const T*>&, int64_t);
FEDMM_INSTANTIATE(float)
FEDMM_INSTANTIATE(double)
#undef FEDMM_INSTANTIATE

}  // namespace fedmm
