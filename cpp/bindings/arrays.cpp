// customml.Array and DLPack in both directions (see arrays.h). Capsules follow the
// Python specification of DLPack: the producer names a capsule "dltensor" (legacy
// DLManagedTensor) or "dltensor_versioned" (max_version >= (1, 0)), and its destructor
// calls the deleter only while that name is unchanged; a consumer renames it to
// "used_..." and calls the deleter itself when done with the memory.

#include "bindings/arrays.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <utility>

#include "backend.h"
#include "bindings/bindings.h"

namespace py = pybind11;

namespace customml {
namespace {

std::string memory_name(const dlpack::DLDevice& d) {
  switch (d.device_type) {
    case dlpack::kDLCPU: return "host memory";
    case dlpack::kDLCUDAHost: return "pinned host memory";
    case dlpack::kDLCUDA: return "cuda:" + std::to_string(d.device_id);
    case dlpack::kDLCUDAManaged: return "managed memory of cuda:" + std::to_string(d.device_id);
  }
  return "DLPack device type " + std::to_string(d.device_type);
}

bool is_host(const Device& d) { return d.kind != DeviceKind::cuda; }

// The customml device an imported tensor is on when the caller names none.
Device device_of(const dlpack::DLDevice& d) {
  if (d.device_type == dlpack::kDLCUDA || d.device_type == dlpack::kDLCUDAManaged)
    return {DeviceKind::cuda, d.device_id};
  return {};
}

// Destructor of the capsules customml produces: deletes the managed tensor only if no
// consumer took it (the name is still the producer's).
void destroy_unused_capsule(PyObject* capsule) {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);  // it may run while an exception propagates
  if (PyCapsule_IsValid(capsule, dlpack::kVersionedCapsule)) {
    auto* m = static_cast<dlpack::DLManagedTensorVersioned*>(PyCapsule_GetPointer(capsule, dlpack::kVersionedCapsule));
    if (m->deleter) m->deleter(m);
  } else if (PyCapsule_IsValid(capsule, dlpack::kCapsule)) {
    auto* m = static_cast<dlpack::DLManagedTensor*>(PyCapsule_GetPointer(capsule, dlpack::kCapsule));
    if (m->deleter) m->deleter(m);
  }
  PyErr_Restore(type, value, traceback);
}

template <class Managed>
py::object capsule_of(Managed* m, const char* name) {
  PyObject* c = PyCapsule_New(m, name, &destroy_unused_capsule);
  if (!c) {
    m->deleter(m);
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(c);
}

std::string dtype_str(DType t) { return dtype_name(t); }

py::dtype numpy_dtype(DType t) {
  if (t == DType::bf16 || t == DType::other)
    throw TypeError(std::string("customml.Array: no NumPy dtype for ") + dtype_name(t));
  return py::dtype(dtype_str(t));
}

std::vector<int64_t> shape_from(const py::object& shape) {
  std::vector<int64_t> out;
  if (py::isinstance<py::int_>(shape)) {
    out.push_back(py::cast<int64_t>(shape));
  } else {
    for (const auto& d : py::iterable(shape)) out.push_back(py::cast<int64_t>(d));
  }
  for (int64_t d : out)
    if (d < 0) throw std::invalid_argument("customml.Array: shape entries must be >= 0");
  return out;
}

py::tuple shape_tuple(const std::vector<int64_t>& shape) {
  py::tuple t(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t[i] = shape[i];
  return t;
}

// Whether byte strides describe a C-contiguous layout (dimensions of size 1 may have any
// stride; an empty array is contiguous).
bool c_contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, DType dtype) {
  int64_t expected = static_cast<int64_t>(dtype_size(dtype));
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 0) return true;
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

// Array.__dlpack__: see the Python array API standard. dl_device may ask for the host
// (a copy of a GPU array; copy=False then refuses); stream is the consumer's on CUDA
// (None: the legacy default stream; -1: no ordering) and must be None for host memory.
py::object array_dlpack(const Array& self, const py::object& stream, const py::object& max_version,
                        const py::object& dl_device, const py::object& copy) {
  const dlpack::DLDevice own = dlpack_device(self.device());
  dlpack::DLDevice target = own;
  if (!dl_device.is_none()) {
    const py::tuple t(dl_device);
    if (t.size() != 2) throw std::invalid_argument("__dlpack__: dl_device must be a (device_type, device_id) pair");
    target = {py::cast<int32_t>(py::int_(t[0])), py::cast<int32_t>(py::int_(t[1]))};
  }
  const bool same = target.device_type == own.device_type && target.device_id == own.device_id;
  const bool to_host =
      !same && own.device_type == dlpack::kDLCUDA && target.device_type == dlpack::kDLCPU && target.device_id == 0;
  if (!same && !to_host)
    throw py::buffer_error("customml.Array on " + self.device().name() + " cannot be exported to " +
                           memory_name(target));
  const bool must_copy = !copy.is_none() && py::cast<bool>(copy);
  if (to_host && !copy.is_none() && !py::cast<bool>(copy))
    throw py::buffer_error("customml.Array on " + self.device().name() +
                           ": exporting it to host memory needs a copy, and copy=False");
  if (own.device_type == dlpack::kDLCUDA && !to_host) {
    const int64_t s = stream.is_none() ? 1 : py::cast<int64_t>(stream);
    if (s == 0 || s < -1)
      throw std::invalid_argument("__dlpack__: stream must be None, -1, 1, 2 or a CUDA stream, got " +
                                  std::to_string(s));
    if (s != -1) backend_for(self.device()).make_stream_wait(static_cast<uintptr_t>(s));
  } else if (!stream.is_none()) {
    throw std::invalid_argument("__dlpack__: stream must be None for an array in host memory, got " +
                                std::string(py::repr(stream)));
  }
  const bool versioned = !max_version.is_none() && py::cast<int64_t>(py::tuple(max_version)[0]) >= 1;
  if (!versioned && self.readonly())
    throw py::buffer_error(
        "customml.Array is read-only, which only a versioned DLPack capsule can say: "
        "ask with max_version=(1, 0) or later");
  Array src = self;
  if (to_host || must_copy) {
    py::gil_scoped_release release;
    src = self.copy_to(to_host ? Device{} : self.device());
  }
  if (!versioned) return capsule_of(src.to_dlpack(), dlpack::kCapsule);
  const uint64_t flags = (self.readonly() && !(to_host || must_copy) ? dlpack::kFlagReadOnly : 0) |
                         (to_host || must_copy ? dlpack::kFlagIsCopied : 0);
  return capsule_of(src.to_dlpack_versioned(flags), dlpack::kVersionedCapsule);
}

py::array array_numpy(const py::object& self_obj, const Array& self) {
  const py::dtype dt = numpy_dtype(self.dtype());
  std::vector<py::ssize_t> shape(self.shape().begin(), self.shape().end());
  if (self.device().kind == DeviceKind::cpu) {  // a view of the same memory, keeping the Array alive
    py::array a(dt, shape, {}, self.data(), self_obj);
    if (self.readonly()) a.attr("setflags")(py::arg("write") = false);
    return a;
  }
  py::array a(dt, shape);
  void* dst = a.mutable_data();
  py::gil_scoped_release release;
  self.copy_to_host(dst);
  return a;
}

Array array_from_dlpack(const py::object& obj, const std::optional<std::string>& device) {
  if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__"))
    throw TypeError("[from_dlpack] x must have __dlpack__ and __dlpack_device__, got " + type_name(obj));
  Device dev;
  if (device) {
    dev = Device::parse(*device);
  } else {
    const py::tuple d = obj.attr("__dlpack_device__")();
    dev = device_of({py::cast<int32_t>(py::int_(d[0])), py::cast<int32_t>(py::int_(d[1]))});
  }
  ImportedTensor t = import_dlpack(obj, "[from_dlpack] x", dev);
  if (t.dtype == DType::other || t.dtype == DType::bf16)
    throw TypeError(
        "[from_dlpack] x has a dtype customml.Array does not hold (float32, float16, float64, "
        "int8, uint8, int32, int64)");
  if (!c_contiguous(t.shape, t.strides, t.dtype)) throw std::invalid_argument("[from_dlpack] x must be C-contiguous");
  return Array(std::move(t.owner), t.data, t.dtype, std::move(t.shape), dev, t.readonly);
}

}  // namespace

void check_memory(const std::string& what, const std::string& type, const dlpack::DLDevice& memory,
                  const Device& device) {
  switch (memory.device_type) {
    case dlpack::kDLCPU:
    case dlpack::kDLCUDAHost:
      if (is_host(device)) return;
      throw TypeError(what + " must be a GPU array on device '" + device.name() + "', got a " + type + " in " +
                      memory_name(memory));
    case dlpack::kDLCUDA:
    case dlpack::kDLCUDAManaged:
      if (memory.device_type == dlpack::kDLCUDAManaged && is_host(device)) return;
      if (is_host(device))
        throw std::invalid_argument(what + " is a GPU array (" + memory_name(memory) + ") but the device is '" +
                                    device.name() + "'; pass device='" + device_of(memory).name() + "'");
      if (memory.device_id != device.index)
        throw std::invalid_argument(what + " is on " + memory_name(memory) + " but the device is '" + device.name() +
                                    "'");
      return;
  }
  throw std::invalid_argument(what + " is on " + memory_name(memory) + ", which customml cannot use");
}

ImportedTensor import_dlpack(const py::object& obj, const std::string& what, const Device& device) {
  ImportedTensor out;
  {
    const py::tuple d = obj.attr("__dlpack_device__")();
    if (d.size() != 2) throw TypeError(what + ": __dlpack_device__ must return (device_type, device_id)");
    out.memory = {py::cast<int32_t>(py::int_(d[0])), py::cast<int32_t>(py::int_(d[1]))};
  }
  check_memory(what, type_name(obj), out.memory, device);
  const py::object stream = device.kind == DeviceKind::cuda ? py::object(py::int_(backend_for(device).stream_handle()))
                                                            : py::object(py::none());
  py::object capsule;
  try {
    try {
      capsule = obj.attr("__dlpack__")(py::arg("stream") = stream, py::arg("max_version") = py::make_tuple(1, 0));
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_TypeError)) throw;  // a producer older than DLPack 1.0 has no max_version
      capsule = obj.attr("__dlpack__")(py::arg("stream") = stream);
    }
  } catch (py::error_already_set& e) {
    throw std::invalid_argument(what + " (" + type_name(obj) + ") could not be shared through DLPack: " + e.what());
  }
  PyObject* c = capsule.ptr();
  const dlpack::DLTensor* t = nullptr;
  if (PyCapsule_IsValid(c, dlpack::kVersionedCapsule)) {
    auto* m = static_cast<dlpack::DLManagedTensorVersioned*>(PyCapsule_GetPointer(c, dlpack::kVersionedCapsule));
    if (PyCapsule_SetName(c, dlpack::kUsedVersionedCapsule) != 0) throw py::error_already_set();
    out.owner = dlpack_owner(m);  // ours from here: the deleter runs when the last holder lets go
    if (m->version.major != dlpack::kMajorVersion)
      throw std::invalid_argument(what + " is a DLPack " + std::to_string(m->version.major) + "." +
                                  std::to_string(m->version.minor) + " tensor; customml reads major version " +
                                  std::to_string(dlpack::kMajorVersion));
    out.readonly = (m->flags & dlpack::kFlagReadOnly) != 0;
    t = &m->dl_tensor;
  } else if (PyCapsule_IsValid(c, dlpack::kCapsule)) {
    auto* m = static_cast<dlpack::DLManagedTensor*>(PyCapsule_GetPointer(c, dlpack::kCapsule));
    if (PyCapsule_SetName(c, dlpack::kUsedCapsule) != 0) throw py::error_already_set();
    out.owner = dlpack_owner(m);
    t = &m->dl_tensor;
  } else {
    throw TypeError(what + ": __dlpack__ of " + type_name(obj) + " returned a value of type '" + type_name(capsule) +
                    "', not an unused DLPack capsule");
  }
  if (t->device.device_type != out.memory.device_type || t->device.device_id != out.memory.device_id)
    throw std::invalid_argument(what + ": the DLPack tensor is on " + memory_name(t->device) +
                                " but __dlpack_device__ said " + memory_name(out.memory));
  // A malformed tensor is an error, never a read through a bad pointer.
  if (t->ndim < 0 || t->ndim > 64 || (t->ndim > 0 && !t->shape))
    throw std::invalid_argument(what + ": malformed DLPack tensor (ndim " + std::to_string(t->ndim) +
                                (t->ndim > 0 && !t->shape ? ", no shape)" : ")"));
  out.dtype = dtype_from_dlpack(t->dtype);
  out.data = static_cast<char*>(t->data) + t->byte_offset;
  out.shape.assign(t->shape, t->shape + t->ndim);
  int64_t numel = 1;
  for (int64_t d : out.shape) {
    if (d < 0) throw std::invalid_argument(what + ": malformed DLPack tensor (a negative dimension)");
    numel *= d;
  }
  if (numel > 0 && !t->data) throw std::invalid_argument(what + ": malformed DLPack tensor (null data)");
  out.strides.resize(out.shape.size());
  const int64_t item = static_cast<int64_t>(dtype_size(out.dtype));
  int64_t contiguous = item;
  for (size_t i = out.shape.size(); i-- > 0;) {  // null strides: C-contiguous
    out.strides[i] = t->strides ? t->strides[i] * item : contiguous;
    contiguous *= out.shape[i];
  }
  if (out.dtype == DType::other) {
    // no element size to scale strides with; no op takes such an array (it names the dtype)
    for (size_t i = 0; i < out.strides.size(); ++i) out.strides[i] = t->strides ? t->strides[i] : 0;
  }
  return out;
}

void bind_arrays(py::module_& m) {
  py::class_<Array>(m, "Array",
                    "An n-d, C-contiguous array on a customml device ('cpu', 'cuda-emulated' or 'cuda[:N]'), "
                    "allocated by customml or borrowed zero-copy from another library. It exposes __dlpack__ / "
                    "__dlpack_device__ (and __cuda_array_interface__ on 'cuda'), so NumPy, PyTorch, CuPy or JAX "
                    "can view it without a copy; numpy() copies it to the host (a view on 'cpu').")
      .def(py::init(&array_from_dlpack), py::arg("x"), py::kw_only(), py::arg("device") = py::none(),
           "A view of x's memory through DLPack, as customml.from_dlpack(x).")
      .def_property_readonly("shape", [](const Array& a) { return shape_tuple(a.shape()); })
      .def_property_readonly("dtype", [](const Array& a) { return numpy_dtype(a.dtype()); })
      .def_property_readonly("device", [](const Array& a) { return a.device().name(); })
      .def_property_readonly("ndim", [](const Array& a) { return a.shape().size(); })
      .def_property_readonly("size", &Array::numel)
      .def_property_readonly("nbytes", &Array::nbytes)
      .def_property_readonly("readonly", &Array::readonly)
      .def(
          "numpy", [](const py::object& self) { return array_numpy(self, self.cast<const Array&>()); },
          "The contents as a NumPy array: a view of the same memory on 'cpu', a copy elsewhere.")
      .def(
          "__array__",
          [](const py::object& self, const py::object& dtype, const py::object& copy) {
            const Array& a = self.cast<const Array&>();
            if (!copy.is_none() && !py::cast<bool>(copy) && a.device().kind != DeviceKind::cpu)
              throw std::invalid_argument("customml.Array on " + a.device().name() +
                                          " cannot be viewed by NumPy without a copy (copy=False)");
            py::object out = array_numpy(self, a);
            if (!copy.is_none() && py::cast<bool>(copy) && a.device().kind == DeviceKind::cpu) out = out.attr("copy")();
            if (!dtype.is_none()) out = out.attr("astype")(dtype, py::arg("copy") = false);
            return out;
          },
          py::arg("dtype") = py::none(), py::arg("copy") = py::none())
      .def("__dlpack__", &array_dlpack, py::kw_only(), py::arg("stream") = py::none(),
           py::arg("max_version") = py::none(), py::arg("dl_device") = py::none(), py::arg("copy") = py::none(),
           "A DLPack capsule of the array (versioned when max_version >= (1, 0)); the memory stays alive until the "
           "consumer calls its deleter, even if this Array is gone by then.")
      .def("__dlpack_device__",
           [](const Array& a) {
             const dlpack::DLDevice d = dlpack_device(a.device());
             return py::make_tuple(d.device_type, d.device_id);
           })
      .def_property_readonly(
          "__cuda_array_interface__",
          [](const Array& a) -> py::dict {
            if (a.device().kind != DeviceKind::cuda)
              throw py::attribute_error("customml.Array on " + a.device().name() + " is not in GPU memory");
            py::dict d;
            d["shape"] = shape_tuple(a.shape());
            d["typestr"] = py::str(numpy_dtype(a.dtype()).attr("str"));
            d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(a.numel() ? a.data() : nullptr), a.readonly());
            d["strides"] = py::none();
            d["version"] = 3;
            // the consumer waits for this stream: the ops that wrote the array run there
            d["stream"] = py::int_(backend_for(a.device()).stream_handle());
            return d;
          })
      .def("__repr__", [](const Array& a) {
        std::string s = "customml.Array(shape=(";
        for (size_t i = 0; i < a.shape().size(); ++i) s += (i ? ", " : "") + std::to_string(a.shape()[i]);
        if (a.shape().size() == 1) s += ",";
        return s + "), dtype=" + dtype_name(a.dtype()) + ", device='" + a.device().name() + "')";
      });

  m.def(
      "array_empty",
      [](const py::object& shape, const py::object& dtype, const std::string& device) {
        const DType dt = dtype_of(py::dtype::from_args(dtype));
        if (dt == DType::other)
          throw TypeError("[empty] dtype must be one of float32, float16, float64, int8, uint8, int32, int64, got " +
                          std::string(py::str(py::dtype::from_args(dtype))));
        return Array::empty(dt, shape_from(shape), Device::parse(device));
      },
      py::arg("shape"), py::arg("dtype"), py::arg("device"));
  m.def(
      "array_from_host",
      [](const py::array& host, const std::string& device) {
        const DType dt = host.dtype().byteorder() == '>' ? DType::other : dtype_of(host.dtype());
        if (dt == DType::other)
          throw TypeError("[asarray] dtype " + std::string(py::str(host.dtype())) + " has no customml.Array type");
        py::array c = py::array::ensure(host, py::array::c_style);
        Array a = Array::empty(dt, std::vector<int64_t>(c.shape(), c.shape() + c.ndim()), Device::parse(device));
        const void* src = c.data();
        py::gil_scoped_release release;
        a.copy_from_host(src);
        return a;
      },
      py::arg("host"), py::arg("device"));
  m.def("from_dlpack", &array_from_dlpack, py::arg("x"), py::arg("device") = py::none());
}

}  // namespace customml
