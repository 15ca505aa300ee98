// Bindings of the aggregation kernels: validate the client list (naming the offending
// client), view every buffer in place, run the kernel with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "aggregate.hpp"
#include "parallel.hpp"

namespace py = pybind11;

namespace {

// The unmasked clients' buffers, all 1-D, contiguous, same dtype and length.
struct Clients {
  char dtype = 0;            // 'f' float32, 'd' float64
  int64_t n = 0;             // elements per buffer
  int64_t total = 0;         // K, masked-out clients included
  std::vector<int64_t> ids;  // original client index of each kept buffer
  std::vector<py::array> arrays;

  template <class T>
  std::vector<const T*> ptrs() const {
    std::vector<const T*> p;
    for (const auto& a : arrays) p.push_back(static_cast<const T*>(a.data()));
    return p;
  }
};

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s << a.shape(d) << (a.ndim() == 1 || d + 1 < a.ndim() ? "," : "");
  s << ")";
  return s.str();
}

Clients collect(const py::sequence& buffers, const py::object& masks, const std::string& what) {
  Clients c;
  c.total = static_cast<int64_t>(py::len(buffers));
  if (c.total == 0) throw py::value_error(what + ": no client buffers");
  std::vector<bool> keep(c.total, true);
  if (!masks.is_none()) {
    py::sequence ms = masks.cast<py::sequence>();
    if (static_cast<int64_t>(py::len(ms)) != c.total)
      throw py::value_error(what + ": masks has " + std::to_string(py::len(ms)) + " entries for " +
                            std::to_string(c.total) + " clients");
    for (int64_t k = 0; k < c.total; ++k) keep[k] = py::bool_(ms[k]);
  }
  for (int64_t k = 0; k < c.total; ++k) {
    if (!keep[k]) continue;
    const std::string who = what + ": client " + std::to_string(k);
    py::object obj = buffers[k];
    if (!py::isinstance<py::array>(obj)) throw py::type_error(who + ": expected a numpy array");
    py::array a = obj.cast<py::array>();
    if (a.ndim() != 1) throw py::value_error(who + ": expected a 1-D buffer, got shape " + shape_str(a));
    char kind = a.dtype().is(py::dtype::of<float>()) ? 'f' : a.dtype().is(py::dtype::of<double>()) ? 'd' : 0;
    if (!kind) throw py::type_error(who + ": expected float32 or float64, got " + std::string(py::str(a.dtype())));
    if (c.arrays.empty()) {
      c.dtype = kind;
      c.n = a.shape(0);
    } else if (kind != c.dtype) {
      throw py::value_error(who + ": dtype " + std::string(py::str(a.dtype())) + " differs from client " +
                            std::to_string(c.ids[0]) + "'s " + std::string(py::str(c.arrays[0].dtype())));
    } else if (a.shape(0) != c.n) {
      throw py::value_error(who + ": shape " + shape_str(a) + " differs from client " +
                            std::to_string(c.ids[0]) + "'s (" + std::to_string(c.n) + ",)");
    }
    if (a.shape(0) > 1 && a.strides(0) != a.itemsize())
      throw py::value_error(who + ": buffer must be contiguous");
    c.ids.push_back(k);
    c.arrays.push_back(a);
  }
  if (c.arrays.empty()) throw py::value_error(what + ": every client is masked out");
  return c;
}

// Raise the ValueError naming the first client with a non-finite value (if any).
template <class T>
void raise_nonfinite(const Clients& c, const std::vector<const T*>& p, const std::string& what) {
  std::pair<int64_t, int64_t> bad;
  {
    py::gil_scoped_release release;
    bad = fedmm::find_nonfinite(p, c.n);
  }
  if (bad.first < 0) return;  // only the result overflowed (finite inputs): keep it, as numpy would
  double x = static_cast<double>(p[bad.first][bad.second]);
  throw py::value_error(what + ": client " + std::to_string(c.ids[bad.first]) + " has a non-finite value (" +
                        (std::isnan(x) ? "nan" : x > 0 ? "inf" : "-inf") + ") at index " +
                        std::to_string(bad.second));
}

// Weights [K] -> normalised weights of the kept clients.
std::vector<double> kept_weights(const Clients& c, const py::object& weights, const std::string& what) {
  std::vector<double> w(c.ids.size(), 1.0);
  if (!weights.is_none()) {
    auto arr = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(weights);
    if (!arr || arr.ndim() != 1 || arr.shape(0) != c.total)
      throw py::value_error(what + ": weights must be a 1-D array of " + std::to_string(c.total) + " values");
    for (size_t i = 0; i < c.ids.size(); ++i) {
      w[i] = arr.at(c.ids[i]);
      if (!std::isfinite(w[i]) || w[i] < 0)
        throw py::value_error(what + ": client " + std::to_string(c.ids[i]) + ": weight must be finite and >= 0");
    }
  }
  double s = 0;
  for (double x : w) s += x;
  if (!(s > 0)) throw py::value_error(what + ": the weights of the unmasked clients sum to 0");
  for (double& x : w) x /= s;
  return w;
}

template <class T>
py::array aggregate_typed(const Clients& c, const std::string& method, const std::vector<double>& w, int n_trim,
                          bool acc64, int threads, const std::string& what) {
  py::array_t<T> out(c.n);
  T* o = out.mutable_data();
  std::vector<const T*> p = c.ptrs<T>();
  bool ok;
  {
    py::gil_scoped_release release;
    if (method == "mean") ok = fedmm::weighted_mean(p, w, c.n, o, acc64, threads);
    else if (method == "median") ok = fedmm::coordinate_median(p, c.n, o, threads);
    else ok = fedmm::trimmed_mean(p, c.n, n_trim, o, threads);
  }
  if (!ok) raise_nonfinite(c, p, what);
  return out;
}

py::array aggregate(const py::sequence& buffers, const py::object& weights, const py::object& masks,
                    const std::string& method, double trim, bool acc64, int n_threads) {
  const std::string what = "aggregate";
  if (method != "mean" && method != "median" && method != "trimmed_mean")
    throw py::value_error(what + ": unknown method '" + method + "' (mean, median, trimmed_mean)");
  if (!(trim >= 0 && trim < 0.5)) throw py::value_error(what + ": trim must be in [0, 0.5)");
  Clients c = collect(buffers, masks, what);
  std::vector<double> w = method == "mean" ? kept_weights(c, weights, what) : std::vector<double>();
  int n_trim = static_cast<int>(std::floor(trim * static_cast<double>(c.ids.size())));
  int threads = fedmm::resolve_threads(n_threads);
  if (c.dtype == 'f') return aggregate_typed<float>(c, method, w, n_trim, acc64, threads, what);
  return aggregate_typed<double>(c, method, w, n_trim, acc64, threads, what);
}

template <class T>
bool dists_typed(const Clients& c, double* d, int threads) {
  std::vector<const T*> p = c.ptrs<T>();
  bool ok;
  {
    py::gil_scoped_release release;
    ok = fedmm::pairwise_sq_dists(p, c.n, d, threads);
  }
  if (!ok) raise_nonfinite(c, p, "krum_scores");
  return ok;
}

py::array krum(const py::sequence& buffers, int n_byzantine, const py::object& masks, int n_threads) {
  if (n_byzantine < 0) throw py::value_error("krum_scores: n_byzantine must be >= 0");
  Clients c = collect(buffers, masks, "krum_scores");
  const int K = static_cast<int>(c.ids.size());
  std::vector<double> dist(static_cast<size_t>(K) * K);  // [K', K']
  int threads = fedmm::resolve_threads(n_threads);
  if (c.dtype == 'f') dists_typed<float>(c, dist.data(), threads);
  else dists_typed<double>(c, dist.data(), threads);
  std::vector<double> s = fedmm::krum_from_dists(dist.data(), K, n_byzantine);
  py::array_t<double> out(c.total);
  double* o = out.mutable_data();
  for (int64_t k = 0; k < c.total; ++k) o[k] = std::numeric_limits<double>::infinity();
  for (int i = 0; i < K; ++i) o[c.ids[i]] = s[i];
  return out;
}

}  // namespace

void bind_aggregate(py::module_& m) {
  m.def("aggregate", &aggregate, py::arg("buffers"), py::arg("weights") = py::none(), py::arg("masks") = py::none(),
        py::arg("method") = "mean", py::arg("trim") = 0.1, py::arg("acc64") = true, py::arg("n_threads") = 0,
        R"doc(Coordinate-wise aggregation of K 1-D client buffers (read in place, never stacked).

buffers: K contiguous 1-D float32/float64 arrays of one length (entries whose mask is False
are ignored and may be None). weights [K] >= 0 (mean only; default uniform) are renormalised
over the unmasked clients. method: mean | median | trimmed_mean (drops floor(trim * K')
values at each end, K' = unmasked clients). acc64: accumulate the mean in float64.
Returns an array of the buffers' dtype. Errors name the client index.)doc");
  m.def("krum_scores", &krum, py::arg("buffers"), py::arg("n_byzantine"), py::arg("masks") = py::none(),
        py::arg("n_threads") = 0,
        R"doc(Krum score per client: sum of squared distances to its K' - n_byzantine - 2 nearest
unmasked peers (at least 1, at most K' - 1). Returns float64 [K]; masked-out clients get inf.)doc");
}
