// The one pybind11 module, customml._core: zero-copy views of NumPy arrays, the GIL
// released around compute, C++ exceptions translated to the right Python type.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "array_bindings.h"
#include "backend.h"
#include "cpu/elementwise.h"
#include "cpu/finite.h"
#include "cpu/gemm.h"
#include "cpu/gemm_s8.h"
#include "cpu/isa.h"
#include "cpu/quantize.h"
#include "cpu/sparse.h"
#include "cpu/thread_pool.h"
#include "network.h"
#include "ops.h"
#ifdef CUSTOMML_SIMT_EMULATION
#include "simt/runtime.h"
#endif

namespace py = pybind11;
using namespace customml;

#ifndef CUSTOMML_VERSION
#define CUSTOMML_VERSION "0.0.0"
#endif

namespace {

// NumPy's kind character and item size, as NumPy arrays and __cuda_array_interface__
// typestrs ("<f4", "|i1") give them.
DType dtype_from(char kind, int64_t size) {
  if (kind == 'f' && size == 4) return DType::f32;
  if (kind == 'f' && size == 8) return DType::f64;
  if (kind == 'f' && size == 2) return DType::f16;
  if (kind == 'i' && size == 4) return DType::i32;
  if (kind == 'i' && size == 8) return DType::i64;
  if (kind == 'i' && size == 1) return DType::i8;
  if (kind == 'u' && size == 1) return DType::u8;
  return DType::other;
}

DType dtype_of(const py::array& a) { return dtype_from(a.dtype().kind(), a.dtype().itemsize()); }

DType dtype_of_typestr(const std::string& t) {
  if (t.size() < 3 || t[0] == '>') return DType::other;
  return dtype_from(t[1], std::atoi(t.c_str() + 2));
}

// Borrowed views of the arrays one call receives, zero-copy: NumPy arrays on the host
// devices; customml.Array and any object with __dlpack__ (PyTorch, CuPy, JAX, ...) whose
// memory the device can use (host memory on "cpu" / "cuda-emulated", GPU memory of the
// same index on "cuda"); objects exposing only __cuda_array_interface__ on "cuda". Inputs
// that are not arrays yet (lists) are converted, and kept alive for the call; outputs must
// be arrays already, or results would land in a temporary. Byte order: arrays of a
// non-native byte order get DType::other, so no kernel reads them.
//
// Other libraries' GPU arrays are ordered before the call by their producer (the DLPack
// stream handshake, or the __cuda_array_interface__ stream); since they may be reused on
// the producer's stream as soon as the call returns, a call that took any waits for the
// device at its end.
class Views {
 public:
  Views(const char* op, const std::string& device) : Views(op, Device::parse(device)) {}
  // A device that cannot run says so before anything else is checked.
  Views(const char* op, const Device& device) : op_(op), device_(device) { backend_for(device_); }
  Views(const Views&) = delete;
  Views& operator=(const Views&) = delete;
  ~Views() {
    if (!foreign_gpu_) return;
    try {
      py::gil_scoped_release release;
      backend_for(device_).synchronize();
    } catch (const std::exception&) {
      // a CUDA error is sticky: the device's next call reports it
    }
  }
  const Device& device() const { return device_; }

  Tensor in(const py::object& obj, const char* name) { return view(obj, name, false); }
  Tensor out(const py::object& obj, const char* name) { return view(obj, name, true); }
  std::optional<Tensor> in(const std::optional<py::object>& obj, const char* name) {
    if (!obj || obj->is_none()) return std::nullopt;
    return view(*obj, name, false);
  }
  std::optional<Tensor> out(const std::optional<py::object>& obj, const char* name) {
    if (!obj || obj->is_none()) return std::nullopt;
    return view(*obj, name, true);
  }

 private:
  std::string prefix(const char* name) const { return std::string("[") + op_ + "] " + name; }

  Tensor view(const py::object& obj, const char* name, bool output) {
    // A NumPy array is host memory: it skips the attribute lookups, whose failure costs a
    // formatted AttributeError on every call (about a fifth of a batch-1 predict).
    if (!py::isinstance<py::array>(obj)) {
      if (py::isinstance<Array>(obj)) return array_view(obj, name, output);
      if (py::hasattr(obj, "__dlpack__")) return dlpack_view(obj, name, output);
      if (py::hasattr(obj, "__cuda_array_interface__")) return gpu_view(obj, name, output);
    }
    if (device_.kind == DeviceKind::cuda)
      throw TypeError(prefix(name) + " must be a GPU array (customml.Array, CuPy, PyTorch: anything with __dlpack__ or "
                      "__cuda_array_interface__) on " +
                      "device '" + device_.name() + "', got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
    const py::array a = host_array(obj, name, output);
    const DType dt = a.dtype().byteorder() == '>' ? DType::other : dtype_of(a);
    std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
    std::vector<int64_t> strides(a.strides(), a.strides() + a.ndim());
    return Tensor(const_cast<void*>(a.data()), dt, std::move(shape), std::move(strides), device_);
  }

  // (py::array's default constructor allocates an empty array: never declare one unset.)
  py::array host_array(const py::object& obj, const char* name, bool output) {
    if (output) {
      if (!py::isinstance<py::array>(obj))
        throw TypeError(prefix(name) + " must be a NumPy array (results are written into it), got " +
                        std::string(py::str(py::type::of(obj).attr("__name__"))));
      auto a = py::reinterpret_borrow<py::array>(obj);
      if (!a.writeable()) throw std::invalid_argument(prefix(name) + " is read-only");
      return a;
    }
    if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);  // ensure() makes a new view
    py::array a = py::array::ensure(obj);
    if (!a) throw TypeError(prefix(name) + " must be an array, got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
    keep_.push_back(a);  // a converted input lives as long as its view; arguments outlive the call
    return a;
  }

  // A customml.Array: its memory is kept alive by the Array, kept for the call.
  Tensor array_view(const py::object& obj, const char* name, bool output) {
    const Array& a = obj.cast<const Array&>();
    check_memory(prefix(name), "customml.Array", dlpack_device(a.device()), device_);
    if (output && a.readonly()) throw std::invalid_argument(prefix(name) + " is read-only");
    keep_.push_back(obj);
    Tensor t = a.view();
    return Tensor(t.data(), t.dtype(), t.shape(), t.strides(), device_);
  }

  Tensor dlpack_view(const py::object& obj, const char* name, bool output) {
    ImportedTensor t = import_dlpack(obj, prefix(name), device_);
    if (output && t.readonly) throw std::invalid_argument(prefix(name) + " is read-only");
    if (device_.kind == DeviceKind::cuda) foreign_gpu_ = true;  // check_memory let only GPU memory through
    owned_.push_back(std::move(t.owner));
    return Tensor(t.data, t.dtype, std::move(t.shape), std::move(t.strides), device_);
  }

  Tensor gpu_view(const py::object& obj, const char* name, bool output) {
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

  const char* op_;
  Device device_;
  std::vector<py::object> keep_;
  std::vector<std::shared_ptr<void>> owned_;  // consumed DLPack tensors, released after the call
  bool foreign_gpu_ = false;                  // another library's GPU memory is in use
};

// Runs a parser of a configuration string, naming the op in its error.
template <class Parse>
auto parse_for(const char* op, Parse&& parse) {
  try {
    return parse();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("[") + op + "] " + e.what());
  }
}

const Tensor* ptr(const std::optional<Tensor>& t) { return t ? &*t : nullptr; }

std::vector<Segment> segments_from(const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  std::vector<Segment> out;
  out.reserve(ranges.size());
  for (const auto& [b, e] : ranges) out.push_back({b, e});
  return out;
}

std::string compiler_string() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

py::dict build_info() {
  py::dict d;
  d["version"] = CUSTOMML_VERSION;
  d["compiler"] = compiler_string();
  d["cuda_compiled"] = cuda_compiled();
  d["simt_emulation"] = simt_emulation_compiled();
  d["cpu_features"] = cpu::cpu_features();
  d["isa_detected"] = cpu::isa_name(cpu::detected_isa());
  d["isa"] = cpu::isa_name(cpu::active_isa());
  py::dict kernels;
  kernels["gemm"] = cpu::gemm_f32_variant();
  kernels["gemm_s8"] = cpu::gemm_s8_variant();
  kernels["quantize"] = cpu::quantize_variant();
  // XNNPACK-style names, what then how: f32_adam__avx512.
  const std::string isa = cpu::elementwise().isa;
  for (const char* family : {"softmax_cross_entropy", "binary_cross_entropy", "mse", "dropout", "sgd", "adam", "clip"})
    kernels[family] = "f32_" + std::string(family) + "__" + isa;
  kernels["regularizer"] = "f32_l1_l2_penalty__portable";
  const cpu::SparseKernels& sparse = cpu::sparse_kernels();
  kernels["sparse_dense"] = sparse.csr;
  if (sparse.csr_packed) kernels["sparse_dense_packed"] = sparse.csr_packed;  // AVX-512 only
  kernels["nm_dense"] = sparse.nm;
  kernels["apply_mask"] = sparse.mask;
  d["kernels"] = kernels;
  d["num_threads"] = cpu::ThreadPool::instance().num_threads();
  d["hardware_threads"] = std::thread::hardware_concurrency();
  return d;
}

LayerSpec layer_from(const py::dict& d) {
  LayerSpec s;
  const std::string kind = py::cast<std::string>(d["kind"]);
  if (kind == "dense") {
    s.kind = LayerSpec::Kind::dense;
    s.units = py::cast<int64_t>(d["units"]);
    s.activation = parse_activation(py::cast<std::string>(d["activation"]));
    if (d.contains("l1")) s.l1 = py::cast<float>(d["l1"]);
    if (d.contains("l2")) s.l2 = py::cast<float>(d["l2"]);
    if (d.contains("trainable")) s.trainable = py::cast<bool>(d["trainable"]);
  } else if (kind == "dropout") {
    s.kind = LayerSpec::Kind::dropout;
    s.rate = py::cast<float>(d["rate"]);
  } else if (kind == "affine") {
    s.kind = LayerSpec::Kind::affine;
    s.scale = py::cast<std::vector<float>>(d["scale"]);
    s.shift = py::cast<std::vector<float>>(d["shift"]);
  } else {
    throw std::invalid_argument("unknown layer kind '" + kind + "'");
  }
  return s;
}

QuantAxis parse_quant_axis(const char* op, const std::string& s) {
  if (s == "tensor") return QuantAxis::tensor;
  if (s == "row") return QuantAxis::row;
  if (s == "column") return QuantAxis::column;
  throw std::invalid_argument(std::string("[") + op + "] axis must be 'tensor', 'row' or 'column', got '" + s + "'");
}

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
  if (o->dtype() != DType::f32) throw TypeError(std::string("[predict] out must be float32, got ") + dtype_name(o->dtype()));
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
  if (xm.cols != n.input_dim() ||
      (!out.is_none() && !(plain_f32_matrix(out.ptr(), om) && om.writeable && om.rows == xm.rows && om.cols == out_dim)))
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

// A C-contiguous copy of `obj` as T with exactly `shape`, or a ValueError naming the
// argument: the Network's per-layer setters take host arrays of the layer's shape.
template <class T>
py::array_t<T, py::array::c_style> layer_array(const char* op, const char* arg, py::object obj,
                                               std::vector<int64_t> shape) {
  py::array a = py::array::ensure(obj);
  if (!a) throw TypeError(std::string("[") + op + "] " + arg + " must be an array");
  if (!a.dtype().is(py::dtype::of<T>()))
    throw TypeError(std::string("[") + op + "] " + arg + " must have dtype " + py::str(py::dtype::of<T>()).cast<std::string>() +
                    ", got " + py::str(a.dtype()).cast<std::string>());
  bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; same && i < shape.size(); ++i) same = a.shape(static_cast<py::ssize_t>(i)) == shape[i];
  if (!same) {
    std::string want = "(";
    for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
    throw std::invalid_argument(std::string("[") + op + "] " + arg + " must have shape " + want + ")");
  }
  return py::array_t<T, py::array::c_style>::ensure(a);
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "customml native core: kernels, the network executor and build information";
  py::register_exception<TypeError>(m, "DTypeError", PyExc_TypeError);
  // An invalid CUSTOMML_ISA or CUSTOMML_NUM_THREADS fails the import with its message.
  cpu::active_isa();
  cpu::ThreadPool::instance();

  {
    py::list names;
    for (Activation a : {Activation::identity, Activation::relu, Activation::sigmoid, Activation::tanh,
                         Activation::gelu})
      names.append(activation_name(a));
    m.attr("activations") = py::tuple(names);
  }
  bind_array(m);
  m.def("build_info", &build_info, "Version, compiler, CUDA, CPU features and the kernel variant chosen per family.");
  m.def("cuda_available", &cuda_available);
  m.def(
      "set_num_threads", [](int n) { cpu::ThreadPool::instance().set_num_threads(n); }, py::arg("n"),
      "Threads the CPU kernels may use, the caller included (default: CUSTOMML_NUM_THREADS, else all).");
  m.def(
      "get_num_threads", [] { return cpu::ThreadPool::instance().num_threads(); },
      "Threads the CPU kernels may use, the caller included.");
  m.def(
      "check_device",
      [](const std::string& device) {
        const Device d = Device::parse(device);
        backend_for(d);
        return d.name();
      },
      py::arg("device"), "The canonical name of a usable device; ValueError saying why for any other.");
  m.def("cuda_unavailable_reason", &cuda_unavailable_reason);
#ifdef CUSTOMML_SIMT_EMULATION
  m.def(
      "_simt_set_thread_order",
      [](const std::string& order, uint64_t seed) {
        simt::set_thread_order(simt::parse_thread_order(order), seed);
      },
      py::arg("order"), py::arg("seed") = 0,
      "The order the SIMT emulator resumes a block's threads in (forward, reverse, shuffled); for tests.");
  m.def(
      "_simt_selftest",
      [](const std::string& name, const std::vector<double>& input, std::array<unsigned, 3> grid,
         std::array<unsigned, 3> block) {
        py::gil_scoped_release release;
        return simt::run_selftest(name, input, simt::dim3(grid[0], grid[1], grid[2]),
                                  simt::dim3(block[0], block[1], block[2]));
      },
      py::arg("name"), py::arg("input"), py::arg("grid"), py::arg("block"),
      "Runs one of the emulator's primitive test kernels (cuda/simt/selftest.cpp); for tests.");
  m.def("_emulated_allocations", &emulated_cuda_allocations,
        "How many device allocations cuda-emulated has made in this process; for tests.");
#endif
  m.def(
      "_set_isa",
      [](const std::string& level) { return std::string(cpu::isa_name(cpu::set_isa_ceiling(cpu::parse_isa(level)))); },
      py::arg("level"),
      "Caps the ISA level kernels are chosen for (as CUSTOMML_ISA) and returns the level now active; for tests.");

  m.def(
      "_vmath",
      [](const std::string& name, py::array_t<float, py::array::c_style | py::array::forcecast> x,
         const std::string& level) {
        const cpu::IsaLevel want = cpu::parse_isa(level);
        if (static_cast<int>(want) > static_cast<int>(cpu::detected_isa()))
          throw std::invalid_argument("[_vmath] this CPU lacks " + level);
        const cpu::ElementwiseKernels& k = cpu::elementwise_for(want);
        const std::pair<const char*, cpu::UnaryFn> fns[] = {{"exp", k.exp},         {"exp_nonpositive", k.exp_nonpositive}, {"log", k.log},
                                                             {"log1p", k.log1p},     {"log1p_unit", k.log1p_unit}, {"tanh", k.tanh},
                                                             {"sigmoid", k.sigmoid}, {"gelu", k.gelu}};
        for (const auto& [fname, fn] : fns)
          if (name == fname) {
            py::array_t<float> y(x.request().shape);
            const float* src = x.data();
            float* dst = y.mutable_data();
            const int64_t n = x.size();
            {
              py::gil_scoped_release release;
              fn(dst, src, n);
            }
            return y;
          }
        throw std::invalid_argument("[_vmath] unknown function '" + name + "'");
      },
      py::arg("name"), py::arg("x"), py::arg("level"),
      "Private, for tests: the vectorized float32 math (exp, exp_nonpositive, log, log1p, log1p_unit, tanh, sigmoid, gelu) of one ISA level.");

  m.def(
      "first_nonfinite",
      [](const py::array& x) -> int64_t {
        // No conversion: a copy would cost what the check saves (callers take other
        // arrays to NumPy's isfinite), and the flat index must be the C-order one.
        if (dtype_of(x) != DType::f32 || x.dtype().byteorder() == '>' ||
            !(x.flags() & py::array::c_style))
          throw TypeError("[first_nonfinite] x must be a C-contiguous float32 array, got dtype " +
                          std::string(py::str(x.dtype())));
        const float* data = static_cast<const float*>(x.data());
        const int64_t n = x.size();
        py::gil_scoped_release release;
        return cpu::first_nonfinite(data, n);
      },
      py::arg("x"),
      "The flat (C-order) index of the first NaN or +-inf in a C-contiguous float32 array, or -1; one pass, the "
      "GIL released.");

  m.def(
      "dense_forward",
      [](py::object out, py::object x, py::object weight, py::object bias, const std::string& activation,
         std::optional<py::object> preact_out, const std::string& device, const std::string& precision) {
        Views views("dense_forward", device);
        const Activation act = parse_for("dense_forward", [&] { return parse_activation(activation); });
        const Precision prec = parse_for("dense_forward", [&] { return parse_precision(precision); });
        Tensor y = views.out(out, "out"), xt = views.in(x, "x"), w = views.in(weight, "weight"),
               b = views.in(bias, "bias");
        auto z = views.out(preact_out, "preact_out");
        py::gil_scoped_release release;
        ops::dense_forward(y, ptr(z), xt, w, b, act, prec);
      },
      py::arg("out"), py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("activation") = "identity",
      py::arg("preact_out") = py::none(), py::arg("device") = "cpu", py::arg("precision") = "fp32",
      "out (batch, out) = activation(x (batch, in) . weight (in, out) + bias (out)); preact_out gets the value before "
      "the activation.");

  m.def(
      "dense_backward",
      [](std::optional<py::object> dx, py::object dweight, py::object dbias, py::object dy, py::object x, py::object weight,
         py::object y, std::optional<py::object> z, const std::string& activation, const std::string& device,
         const std::string& precision) {
        Views views("dense_backward", device);
        const Activation act = parse_for("dense_backward", [&] { return parse_activation(activation); });
        const Precision prec = parse_for("dense_backward", [&] { return parse_precision(precision); });
        auto dxt = views.out(dx, "dx");
        Tensor dw = views.out(dweight, "dweight"), db = views.out(dbias, "dbias"),
               dyt = views.in(dy, "dy"), xt = views.in(x, "x"), w = views.in(weight, "weight"),
               yt = views.in(y, "y");
        auto zt = views.in(z, "z");
        py::gil_scoped_release release;
        ops::dense_backward(ptr(dxt), dw, db, dyt, xt, w, yt, ptr(zt), act, prec);
      },
      py::arg("dx"), py::arg("dweight"), py::arg("dbias"), py::arg("dy"), py::arg("x"), py::arg("weight"),
      py::arg("y"), py::arg("z") = py::none(), py::arg("activation") = "identity", py::arg("device") = "cpu",
      py::arg("precision") = "fp32",
      "Gradients of dense_forward: dx (optional), dweight and dbias from dy, the input x, the weight, the output y and "
      "(for gelu) the pre-activation z.");

  m.def(
      "softmax_cross_entropy",
      [](std::optional<py::object> grad_out, py::object logits, py::object labels, std::optional<py::object> class_weights,
         float label_smoothing, const std::string& device, std::optional<py::object> row_weights) {
        Views views("softmax_cross_entropy", device);
        auto g = views.out(grad_out, "grad_out");
        Tensor l = views.in(logits, "logits"), y = views.in(labels, "labels");
        auto w = views.in(class_weights, "class_weights");
        auto rw = views.in(row_weights, "row_weights");
        py::gil_scoped_release release;
        return ops::softmax_cross_entropy(ptr(g), l, y, ptr(w), label_smoothing, ptr(rw));
      },
      py::arg("grad_out"), py::arg("logits"), py::arg("labels"), py::arg("class_weights") = py::none(),
      py::arg("label_smoothing") = 0.0f, py::arg("device") = "cpu", py::arg("row_weights") = py::none(),
      "Weighted mean softmax cross-entropy of logits (batch, classes) against int32 labels, each row weighted by "
      "class_weights[label] * row_weights[row] (both optional); writes d loss / d logits into grad_out when given.");

  m.def(
      "binary_cross_entropy_with_logits",
      [](std::optional<py::object> grad_out, py::object logits, py::object targets, const std::string& device,
         std::optional<py::object> row_weights) {
        Views views("binary_cross_entropy_with_logits", device);
        auto g = views.out(grad_out, "grad_out");
        Tensor l = views.in(logits, "logits"), t = views.in(targets, "targets");
        auto rw = views.in(row_weights, "row_weights");
        py::gil_scoped_release release;
        return ops::binary_cross_entropy_with_logits(ptr(g), l, t, ptr(rw));
      },
      py::arg("grad_out"), py::arg("logits"), py::arg("targets"), py::arg("device") = "cpu",
      py::arg("row_weights") = py::none(),
      "Mean binary cross-entropy of sigmoid(logits) against targets, rows weighted by row_weights (optional, one "
      "per first-axis row; sum w_i l_i / sum w_i); gradient into grad_out when given.");

  m.def(
      "mse",
      [](std::optional<py::object> grad_out, py::object pred, py::object target, const std::string& device,
         std::optional<py::object> row_weights) {
        Views views("mse", device);
        auto g = views.out(grad_out, "grad_out");
        Tensor p = views.in(pred, "pred"), t = views.in(target, "target");
        auto rw = views.in(row_weights, "row_weights");
        py::gil_scoped_release release;
        return ops::mse(ptr(g), p, t, ptr(rw));
      },
      py::arg("grad_out"), py::arg("pred"), py::arg("target"), py::arg("device") = "cpu",
      py::arg("row_weights") = py::none(),
      "Mean squared error, rows weighted by row_weights (optional, one per first-axis row); gradient into grad_out "
      "when given.");

  m.def(
      "count_correct",
      [](py::object logits, py::object labels, const std::string& device) {
        Views views("count_correct", device);
        Tensor l = views.in(logits, "logits"), y = views.in(labels, "labels");
        py::gil_scoped_release release;
        return ops::count_correct(l, y);
      },
      py::arg("logits"), py::arg("labels"), py::arg("device") = "cpu",
      "Rows whose first maximal logit is the label (one column: logit > 0 against label != 0).");

  m.def(
      "confusion_matrix_update",
      [](py::object counts, py::object logits, py::object labels, const std::string& device) {
        Views views("confusion_matrix_update", device);
        Tensor c = views.out(counts, "counts"), l = views.in(logits, "logits"), y = views.in(labels, "labels");
        py::gil_scoped_release release;
        ops::confusion_matrix_update(c, l, y);
      },
      py::arg("counts"), py::arg("logits"), py::arg("labels"), py::arg("device") = "cpu",
      "Adds each row's (label, prediction) to counts (classes, classes) int64, rows = true labels; the prediction is "
      "the first maximal logit, or logit > 0 with one column.");

  m.def(
      "regression_stats_update",
      [](py::object stats, py::object pred, py::object target, py::object shift, const std::string& device) {
        Views views("regression_stats_update", device);
        Tensor st = views.out(stats, "stats"), p = views.in(pred, "pred"), t = views.in(target, "target"),
               s = views.in(shift, "shift");
        py::gil_scoped_release release;
        ops::regression_stats_update(st, p, t, s);
      },
      py::arg("stats"), py::arg("pred"), py::arg("target"), py::arg("shift"), py::arg("device") = "cpu",
      "Adds per output column the sums of |pred - target|, (pred - target)^2, target - shift and (target - shift)^2 "
      "to stats (4, outputs) float64; shift (outputs) float64.");

  m.def(
      "dropout",
      [](py::object out, py::object x, float rate, uint64_t seed, uint64_t stream, const std::string& device) {
        Views views("dropout", device);
        Tensor y = views.out(out, "out"), xt = views.in(x, "x");
        py::gil_scoped_release release;
        ops::dropout(y, xt, rate, seed, stream);
      },
      py::arg("out"), py::arg("x"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("device") = "cpu",
      "Inverted dropout: out = x / (1 - rate) where Philox4x32-10(seed, stream, index) >= rate, else 0.");

  m.def(
      "sgd_update",
      [](py::object param, py::object grad, std::optional<py::object> velocity, float lr, float momentum, bool nesterov,
         float weight_decay, const std::vector<std::pair<int64_t, int64_t>>& no_decay, const std::string& device) {
        Views views("sgd_update", device);
        Tensor p = views.out(param, "param"), g = views.in(grad, "grad");
        auto v = views.out(velocity, "velocity");
        const SgdConfig c{lr, momentum, nesterov, weight_decay};
        const auto segs = segments_from(no_decay);
        py::gil_scoped_release release;
        ops::sgd_update(p, ptr(v), g, segs, c);
      },
      py::arg("param"), py::arg("grad"), py::arg("velocity") = py::none(), py::kw_only(), py::arg("lr"),
      py::arg("momentum") = 0.0f, py::arg("nesterov") = false, py::arg("weight_decay") = 0.0f,
      py::arg("no_decay") = std::vector<std::pair<int64_t, int64_t>>{}, py::arg("device") = "cpu",
      "One SGD step in place over flat buffers (torch.optim.SGD semantics, dampening 0).");

  m.def(
      "adam_update",
      [](py::object param, py::object grad, py::object m_, py::object v_, std::optional<py::object> vmax, float lr,
         float beta1, float beta2, float eps, float weight_decay, bool decoupled, bool amsgrad, int64_t step,
         const std::vector<std::pair<int64_t, int64_t>>& no_decay, const std::string& device) {
        Views views("adam_update", device);
        Tensor p = views.out(param, "param"), g = views.in(grad, "grad"), mt = views.out(m_, "m"),
               vt = views.out(v_, "v");
        auto vm = views.out(vmax, "vmax");
        const AdamConfig c{lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, step};
        const auto segs = segments_from(no_decay);
        py::gil_scoped_release release;
        ops::adam_update(p, mt, vt, ptr(vm), g, segs, c);
      },
      py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"), py::arg("vmax") = py::none(), py::kw_only(),
      py::arg("lr"), py::arg("beta1") = 0.9f, py::arg("beta2") = 0.999f, py::arg("eps") = 1e-8f,
      py::arg("weight_decay") = 0.0f, py::arg("decoupled") = false, py::arg("amsgrad") = false, py::arg("step"),
      py::arg("no_decay") = std::vector<std::pair<int64_t, int64_t>>{}, py::arg("device") = "cpu",
      "One Adam (decoupled=False) or AdamW (decoupled=True) step in place; step counts updates including this one.");

  m.def(
      "clip_by_global_norm",
      [](py::object grad, float max_norm, const std::string& device) {
        Views views("clip_by_global_norm", device);
        Tensor g = views.out(grad, "grad");
        py::gil_scoped_release release;
        return ops::clip_by_global_norm(g, max_norm);
      },
      py::arg("grad"), py::arg("max_norm"), py::arg("device") = "cpu",
      "Scales grad in place so its L2 norm is at most max_norm (as torch.nn.utils.clip_grad_norm_); returns the norm "
      "before scaling.");

  m.def(
      "l1_l2_penalty",
      [](std::optional<py::object> grad, py::object param, float l1, float l2, const std::string& device) {
        Views views("l1_l2_penalty", device);
        auto g = views.out(grad, "grad");
        Tensor p = views.in(param, "param");
        py::gil_scoped_release release;
        return ops::l1_l2_penalty(ptr(g), p, l1, l2);
      },
      py::arg("grad"), py::arg("param"), py::arg("l1") = 0.0f, py::arg("l2") = 0.0f, py::arg("device") = "cpu",
      "L1/L2 penalty of a kernel: adds l1 sign(param) + 2 l2 param to grad in place when given; returns "
      "l1 sum |param| + l2 sum param^2.");

  m.def(
      "quantize",
      [](py::object out, py::object x, py::object scale, std::optional<py::object> zero, const std::string& axis,
         const std::string& device) {
        Views views("quantize", device);
        const QuantAxis ax = parse_quant_axis("quantize", axis);
        Tensor q = views.out(out, "out"), xt = views.in(x, "x"), s = views.in(scale, "scale");
        auto z = views.in(zero, "zero");
        py::gil_scoped_release release;
        ops::quantize(q, xt, s, ptr(z), ax);
      },
      py::arg("out"), py::arg("x"), py::arg("scale"), py::arg("zero") = py::none(), py::arg("axis") = "tensor",
      py::arg("device") = "cpu",
      "out (rows, cols) int8 or uint8 = clip(rint(x / scale) + zero) (codes [-127, 127] or [0, 255]; half to even), "
      "scale and zero per axis: 'tensor' (1,), 'row' (rows,) or 'column' (cols,).");

  m.def(
      "dequantize",
      [](py::object out, py::object q, py::object scale, std::optional<py::object> zero, const std::string& axis,
         const std::string& device) {
        Views views("dequantize", device);
        const QuantAxis ax = parse_quant_axis("dequantize", axis);
        Tensor x = views.out(out, "out"), qt = views.in(q, "q"), s = views.in(scale, "scale");
        auto z = views.in(zero, "zero");
        py::gil_scoped_release release;
        ops::dequantize(x, qt, s, ptr(z), ax);
      },
      py::arg("out"), py::arg("q"), py::arg("scale"), py::arg("zero") = py::none(), py::arg("axis") = "tensor",
      py::arg("device") = "cpu", "out (rows, cols) float32 = scale * (q - zero), scale and zero per axis as quantize.");

  m.def(
      "quantize_rows_dynamic",
      [](py::object out, py::object scale_out, py::object zero_out, py::object x, const std::string& device) {
        Views views("quantize_rows_dynamic", device);
        Tensor q = views.out(out, "out"), s = views.out(scale_out, "scale_out"), z = views.out(zero_out, "zero_out"),
               xt = views.in(x, "x");
        py::gil_scoped_release release;
        ops::quantize_rows_dynamic(q, s, z, xt);
      },
      py::arg("out"), py::arg("scale_out"), py::arg("zero_out"), py::arg("x"), py::arg("device") = "cpu",
      "Per row of x (rows, cols): the range [min(0, min), max(0, max)] mapped onto uint8: scale_out (rows,) float32, "
      "zero_out (rows,) int32 and the codes out (rows, cols) uint8.");

  py::class_<ops::PackedS8, std::shared_ptr<ops::PackedS8>>(
      m, "PackedS8", "Int8 weights (k, n) packed once for one device's gemm_s8, with their column sums.")
      .def_property_readonly("k", &ops::PackedS8::k)
      .def_property_readonly("n", &ops::PackedS8::n)
      .def_property_readonly("shape", [](const ops::PackedS8& p) { return py::make_tuple(p.k(), p.n()); })
      .def_property_readonly("nbytes", &ops::PackedS8::nbytes)
      .def_property_readonly("device", [](const ops::PackedS8& p) { return p.device().name(); })
      .def("__repr__", [](const ops::PackedS8& p) {
        return "PackedS8(k=" + std::to_string(p.k()) + ", n=" + std::to_string(p.n()) + ", device='" +
               p.device().name() + "')";
      });

  m.def(
      "gemm_s8_pack",
      [](py::object weight, const std::string& device) {
        Views views("gemm_s8_pack", device);
        Tensor w = views.in(weight, "weight");
        py::gil_scoped_release release;
        return ops::gemm_s8_pack(w);
      },
      py::arg("weight"), py::arg("device") = "cpu",
      "Packs int8 weights (k, n), codes in [-127, 127], for gemm_s8 on device.");

  m.def(
      "gemm_s8",
      [](py::object out, py::object a, py::object weight, std::optional<py::object> a_scale, py::object a_zero,
         std::optional<py::object> w_scale, std::optional<py::object> bias, const std::string& activation,
         std::optional<float> out_scale, std::optional<int32_t> out_zero, const std::string& device) {
        Views views("gemm_s8", device);
        const Activation act = parse_for("gemm_s8", [&] { return parse_activation(activation); });
        Tensor y = views.out(out, "out"), at = views.in(a, "a"), az = views.in(a_zero, "a_zero");
        auto as = views.in(a_scale, "a_scale"), ws = views.in(w_scale, "w_scale"), b = views.in(bias, "bias");
        // Raw int8 weights are packed for this call alone; a model packs once (gemm_s8_pack).
        std::shared_ptr<ops::PackedS8> packed;
        if (py::isinstance<ops::PackedS8>(weight)) {
          packed = py::cast<std::shared_ptr<ops::PackedS8>>(weight);
        } else {
          Tensor w = views.in(weight, "weight");
          py::gil_scoped_release release;
          packed = ops::gemm_s8_pack(w);
        }
        py::gil_scoped_release release;
        ops::gemm_s8(y, at, *packed, ptr(as), az, ptr(ws), ptr(b), act, out_scale, out_zero);
      },
      py::arg("out"), py::arg("a"), py::arg("weight"), py::arg("a_scale"), py::arg("a_zero"), py::arg("w_scale"),
      py::arg("bias") = py::none(), py::arg("activation") = "identity", py::arg("out_scale") = py::none(),
      py::arg("out_zero") = py::none(), py::arg("device") = "cpu",
      "a (m, k) uint8 times weight (k, n) int8 (a PackedS8, or raw codes packed for this call), exact int32 sums; "
      "out by its dtype: float32 activation(a_scale w_scale (acc - a_zero colsum) + bias), uint8 the same requantized "
      "with out_scale / out_zero, or int32 acc - a_zero colsum.");

  m.def(
      "apply_mask",
      [](py::object param, py::object keep, const std::string& device) {
        Views views("apply_mask", device);
        Tensor p = views.out(param, "param"), k = views.in(keep, "keep");
        py::gil_scoped_release release;
        ops::apply_mask(p, k);
      },
      py::arg("param"), py::arg("keep"), py::arg("device") = "cpu",
      "Zeroes param (float32, in place) wherever keep (uint8, same shape) is 0: a pruning mask.");

  py::class_<ops::PackedCsr, std::shared_ptr<ops::PackedCsr>>(
      m, "PackedCsr",
      "A CSR weight prepared once for one device's sparse_dense_forward: structure checked, copied, and packed in the "
      "device's own layout where it has one.")
      .def_property_readonly("shape", [](const ops::PackedCsr& p) { return py::make_tuple(p.in(), p.out()); })
      .def_property_readonly("nnz", &ops::PackedCsr::nnz)
      .def_property_readonly("packed_nbytes", &ops::PackedCsr::packed_bytes)
      .def_property_readonly("device", [](const ops::PackedCsr& p) { return p.device().name(); })
      .def("__repr__", [](const ops::PackedCsr& p) {
        return "PackedCsr(in=" + std::to_string(p.in()) + ", out=" + std::to_string(p.out()) +
               ", nnz=" + std::to_string(p.nnz()) + ", device='" + p.device().name() + "')";
      });

  m.def(
      "sparse_pack",
      [](py::object offsets, py::object index, py::object values, int64_t in_features, const std::string& device) {
        Views views("sparse_pack", device);
        Tensor o = views.in(offsets, "offsets"), i = views.in(index, "index"), v = views.in(values, "values");
        py::gil_scoped_release release;
        return ops::sparse_pack(o, i, v, in_features);
      },
      py::arg("offsets"), py::arg("index"), py::arg("values"), py::arg("in_features"), py::arg("device") = "cpu",
      "Prepares the CSR of W^T (offsets, index, values as sparse_dense_forward takes them) of a weight with in_features "
      "inputs once for device: checked, copied, packed.");

  // Registered first: pybind11 tries overloads in order, and the raw form takes any object.
  m.def(
      "sparse_dense_forward",
      [](py::object out, py::object x, std::shared_ptr<ops::PackedCsr> weight, std::optional<py::object> bias,
         const std::string& activation, const std::string& device) {
        Views views("sparse_dense_forward", device);
        const Activation act = parse_for("sparse_dense_forward", [&] { return parse_activation(activation); });
        Tensor y = views.out(out, "out"), xt = views.in(x, "x");
        auto b = views.in(bias, "bias");
        py::gil_scoped_release release;
        ops::sparse_dense_forward(y, xt, *weight, ptr(b), act);
      },
      py::arg("out"), py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
      py::arg("activation") = "identity", py::arg("device") = "cpu",
      "out (batch, out) = activation(x (batch, in) . W + bias) for W prepared by sparse_pack.");

  m.def(
      "sparse_dense_forward",
      [](py::object out, py::object x, py::object offsets, py::object index, py::object values,
         std::optional<py::object> bias, const std::string& activation, const std::string& device) {
        Views views("sparse_dense_forward", device);
        const Activation act = parse_for("sparse_dense_forward", [&] { return parse_activation(activation); });
        Tensor y = views.out(out, "out"), xt = views.in(x, "x"), o = views.in(offsets, "offsets"),
               i = views.in(index, "index"), v = views.in(values, "values");
        auto b = views.in(bias, "bias");
        py::gil_scoped_release release;
        ops::sparse_dense_forward(y, xt, o, i, v, ptr(b), act);
      },
      py::arg("out"), py::arg("x"), py::arg("offsets"), py::arg("index"), py::arg("values"),
      py::arg("bias") = py::none(), py::arg("activation") = "identity", py::arg("device") = "cpu",
      "out (batch, out) = activation(x (batch, in) . W + bias) for W (in, out) given as the CSR of its transpose: "
      "output j's inputs index[offsets[j]:offsets[j + 1]] (int32, strictly ascending) with values (float32).");

  m.def(
      "nm_dense_forward",
      [](py::object out, py::object x, py::object values, py::object index, std::optional<py::object> bias,
         const std::string& activation, int n, int m, const std::string& device) {
        Views views("nm_dense_forward", device);
        const Activation act = parse_for("nm_dense_forward", [&] { return parse_activation(activation); });
        Tensor y = views.out(out, "out"), xt = views.in(x, "x"), v = views.in(values, "values"),
               i = views.in(index, "index");
        auto b = views.in(bias, "bias");
        py::gil_scoped_release release;
        ops::nm_dense_forward(y, xt, v, i, ptr(b), act, n, m);
      },
      py::arg("out"), py::arg("x"), py::arg("values"), py::arg("index"), py::arg("bias") = py::none(),
      py::arg("activation") = "identity", py::arg("n") = 2, py::arg("m") = 4, py::arg("device") = "cpu",
      "out (batch, out) = activation(x (batch, in) . W + bias) for W (in, out) with n of every m consecutive rows "
      "kept per column: values (ceil(in / m) n, out) float32 and index (same shape, uint8), each slot's row within "
      "its group.");

  m.def(
      "feature_affine",
      [](py::object y, py::object x, py::object scale, py::object shift, const std::string& device) {
        Views views("feature_affine", device);
        Tensor yt = views.out(y, "y"), xt = views.in(x, "x");
        Tensor s = views.in(scale, "scale"), b = views.in(shift, "shift");
        py::gil_scoped_release release;
        ops::feature_affine(yt, xt, s, b);
      },
      py::arg("y"), py::arg("x"), py::arg("scale"), py::arg("shift"), py::arg("device") = "cpu",
      "y = x * scale + shift per column (x, y: (rows, cols); scale, shift: (cols,)): the preprocessing layers' map.");

  py::class_<Network>(m, "Network", "The compiled layer plan and its flat buffers.")
      .def(py::init([](int64_t input_dim, const py::list& layers, const std::string& device) {
             std::vector<LayerSpec> specs;
             for (const auto& item : layers) specs.push_back(layer_from(py::cast<py::dict>(item)));
             return std::make_unique<Network>(input_dim, std::move(specs), Device::parse(device));
           }),
           py::arg("input_dim"), py::arg("layers"), py::arg("device") = "cpu")
      .def_property_readonly("input_dim", &Network::input_dim)
      .def_property_readonly("output_dim", &Network::output_dim)
      .def_property_readonly("num_params", &Network::num_params)
      .def_property_readonly("device", [](const Network& n) { return n.device().name(); })
      .def_property_readonly("weight_offsets", &Network::weight_offsets)
      .def_property_readonly("bias_offsets", &Network::bias_offsets)
      .def_property_readonly("step", &Network::step)
      .def_property_readonly("compiled", &Network::compiled)
      // Waits for the executor's lock (a running predict) without holding the GIL.
      .def("set_trainable", &Network::set_trainable, py::arg("layer"), py::arg("trainable"),
           py::call_guard<py::gil_scoped_release>(),
           "Freezes (False) or unfreezes a dense layer from the next step on: no update and no weight-gradient work.")
      .def("trainable", &Network::trainable, py::arg("layer"))
      .def(
          "set_affine",
          [](Network& n, int64_t layer, py::array_t<float, py::array::c_style | py::array::forcecast> scale,
             py::array_t<float, py::array::c_style | py::array::forcecast> shift) {
            if (scale.ndim() != 1 || shift.ndim() != 1 || scale.size() != n.input_dim() || shift.size() != n.input_dim())
              throw std::invalid_argument("[Network] set_affine needs scale and shift of shape (" +
                                          std::to_string(n.input_dim()) + ",)");
            const float* s = scale.data();
            const float* b = shift.data();
            py::gil_scoped_release release;
            n.set_affine(layer, s, b);
          },
          py::arg("layer"), py::arg("scale"), py::arg("shift"),
          "Replaces a preprocessing (affine) layer's per-feature scale and shift.")
      .def(
          "read_params",
          [](const Network& n, int64_t offset, int64_t count) {
            py::array_t<float> out(count);
            float* dst = out.mutable_data();
            py::gil_scoped_release release;
            n.read_params(dst, offset, count);
            return out;
          },
          py::arg("offset"), py::arg("count"))
      .def(
          "write_params",
          [](Network& n, int64_t offset, py::array_t<float, py::array::c_style | py::array::forcecast> values) {
            const float* src = values.data();
            const int64_t count = values.size();
            py::gil_scoped_release release;
            n.write_params(src, offset, count);
          },
          py::arg("offset"), py::arg("values"))
      .def_property_readonly("state_slots", &Network::state_slots,
                             "How many optimizer state buffers exist: adam 2 (m, v) or 3 with amsgrad (vmax); "
                             "sgd with momentum 1 (velocity); 0 otherwise or before compile.")
      .def(
          "read_state",
          [](const Network& n, int slot, int64_t offset, int64_t count) {
            py::array_t<float> out(count);
            float* dst = out.mutable_data();
            py::gil_scoped_release release;
            n.read_state(dst, slot, offset, count);
            return out;
          },
          py::arg("slot"), py::arg("offset"), py::arg("count"),
          "A copy of [offset, offset + count) of optimizer state slot `slot` (laid out as the parameters).")
      .def(
          "write_state",
          [](Network& n, int slot, int64_t offset, py::array_t<float, py::array::c_style | py::array::forcecast> values) {
            const float* src = values.data();
            const int64_t count = values.size();
            py::gil_scoped_release release;
            n.write_state(src, slot, offset, count);
          },
          py::arg("slot"), py::arg("offset"), py::arg("values"),
          "Writes values into [offset, offset + len(values)) of optimizer state slot `slot`.")
      .def("set_step", &Network::set_step, py::arg("step"),
           "Sets the number of updates taken (compile resets it to 0); for resuming training.")
      .def(
          "compile",
          [](Network& n, const std::string& loss, float label_smoothing, const std::vector<float>& class_weights,
             const std::string& optimizer, float lr, float momentum, bool nesterov, float weight_decay, float beta1,
             float beta2, float eps, bool decoupled, bool amsgrad, float clip_norm, const std::string& precision) {
            LossConfig lc{parse_loss(loss), label_smoothing, class_weights};
            OptimizerConfig oc;
            if (optimizer == "sgd") {
              oc.kind = OptimizerConfig::Kind::sgd;
              oc.sgd = SgdConfig{lr, momentum, nesterov, weight_decay};
            } else if (optimizer == "adam") {
              oc.kind = OptimizerConfig::Kind::adam;
              oc.adam = AdamConfig{lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, 1};
            } else {
              throw std::invalid_argument("unknown optimizer '" + optimizer + "'");
            }
            oc.clip_norm = clip_norm;
            n.compile(lc, oc, parse_for("compile", [&] { return parse_precision(precision); }));
          },
          py::kw_only(), py::arg("loss"), py::arg("label_smoothing") = 0.0f,
          py::arg("class_weights") = std::vector<float>{}, py::arg("optimizer"), py::arg("lr"),
          py::arg("momentum") = 0.0f, py::arg("nesterov") = false, py::arg("weight_decay") = 0.0f,
          py::arg("beta1") = 0.9f, py::arg("beta2") = 0.999f, py::arg("eps") = 1e-8f, py::arg("decoupled") = false,
          py::arg("amsgrad") = false, py::arg("clip_norm") = 0.0f, py::arg("precision") = "fp32")
      .def_property_readonly("precision", [](const Network& n) { return std::string(precision_name(n.precision())); })
      .def_property_readonly("loss_scale", &Network::loss_scale)
      .def_property_readonly("loss_scale_good_steps", &Network::loss_scale_good_steps)
      .def("set_loss_scale", &Network::set_loss_scale, py::arg("scale"), py::arg("good_steps"),
           "Restores fp16 training's loss scale and its count of good steps; for resuming.")
      .def("set_seed", &Network::set_seed, py::arg("seed"))
      .def("set_learning_rate", &Network::set_learning_rate, py::arg("learning_rate"),
           "Sets the learning rate of the next update (schedules); ValueError unless finite and >= 0.")
      .def_property_readonly("learning_rate", &Network::learning_rate,
                             "The learning rate the next update uses (as float32).")
      .def(
          "train_batch",
          [](Network& n, py::object x, py::object y, py::object index, std::optional<py::object> sample_weight) {
            Views views("fit", Device{});  // the executor takes host arrays and stages them
            Tensor xt = views.in(x, "x"), yt = views.in(y, "y");
            Tensor it = views.in(index, "index");
            auto wt = views.in(sample_weight, "sample_weight");
            n.check_inputs("fit", xt, &yt, ptr(wt));
            if (it.dtype() != DType::i64 || it.ndim() != 1 || !it.is_contiguous())
              throw TypeError("[fit] index must be a contiguous 1-D int64 array");
            py::gil_scoped_release release;
            return n.train_batch(xt.ptr<float>(), yt.data(), wt ? wt->ptr<float>() : nullptr, xt.dim(0),
                                 it.ptr<int64_t>(), it.dim(0));
          },
          py::arg("x"), py::arg("y"), py::arg("index"), py::arg("sample_weight") = py::none(),
          "One training step on rows `index` of x and y (and sample_weight, float32 (n,), when given); returns the "
          "batch's weighted mean loss.")
      .def(
          "evaluate",
          [](Network& n, py::object x, py::object y, int64_t batch_size) {
            Views views("evaluate", Device{});  // the executor takes host arrays and stages them
            Tensor xt = views.in(x, "x"), yt = views.in(y, "y");
            n.check_inputs("evaluate", xt, &yt);
            py::gil_scoped_release release;
            n.evaluate(xt.ptr<float>(), yt.data(), xt.dim(0), batch_size);
          },
          py::arg("x"), py::arg("y"), py::arg("batch_size"))
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
           "None, having done nothing, for any other x or out (the caller converts them and calls predict).")
      .def("metrics",
           [](const Network& n) {
             const MetricCounters& c = n.metrics();
             return py::make_tuple(c.loss_sum, c.correct, c.count);
           })
      // Waits for the executor's lock (a running predict) without holding the GIL.
      .def("reset_metrics", &Network::reset_metrics, py::call_guard<py::gil_scoped_release>())
      .def(
          "set_metric_stats",
          [](Network& n, bool confusion, bool regression, bool scores) {
            py::gil_scoped_release release;
            n.set_metric_stats({confusion, regression, scores});
          },
          py::arg("confusion") = false, py::arg("regression") = false, py::arg("scores") = false)
      .def("confusion_matrix",
           [](const Network& n) {
             std::vector<int64_t> c;
             {
               py::gil_scoped_release release;
               c = n.confusion_matrix();
             }
             const int64_t k = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(c.size()))));
             py::array_t<int64_t> a({k, k});
             std::copy(c.begin(), c.end(), a.mutable_data());
             return a;
           })
      .def("regression_stats",
           [](const Network& n) {
             std::vector<double> st;
             {
               py::gil_scoped_release release;
               st = n.regression_stats();
             }
             const int64_t out = static_cast<int64_t>(st.size() / 4);
             py::array_t<double> a({int64_t{4}, out});
             std::copy(st.begin(), st.end(), a.mutable_data());
             return a;
           })
      .def("roc_auc",
           [](Network& n) {
             py::gil_scoped_release release;
             return n.roc_auc();
           })
      .def("dense_shape", &Network::dense_shape, py::arg("layer"), "(in, out) of a Dense layer.")
      .def(
          "set_mask",
          [](Network& n, int64_t layer, py::object keep) {
            const auto [in, out] = n.dense_shape(layer);
            auto k = layer_array<uint8_t>("set_mask", "keep", keep, {in, out});
            const uint8_t* src = k.data();
            py::gil_scoped_release release;
            n.set_mask(layer, src);
          },
          py::arg("layer"), py::arg("keep"),
          "Prunes Dense layer `layer`: keep (in, out) uint8, 0 where a weight is removed; those weights are zeroed "
          "now and after every optimizer update.")
      .def("clear_mask", &Network::clear_mask, py::arg("layer"))
      .def("masked", &Network::masked, py::arg("layer"))
      .def(
          "set_sparse_format",
          [](Network& n, int64_t layer, const std::string& format, int64_t max_batch, int nm_n, int nm_m,
             int64_t min_batch) {
            n.set_sparse_format(layer, parse_sparse_format(format), max_batch, nm_n, nm_m, min_batch);
          },
          py::arg("layer"), py::arg("format"), py::arg("max_batch"), py::arg("n") = 2, py::arg("m") = 4,
          py::arg("min_batch") = 1,
          "Runs Dense layer `layer` at inference in a sparse format ('csr', 'nm' or 'dense') for batches of "
          "min_batch to max_batch rows.")
      .def(
          "sparse_format",
          [](const Network& n, int64_t layer) {
            return py::make_tuple(sparse_format_name(n.sparse_format(layer)), n.sparse_max_batch(layer));
          },
          py::arg("layer"), "(format, max_batch) of a Dense layer's inference.")
      .def("sparse_min_batch", &Network::sparse_min_batch, py::arg("layer"),
           "The smallest batch a Dense layer's sparse format runs (1 unless set).")
      .def(
          "set_quantization",
          [](Network& n, int64_t layer, py::object w_q, py::object w_scale, float in_scale, int32_t in_zero) {
            const auto [in, out] = n.dense_shape(layer);
            auto q = layer_array<int8_t>("set_quantization", "w_q", w_q, {in, out});
            auto sc = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(w_scale);
            if (!sc || sc.ndim() != 1 || (sc.shape(0) != out && sc.shape(0) != 1))
              throw std::invalid_argument("[set_quantization] w_scale must have shape (" + std::to_string(out) +
                                          ",) per channel or (1,) per tensor");
            const bool per_channel = sc.shape(0) == out;
            const int8_t* qp = q.data();
            const float* sp = sc.data();
            py::gil_scoped_release release;
            n.set_quantization(layer, qp, sp, per_channel, in_scale, in_zero);
          },
          py::arg("layer"), py::arg("w_q"), py::arg("w_scale"), py::arg("in_scale"), py::arg("in_zero"),
          "Runs Dense layer `layer` in int8: w_q (in, out) int8 in [-127, 127] with w_scale (out,) or (1,); inputs "
          "uint8 with in_scale / in_zero, or quantized per row at run time when in_scale <= 0. The layer's float "
          "weights become w_scale * w_q.")
      .def("clear_quantization", &Network::clear_quantization, py::arg("layer"))
      .def(
          "quantized", [](const Network& n, int64_t layer) { return n.quantization(layer) != nullptr; },
          py::arg("layer"), "Whether a Dense layer runs in int8 (without copying its codes out).")
      .def(
          "quantization",
          [](const Network& n, int64_t layer) -> py::object {
            const QuantizedLayer* q = n.quantization(layer);
            if (!q) return py::none();
            const auto [in, out] = n.dense_shape(layer);
            py::array_t<int8_t> w({in, out});
            std::copy(q->w_q.begin(), q->w_q.end(), w.mutable_data());
            py::array_t<float> sc(static_cast<py::ssize_t>(q->w_scale.size()));
            std::copy(q->w_scale.begin(), q->w_scale.end(), sc.mutable_data());
            py::dict d;
            d["w_q"] = w;
            d["w_scale"] = sc;
            d["in_scale"] = q->in_scale;
            d["in_zero"] = q->in_zero;
            return d;
          },
          py::arg("layer"), "None, or the layer's int8 weights, scales and input encoding.")
      .def("prepare", &Network::prepare, py::call_guard<py::gil_scoped_release>(),
           "Builds the inference plan (sparse and int8 layers) now rather than at the first predict.")
      .def("set_fake_quantization", &Network::set_fake_quantization, py::arg("layer"), py::arg("per_channel") = true,
           py::arg("inputs") = true, py::arg("momentum") = 0.9f,
           "Quantization-aware training of Dense layer `layer`: train_batch's forward and backward passes use "
           "dequantize(quantize(W)) (int8, per output channel or per tensor) and, with inputs, the input "
           "fake-quantized to uint8 over a moving average of its range; gradients reach the float weights unchanged "
           "(straight-through estimator).")
      .def("clear_fake_quantization", &Network::clear_fake_quantization, py::arg("layer"))
      .def("fake_input_range", &Network::fake_input_range, py::arg("layer"),
           "(lo, hi): the moving-average input range of a fake-quantized layer; (0, 0) before its first batch.");
}
