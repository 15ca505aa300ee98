// Per-instruction-set row kernels of the assignment solver (lsa_kernels.hpp compiled for
// AVX-512, AVX2 and baseline x86-64) and their run-time selection. Included by lsa.cpp only.
#pragma once

#include <climits>
#include <cstring>

#include "isa.hpp"

// Row kernels, once per instruction set (functions inherit the region's target).
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace fedmm::lsa_avx512 {
#include "lsa_kernels.hpp"
}
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2")
namespace fedmm::lsa_avx2 {
#include "lsa_kernels.hpp"
}
#pragma GCC pop_options
namespace fedmm::lsa_base {
#include "lsa_kernels.hpp"
}

namespace fedmm {

// Row kernels (contiguous rows) of the best instruction set this CPU supports.
template <class T, bool kNeg>
struct RowOps {
  bool (*entries_ok)(const T*, int);
  void (*row_min2)(const T*, const double*, int, double*, int*, double*, int*);
  bool (*column_min_update)(const T*, int, int, double*, int*);
  void (*relax_argmin)(const T*, const double*, double, int, double*, int*, const int*, int, double*, int*);
};

#define FEDMM_ROW_OPS(NS)                                                                           \
  RowOps<T, kNeg> {                                                                                 \
    &NS::row_entries_ok<T, kNeg>, &NS::row_min2<T, kNeg>, &NS::column_min_update<T, kNeg>,          \
        &NS::relax_argmin<T, kNeg>                                                                  \
  }

template <class T, bool kNeg>
inline RowOps<T, kNeg> row_ops() {
  switch (active_isa()) {
    case Isa::kAvx512: return FEDMM_ROW_OPS(lsa_avx512);
    case Isa::kAvx2: return FEDMM_ROW_OPS(lsa_avx2);
    default: return FEDMM_ROW_OPS(lsa_base);
  }
}
#undef FEDMM_ROW_OPS

}  // namespace fedmm
