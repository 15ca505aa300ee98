// Aggregation kernels. Work is split into contiguous coordinate ranges, one per thread;
// inside a range, coordinates are processed in tiles small enough to stay in L1/L2.
// Non-finite inputs are detected inside the same pass (x - x is NaN only for NaN/Inf).
#include "aggregate.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#include "agg_sort.hpp"
#include "isa.hpp"
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
constexpr int kNetTile = kSortTileBytes / sizeof(T);

// Elements per tile of the weighted mean (accumulator in L1).
constexpr int kMeanTile = 2048;
// Client counts up to this are sorted in registers (compile-time networks for 8, 16, 32).
constexpr int kMaxStaticSort = 32;

// The tile kernels of the best instruction set this CPU supports.
template <class T>
struct TileOps {
  void (*network)(const Comparator*, int, T*);
  bool (*gather)(const T* const*, int, int64_t, int, T*);
  void (*median)(const T*, int, bool, T*, int);
  void (*trimmed)(const T*, int, int, T*, int);
  bool (*sq_dists)(const T* const*, int, int, double*);
  bool (*mean64)(const T* const*, const double*, int, int64_t, int, T*);
  bool (*mean_native)(const T* const*, const double*, int, int64_t, int, T*);
};

#define FEDMM_TILE_OPS(NS)                                                                          \
  TileOps<T> {                                                                                      \
    &NS::network_tile<T, kNetTile<T>>, &NS::gather_tile<T, kNetTile<T>>,                            \
        &NS::median_tile<T, kNetTile<T>>, &NS::trimmed_tile<T, kNetTile<T>>,                        \
        &NS::sq_dists_tile<T>, &NS::mean_tile<T, double, kMeanTile>, &NS::mean_tile<T, T, kMeanTile> \
  }

template <class T>
TileOps<T> tile_ops() {
  switch (active_isa()) {
    case Isa::kAvx512: return FEDMM_TILE_OPS(isa_avx512);
    case Isa::kAvx2: return FEDMM_TILE_OPS(isa_avx2);
    default: return FEDMM_TILE_OPS(isa_base);
  }
}
#undef FEDMM_TILE_OPS

// ---- selection-network kernels (median, trimmed mean) ---------------------------------
// Per tile: copy K client slices into rows[K][tile], run the network pruned to ranks
// [lo, hi), then finish(rows, p0, len) writes out[p0 : p0 + len].
template <class T, class Finish>
bool network_kernel(const std::vector<const T*>& bufs, int64_t n, int lo, int hi, int n_threads,
                    Finish finish) {
  const int K = static_cast<int>(bufs.size());
  n_threads = resolve_threads(n_threads);
  const TileOps<T> ops = tile_ops<T>();
  const TileSorts<T> sorts = tile_sorts<T>();
  // K <= 32: full sort in registers of N >= K rows (padding rows hold +inf); otherwise a
  // runtime network pruned to ranks [lo, hi).
  void (*sort_static)(T*) = K <= 8 ? sorts.sort8 : K <= 16 ? sorts.sort16 : K <= kMaxStaticSort ? sorts.sort32 : nullptr;
  const int n_rows = !sort_static ? K : K <= 8 ? 8 : K <= 16 ? 16 : kMaxStaticSort;
  const std::vector<Comparator> net = sort_static ? std::vector<Comparator>() : selection_network(K, lo, hi);
  std::atomic<bool> ok{true};
  // Per thread: rows [n_rows, tile], 64-byte aligned (unaligned rows split every SIMD
  // access in two); padding rows K..n_rows-1 hold +inf.
  const size_t tile_elems = static_cast<size_t>(n_rows) * kNetTile<T>;
  std::vector<T> storage(static_cast<size_t>(n_threads) * (tile_elems + 64 / sizeof(T)), T(0));
  auto thread_rows = [&](int tid) {
    T* base = storage.data() + static_cast<size_t>(tid) * (tile_elems + 64 / sizeof(T));
    return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(base) + 63) & ~uintptr_t{63});
  };
  for (int tid = 0; tid < n_threads; ++tid)
    std::fill(thread_rows(tid) + static_cast<size_t>(K) * kNetTile<T>, thread_rows(tid) + tile_elems,
              std::numeric_limits<T>::infinity());
  parallel_chunks(n, n_threads, kNetTile<T>, [&](int64_t, int64_t begin, int64_t end, int tid) {
    T* rows = thread_rows(tid);
    bool fine = true;
    for (int64_t p0 = begin; p0 < end; p0 += kNetTile<T>) {
      const int len = static_cast<int>(std::min<int64_t>(kNetTile<T>, end - p0));
      fine &= ops.gather(bufs.data(), K, p0, len, rows);
      if (sort_static) sort_static(rows);  // full tile; lanes past len are ignored
      else ops.network(net.data(), static_cast<int>(net.size()), rows);
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
  const TileOps<T> ops = tile_ops<T>();
  const auto tile = acc64 ? ops.mean64 : ops.mean_native;
  n_threads = resolve_threads(n_threads);
  const int K = static_cast<int>(bufs.size());
  std::atomic<bool> ok{true};
  parallel_chunks(n, n_threads, kMeanTile, [&](int64_t, int64_t begin, int64_t end, int) {
    bool fine = true;
    for (int64_t p0 = begin; p0 < end; p0 += kMeanTile) {
      const int len = static_cast<int>(std::min<int64_t>(kMeanTile, end - p0));
      fine &= tile(bufs.data(), w.data(), K, p0, len, out + p0);
    }
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
  // One [K, K] partial sum per chunk, added in chunk order: deterministic for any schedule.
  const int64_t n_chunks = chunk_count(n, n_workers, kTile);
  std::vector<std::vector<double>> partial(n_chunks, std::vector<double>(static_cast<size_t>(K) * K, 0.0));
  std::atomic<bool> ok{true};
  parallel_chunks(n, n_workers, kTile, [&](int64_t chunk, int64_t begin, int64_t end, int) {
    std::vector<const T*> x(K);  // tile start of each client
    bool fine = true;
    for (int64_t p0 = begin; p0 < end; p0 += kTile) {
      const int len = static_cast<int>(std::min<int64_t>(kTile, end - p0));
      for (int k = 0; k < K; ++k) x[k] = bufs[k] + p0;
      fine &= ops.sq_dists(x.data(), K, len, partial[chunk].data());
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
