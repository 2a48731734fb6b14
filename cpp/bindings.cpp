// The one pybind11 module, customml._core: zero-copy views of NumPy arrays, the GIL
// released around compute, C++ exceptions translated to the right Python type.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "backend.h"
#include "cpu/elementwise.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "network.h"
#include "ops.h"

namespace py = pybind11;
using namespace customml;

#ifndef CUSTOMML_VERSION
#define CUSTOMML_VERSION "0.0.0"
#endif

namespace {

DType dtype_of(const py::array& a) {
  const py::dtype dt = a.dtype();
  const char kind = dt.kind();
  const py::ssize_t size = dt.itemsize();
  if (kind == 'f' && size == 4) return DType::f32;
  if (kind == 'f' && size == 8) return DType::f64;
  if (kind == 'f' && size == 2) return DType::f16;
  if (kind == 'i' && size == 4) return DType::i32;
  if (kind == 'i' && size == 8) return DType::i64;
  if (kind == 'i' && size == 1) return DType::i8;
  if (kind == 'u' && size == 1) return DType::u8;
  return DType::other;
}

// A borrowed view of a NumPy array; outputs must be writable. Byte order: NumPy
// arrays of a non-native byte order are "other", so kernels never read them.
Tensor view(const py::array& a, const Device& device, const char* op, const char* name, bool writable) {
  if (writable && !a.writeable())
    throw std::invalid_argument(std::string("[") + op + "] " + name + " is read-only");
  DType dt = a.dtype().byteorder() == '>' ? DType::other : dtype_of(a);
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  std::vector<int64_t> strides(a.strides(), a.strides() + a.ndim());
  return Tensor(const_cast<void*>(a.data()), dt, std::move(shape), std::move(strides), device);
}

std::optional<Tensor> maybe_view(const std::optional<py::array>& a, const Device& d, const char* op,
                                 const char* name, bool writable) {
  if (!a) return std::nullopt;
  return view(*a, d, op, name, writable);
}

Activation activation_for(const char* op, const std::string& name) {
  try {
    return parse_activation(name);
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
  d["cpu_features"] = cpu::cpu_features();
  d["isa_detected"] = cpu::isa_name(cpu::detected_isa());
  d["isa"] = cpu::isa_name(cpu::active_isa());
  py::dict kernels;
  kernels["gemm"] = cpu::gemm_f32_variant();
  // XNNPACK-style names, what then how: f32_adam__avx512.
  const std::string isa = cpu::elementwise().isa;
  for (const char* family : {"softmax_cross_entropy", "binary_cross_entropy", "mse", "dropout", "sgd", "adam", "clip"})
    kernels[family] = "f32_" + std::string(family) + "__" + isa;
  d["kernels"] = kernels;
  d["num_threads"] = 1;
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
  } else if (kind == "dropout") {
    s.kind = LayerSpec::Kind::dropout;
    s.rate = py::cast<float>(d["rate"]);
  } else {
    throw std::invalid_argument("unknown layer kind '" + kind + "'");
  }
  return s;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "customml native core: kernels, the network executor and build information";
  py::register_exception<TypeError>(m, "DTypeError", PyExc_TypeError);
  // An invalid CUSTOMML_ISA fails the import with its message, not later.
  cpu::active_isa();

  {
    py::list names;
    for (Activation a : {Activation::identity, Activation::relu, Activation::sigmoid, Activation::tanh,
                         Activation::gelu})
      names.append(activation_name(a));
    m.attr("activations") = py::tuple(names);
  }
  m.def("build_info", &build_info, "Version, compiler, CUDA, CPU features and the kernel variant chosen per family.");
  m.def("cuda_available", &cuda_available);
  m.def(
      "check_device",
      [](const std::string& device) {
        const Device d = Device::parse(device);
        backend_for(d);
        return d.name();
      },
      py::arg("device"), "The canonical name of a usable device; ValueError saying why for any other.");
  m.def("cuda_unavailable_reason", &cuda_unavailable_reason);
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
        const std::pair<const char*, cpu::UnaryFn> fns[] = {{"exp", k.exp},         {"log", k.log},
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
      "Private, for tests: the vectorized float32 math (exp, log, log1p, log1p_unit, tanh, sigmoid, gelu) of one ISA level.");

  m.def(
      "dense_forward",
      [](py::array out, py::array x, py::array weight, py::array bias, const std::string& activation,
         std::optional<py::array> preact_out, const std::string& device) {
        const Device d = Device::parse(device);
        const Activation act = activation_for("dense_forward", activation);
        Tensor y = view(out, d, "dense_forward", "out", true), xt = view(x, d, "dense_forward", "x", false), w = view(weight, d, "dense_forward", "weight", false),
               b = view(bias, d, "dense_forward", "bias", false);
        auto z = maybe_view(preact_out, d, "dense_forward", "preact_out", true);
        py::gil_scoped_release release;
        ops::dense_forward(y, ptr(z), xt, w, b, act);
      },
      py::arg("out").noconvert(), py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("activation") = "identity",
      py::arg("preact_out").noconvert() = py::none(), py::arg("device") = "cpu",
      "out (batch, out) = activation(x (batch, in) . weight (in, out) + bias (out)); preact_out gets the value before "
      "the activation.");

  m.def(
      "dense_backward",
      [](std::optional<py::array> dx, py::array dweight, py::array dbias, py::array dy, py::array x, py::array weight,
         py::array y, std::optional<py::array> z, const std::string& activation, const std::string& device) {
        const Device d = Device::parse(device);
        const Activation act = activation_for("dense_backward", activation);
        auto dxt = maybe_view(dx, d, "dense_backward", "dx", true);
        Tensor dw = view(dweight, d, "dense_backward", "dweight", true), db = view(dbias, d, "dense_backward", "dbias", true),
               dyt = view(dy, d, "dense_backward", "dy", false), xt = view(x, d, "dense_backward", "x", false), w = view(weight, d, "dense_backward", "weight", false),
               yt = view(y, d, "dense_backward", "y", false);
        auto zt = maybe_view(z, d, "dense_backward", "z", false);
        py::gil_scoped_release release;
        ops::dense_backward(ptr(dxt), dw, db, dyt, xt, w, yt, ptr(zt), act);
      },
      py::arg("dx").noconvert(), py::arg("dweight").noconvert(), py::arg("dbias").noconvert(), py::arg("dy"), py::arg("x"), py::arg("weight"),
      py::arg("y"), py::arg("z") = py::none(), py::arg("activation") = "identity", py::arg("device") = "cpu",
      "Gradients of dense_forward: dx (optional), dweight and dbias from dy, the input x, the weight, the output y and "
      "(for gelu) the pre-activation z.");

  m.def(
      "softmax_cross_entropy",
      [](std::optional<py::array> grad_out, py::array logits, py::array labels, std::optional<py::array> class_weights,
         float label_smoothing, const std::string& device) {
        const Device d = Device::parse(device);
        auto g = maybe_view(grad_out, d, "softmax_cross_entropy", "grad_out", true);
        Tensor l = view(logits, d, "softmax_cross_entropy", "logits", false), y = view(labels, d, "softmax_cross_entropy", "labels", false);
        auto w = maybe_view(class_weights, d, "softmax_cross_entropy", "class_weights", false);
        py::gil_scoped_release release;
        return ops::softmax_cross_entropy(ptr(g), l, y, ptr(w), label_smoothing);
      },
      py::arg("grad_out").noconvert(), py::arg("logits"), py::arg("labels"), py::arg("class_weights") = py::none(),
      py::arg("label_smoothing") = 0.0f, py::arg("device") = "cpu",
      "Mean softmax cross-entropy of logits (batch, classes) against int32 labels; writes d loss / d logits into "
      "grad_out when given.");

  m.def(
      "binary_cross_entropy_with_logits",
      [](std::optional<py::array> grad_out, py::array logits, py::array targets, const std::string& device) {
        const Device d = Device::parse(device);
        auto g = maybe_view(grad_out, d, "binary_cross_entropy_with_logits", "grad_out", true);
        Tensor l = view(logits, d, "binary_cross_entropy_with_logits", "logits", false), t = view(targets, d, "binary_cross_entropy_with_logits", "targets", false);
        py::gil_scoped_release release;
        return ops::binary_cross_entropy_with_logits(ptr(g), l, t);
      },
      py::arg("grad_out").noconvert(), py::arg("logits"), py::arg("targets"), py::arg("device") = "cpu",
      "Mean binary cross-entropy of sigmoid(logits) against targets; gradient into grad_out when given.");

  m.def(
      "mse",
      [](std::optional<py::array> grad_out, py::array pred, py::array target, const std::string& device) {
        const Device d = Device::parse(device);
        auto g = maybe_view(grad_out, d, "mse", "grad_out", true);
        Tensor p = view(pred, d, "mse", "pred", false), t = view(target, d, "mse", "target", false);
        py::gil_scoped_release release;
        return ops::mse(ptr(g), p, t);
      },
      py::arg("grad_out").noconvert(), py::arg("pred"), py::arg("target"), py::arg("device") = "cpu",
      "Mean squared error; gradient into grad_out when given.");

  m.def(
      "count_correct",
      [](py::array logits, py::array labels, const std::string& device) {
        const Device d = Device::parse(device);
        Tensor l = view(logits, d, "count_correct", "logits", false), y = view(labels, d, "count_correct", "labels", false);
        py::gil_scoped_release release;
        return ops::count_correct(l, y);
      },
      py::arg("logits"), py::arg("labels"), py::arg("device") = "cpu",
      "Rows whose first maximal logit is the label (one column: logit > 0 against label != 0).");

  m.def(
      "dropout",
      [](py::array out, py::array x, float rate, uint64_t seed, uint64_t stream, const std::string& device) {
        const Device d = Device::parse(device);
        Tensor y = view(out, d, "dropout", "out", true), xt = view(x, d, "dropout", "x", false);
        py::gil_scoped_release release;
        ops::dropout(y, xt, rate, seed, stream);
      },
      py::arg("out").noconvert(), py::arg("x"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("device") = "cpu",
      "Inverted dropout: out = x / (1 - rate) where Philox4x32-10(seed, stream, index) >= rate, else 0.");

  m.def(
      "sgd_update",
      [](py::array param, py::array grad, std::optional<py::array> velocity, float lr, float momentum, bool nesterov,
         float weight_decay, const std::vector<std::pair<int64_t, int64_t>>& no_decay, const std::string& device) {
        const Device d = Device::parse(device);
        Tensor p = view(param, d, "sgd_update", "param", true), g = view(grad, d, "sgd_update", "grad", false);
        auto v = maybe_view(velocity, d, "sgd_update", "velocity", true);
        const SgdConfig c{lr, momentum, nesterov, weight_decay};
        const auto segs = segments_from(no_decay);
        py::gil_scoped_release release;
        ops::sgd_update(p, ptr(v), g, segs, c);
      },
      py::arg("param").noconvert(), py::arg("grad"), py::arg("velocity").noconvert() = py::none(), py::kw_only(), py::arg("lr"),
      py::arg("momentum") = 0.0f, py::arg("nesterov") = false, py::arg("weight_decay") = 0.0f,
      py::arg("no_decay") = std::vector<std::pair<int64_t, int64_t>>{}, py::arg("device") = "cpu",
      "One SGD step in place over flat buffers (torch.optim.SGD semantics, dampening 0).");

  m.def(
      "adam_update",
      [](py::array param, py::array grad, py::array m_, py::array v_, std::optional<py::array> vmax, float lr,
         float beta1, float beta2, float eps, float weight_decay, bool decoupled, bool amsgrad, int64_t step,
         const std::vector<std::pair<int64_t, int64_t>>& no_decay, const std::string& device) {
        const Device d = Device::parse(device);
        Tensor p = view(param, d, "adam_update", "param", true), g = view(grad, d, "adam_update", "grad", false), mt = view(m_, d, "adam_update", "m", true),
               vt = view(v_, d, "adam_update", "v", true);
        auto vm = maybe_view(vmax, d, "adam_update", "vmax", true);
        const AdamConfig c{lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, step};
        const auto segs = segments_from(no_decay);
        py::gil_scoped_release release;
        ops::adam_update(p, mt, vt, ptr(vm), g, segs, c);
      },
      py::arg("param").noconvert(), py::arg("grad"), py::arg("m").noconvert(), py::arg("v").noconvert(), py::arg("vmax").noconvert() = py::none(), py::kw_only(),
      py::arg("lr"), py::arg("beta1") = 0.9f, py::arg("beta2") = 0.999f, py::arg("eps") = 1e-8f,
      py::arg("weight_decay") = 0.0f, py::arg("decoupled") = false, py::arg("amsgrad") = false, py::arg("step"),
      py::arg("no_decay") = std::vector<std::pair<int64_t, int64_t>>{}, py::arg("device") = "cpu",
      "One Adam (decoupled=False) or AdamW (decoupled=True) step in place; step counts updates including this one.");

  m.def(
      "clip_by_global_norm",
      [](py::array grad, float max_norm, const std::string& device) {
        const Device d = Device::parse(device);
        Tensor g = view(grad, d, "clip_by_global_norm", "grad", true);
        py::gil_scoped_release release;
        return ops::clip_by_global_norm(g, max_norm);
      },
      py::arg("grad").noconvert(), py::arg("max_norm"), py::arg("device") = "cpu",
      "Scales grad in place so its L2 norm is at most max_norm (as torch.nn.utils.clip_grad_norm_); returns the norm "
      "before scaling.");

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
      .def(
          "compile",
          [](Network& n, const std::string& loss, float label_smoothing, const std::vector<float>& class_weights,
             const std::string& optimizer, float lr, float momentum, bool nesterov, float weight_decay, float beta1,
             float beta2, float eps, bool decoupled, bool amsgrad, float clip_norm) {
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
            n.compile(lc, oc);
          },
          py::kw_only(), py::arg("loss"), py::arg("label_smoothing") = 0.0f,
          py::arg("class_weights") = std::vector<float>{}, py::arg("optimizer"), py::arg("lr"),
          py::arg("momentum") = 0.0f, py::arg("nesterov") = false, py::arg("weight_decay") = 0.0f,
          py::arg("beta1") = 0.9f, py::arg("beta2") = 0.999f, py::arg("eps") = 1e-8f, py::arg("decoupled") = false,
          py::arg("amsgrad") = false, py::arg("clip_norm") = 0.0f)
      .def("set_seed", &Network::set_seed, py::arg("seed"))
      .def(
          "train_batch",
          [](Network& n, py::array x, py::array y, py::array index) {
            const Device d = n.device();
            Tensor xt = view(x, d, "fit", "x", false), yt = view(y, d, "fit", "y", false);
            Tensor it = view(index, Device{}, "fit", "index", false);
            n.check_inputs("fit", xt, &yt);
            if (it.dtype() != DType::i64 || it.ndim() != 1 || !it.is_contiguous())
              throw TypeError("[fit] index must be a contiguous 1-D int64 array");
            py::gil_scoped_release release;
            return n.train_batch(xt.ptr<float>(), yt.data(), xt.dim(0), it.ptr<int64_t>(), it.dim(0));
          },
          py::arg("x"), py::arg("y"), py::arg("index"),
          "One training step on rows `index` of x and y; returns the batch's mean loss.")
      .def(
          "evaluate",
          [](Network& n, py::array x, py::array y, int64_t batch_size) {
            const Device d = n.device();
            Tensor xt = view(x, d, "evaluate", "x", false), yt = view(y, d, "evaluate", "y", false);
            n.check_inputs("evaluate", xt, &yt);
            py::gil_scoped_release release;
            n.evaluate(xt.ptr<float>(), yt.data(), xt.dim(0), batch_size);
          },
          py::arg("x"), py::arg("y"), py::arg("batch_size"))
      .def(
          "predict",
          [](const Network& n, py::array x, py::array out, int64_t batch_size) {
            const Device d = n.device();
            Tensor xt = view(x, d, "predict", "x", false), o = view(out, d, "predict", "out", true);
            n.check_inputs("predict", xt, nullptr);
            if (o.dtype() != DType::f32) throw TypeError(std::string("[predict] out must be float32, got ") + dtype_name(o.dtype()));
            if (o.shape() != std::vector<int64_t>{xt.dim(0), n.output_dim()} || !o.is_contiguous())
              throw std::invalid_argument("[predict] out has shape " + o.shape_str() +
                                          "; expected a C-contiguous array of shape (" + std::to_string(xt.dim(0)) +
                                          ", " + std::to_string(n.output_dim()) + ")");
            py::gil_scoped_release release;
            n.predict(o.ptr<float>(), xt.ptr<float>(), xt.dim(0), batch_size);
          },
          py::arg("x"), py::arg("out").noconvert(), py::arg("batch_size"))
      .def("metrics",
           [](const Network& n) {
             const MetricCounters& c = n.metrics();
             return py::make_tuple(c.loss_sum, c.correct, c.count);
           })
      .def("reset_metrics", &Network::reset_metrics);
}
