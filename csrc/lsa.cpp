// Jonker-Volgenant linear assignment (R. Jonker, A. Volgenant, "A shortest augmenting
// path algorithm for dense and sparse linear assignment problems", Computing 38, 1987):
// column reduction + reduction transfer (square only), two passes of augmenting row
// reduction, then one Dijkstra-style shortest augmenting path per remaining free row.
//
// Duals: column prices v[j]; the row dual is implicit (u_i = min_j c_ij - v_j, attained
// at the row's assigned column). Rectangular problems (rows < cols) start from v = 0 and
// skip the column phases: every phase only lowers prices of columns that are or become
// assigned, so unassigned columns keep the largest price (0), which is the optimality
// condition of the rectangular problem. `inf` entries are forbidden pairs; a row whose
// shortest augmenting path has infinite length proves the matrix infeasible.
#include "lsa.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "lsa_rowops.hpp"

namespace fedmm {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Scratch arrays, reused by every solve on the same thread (no allocation per call).
struct Workspace {
  std::vector<double> v, d, settled_d;
  std::vector<int> row4col, col4row, free, next, matches, pred, settled, argmin;
  std::vector<int64_t> order;
};

Workspace& thread_workspace() {
  thread_local Workspace ws;
  return ws;
}

// Solver for an oriented view with rows <= cols. kUnit: col_stride == 1; kMax: negate costs.
template <class T, bool kUnit, bool kMax>
class JvSolver {
 public:
  JvSolver(const MatrixView<T>& c, Workspace& ws)
      : c_(c), nr_(static_cast<int>(c.rows)), nc_(static_cast<int>(c.cols)), ws_(ws) {}

  // On kOk, the workspace's col4row[nr] holds the assigned column of every row.
  LsaStatus run() {
    v_.assign(nc_, 0.0);
    row4col_.assign(nc_, -1);
    col4row_.assign(nr_, -1);
    free_.clear();
    if (nr_ == nc_) {
      LsaStatus st = column_reduction();  // validates the entries on the way
      if (st != LsaStatus::kOk) return st;
      reduction_transfer();
    } else {
      if (!entries_valid()) return LsaStatus::kInvalid;
      free_.resize(nr_);
      std::iota(free_.begin(), free_.end(), 0);
    }
    for (int pass = 0; pass < 2 && !free_.empty(); ++pass) {
      if (!augmenting_row_reduction()) return LsaStatus::kInfeasible;
    }
    d_.resize(nc_);
    pred_.resize(nc_);
    for (int f : free_) {
      if (!augment(f)) return LsaStatus::kInfeasible;
    }
    return LsaStatus::kOk;
  }

 private:
  const T* row(int i) const { return c_.data + static_cast<int64_t>(i) * c_.row_stride; }
  double at(const T* r, int j) const {
    double x = static_cast<double>(r[kUnit ? j : static_cast<int64_t>(j) * c_.col_stride]);
    return kMax ? -x : x;
  }

  // No NaN and no -inf after the sign flip.
  bool entries_valid() const {
    for (int i = 0; i < nr_; ++i) {
      if (kUnit) {
        if (!ops_.entries_ok(row(i), nc_)) return false;
        continue;
      }
      const T* r = row(i);
      for (int j = 0; j < nc_; ++j) {
        double x = at(r, j);
        if (x != x || x == -kInf) return false;
      }
    }
    return true;
  }

  // v[j] = min_i c_ij, assigning each column's argmin row when that row is still free
  // (or when this column is cheaper for it). Rows never chosen become free. Also checks
  // every entry (kInvalid) and that no column is entirely forbidden (kInfeasible).
  LsaStatus column_reduction() {
    std::vector<int>& argmin = ws_.argmin;  // [nc]
    argmin.assign(nc_, 0);
    std::fill(v_.begin(), v_.end(), kInf);
    for (int i = 0; i < nr_; ++i) {    // row-major sweep keeps the reads sequential
      const T* r = row(i);
      if (kUnit) {
        if (!ops_.column_min_update(r, nc_, i, v_.data(), argmin.data())) return LsaStatus::kInvalid;
        continue;
      }
      for (int j = 0; j < nc_; ++j) {
        double x = at(r, j);
        if (x != x || x == -kInf) return LsaStatus::kInvalid;
        bool lt = x < v_[j];
        v_[j] = lt ? x : v_[j];
        argmin[j] = lt ? i : argmin[j];
      }
    }
    matches_.assign(nr_, 0);
    for (int j = nc_ - 1; j >= 0; --j) {
      if (v_[j] == kInf) return LsaStatus::kInfeasible;  // column with only forbidden entries
      int i = argmin[j];
      if (matches_[i]++ == 0) {
        col4row_[i] = j;
        row4col_[j] = i;
      } else if (v_[j] < v_[col4row_[i]]) {
        row4col_[col4row_[i]] = -1;
        col4row_[i] = j;
        row4col_[j] = i;
      }
    }
    return LsaStatus::kOk;
  }

  // Rows matched exactly once pass their slack to their column's price; unmatched rows
  // become free.
  void reduction_transfer() {
    for (int i = 0; i < nr_; ++i) {
      if (matches_[i] == 0) {
        free_.push_back(i);
      } else if (matches_[i] == 1) {
        int j1 = col4row_[i];
        double umin, usub;
        int k1, k2;
        row_min2(i, umin, k1, usub, k2);
        double mn = k1 == j1 ? usub : umin;  // cheapest other column
        if (mn < kInf) v_[j1] -= mn;
      }
    }
  }

  // The two smallest reduced costs c_ij - v_j of row i, lexicographic in (value, index):
  // j1 = first column attaining the minimum, j2 = first column attaining the second value.
  // umin = inf means the row has only forbidden entries; usub = inf, a single finite one.
  void row_min2(int i, double& umin, int& j1, double& usub, int& j2) const {
    if (kUnit) {
      ops_.row_min2(row(i), v_.data(), nc_, &umin, &j1, &usub, &j2);
      return;
    }
    const T* r = row(i);
    umin = at(r, 0) - v_[0];
    j1 = 0;
    usub = kInf;
    j2 = -1;
    for (int j = 1; j < nc_; ++j) {
      double h = at(r, j) - v_[j];
      if (h < usub) {
        if (h >= umin) {
          usub = h;
          j2 = j;
        } else {
          usub = umin;
          j2 = j1;
          umin = h;
          j1 = j;
        }
      }
    }
  }

  // One pass of augmenting row reduction over the free rows. A free row takes its cheapest
  // column and lowers that column's price to its second-cheapest reduced cost; the evicted
  // owner is processed next (or, on ties, in the following pass). The number of immediate
  // re-processings is capped, which only moves work to the augmentation phase.
  bool augmenting_row_reduction() {
    std::vector<int>& next = ws_.next;
    next.clear();
    int64_t budget = 4 * static_cast<int64_t>(nc_) + 64;
    for (int i : free_) {
      for (;;) {
        double umin, usub;
        int j1, j2;
        row_min2(i, umin, j1, usub, j2);
        if (umin == kInf) return false;  // row with only forbidden entries
        bool strict = umin < usub;
        int i0 = row4col_[j1];
        if (strict) {
          if (usub < kInf) v_[j1] -= usub - umin;
        } else if (i0 >= 0) {
          j1 = j2;  // tie: prefer the equally cheap second column
          i0 = row4col_[j1];
        }
        col4row_[i] = j1;
        row4col_[j1] = i;
        if (i0 < 0) break;
        col4row_[i0] = -1;
        if (strict && usub < kInf && --budget > 0) {
          i = i0;
          continue;
        }
        next.push_back(i0);
        break;
      }
    }
    free_.swap(next);
    return true;
  }

  // Relax all columns through row i (offset h) and pick the next column to settle; see
  // relax_argmin in lsa_kernels.hpp (this scalar copy serves strided rows).
  void relax(int i, double h, double& best, int& bj) {
    if (kUnit) {
      ops_.relax_argmin(row(i), v_.data(), h, i, d_.data(), pred_.data(), row4col_.data(), nc_, &best, &bj);
      return;
    }
    const T* r = row(i);
    best = kInf;
    bj = INT_MAX;
    bool best_free = false;
    for (int j = 0; j < nc_; ++j) {
      double cand = at(r, j) - v_[j] - h;
      if (cand < d_[j]) {
        d_[j] = cand;
        pred_[j] = i;
      }
      bool fr = row4col_[j] < 0;
      if (d_[j] > -kInf && (d_[j] < best || (d_[j] == best && fr && !best_free))) {
        best = d_[j];
        best_free = fr;
        bj = j;
      }
    }
  }

  // Shortest augmenting path from free row f: Dijkstra over reduced costs, one dense SIMD
  // pass per settled column (relax through its row and pick the next column). d_ holds
  // tentative distances, -inf once settled; settled columns' prices drop by their slack.
  bool augment(int f) {
    std::fill(d_.begin(), d_.end(), kInf);
    settled_.clear();
    settled_d_.clear();
    int i = f, end;
    double h = 0.0, mn;  // distances from f start at its reduced costs c_fj - v_j
    for (;;) {
      relax(i, h, mn, end);
      if (mn == kInf) return false;  // no free column reachable
      if (row4col_[end] < 0) break;
      settled_.push_back(end);
      settled_d_.push_back(mn);
      d_[end] = -kInf;
      i = row4col_[end];
      h = at(row(i), end) - v_[end] - mn;
    }
    for (size_t k = 0; k < settled_.size(); ++k) v_[settled_[k]] += settled_d_[k] - mn;  // prices
    for (int j = end;;) {  // flip the path
      int r = pred_[j];
      row4col_[j] = r;
      std::swap(j, col4row_[r]);
      if (r == f) break;
    }
    return true;
  }

  MatrixView<T> c_;
  int nr_, nc_;
  Workspace& ws_;
  const RowOps<T, kMax> ops_ = row_ops<T, kMax>();
  std::vector<double>& v_ = ws_.v;           // [nc] column prices
  std::vector<int>& row4col_ = ws_.row4col;  // [nc] assigned row or -1
  std::vector<int>& col4row_ = ws_.col4row;  // [nr] assigned column or -1
  std::vector<int>& free_ = ws_.free;        // rows still to assign
  std::vector<int>& matches_ = ws_.matches;  // [nr] column-reduction hits per row
  std::vector<double>& d_ = ws_.d;           // [nc] augment: tentative distance, -inf = settled
  std::vector<int>& pred_ = ws_.pred;        // [nc] augment: predecessor row
  std::vector<int>& settled_ = ws_.settled;  // augment: settled columns, in order
  std::vector<double>& settled_d_ = ws_.settled_d;  // augment: their distances
};

template <class T, bool kUnit>
LsaStatus dispatch_sign(const MatrixView<T>& v, bool maximize, Workspace& ws) {
  if (maximize) return JvSolver<T, kUnit, true>(v, ws).run();
  return JvSolver<T, kUnit, false>(v, ws).run();
}

}  // namespace

template <class T>
LsaStatus solve_lsa(const MatrixView<T>& cost, bool maximize, int64_t* row_ind, int64_t* col_ind) {
  if (cost.rows == 0 || cost.cols == 0) return LsaStatus::kOk;
  bool transposed = cost.rows > cost.cols;
  MatrixView<T> v = cost;
  if (transposed) {  // solve the transpose as a strided view: rows <= cols
    v = MatrixView<T>{cost.data, cost.cols, cost.rows, cost.col_stride, cost.row_stride};
  }
  Workspace& ws = thread_workspace();
  LsaStatus st = v.col_stride == 1 ? dispatch_sign<T, true>(v, maximize, ws)
                                   : dispatch_sign<T, false>(v, maximize, ws);
  const std::vector<int>& col4row = ws.col4row;  // [v.rows]
  if (st != LsaStatus::kOk) return st;
  const int64_t k = v.rows;
  if (!transposed) {
    for (int64_t i = 0; i < k; ++i) {
      row_ind[i] = i;
      col_ind[i] = col4row[i];
    }
  } else {  // pairs (original column c, original row col4row[c]); sort by row
    std::vector<int64_t>& order = ws.order;
    order.resize(k);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return col4row[a] < col4row[b]; });
    for (int64_t t = 0; t < k; ++t) {
      row_ind[t] = col4row[order[t]];
      col_ind[t] = order[t];
    }
  }
  return LsaStatus::kOk;
}

template LsaStatus solve_lsa<float>(const MatrixView<float>&, bool, int64_t*, int64_t*);
template LsaStatus solve_lsa<double>(const MatrixView<double>&, bool, int64_t*, int64_t*);

}  // namespace fedmm
