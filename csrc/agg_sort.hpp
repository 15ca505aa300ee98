// Register-resident, coordinate-wise sorts of aggregation tiles (see agg_sort.cpp).
#pragma once

namespace fedmm {

// Bytes per tile row: a tile is [rows, kSortTileBytes / sizeof(T)], 64-byte aligned.
constexpr int kSortTileBytes = 512;

// Sort the N rows of a tile in place, coordinate-wise (N = 8, 16 or 32). Callers with
// K < N clients fill rows K..N-1 with +inf once: sorting moves them back there.
template <class T>
struct TileSorts {
  void (*sort8)(T* rows);
  void (*sort16)(T* rows);
  void (*sort32)(T* rows);
};

// The sorts of the best instruction set this CPU supports.
template <class T>
TileSorts<T> tile_sorts();

extern template TileSorts<float> tile_sorts<float>();
extern template TileSorts<double> tile_sorts<double>();

}  // namespace fedmm
