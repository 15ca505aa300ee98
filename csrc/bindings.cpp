// pybind11 module fedmm._C: bindings only convert arguments and document.
// Array inputs are read in place (strided views, no copies); every solve/kernel runs with
// the GIL released. Errors surface as ValueError (bad values, shapes) or TypeError (dtypes).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "aggregate.hpp"
#include "isa.hpp"
#include "lsa.hpp"
#include "parallel.hpp"

namespace py = pybind11;
using fedmm::LsaStatus;

namespace {

// One cost matrix, viewed in place. dtype: 'f' (float32) or 'd' (float64).
struct CostJob {
  char dtype;
  const void* data;
  int64_t rows, cols, rs, cs;  // strides in elements
  int64_t* row_ind;
  int64_t* col_ind;
};

char float_kind(const py::array& a, const std::string& what) {
  if (a.dtype().is(py::dtype::of<float>())) return 'f';
  if (a.dtype().is(py::dtype::of<double>())) return 'd';
  throw py::type_error(what + ": expected float32 or float64, got " + std::string(py::str(a.dtype())));
}

int64_t elem_stride(const py::array& a, int axis, const std::string& what) {
  int64_t s = a.strides(axis), item = a.itemsize();
  if (s % item != 0) throw py::value_error(what + ": strides must be multiples of the item size");
  return s / item;
}

// View one 2-D matrix (data + strides) of `arr` at byte offset `offset` along axes (ax0, ax1).
CostJob make_job(const py::array& arr, int ax0, int ax1, int64_t offset_bytes, const std::string& what) {
  CostJob j;
  j.dtype = float_kind(arr, what);
  j.data = static_cast<const char*>(arr.data()) + offset_bytes;
  j.rows = arr.shape(ax0);
  j.cols = arr.shape(ax1);
  j.rs = elem_stride(arr, ax0, what);
  j.cs = elem_stride(arr, ax1, what);
  return j;
}

LsaStatus run_job(const CostJob& j, bool maximize) {
  if (j.dtype == 'f') {
    fedmm::MatrixView<float> v{static_cast<const float*>(j.data), j.rows, j.cols, j.rs, j.cs};
    return fedmm::solve_lsa(v, maximize, j.row_ind, j.col_ind);
  }
  fedmm::MatrixView<double> v{static_cast<const double*>(j.data), j.rows, j.cols, j.rs, j.cs};
  return fedmm::solve_lsa(v, maximize, j.row_ind, j.col_ind);
}

std::string status_message(LsaStatus st) {
  if (st == LsaStatus::kInvalid)
    return "cost matrix contains invalid numeric entries (NaN, or -inf when minimizing / +inf when maximizing)";
  return "cost matrix is infeasible (no complete assignment avoids the forbidden inf entries)";
}

py::tuple alloc_result(CostJob& j) {
  int64_t k = std::min(j.rows, j.cols);
  py::array_t<int64_t> r(k), c(k);
  j.row_ind = r.mutable_data();
  j.col_ind = c.mutable_data();
  return py::make_tuple(r, c);
}

py::tuple lsa(const py::array& cost, bool maximize) {
  const std::string what = "linear_sum_assignment";
  if (cost.ndim() != 2)
    throw py::value_error(what + ": expected a matrix (2-D array), got a " + std::to_string(cost.ndim()) + "-D array");
  CostJob job = make_job(cost, 0, 1, 0, what);
  py::tuple out = alloc_result(job);
  LsaStatus st;
  {
    py::gil_scoped_release release;
    st = run_job(job, maximize);
  }
  if (st != LsaStatus::kOk) throw py::value_error(what + ": " + status_message(st));
  return out;
}

py::list lsa_batch(const py::object& costs, bool maximize, int n_threads) {
  const std::string what = "linear_sum_assignment_batch";
  std::vector<CostJob> jobs;
  py::list keep_alive;  // arrays converted from non-array inputs, alive until solved
  if (py::isinstance<py::array>(costs)) {
    py::array arr = costs.cast<py::array>();
    if (arr.ndim() != 3) throw py::value_error(what + ": expected a 3-D array [B, rows, cols] or a list of matrices");
    for (int64_t b = 0; b < arr.shape(0); ++b) jobs.push_back(make_job(arr, 1, 2, b * arr.strides(0), what));
  } else {
    for (py::handle h : costs) {
      py::array m = py::reinterpret_borrow<py::object>(h).cast<py::array>();
      std::string w = what + ": instance " + std::to_string(jobs.size());
      if (m.ndim() != 2) throw py::value_error(w + ": expected a matrix (2-D array)");
      jobs.push_back(make_job(m, 0, 1, 0, w));
      keep_alive.append(m);
    }
  }
  py::list out;
  for (auto& j : jobs) out.append(alloc_result(j));
  std::vector<LsaStatus> status(jobs.size(), LsaStatus::kOk);
  {
    py::gil_scoped_release release;
    fedmm::parallel_items(static_cast<int64_t>(jobs.size()), fedmm::resolve_threads(n_threads),
                          [&](int64_t i, int) { status[i] = run_job(jobs[i], maximize); });
  }
  for (size_t i = 0; i < jobs.size(); ++i)
    if (status[i] != LsaStatus::kOk)
      throw py::value_error(what + ": instance " + std::to_string(i) + ": " + status_message(status[i]));
  return out;
}

}  // namespace

void bind_aggregate(py::module_& m);  // aggregate_bindings.cpp

PYBIND11_MODULE(_C, m) {
  m.doc() = "fedmm compiled core: linear assignment and client-update aggregation";
  m.attr("__version__") = "0.1.0";

  m.def("linear_sum_assignment", &lsa, py::arg("cost"), py::arg("maximize") = false,
        R"doc(Jonker-Volgenant rectangular assignment with scipy's conventions.

cost: 2-D float32/float64 array [rows, cols] (any strides; read in place). ``inf``
(``-inf`` when maximize) marks a forbidden pair. Returns (row_ind, col_ind) int64 arrays of
length min(rows, cols), row_ind ascending. Raises ValueError on NaN / wrong-signed inf
("invalid numeric entries") or when no assignment avoids the forbidden pairs ("infeasible").)doc");
  m.def("linear_sum_assignment_batch", &lsa_batch, py::arg("costs"), py::arg("maximize") = false,
        py::arg("n_threads") = 0,
        R"doc(Solve many assignment problems on ``n_threads`` threads (0 = all cores).

costs: a 3-D float array [B, rows, cols] or a sequence of 2-D float arrays (shapes may
differ). Returns a list of (row_ind, col_ind); errors name the failing instance.)doc");
  m.def("hardware_threads", [] { return fedmm::resolve_threads(0); },
        "Default thread count (std::thread::hardware_concurrency).");
  m.def("cpu_isa", [] { return std::string(fedmm::isa_name(fedmm::cpu_isa())); },
        "Best SIMD instruction set of this CPU among those compiled: avx512, avx2 or base.");
  m.def(
      "set_isa",
      [](const std::string& cap) {
        fedmm::Isa isa = cap == "avx512" ? fedmm::Isa::kAvx512
                         : cap == "avx2" ? fedmm::Isa::kAvx2
                         : cap == "base" ? fedmm::Isa::kBase
                                         : throw py::value_error("set_isa: expected avx512, avx2 or base");
        return std::string(fedmm::isa_name(fedmm::set_isa_cap(isa)));
      },
      py::arg("cap"),
      R"doc(Cap the SIMD instruction set used by the kernels, process-wide (for testing the
fallback paths; "avx512" removes the cap). Returns the instruction set now active. All
paths compute identical assignments and medians; float sums may differ in the last bit.)doc");
  bind_aggregate(m);
}
