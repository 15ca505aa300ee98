// Sorting / selection networks for a runtime number of inputs (Batcher's odd-even merge
// sort), pruned to the output positions a caller needs. Applied "vertically" to K rows
// of a tile (agg_kernels.hpp), each comparator is an element-wise min/max of two rows,
// i.e. SIMD min/max over many coordinates at once.
#pragma once

#include <utility>
#include <vector>

namespace fedmm {

using Comparator = std::pair<int, int>;  // (a, b), a < b: after it, x[a] <= x[b]

// Batcher's odd-even merge sort for n inputs (network for the next power of two, with
// the comparators that touch padding positions >= n dropped: padding holds +inf there
// and never moves), keeping only comparators that influence positions [lo, hi).
inline std::vector<Comparator> selection_network(int n, int lo, int hi) {
  std::vector<Comparator> all;
  int n2 = 1;
  while (n2 < n) n2 <<= 1;
  for (int p = 1; p < n2; p <<= 1) {
    for (int k = p; k >= 1; k >>= 1) {
      for (int j = k % p; j + k < n2; j += 2 * k) {
        for (int i = 0; i < k && i + j + k < n2; ++i) {
          int a = i + j, b = i + j + k;
          if (a / (2 * p) == b / (2 * p) && b < n) all.emplace_back(a, b);
        }
      }
    }
  }
  // Backward pass: a comparator matters iff one of its outputs is (transitively) needed.
  std::vector<char> needed(n > 0 ? n : 1, 0);
  for (int i = lo; i < hi; ++i) needed[i] = 1;
  std::vector<Comparator> kept;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (needed[it->first] || needed[it->second]) {
      needed[it->first] = needed[it->second] = 1;
      kept.push_back(*it);
    }
  }
  return std::vector<Comparator>(kept.rbegin(), kept.rend());
}

// ---- compile-time networks (for sorting rows held in SIMD registers) ---------------------
struct StaticComparator {
  int a, b;
};

// Comparators of Batcher's odd-even merge sort for N (a power of two); writes them to
// out (if non-null) and returns their number.
constexpr int batcher_pairs(int N, StaticComparator* out) {
  int m = 0;
  for (int p = 1; p < N; p <<= 1)
    for (int k = p; k >= 1; k >>= 1)
      for (int j = k % p; j + k < N; j += 2 * k)
        for (int i = 0; i < k && i + j + k < N; ++i)
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p)) {
            if (out) out[m] = StaticComparator{i + j, i + j + k};
            ++m;
          }
  return m;
}

template <int N>
struct StaticNetwork {
  static constexpr int kSize = batcher_pairs(N, nullptr);
  StaticComparator c[kSize];
  constexpr StaticNetwork() : c() { batcher_pairs(N, c); }
};

}  // namespace fedmm
