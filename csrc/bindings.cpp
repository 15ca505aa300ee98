// pybind11 module fedmm._C: bindings only convert arguments and document.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fedmm compiled core: linear assignment and client-update aggregation";
  m.attr("__version__") = "0.1.0";
}
