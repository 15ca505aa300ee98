// Register-resident sorting of aggregation tiles, compiled once per instruction set:
// agg_sort.cpp includes this file inside one namespace per ISA, each wrapped in a
// `#pragma GCC target(...)` region with FEDMM_VEC_BYTES set to that ISA's vector width.
// No include guard on purpose. Needs <cstdint>, <utility> and sortnet.hpp beforehand.

constexpr int kVecBytes = FEDMM_VEC_BYTES;

template <class V, int A, int B>
__attribute__((always_inline)) inline void compare_exchange(V* r) {
  // (b < a ? b : a) and (a < b ? b : a): two distinct comparisons, i.e. SIMD min and max
  V lo = r[B] < r[A] ? r[B] : r[A];
  r[B] = r[A] < r[B] ? r[B] : r[A];
  r[A] = lo;
}

template <class V, int N, std::size_t... I>
__attribute__((always_inline)) inline void sort_registers(V* r, std::index_sequence<I...>) {
  constexpr StaticNetwork<N> net;
  (compare_exchange<V, net.c[I].a, net.c[I].b>(r), ...);
}

template <class T, int N, int kLen, std::size_t... I>
void sort_tile_static(T* rows, std::index_sequence<I...>) {
  constexpr int kW = kVecBytes / static_cast<int>(sizeof(T));
  typedef T V __attribute__((vector_size(kVecBytes)));
  static_assert(kLen % kW == 0, "tile must hold whole vectors");
  for (int c = 0; c < kLen; c += kW) {
    V r[N];  // one vector per row; compile-time indices keep them in registers
    ((r[I] = *reinterpret_cast<const V*>(rows + I * kLen + c)), ...);
    sort_registers<V, N>(r, std::make_index_sequence<StaticNetwork<N>::kSize>{});
    ((*reinterpret_cast<V*>(rows + I * kLen + c) = r[I]), ...);
  }
}

// Sort the N rows of an [N, kLen] tile (64-byte aligned) in place, coordinate-wise, with
// Batcher's network for N held in registers. Callers with K < N clients fill rows K..N-1
// with +inf once: sorting moves those N - K infinities back to rows K..N-1.
template <class T, int N, int kLen>
void sort_tile(T* rows) {
  sort_tile_static<T, N, kLen>(rows, std::make_index_sequence<N>{});
}
