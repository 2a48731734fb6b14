// Network, the executor: construction from LayerSpecs and compile from LossConfig and
// OptimizerConfig (configs.cpp), the training and evaluation steps through Views, the
// parameter and optimizer-state copies, metrics, pruning, int8 and quantization-aware
// training; predict is predict.cpp's.

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/views.h"
#include "network.h"

namespace py = pybind11;

namespace customml {
namespace {

// A C-contiguous copy of `obj` as T with exactly `shape`, or a ValueError naming the
// argument: the Network's per-layer setters take host arrays of the layer's shape.
template <class T>
py::array_t<T, py::array::c_style> layer_array(const char* op, const char* arg, py::object obj,
                                               std::vector<int64_t> shape) {
  py::array a = py::array::ensure(obj);
  if (!a) throw TypeError(std::string("[") + op + "] " + arg + " must be an array");
  if (!a.dtype().is(py::dtype::of<T>()))
    throw TypeError(std::string("[") + op + "] " + arg + " must have dtype " +
                    py::str(py::dtype::of<T>()).cast<std::string>() + ", got " +
                    py::str(a.dtype()).cast<std::string>());
  bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; same && i < shape.size(); ++i) same = a.shape(static_cast<py::ssize_t>(i)) == shape[i];
  if (!same) {
    std::string want = "(";
    for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
    throw std::invalid_argument(std::string("[") + op + "] " + arg + " must have shape " + want + ")");
  }
  return py::array_t<T, py::array::c_style>::ensure(a);
}

// The soft targets of a training or evaluation call, when given: float32 (rows of x,
// outputs), C-contiguous (the trainer checks that the loss takes them).
void check_soft_targets(const char* op, const Network& n, const Tensor& x, const Tensor* t) {
  if (t &&
      (t->dtype() != DType::f32 || t->shape() != std::vector<int64_t>{x.dim(0), n.output_dim()} || !t->is_contiguous()))
    throw std::invalid_argument(std::string("[") + op +
                                "] soft_targets must be a C-contiguous float32 array of shape (" +
                                std::to_string(x.dim(0)) + ", " + std::to_string(n.output_dim()) + ")");
}

}  // namespace

void bind_network(py::module_& m) {
  m.def(
      "roc_auc",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> logits,
         py::array_t<int32_t, py::array::c_style | py::array::forcecast> labels) {
        if (logits.ndim() != 2 || labels.ndim() != 1 || logits.shape(0) != labels.shape(0) || logits.shape(1) < 1)
          throw std::invalid_argument("[roc_auc] logits must be (rows, outputs >= 1) and labels (rows,), got shapes " +
                                      py::str(py::tuple(logits.attr("shape"))).cast<std::string>() + " and " +
                                      py::str(py::tuple(labels.attr("shape"))).cast<std::string>());
        const size_t rows = static_cast<size_t>(labels.shape(0));
        const int64_t outputs = logits.shape(1);
        const float* l = logits.data();
        const int32_t* y = labels.data();
        py::gil_scoped_release release;
        return roc_auc(l, y, rows, outputs);
      },
      py::arg("logits"), py::arg("labels"),
      "Network.roc_auc's area of the given rows (Network.roc_scores' arrays, e.g. gathered from the ranks).");
  py::class_<Network> network(m, "Network", "The compiled layer plan and its flat buffers.");
  network
      .def(py::init([](int64_t input_dim, std::vector<LayerSpec> layers, const std::string& device) {
             return std::make_unique<Network>(input_dim, std::move(layers), Device::parse(device));
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
      .def("begin_update", &Network::begin_update,
           "Opens a transaction: until the matching end_update, predict runs the weights before it.")
      .def("end_update", &Network::end_update, "Ends a transaction opened by begin_update.")
      .def(
          "set_affine",
          [](Network& n, int64_t layer, py::array_t<float, py::array::c_style | py::array::forcecast> scale,
             py::array_t<float, py::array::c_style | py::array::forcecast> shift) {
            if (scale.ndim() != 1 || shift.ndim() != 1 || scale.size() != n.input_dim() ||
                shift.size() != n.input_dim())
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
          [](Network& n, int slot, int64_t offset,
             py::array_t<float, py::array::c_style | py::array::forcecast> values) {
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
          [](Network& n, const LossConfig& loss, const OptimizerConfig& optimizer, const std::string& precision) {
            n.compile(loss, optimizer, parse_for("compile", [&] { return parse_precision(precision); }));
          },
          py::arg("loss").none(false), py::arg("optimizer").none(false), py::arg("precision") = "fp32",
          "Sets the loss, the optimizer and the precision of the dense GEMMs ('fp32', 'tf32', 'bf16' or 'fp16', "
          "which the device must support), and clears the optimizer state, the step count and the loss scale.")
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
      .def("set_cuda_graph", &Network::set_cuda_graph, py::arg("on"),
           "Runs each training step as one recorded device graph (compile's cuda_graph); ValueError on a device "
           "without graphs.")
      .def_property_readonly("cuda_graph", &Network::cuda_graph)
      .def_property_readonly("cuda_graph_replays", &Network::cuda_graph_replays,
                             "Training steps replayed from a recorded graph since set_cuda_graph(True).")
      .def_property_readonly("cuda_graph_recordings", &Network::cuda_graph_recordings,
                             "Training steps recorded as a graph since set_cuda_graph(True).")
      .def(
          "train_batch",
          [](Network& n, py::object x, py::object y, py::object index, std::optional<py::object> sample_weight,
             std::optional<py::object> soft_targets) {
            Views views("fit", Device{});  // the executor takes host arrays and stages them
            Tensor xt = views.in(x, "x"), yt = views.in(y, "y");
            Tensor it = views.in(index, "index");
            auto wt = views.in(sample_weight, "sample_weight");
            auto tt = views.in(soft_targets, "soft_targets");
            n.check_inputs("fit", xt, &yt, ptr(wt));
            if (it.dtype() != DType::i64 || it.ndim() != 1 || !it.is_contiguous())
              throw TypeError("[fit] index must be a contiguous 1-D int64 array");
            check_soft_targets("fit", n, xt, ptr(tt));
            py::gil_scoped_release release;
            n.train_batch(xt.ptr<float>(), yt.data(), wt ? wt->ptr<float>() : nullptr, xt.dim(0), it.ptr<int64_t>(),
                          it.dim(0), tt ? tt->ptr<float>() : nullptr);
          },
          py::arg("x"), py::arg("y"), py::arg("index"), py::arg("sample_weight") = py::none(),
          py::arg("soft_targets") = py::none(),
          "One training step on rows `index` of x and y (and sample_weight, float32 (n,), when given); its loss and "
          "metric statistics stay on the device until metrics() reads them. soft_targets (n, outputs) float32: the "
          "distillation loss's teacher logits, or softmax cross-entropy's probability targets (y: their argmax).")
      // Data-parallel training (python/customml/distributed.py): train_batch in two halves.
      .def(
          "compute_gradients",
          [](Network& n, py::object x, py::object y, py::object index, std::optional<py::object> sample_weight,
             double weight, int64_t global_rows, int64_t first_row,
             std::function<std::pair<float, float>(float, float)> combine_range) {
            Views views("fit", Device{});
            Tensor xt = views.in(x, "x"), yt = views.in(y, "y");
            Tensor it = views.in(index, "index");
            auto wt = views.in(sample_weight, "sample_weight");
            n.check_inputs("fit", xt, &yt, ptr(wt));
            if (it.dtype() != DType::i64 || it.ndim() != 1 || !it.is_contiguous())
              throw TypeError("[fit] index must be a contiguous 1-D int64 array");
            if (!(std::isfinite(weight) && weight >= 0.0) || global_rows < 0 || first_row < 0)
              throw std::invalid_argument("[fit] a batch share needs a finite weight >= 0 and row counts >= 0");
            // combine_range, a Python function, takes the GIL back when it runs, with the
            // network's lock held: it must not call the network (distributed.py's all-reduces).
            py::gil_scoped_release release;
            n.compute_gradients(xt.ptr<float>(), yt.data(), wt ? wt->ptr<float>() : nullptr, xt.dim(0),
                                it.ptr<int64_t>(), it.dim(0),
                                BatchShare{weight, global_rows, first_row, std::move(combine_range)});
          },
          py::arg("x"), py::arg("y"), py::arg("index"), py::arg("sample_weight") = py::none(), py::arg("weight") = 1.0,
          py::arg("global_rows") = 0, py::arg("first_row") = 0, py::arg("combine_range") = py::none(),
          "Forward, loss and backward of rows `index` (a rank's share of a global batch; may be empty) into the "
          "gradient buffer, the loss gradient scaled by `weight` (the share's fraction of the global batch's row "
          "weights); `first_row`: the global batch's row of index[0], for the dropout masks; `combine_range`: "
          "(lo, hi) -> (lo, hi), this rank's batch range of a fake-quantized input to the global batch's.")
      .def("apply_gradients", &Network::apply_gradients, py::arg("rows"), py::call_guard<py::gil_scoped_release>(),
           "Unscale (fp16), penalty, clipping, the update and the masks, from the gradient buffer; `rows`: the "
           "share's row count (the penalty's weight in the loss metric).")
      .def(
          "gradients",
          [](py::object self) {
            Network& n = self.cast<Network&>();
            if (n.device().kind != DeviceKind::cpu)
              throw std::invalid_argument("[gradients] a view needs a cpu network; use read_gradients on " +
                                          n.device().name());
            return py::array_t<float>({n.num_params()}, {static_cast<py::ssize_t>(sizeof(float))}, n.gradients(), self);
          },
          "The flat gradient buffer of a cpu network as a NumPy view (no copy), for an in-place all-reduce.")
      .def_property_readonly(
          "gradient_address", [](Network& n) { return reinterpret_cast<uintptr_t>(n.gradients()); },
          "The device address of the flat gradient buffer (num_params float32), for NCCL.")
      .def_property_readonly(
          "stream_handle", [](const Network& n) { return backend_for(n.device()).stream_handle(); },
          "The queue the network's device work goes to (a cudaStream_t as an integer; 0 where ops run to "
          "completion): NCCL's all-reduce is enqueued there, between the backward pass and the update.")
      .def(
          "read_gradients",
          [](const Network& n, py::array_t<float, py::array::c_style> out) {
            if (out.size() != n.num_params()) throw std::invalid_argument("[read_gradients] out must hold num_params");
            float* dst = out.mutable_data();
            py::gil_scoped_release release;
            n.read_gradients(dst);
          },
          py::arg("out"), "Copies the gradient buffer into out (num_params float32).")
      .def("_read_norm_slots", &Network::read_norm_slots, py::call_guard<py::gil_scoped_release>(),
           "The last training step's per-tile sums of squares of its gradients, which its update clipped by "
           "(empty where a pass of its own took the norm); for tests.")
      .def(
          "write_gradients",
          [](Network& n, py::array_t<float, py::array::c_style> values) {
            if (values.size() != n.num_params())
              throw std::invalid_argument("[write_gradients] values must hold num_params");
            const float* src = values.data();
            py::gil_scoped_release release;
            n.write_gradients(src);
          },
          py::arg("values"), "Copies values (num_params float32) into the gradient buffer.")
      .def(
          "evaluate",
          [](Network& n, py::object x, py::object y, int64_t batch_size, std::optional<py::object> soft_targets) {
            Views views("evaluate", Device{});  // the executor takes host arrays and stages them
            Tensor xt = views.in(x, "x"), yt = views.in(y, "y");
            auto tt = views.in(soft_targets, "soft_targets");
            n.check_inputs("evaluate", xt, &yt);
            check_soft_targets("evaluate", n, xt, ptr(tt));
            py::gil_scoped_release release;
            n.evaluate(xt.ptr<float>(), yt.data(), xt.dim(0), batch_size, tt ? tt->ptr<float>() : nullptr);
          },
          py::arg("x"), py::arg("y"), py::arg("batch_size"), py::arg("soft_targets") = py::none())
      .def(
          "metrics",
          [](const Network& n) {
            MetricCounters c;
            {
              py::gil_scoped_release release;
              c = n.metrics();
            }
            return py::make_tuple(c.loss_sum, c.correct, c.count);
          },
          "(loss_sum, correct, count) since reset_metrics(): one read of the device.")
      // Waits for the executor's lock (a running predict) without holding the GIL.
      .def("reset_metrics", &Network::reset_metrics, py::call_guard<py::gil_scoped_release>())
      .def(
          "set_metric_stats",
          [](Network& n, const MetricStats& stats) {
            py::gil_scoped_release release;
            n.set_metric_stats(stats);
          },
          py::arg("stats").none(false))
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
      .def(
          "regression_shift",
          [](const Network& n) {
            std::vector<double> s;
            {
              py::gil_scoped_release release;
              s = n.regression_shift();
            }
            py::array_t<double> a(static_cast<int64_t>(s.size()));
            std::copy(s.begin(), s.end(), a.mutable_data());
            return a;
          },
          "(outputs,) float64: the shift s of regression_stats' target moments (zeros before the first batch).")
      .def("roc_auc",
           [](Network& n) {
             py::gil_scoped_release release;
             return n.roc_auc();
           })
      .def(
          "roc_scores",
          [](const Network& n) {
            std::vector<float> logits;
            std::vector<int32_t> labels;
            {
              py::gil_scoped_release release;
              n.roc_scores(&logits, &labels);
            }
            const int64_t rows = static_cast<int64_t>(labels.size());
            py::array_t<float> l({rows, n.output_dim()});
            py::array_t<int32_t> y(rows);
            std::copy(logits.begin(), logits.end(), l.mutable_data());
            std::copy(labels.begin(), labels.end(), y.mutable_data());
            return py::make_tuple(l, y);
          },
          "(logits (rows, outputs) float32, labels (rows,) int32): the rows roc_auc ranks since the last reset.")
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
      .def("set_bf16", &Network::set_bf16, py::arg("layer"), py::arg("on"),
           "Stores Dense layer `layer`'s weights as bf16 (rounded to nearest even now and after every write; inference "
           "multiplies them as bf16), or as float32 again.")
      .def("bf16", &Network::bf16, py::arg("layer"), "Whether a Dense layer's weights are bf16.")
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
      .def_property_readonly("inference_bytes",
                             // the GIL released: a stale plan is built first
                             py::cpp_function(&Network::inference_bytes, py::call_guard<py::gil_scoped_release>()),
                             "The inference plan's memory in bytes (its weights' copy and the packed, int8, sparse and "
                             "bf16 layouts), built first if stale.")
      .def("set_fake_quantization", &Network::set_fake_quantization, py::arg("layer"), py::arg("per_channel") = true,
           py::arg("inputs") = true, py::arg("momentum") = 0.9f,
           "Quantization-aware training of Dense layer `layer`: train_batch's forward and backward passes use "
           "dequantize(quantize(W)) (int8, per output channel or per tensor) and, with inputs, the input "
           "fake-quantized to uint8 over a moving average of its range; gradients reach the float weights unchanged "
           "(straight-through estimator).")
      .def("clear_fake_quantization", &Network::clear_fake_quantization, py::arg("layer"))
      .def("fake_input_range", &Network::fake_input_range, py::arg("layer"),
           "(lo, hi): the moving-average input range of a fake-quantized layer; (0, 0) before its first batch.");
  bind_predict(network);
}

}  // namespace customml
