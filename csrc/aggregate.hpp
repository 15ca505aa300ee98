// Coordinate-wise aggregation of K client buffers (each a contiguous 1-D array of n
// elements, read in place), multi-threaded over coordinate ranges.
//
// Every kernel returns false when it met a non-finite input value (NaN/Inf); callers
// then use find_nonfinite() to name the client. Masked-out clients are simply not
// passed in. T is float or double; outputs have type T.
#pragma once

#include <cstdint>
#include <vector>

namespace fedmm {

// out[p] = sum_k w[k] * bufs[k][p]; accumulates in double if acc64, else in T.
template <class T>
bool weighted_mean(const std::vector<const T*>& bufs, const std::vector<double>& w, int64_t n,
                   T* out, bool acc64, int n_threads);

// out[p] = median_k bufs[k][p] (mean of the two middle values when K is even).
template <class T>
bool coordinate_median(const std::vector<const T*>& bufs, int64_t n, T* out, int n_threads);

// out[p] = mean of the sorted values bufs[.][p] at ranks [n_trim, K - n_trim).
template <class T>
bool trimmed_mean(const std::vector<const T*>& bufs, int64_t n, int n_trim, T* out, int n_threads);

// dist[a * K + b] = sum_p (bufs[a][p] - bufs[b][p])^2, accumulated in double.
template <class T>
bool pairwise_sq_dists(const std::vector<const T*>& bufs, int64_t n, double* dist, int n_threads);

// Krum score of each client: sum of its m smallest squared distances to the others,
// m = clamp(K - n_byzantine - 2, 1, K - 1). dist is [K, K].
std::vector<double> krum_from_dists(const double* dist, int K, int n_byzantine);

// First (client position, element index) holding a non-finite value, or (-1, -1).
template <class T>
std::pair<int64_t, int64_t> find_nonfinite(const std::vector<const T*>& bufs, int64_t n);

}  // namespace fedmm
