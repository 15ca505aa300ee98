// Tile kernels of the robust aggregations, compiled once per instruction set:
// aggregate.cpp includes this file inside one namespace per ISA, each wrapped in a
// `#pragma GCC target(...)` region, and picks one at run time. Raw pointers only, and no
// include guard on purpose (it is included several times). Needs <algorithm>, <cstdint>,
// <cstring> and sortnet.hpp included beforehand.

// One comparator over a row pair: element-wise (min, max) of kLen values.
template <class T, int kLen>
inline void compare_rows(T* __restrict__ pa, T* __restrict__ pb) {
  for (int t = 0; t < kLen; ++t) {
    T x = pa[t], y = pb[t];
    pa[t] = std::min(x, y);
    pb[t] = std::max(x, y);
  }
}

// Apply a comparator network to the rows of a tile: rows[r * kLen + t].
template <class T, int kLen>
void network_tile(const Comparator* net, int n_cmp, T* rows) {
  for (int i = 0; i < n_cmp; ++i) compare_rows<T, kLen>(rows + net[i].first * kLen, rows + net[i].second * kLen);
}

// rows[k][0:len] = bufs[k][p0 : p0 + len] for k < K; false if a copied value is NaN/Inf.
template <class T, int kLen>
bool gather_tile(const T* const* bufs, int K, int64_t p0, int len, T* rows) {
  int bad = 0;  // integer OR reduction: vectorises, unlike a floating-point sum
  for (int k = 0; k < K; ++k) {
    const T* __restrict__ src = bufs[k] + p0;
    T* __restrict__ dst = rows + static_cast<int64_t>(k) * kLen;
    // K interleaved short streams defeat the hardware prefetcher: fetch 8 tiles ahead
    // (a prefetch past the end of the buffer is harmless).
    for (int b = 0; b < kLen * static_cast<int>(sizeof(T)); b += 64)
      __builtin_prefetch(reinterpret_cast<const char*>(src) + 8 * kLen * sizeof(T) + b);
    for (int t = 0; t < len; ++t) {
      dst[t] = src[t];
      bad |= !(src[t] - src[t] == T(0));  // x - x is NaN exactly when x is NaN or +-inf
    }
  }
  return bad == 0;
}

// out[t] = rows[m][t], or the mean of rows[m - 1][t] and rows[m][t] (in double) if even.
template <class T, int kLen>
void median_tile(const T* rows, int m, bool even, T* __restrict__ out, int len) {
  const T* __restrict__ hi = rows + static_cast<int64_t>(m) * kLen;
  if (!even) {
    std::memcpy(out, hi, sizeof(T) * len);
    return;
  }
  const T* __restrict__ lo = hi - kLen;
  for (int t = 0; t < len; ++t) out[t] = static_cast<T>((static_cast<double>(lo[t]) + static_cast<double>(hi[t])) / 2.0);
}

// out[t] = mean of rows[lo..hi)[t], summed in double in ascending row order.
template <class T, int kLen>
void trimmed_tile(const T* rows, int lo, int hi, T* __restrict__ out, int len) {
  alignas(64) double acc[kLen];
  const T* __restrict__ r0 = rows + static_cast<int64_t>(lo) * kLen;
  for (int t = 0; t < kLen; ++t) acc[t] = static_cast<double>(r0[t]);
  for (int r = lo + 1; r < hi; ++r) {
    const T* __restrict__ x = rows + static_cast<int64_t>(r) * kLen;
    for (int t = 0; t < kLen; ++t) acc[t] += static_cast<double>(x[t]);
  }
  const double count = hi - lo;
  for (int t = 0; t < len; ++t) out[t] = static_cast<T>(acc[t] / count);
}

// D[a * K + b] += sum_t (x[a][t] - x[b][t])^2 for a < b (double accumulation, 8 lanes).
// x[k] points at the tile start of client k. Returns false if a value is NaN/Inf.
template <class T>
bool sq_dists_tile(const T* const* x, int K, int len, double* D) {
  typedef double dvec8 __attribute__((vector_size(64)));
  typedef T tvec8 __attribute__((vector_size(8 * sizeof(T))));
  const int len8 = len & ~7;
  int bad = 0;
  for (int a = 0; a < K; ++a) {
    const T* xa = x[a];
    for (int t = 0; t < len; ++t) bad |= !(xa[t] - xa[t] == T(0));
    for (int b = a + 1; b < K; ++b) {
      const T* xb = x[b];
      dvec8 s = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int t = 0; t < len8; t += 8) {
        tvec8 va, vb;
        std::memcpy(&va, xa + t, sizeof va);
        std::memcpy(&vb, xb + t, sizeof vb);
        dvec8 d = __builtin_convertvector(va, dvec8) - __builtin_convertvector(vb, dvec8);
        s += d * d;
      }
      double tail = 0;
      for (int t = len8; t < len; ++t) {
        double d = static_cast<double>(xa[t]) - static_cast<double>(xb[t]);
        tail += d * d;
      }
      D[a * K + b] += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + tail;
    }
  }
  return bad == 0;
}

// out[p0 + t] = sum_k w[k] * bufs[k][p0 + t] for t < len (len <= kLen), accumulated in Acc.
// Returns false if a result is NaN/Inf (a non-finite input, or overflow).
template <class T, class Acc, int kLen>
bool mean_tile(const T* const* bufs, const double* w, int K, int64_t p0, int len, T* __restrict__ out) {
  alignas(64) Acc acc[kLen];
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
  int bad = 0;
  for (int t = 0; t < len; ++t) {
    out[t] = static_cast<T>(acc[t]);
    bad |= !(acc[t] - acc[t] == Acc(0));  // NaN/Inf input (or overflow) poisons acc
  }
  return bad == 0;
}
