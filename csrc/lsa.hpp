// Rectangular linear sum assignment (Jonker-Volgenant), scipy conventions.
#pragma once

#include <cstdint>

namespace fedmm {

enum class LsaStatus : int {
  kOk = 0,
  kInvalid = 1,     // NaN, or -inf (minimize) / +inf (maximize) entry
  kInfeasible = 2,  // no complete assignment avoids the forbidden (inf) entries
};

// A read-only strided matrix: element (i, j) is data[i * row_stride + j * col_stride]
// (strides in elements, not bytes). No copy of the data is ever made.
template <class T>
struct MatrixView {
  const T* data;
  int64_t rows;
  int64_t cols;
  int64_t row_stride;
  int64_t col_stride;
};

// Solve min (or max) sum_i cost[i, col[i]] over one-to-one assignments of
// k = min(rows, cols) pairs. On kOk writes row_ind[k] (sorted ascending) and
// col_ind[k]. T is float or double; all arithmetic is done in double.
// Thread-safe (no shared state); does not touch Python.
template <class T>
LsaStatus solve_lsa(const MatrixView<T>& cost, bool maximize, int64_t* row_ind, int64_t* col_ind);

extern template LsaStatus solve_lsa<float>(const MatrixView<float>&, bool, int64_t*, int64_t*);
extern template LsaStatus solve_lsa<double>(const MatrixView<double>&, bool, int64_t*, int64_t*);

}  // namespace fedmm
