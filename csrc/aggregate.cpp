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

namespace fedmm {
namespace {

typedef double dvec4 __attribute__((vector_size(32)));  // 4 doubles (2 SSE ops without AVX)

template <class T>
inline dvec4 load4(const T* p) {
  typedef T tvec4 __attribute__((vector_size(4 * sizeof(T))));
  tvec4 x;
  std::memcpy(&x, p, sizeof x);
  return __builtin_convertvector(x, dvec4);
}

// Elements per tile for the selection kernels: K rows of this many values per tile.
template <class T>
constexpr int kNetTile = 512 / sizeof(T);

// ---- weighted mean ------------------------------------------------------------------
template <class T, class Acc>
bool mean_range(const std::vector<const T*>& bufs, const std::vector<double>& w, int64_t begin,
                int64_t end, T* out) {
  constexpr int kTile = 2048;
  alignas(64) Acc acc[kTile];
  const int K = static_cast<int>(bufs.size());
  Acc chk = 0;
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
      chk += acc[t] - acc[t];
    }
  }
  return chk == 0;
}

// ---- selection-network kernels (median, trimmed mean) ---------------------------------
// Copy one tile of every client into rows[K][kNetTile]; false if a value is non-finite.
template <class T>
bool gather_tile(const std::vector<const T*>& bufs, int64_t p0, int len, T* rows) {
  T chk = 0;
  for (size_t k = 0; k < bufs.size(); ++k) {
    const T* __restrict__ src = bufs[k] + p0;
    T* __restrict__ dst = rows + k * kNetTile<T>;
    for (int t = 0; t < len; ++t) {
      dst[t] = src[t];
      chk += src[t] - src[t];
    }
  }
  return chk == 0;
}

// reduce(rows, p0, len) writes out[p0 : p0 + len] from the network-ordered rows.
template <class T, class Reduce>
bool network_kernel(const std::vector<const T*>& bufs, int64_t n, int lo, int hi, int n_threads,
                    Reduce reduce) {
  const int K = static_cast<int>(bufs.size());
  const std::vector<Comparator> net = selection_network(K, lo, hi);
  std::atomic<bool> ok{true};
  parallel_ranges(n, n_threads, kNetTile<T>, [&](int64_t begin, int64_t end, int) {
    std::vector<T> rows(static_cast<size_t>(K) * kNetTile<T>);  // [K, tile]
    bool fine = true;
    for (int64_t p0 = begin; p0 < end; p0 += kNetTile<T>) {
      const int len = static_cast<int>(std::min<int64_t>(kNetTile<T>, end - p0));
      fine &= gather_tile(bufs, p0, len, rows.data());
      apply_network(net, rows.data(), kNetTile<T>, len);
      reduce(rows.data(), p0, len);
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
  return network_kernel(bufs, n, even ? m - 1 : m, m + 1, n_threads, [&](const T* rows, int64_t p0, int len) {
    const T* __restrict__ hi = rows + static_cast<size_t>(m) * kNetTile<T>;
    T* __restrict__ o = out + p0;
    if (even) {
      const T* __restrict__ lo = hi - kNetTile<T>;
      for (int t = 0; t < len; ++t)
        o[t] = static_cast<T>((static_cast<double>(lo[t]) + static_cast<double>(hi[t])) / 2.0);
    } else {
      std::memcpy(o, hi, len * sizeof(T));
    }
  });
}

template <class T>
bool trimmed_mean(const std::vector<const T*>& bufs, int64_t n, int n_trim, T* out, int n_threads) {
  const int K = static_cast<int>(bufs.size());
  if (n_trim < 0 || 2 * n_trim >= K) throw std::invalid_argument("trimmed_mean: need 0 <= 2 * n_trim < K");
  const double count = K - 2 * n_trim;
  return network_kernel(bufs, n, n_trim, K - n_trim, n_threads, [&](const T* rows, int64_t p0, int len) {
    alignas(64) double acc[kNetTile<T>];
    const T* r0 = rows + static_cast<size_t>(n_trim) * kNetTile<T>;
    for (int t = 0; t < len; ++t) acc[t] = static_cast<double>(r0[t]);
    for (int r = n_trim + 1; r < K - n_trim; ++r) {  // ascending rank order, like a sorted sum
      const T* __restrict__ x = rows + static_cast<size_t>(r) * kNetTile<T>;
      for (int t = 0; t < len; ++t) acc[t] += static_cast<double>(x[t]);
    }
    T* __restrict__ o = out + p0;
    for (int t = 0; t < len; ++t) o[t] = static_cast<T>(acc[t] / count);
  });
}

template <class T>
bool pairwise_sq_dists(const std::vector<const T*>& bufs, int64_t n, double* dist, int n_threads) {
  const int K = static_cast<int>(bufs.size());
  constexpr int kTile = 512;
  const int T_ = resolve_threads(n_threads);
  std::vector<std::vector<double>> partial(T_, std::vector<double>(static_cast<size_t>(K) * K, 0.0));
  std::atomic<bool> ok{true};
  parallel_ranges(n, T_, kTile, [&](int64_t begin, int64_t end, int tid) {
    double* D = partial[tid].data();  // [K, K], upper triangle used
    double chk = 0;
    for (int64_t p0 = begin; p0 < end; p0 += kTile) {
      const int len = static_cast<int>(std::min<int64_t>(kTile, end - p0));
      const int len4 = len & ~3;
      for (int a = 0; a < K; ++a) {
        const T* xa = bufs[a] + p0;
        for (int t = 0; t < len; ++t) chk += static_cast<double>(xa[t]) - static_cast<double>(xa[t]);
        for (int b = a + 1; b < K; ++b) {
          const T* xb = bufs[b] + p0;
          dvec4 s = {0, 0, 0, 0};
          for (int t = 0; t < len4; t += 4) {
            dvec4 d = load4(xa + t) - load4(xb + t);
            s += d * d;
          }
          double tail = 0;
          for (int t = len4; t < len; ++t) {
            double d = static_cast<double>(xa[t]) - static_cast<double>(xb[t]);
            tail += d * d;
          }
          D[a * K + b] += (s[0] + s[1]) + (s[2] + s[3]) + tail;
        }
      }
    }
    if (chk != 0) ok = false;
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
