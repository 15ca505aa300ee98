// Register-resident tile sorts (Batcher networks for 8, 16 and 32 rows), one set per
// instruction set, picked at run time. A translation unit of its own: the fully unrolled
// 32-row networks are the slowest code of the core to compile, and build in parallel.
#include "agg_sort.hpp"

#include <cstddef>
#include <cstdint>
#include <utility>

#include "isa.hpp"
#include "sortnet.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f")
#define FEDMM_VEC_BYTES 64
namespace fedmm::sort_avx512 {
#include "sort_kernels.hpp"
}
#undef FEDMM_VEC_BYTES
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2")
#define FEDMM_VEC_BYTES 32
namespace fedmm::sort_avx2 {
#include "sort_kernels.hpp"
}
#undef FEDMM_VEC_BYTES
#pragma GCC pop_options
#define FEDMM_VEC_BYTES 16
namespace fedmm::sort_base {
#include "sort_kernels.hpp"
}
#undef FEDMM_VEC_BYTES

namespace fedmm {

#define FEDMM_SORT_OPS(NS, T, LEN) \
  TileSorts<T> { &NS::sort_tile<T, 8, LEN>, &NS::sort_tile<T, 16, LEN>, &NS::sort_tile<T, 32, LEN> }

template <class T>
TileSorts<T> tile_sorts() {
  constexpr int kLen = kSortTileBytes / sizeof(T);
  switch (active_isa()) {
    case Isa::kAvx512: return FEDMM_SORT_OPS(sort_avx512, T, kLen);
    case Isa::kAvx2: return FEDMM_SORT_OPS(sort_avx2, T, kLen);
    default: return FEDMM_SORT_OPS(sort_base, T, kLen);
  }
}
#undef FEDMM_SORT_OPS

template TileSorts<float> tile_sorts<float>();
template TileSorts<double> tile_sorts<double>();

}  // namespace fedmm
