// Network.predict and try_predict, the batch-1 latency path. A float32 2-D C-contiguous
// NumPy x (and out, when given) is read straight off the array object: no Views, no shape
// or stride vectors, nothing allocated but a new out when none is given. Any other x or
// out goes to predict_checked, through Views, which raises every error. Both paths and
// their binding share this one translation unit, so the binding calls them directly.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/views.h"
#include "network.h"

namespace py = pybind11;

namespace customml {
namespace {

// x as predict's fast path reads it: a NumPy array whose dtype is NumPy's own float32
// object (np.dtype(np.float32): the one Sequential.predict tests with `is`), 2-D and
// C-contiguous, read straight off the array object. A Views view builds a Tensor with a
// shape and a strides vector per array, a third of a batch-1 predict's fixed cost.
struct PlainMatrix {
  char* data = nullptr;
  int64_t rows = 0, cols = 0;
  bool writeable = false;
};

PyObject* float32_descr() {
  // The builtin descriptor, a new reference held for the process.
  static PyObject* const descr = py::detail::npy_api::get().PyArray_DescrFromType_(py::detail::npy_api::NPY_FLOAT_);
  return descr;
}

bool plain_f32_matrix(PyObject* obj, PlainMatrix& m) {
  using api = py::detail::npy_api;
  if (!api::get().PyArray_Check_(obj)) return false;
  const py::detail::PyArray_Proxy* a = py::detail::array_proxy(obj);
  if (a->descr != float32_descr() || a->nd != 2 || !(a->flags & api::NPY_ARRAY_C_CONTIGUOUS_)) return false;
  m = {a->data, a->dimensions[0], a->dimensions[1], (a->flags & api::NPY_ARRAY_WRITEABLE_) != 0};
  return true;
}

// A new C-contiguous float32 (rows, cols) NumPy array, uninitialized (np.empty's).
py::object new_f32_matrix(int64_t rows, int64_t cols) {
  const auto& api = py::detail::npy_api::get();
  Py_intptr_t dims[2] = {static_cast<Py_intptr_t>(rows), static_cast<Py_intptr_t>(cols)};
  PyObject* descr = float32_descr();
  Py_INCREF(descr);  // PyArray_NewFromDescr steals it
  PyObject* a = api.PyArray_NewFromDescr_(api.PyArray_Type_, descr, 2, dims, nullptr, nullptr, 0, nullptr);
  if (!a) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(a);
}

// Both ranges contiguous, so overlapping byte ranges are shared memory (what
// np.may_share_memory tests, at a tenth of its cost).
void check_not_shared(const void* x, size_t x_bytes, const void* out, size_t o_bytes) {
  const char *xb = static_cast<const char*>(x), *ob = static_cast<const char*>(out);
  if (x_bytes && o_bytes && ob < xb + x_bytes && xb < ob + o_bytes)
    throw std::invalid_argument("[predict] out shares memory with x; pass a separate array");
}

// Network.predict with every check: x any host array (NumPy, customml.Array, DLPack),
// out a C-contiguous float32 NumPy array of (rows, output_dim) or None (a new one).
// Returns out.
py::object predict_checked(const Network& n, const py::object& x, const py::object& out, int64_t batch_size) {
  Views views("predict", Device{});  // the executor takes host arrays and stages them
  Tensor xt = views.in(x, "x");
  std::optional<Tensor> o = views.out(std::optional<py::object>(out), "out");
  n.check_inputs("predict", xt, nullptr);
  py::object result = out;
  if (!o) {
    result = new_f32_matrix(xt.dim(0), n.output_dim());
    o = views.out(result, "out");
  }
  if (o->dtype() != DType::f32)
    throw TypeError(std::string("[predict] out must be float32, got ") + dtype_name(o->dtype()));
  if (o->shape() != std::vector<int64_t>{xt.dim(0), n.output_dim()} || !o->is_contiguous())
    throw std::invalid_argument("[predict] out has shape " + o->shape_str() +
                                "; expected a C-contiguous array of shape (" + std::to_string(xt.dim(0)) + ", " +
                                std::to_string(n.output_dim()) + ")");
  check_not_shared(xt.data(), sizeof(float) * static_cast<size_t>(xt.numel()), o->data(),
                   sizeof(float) * static_cast<size_t>(o->numel()));
  py::gil_scoped_release release;
  n.predict(o->ptr<float>(), xt.ptr<float>(), xt.dim(0), batch_size);
  return result;
}

// predict's fast path, for x a PlainMatrix with rows and out None or a NumPy array;
// None, having done nothing, for any other x or out. Whatever the fast path does not
// take as it stands (a wrong width or out, a read-only out, an out float32 in another
// dtype object) goes to predict_checked, so each error is raised in one place.
py::object try_predict(const Network& n, const py::object& x, const py::object& out, int64_t batch_size) {
  PlainMatrix xm, om;
  if (!plain_f32_matrix(x.ptr(), xm) || xm.rows == 0) return py::none();
  if (!out.is_none() && !py::isinstance<py::array>(out)) return py::none();
  const int64_t out_dim = n.output_dim();
  if (xm.cols != n.input_dim() || (!out.is_none() && !(plain_f32_matrix(out.ptr(), om) && om.writeable &&
                                                       om.rows == xm.rows && om.cols == out_dim)))
    return predict_checked(n, x, out, batch_size);
  py::object result = out;
  if (out.is_none()) {
    result = new_f32_matrix(xm.rows, out_dim);
    plain_f32_matrix(result.ptr(), om);
  }
  check_not_shared(xm.data, sizeof(float) * static_cast<size_t>(xm.rows * xm.cols), om.data,
                   sizeof(float) * static_cast<size_t>(om.rows * om.cols));
  py::gil_scoped_release release;
  n.predict(reinterpret_cast<float*>(om.data), reinterpret_cast<const float*>(xm.data), xm.rows, batch_size);
  return result;
}

}  // namespace

void bind_predict(py::class_<Network>& network) {
  network
      .def(
          "predict",
          [](const Network& n, const py::object& x, const py::object& out, int64_t batch_size) {
            py::object y = try_predict(n, x, out, batch_size);
            return y.is_none() ? predict_checked(n, x, out, batch_size) : y;
          },
          py::arg("x"), py::arg("out"), py::arg("batch_size"),
          "The output (n, output_dim) of host array x (n, input_dim) float32, written into out (a C-contiguous float32 "
          "NumPy array) or, when out is None, into a new array; returns it.")
      .def("try_predict", &try_predict, py::arg("x"), py::arg("out"), py::arg("batch_size"),
           "predict for x already a float32 2-D C-contiguous NumPy array with rows and out None or a NumPy array; "
           "None, having done nothing, for any other x or out (the caller converts them and calls predict).");
}

}  // namespace customml
