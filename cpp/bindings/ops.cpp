// The op bindings: one _core function per op of ops.h (and first_nonfinite), each
// viewing its arrays through Views and releasing the GIL around the op, and the packed
// weights (PackedS8, PackedCsr) some of them take; customml.ops wraps them.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "bindings/bindings.h"
#include "bindings/views.h"
#include "cpu/finite.h"
#include "cpu/gemm_bf16.h"
#include "ops.h"

namespace py = pybind11;

namespace customml {
namespace {

std::vector<Segment> segments_from(const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  std::vector<Segment> out;
  out.reserve(ranges.size());
  for (const auto& [b, e] : ranges) out.push_back({b, e});
  return out;
}

QuantAxis parse_quant_axis(const char* op, const std::string& s) {
  if (s == "tensor") return QuantAxis::tensor;
  if (s == "row") return QuantAxis::row;
  if (s == "column") return QuantAxis::column;
  throw std::invalid_argument(std::string("[") + op + "] axis must be 'tensor', 'row' or 'column', got '" + s + "'");
}

}  // namespace

void bind_ops(py::module_& m) {
  // The optimizer steps' keyword defaults are the C++ structs' own, written once.
  const SgdConfig sgd;
  const AdamConfig adam;

  m.def(
      "first_nonfinite",
      [](const py::array& x) -> int64_t {
        // No conversion: a copy would cost what the check saves (callers take other
        // arrays to NumPy's isfinite), and the flat index must be the C-order one.
        if (dtype_of(x.dtype()) != DType::f32 || x.dtype().byteorder() == '>' || !(x.flags() & py::array::c_style))
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
      "dense_forward_bf16",
      [](py::object out, py::object x, py::object weight, std::optional<py::object> bias, const std::string& activation,
         const std::string& device) {
        Views views("dense_forward_bf16", device);
        const Activation act = parse_for("dense_forward_bf16", [&] { return parse_activation(activation); });
        Tensor y = views.out(out, "out"), xt = views.in(x, "x"), w = views.in(weight, "weight");
        auto b = views.in(bias, "bias");
        // NumPy has no bfloat16: a uint16 array carries the bits (as onnx.numpy_helper's do).
        if (py::isinstance<py::array>(weight) && py::array(weight).dtype().kind() == 'u' &&
            py::array(weight).dtype().itemsize() == 2)
          w = Tensor(w.data(), DType::bf16, w.shape(), w.strides(), w.device());
        py::gil_scoped_release release;
        ops::dense_forward_bf16(y, xt, w, ptr(b), act);
      },
      py::arg("out"), py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("activation") = "identity",
      py::arg("device") = "cpu",
      "out (batch, out) = activation(bf16(x (batch, in)) . weight (in, out) bfloat16 (uint16 bits) + bias (out)), "
      "accumulated in float32 as vdpbf16ps does.");

  m.def(
      "to_bf16",
      [](const py::array& x) {
        if (dtype_of(x.dtype()) != DType::f32 || x.dtype().byteorder() == '>' || !(x.flags() & py::array::c_style))
          throw TypeError("[to_bf16] x must be a C-contiguous float32 array, got dtype " +
                          std::string(py::str(x.dtype())));
        std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
        py::array_t<uint16_t> out(shape);
        const float* src = static_cast<const float*>(x.data());
        uint16_t* dst = out.mutable_data();
        const int64_t n = x.size();
        py::gil_scoped_release release;
        for (int64_t i = 0; i < n; ++i) dst[i] = cpu::bf16_from_float(src[i]);
        return out;
      },
      py::arg("x"),
      "float32 -> bfloat16 bits (uint16, same shape), rounded to nearest even with denormals to signed zero and NaN "
      "kept NaN, as VCVTNEPS2BF16 rounds.");

  m.def(
      "dense_backward",
      [](std::optional<py::object> dx, py::object dweight, py::object dbias, py::object dy, py::object x,
         py::object weight, py::object y, std::optional<py::object> z, const std::string& activation,
         const std::string& device, const std::string& precision) {
        Views views("dense_backward", device);
        const Activation act = parse_for("dense_backward", [&] { return parse_activation(activation); });
        const Precision prec = parse_for("dense_backward", [&] { return parse_precision(precision); });
        auto dxt = views.out(dx, "dx");
        Tensor dw = views.out(dweight, "dweight"), db = views.out(dbias, "dbias"), dyt = views.in(dy, "dy"),
               xt = views.in(x, "x"), w = views.in(weight, "weight"), yt = views.in(y, "y");
        auto zt = views.in(z, "z");
        py::gil_scoped_release release;
        ops::dense_backward(ptr(dxt), dw, db, dyt, xt, w, yt, ptr(zt), act, prec);
      },
      py::arg("dx"), py::arg("dweight"), py::arg("dbias"), py::arg("dy"), py::arg("x"), py::arg("weight"), py::arg("y"),
      py::arg("z") = py::none(), py::arg("activation") = "identity", py::arg("device") = "cpu",
      py::arg("precision") = "fp32",
      "Gradients of dense_forward: dx (optional), dweight and dbias from dy, the input x, the weight, the output y and "
      "(for gelu) the pre-activation z.");

  m.def(
      "softmax_cross_entropy",
      [](std::optional<py::object> grad_out, py::object logits, py::object labels,
         std::optional<py::object> class_weights, float label_smoothing, const std::string& device,
         std::optional<py::object> row_weights) {
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
      "softmax_cross_entropy_soft",
      [](std::optional<py::object> grad_out, py::object logits, py::object targets, const std::string& device,
         std::optional<py::object> row_weights) {
        Views views("softmax_cross_entropy", device);
        auto g = views.out(grad_out, "grad_out");
        Tensor l = views.in(logits, "logits"), t = views.in(targets, "targets");
        auto rw = views.in(row_weights, "row_weights");
        py::gil_scoped_release release;
        return ops::softmax_cross_entropy_soft(ptr(g), l, t, ptr(rw));
      },
      py::arg("grad_out"), py::arg("logits"), py::arg("targets"), py::arg("device") = "cpu",
      py::arg("row_weights") = py::none(),
      "Weighted mean softmax cross-entropy of logits (batch, classes) against float32 target distributions of the same "
      "shape (soft labels); writes d loss / d logits into grad_out when given.");

  m.def(
      "distillation_loss",
      [](std::optional<py::object> grad_out, py::object student_logits, py::object teacher_logits, py::object labels,
         float temperature, float alpha, const std::string& device, std::optional<py::object> row_weights) {
        Views views("distillation_loss", device);
        auto g = views.out(grad_out, "grad_out");
        Tensor s = views.in(student_logits, "student_logits"), t = views.in(teacher_logits, "teacher_logits");
        Tensor y = views.in(labels, "labels");
        auto rw = views.in(row_weights, "row_weights");
        py::gil_scoped_release release;
        return ops::distillation_loss(ptr(g), s, t, y, temperature, alpha, ptr(rw));
      },
      py::arg("grad_out"), py::arg("student_logits"), py::arg("teacher_logits"), py::arg("labels"),
      py::arg("temperature"), py::arg("alpha"), py::arg("device") = "cpu", py::arg("row_weights") = py::none(),
      "Weighted mean distillation loss alpha T^2 KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) "
      "CE(softmax(student), labels) (Hinton et al. 2015); writes d loss / d student_logits into grad_out when given.");

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
      [](py::object out, py::object x, float rate, uint64_t seed, uint64_t stream, const std::string& device,
         uint64_t first) {
        Views views("dropout", device);
        Tensor y = views.out(out, "out"), xt = views.in(x, "x");
        py::gil_scoped_release release;
        ops::dropout(y, xt, rate, seed, stream, first);
      },
      py::arg("out"), py::arg("x"), py::arg("rate"), py::arg("seed"), py::arg("stream"), py::arg("device") = "cpu",
      py::arg("first") = 0,
      "Inverted dropout: out = x / (1 - rate) where Philox4x32-10(seed, stream, first + index) >= rate, else 0.");

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
        ops::sgd_update(p, g, ptr(v), segs, c);
      },
      py::arg("param"), py::arg("grad"), py::arg("velocity") = py::none(), py::kw_only(), py::arg("lr"),
      py::arg("momentum") = sgd.momentum, py::arg("nesterov") = sgd.nesterov,
      py::arg("weight_decay") = sgd.weight_decay, py::arg("no_decay") = std::vector<std::pair<int64_t, int64_t>>{},
      py::arg("device") = "cpu", "One SGD step in place over flat buffers (torch.optim.SGD semantics, dampening 0).");

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
        ops::adam_update(p, g, mt, vt, ptr(vm), segs, c);
      },
      py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"), py::arg("vmax") = py::none(), py::kw_only(),
      py::arg("lr"), py::arg("beta1") = adam.beta1, py::arg("beta2") = adam.beta2, py::arg("eps") = adam.eps,
      py::arg("weight_decay") = adam.weight_decay, py::arg("decoupled") = adam.decoupled,
      py::arg("amsgrad") = adam.amsgrad, py::arg("step"),
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

  m.def(
      "symmetric_scales",
      [](py::object out, py::object w, const std::string& axis, const std::string& device) {
        Views views("symmetric_scales", device);
        Tensor s = views.out(out, "out"), wt = views.in(w, "w");
        const QuantAxis a = parse_quant_axis("symmetric_scales", axis);
        py::gil_scoped_release release;
        ops::symmetric_scales(s, wt, a);
      },
      py::arg("out"), py::arg("w"), py::arg("axis"), py::arg("device") = "cpu",
      "Symmetric int8 scales of w (rows, cols) float32 into out: max |w| / 127 per column (cols,) or over the "
      "tensor (1,), 1 where that maximum is 0; NaN is left out.");

  m.def(
      "observe_range",
      [](py::object range, py::object scale_out, py::object zero_out, py::object x, float momentum, bool first,
         const std::string& device) {
        Views views("observe_range", device);
        Tensor r = views.out(range, "range"), s = views.out(scale_out, "scale_out"),
               z = views.out(zero_out, "zero_out"), xt = views.in(x, "x");
        py::gil_scoped_release release;
        ops::observe_range(r, s, z, xt, momentum, first);
      },
      py::arg("range"), py::arg("scale_out"), py::arg("zero_out"), py::arg("x"), py::arg("momentum"), py::arg("first"),
      py::arg("device") = "cpu",
      "Moves range (2,) float64 (lo, hi) to x's range with 0 (first) or averages it in with weight 1 - momentum, "
      "then writes its uint8 encoding to scale_out (1,) float32 and zero_out (1,) int32.");

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
      "Prepares the CSR of W^T (offsets, index, values as sparse_dense_forward takes them) of a weight with "
      "in_features "
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
      py::arg("out"), py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("activation") = "identity",
      py::arg("device") = "cpu",
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
      "softmax",
      [](py::object y, py::object x, const std::string& device) {
        Views views("softmax", device);
        Tensor yt = views.out(y, "y"), xt = views.in(x, "x");
        py::gil_scoped_release release;
        ops::softmax(yt, xt);
      },
      py::arg("y"), py::arg("x"), py::arg("device") = "cpu",
      "y = softmax of each row of x (rows, cols), float32; y may be x itself.");
  m.def(
      "sigmoid",
      [](py::object y, py::object x, const std::string& device) {
        Views views("sigmoid", device);
        Tensor yt = views.out(y, "y"), xt = views.in(x, "x");
        py::gil_scoped_release release;
        ops::sigmoid(yt, xt);
      },
      py::arg("y"), py::arg("x"), py::arg("device") = "cpu",
      "y = 1 / (1 + exp(-x)) elementwise, float32, without overflow; y may be x itself.");

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
}

}  // namespace customml
