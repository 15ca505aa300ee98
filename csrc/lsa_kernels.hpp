// Row kernels of the assignment solver, compiled once per instruction set: lsa.cpp includes
// this file inside one namespace per ISA, each in a `#pragma GCC target(...)` region, and
// picks one at run time. All ISAs return identical results. No include guard on purpose.
// Needs <cstring> and <climits> beforehand.

// True if row[0:n] has no NaN and no -inf (after negation when kNeg).
template <class T, bool kNeg>
bool row_entries_ok(const T* __restrict__ row, int n) {
  int bad = 0;  // integer OR reduction: vectorises
  for (int j = 0; j < n; ++j) {
    T x = kNeg ? -row[j] : row[j];
    bad |= (x != x) | (x == -__builtin_inf());
  }
  return bad == 0;
}

// The two smallest reduced costs h_j = c_j - v_j of one row (c = -row if kNeg), ordered
// lexicographically by (value, index): j1 is the first column attaining the minimum and j2
// the first column attaining the second value (it may tie with the first). Columns with
// h = inf are never reported; if fewer than two are finite, missing slots get
// (inf, INT_MAX). 8 lanes: lane l keeps its own two smallest; lanes are merged at the end.
template <class T, bool kNeg>
void row_min2(const T* __restrict__ row, const double* __restrict__ v, int n, double* umin, int* j1,
              double* usub, int* j2) {
  typedef double dvec __attribute__((vector_size(64)));
  typedef long long ivec __attribute__((vector_size(64)));
  typedef T tvec __attribute__((vector_size(8 * sizeof(T))));
  const double inf = __builtin_inf();
  const long long none = INT_MAX;
  dvec m1 = {inf, inf, inf, inf, inf, inf, inf, inf}, m2 = m1;
  ivec i1 = {none, none, none, none, none, none, none, none}, i2 = i1;
  ivec idx = {0, 1, 2, 3, 4, 5, 6, 7};
  const ivec step = {8, 8, 8, 8, 8, 8, 8, 8};
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    tvec x;
    dvec vv;
    std::memcpy(&x, row + j, sizeof x);
    std::memcpy(&vv, v + j, sizeof vv);
    dvec h = __builtin_convertvector(x, dvec);
    if (kNeg) h = -h;
    h -= vv;
    ivec lt1 = h < m1;  // later index: strictly smaller value needed to win
    ivec lt2 = h < m2;
    dvec n2 = lt1 ? m1 : (lt2 ? h : m2);  // the old minimum always becomes the runner-up
    ivec n2i = lt1 ? i1 : (lt2 ? idx : i2);
    m1 = lt1 ? h : m1;
    i1 = lt1 ? idx : i1;
    m2 = n2;
    i2 = n2i;
    idx += step;
  }
  double bv = inf, sv = inf;  // best and second (value, index), lexicographic
  long long bi = none, si = none;
  auto offer = [&](double hv, long long hi) {
    if (hv < bv || (hv == bv && hi < bi)) {
      sv = bv;
      si = bi;
      bv = hv;
      bi = hi;
    } else if (hv < sv || (hv == sv && hi < si)) {
      sv = hv;
      si = hi;
    }
  };
  for (int l = 0; l < 8; ++l) {
    if (i1[l] != none) offer(m1[l], i1[l]);
    if (i2[l] != none) offer(m2[l], i2[l]);
  }
  for (; j < n; ++j) {
    double h = static_cast<double>(row[j]);
    h = (kNeg ? -h : h) - v[j];
    if (h < inf) offer(h, j);
  }
  *umin = bv;
  *j1 = static_cast<int>(bi);
  *usub = sv;
  *j2 = static_cast<int>(si);
}

// Column reduction sweep of row i: v[j] = min(v[j], c_ij), argmin[j] = i where it improved.
// Also validates the row: false if it holds a NaN or a -inf (after negation).
template <class T, bool kNeg>
bool column_min_update(const T* __restrict__ row, int n, int i, double* __restrict__ v, int* __restrict__ argmin) {
  int bad = 0;
  for (int j = 0; j < n; ++j) {
    double x = static_cast<double>(row[j]);
    x = kNeg ? -x : x;
    bad |= (x != x) | (x == -__builtin_inf());
    bool lt = x < v[j];
    v[j] = lt ? x : v[j];
    argmin[j] = lt ? i : argmin[j];
  }
  return bad == 0;
}

// One Dijkstra step of the shortest augmenting path. Relax every column through row `row`
// (index i, offset h; candidate distance c_j - v_j - h): dd[j] and pred[j] change where the
// candidate is smaller. Settled columns hold dd = -inf (never relaxed, never chosen). Then
// return the next column to settle: the smallest dd, ties broken towards free columns
// (row4col < 0), then the lowest index -- the same choice for every vector width.
template <class T, bool kNeg>
void relax_argmin(const T* __restrict__ row, const double* __restrict__ v, double h, int i,
                  double* __restrict__ dd, int* __restrict__ pred, const int* __restrict__ row4col, int n,
                  double* best_val, int* best_j) {
  typedef double dvec __attribute__((vector_size(64)));
  typedef long long lvec __attribute__((vector_size(64)));
  typedef int ivec __attribute__((vector_size(32)));
  typedef T tvec __attribute__((vector_size(8 * sizeof(T))));
  const double inf = __builtin_inf();
  const long long none = INT_MAX;
  dvec bv = {inf, inf, inf, inf, inf, inf, inf, inf};
  lvec bfree = {0, 0, 0, 0, 0, 0, 0, 0};  // -1 where the lane's best column is free
  lvec bj = {none, none, none, none, none, none, none, none};
  lvec idx = {0, 1, 2, 3, 4, 5, 6, 7};
  const lvec step = {8, 8, 8, 8, 8, 8, 8, 8};
  const ivec iv = {i, i, i, i, i, i, i, i};
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    tvec x;
    dvec vv, d;
    ivec p, owner;
    std::memcpy(&x, row + j, sizeof x);
    std::memcpy(&vv, v + j, sizeof vv);
    std::memcpy(&d, dd + j, sizeof d);
    std::memcpy(&p, pred + j, sizeof p);
    std::memcpy(&owner, row4col + j, sizeof owner);
    dvec c = __builtin_convertvector(x, dvec);
    if (kNeg) c = -c;
    dvec cand = c - vv - h;
    lvec lt = cand < d;
    d = lt ? cand : d;
    p = __builtin_convertvector(lt, ivec) ? iv : p;
    std::memcpy(dd + j, &d, sizeof d);
    std::memcpy(pred + j, &p, sizeof p);
    lvec fr = __builtin_convertvector(owner, lvec) < 0;  // -1 where free
    lvec better = (d > -inf) & ((d < bv) | ((d == bv) & fr & ~bfree));
    bv = better ? d : bv;
    bfree = better ? fr : bfree;
    bj = better ? idx : bj;
    idx += step;
  }
  double best = inf;
  long long bestj = none;
  bool best_free = false;
  auto offer = [&](double val, bool free_col, long long jj) {
    if (val < best || (val == best && ((free_col && !best_free) || (free_col == best_free && jj < bestj)))) {
      best = val;
      best_free = free_col;
      bestj = jj;
    }
  };
  for (int l = 0; l < 8; ++l)
    if (bj[l] != none) offer(bv[l], bfree[l] != 0, bj[l]);
  for (; j < n; ++j) {
    double c = static_cast<double>(row[j]);
    double cand = (kNeg ? -c : c) - v[j] - h;
    if (cand < dd[j]) {
      dd[j] = cand;
      pred[j] = i;
    }
    if (dd[j] > -inf) offer(dd[j], row4col[j] < 0, j);
  }
  *best_val = best;
  *best_j = static_cast<int>(bestj);
}
