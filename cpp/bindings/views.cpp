// Views (see views.h): a NumPy array is read off the array object; customml.Array,
// DLPack and __cuda_array_interface__ objects go through their own protocols.

#include "bindings/views.h"

#include <cstdlib>
#include <utility>

#include "backend.h"
#include "bindings/arrays.h"
#include "bindings/bindings.h"

namespace py = pybind11;

namespace customml {
namespace {

// A __cuda_array_interface__ typestr ("<f4", "|i1") as a DType.
DType dtype_of_typestr(const std::string& t) {
  if (t.size() < 3 || t[0] == '>') return DType::other;
  return dtype_from(t[1], std::atoi(t.c_str() + 2));
}

}  // namespace

Views::Views(const char* op, const Device& device) : op_(op), device_(device) { backend_for(device_); }

Views::~Views() {
  if (!foreign_gpu_) return;
  try {
    py::gil_scoped_release release;
    backend_for(device_).synchronize();
  } catch (const std::exception&) {
    // a CUDA error is sticky: the device's next call reports it
  }
}

Tensor Views::view(const py::object& obj, const char* name, bool output) {
  // A NumPy array is host memory: it skips the attribute lookups, whose failure costs a
  // formatted AttributeError on every call (about a fifth of a batch-1 predict).
  if (!py::isinstance<py::array>(obj)) {
    if (py::isinstance<Array>(obj)) return array_view(obj, name, output);
    if (py::hasattr(obj, "__dlpack__")) return dlpack_view(obj, name, output);
    if (py::hasattr(obj, "__cuda_array_interface__")) return gpu_view(obj, name, output);
  }
  if (device_.kind == DeviceKind::cuda)
    throw TypeError(prefix(name) +
                    " must be a GPU array (customml.Array, CuPy, PyTorch: anything with __dlpack__ or "
                    "__cuda_array_interface__) on " +
                    "device '" + device_.name() + "', got " + type_name(obj));
  const py::array a = host_array(obj, name, output);
  const DType dt = a.dtype().byteorder() == '>' ? DType::other : dtype_of(a.dtype());
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  std::vector<int64_t> strides(a.strides(), a.strides() + a.ndim());
  return Tensor(const_cast<void*>(a.data()), dt, std::move(shape), std::move(strides), device_);
}

// (py::array's default constructor allocates an empty array: never declare one unset.)
py::array Views::host_array(const py::object& obj, const char* name, bool output) {
  if (output) {
    if (!py::isinstance<py::array>(obj))
      throw TypeError(prefix(name) + " must be a NumPy array (results are written into it), got " + type_name(obj));
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!a.writeable()) throw std::invalid_argument(prefix(name) + " is read-only");
    return a;
  }
  if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);  // ensure() makes a new view
  py::array a = py::array::ensure(obj);
  if (!a) throw TypeError(prefix(name) + " must be an array, got " + type_name(obj));
  keep_.push_back(a);  // a converted input lives as long as its view; arguments outlive the call
  return a;
}

// A customml.Array: its memory is kept alive by the Array, kept for the call.
Tensor Views::array_view(const py::object& obj, const char* name, bool output) {
  const Array& a = obj.cast<const Array&>();
  check_memory(prefix(name), "customml.Array", dlpack_device(a.device()), device_);
  if (output && a.readonly()) throw std::invalid_argument(prefix(name) + " is read-only");
  keep_.push_back(obj);
  Tensor t = a.view();
  return Tensor(t.data(), t.dtype(), t.shape(), t.strides(), device_);
}

Tensor Views::dlpack_view(const py::object& obj, const char* name, bool output) {
  ImportedTensor t = import_dlpack(obj, prefix(name), device_);
  if (output && t.readonly) throw std::invalid_argument(prefix(name) + " is read-only");
  if (device_.kind == DeviceKind::cuda) foreign_gpu_ = true;  // check_memory let only GPU memory through
  owned_.push_back(std::move(t.owner));
  return Tensor(t.data, t.dtype, std::move(t.shape), std::move(t.strides), device_);
}

Tensor Views::gpu_view(const py::object& obj, const char* name, bool output) {
  if (device_.kind != DeviceKind::cuda)
    throw std::invalid_argument(prefix(name) + " is a GPU array but the device is '" + device_.name() +
                                "'; pass device='cuda'");
  const py::dict cai = obj.attr("__cuda_array_interface__");
  const py::tuple data = cai["data"];
  if (output && py::cast<bool>(data[1])) throw std::invalid_argument(prefix(name) + " is read-only");
  // version 3: the producer's stream, on which the data may still be being written
  if (cai.contains("stream") && !cai["stream"].is_none())
    backend_for(device_).wait_for_stream(py::cast<uintptr_t>(cai["stream"]));
  foreign_gpu_ = true;
  const DType dt = dtype_of_typestr(py::cast<std::string>(cai["typestr"]));
  std::vector<int64_t> shape;
  for (const auto& d : py::tuple(cai["shape"])) shape.push_back(py::cast<int64_t>(d));
  std::vector<int64_t> strides(shape.size());
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    const py::tuple st = cai["strides"];
    for (size_t i = 0; i < strides.size(); ++i) strides[i] = py::cast<int64_t>(st[i]);
  } else {  // None: C-contiguous
    int64_t stride = static_cast<int64_t>(dtype_size(dt));
    for (size_t i = shape.size(); i-- > 0;) {
      strides[i] = stride;
      stride *= shape[i];
    }
  }
  keep_.push_back(obj);
  return Tensor(reinterpret_cast<void*>(py::cast<uintptr_t>(data[0])), dt, std::move(shape), std::move(strides),
                device_);
}

}  // namespace customml
