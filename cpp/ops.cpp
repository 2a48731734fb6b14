#include "ops.h"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace customml::ops {
namespace {

[[noreturn]] void fail(const char* op, const std::string& msg) {
  throw std::invalid_argument(std::string("[") + op + "] " + msg);
}

void check_dtype(const char* op, const char* name, const Tensor& t, DType want) {
  if (t.dtype() != want)
    throw TypeError(std::string("[") + op + "] " + name + " must be " + dtype_name(want) +
                    ", got " + dtype_name(t.dtype()));
}

// dtype, rank and layout of one argument.
void check(const char* op, const char* name, const Tensor& t, DType want, int ndim) {
  check_dtype(op, name, t, want);
  if (ndim >= 0 && t.ndim() != ndim)
    fail(op, std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " + t.shape_str());
  if (!t.is_contiguous())
    fail(op, std::string(name) + " must be C-contiguous (pass numpy.ascontiguousarray(" + name + "))");
}

void check_shape(const char* op, const char* name, const Tensor& t, const std::vector<int64_t>& want) {
  if (t.shape() != want) {
    Tensor expected(nullptr, t.dtype(), want, std::vector<int64_t>(want.size(), 0));
    fail(op, std::string(name) + " has shape " + t.shape_str() + ", expected " + expected.shape_str());
  }
}

void check_same_shape(const char* op, const char* name, const Tensor& t, const char* ref_name,
                      const Tensor& ref) {
  if (t.shape() != ref.shape())
    fail(op, std::string(name) + " has shape " + t.shape_str() + " but " + ref_name + " has shape " +
                 ref.shape_str());
}

void check_device(const char* op, const char* name, const Tensor& t, const Tensor& ref) {
  if (!(t.device() == ref.device()))
    fail(op, std::string(name) + " is on " + t.device().name() + " but the other arguments are on " +
                 ref.device().name());
}

// An output must not share memory with an input it is computed from.
void check_no_overlap(const char* op, const char* out_name, const Tensor& out, const char* in_name,
                      const Tensor& in) {
  const char* o = static_cast<const char*>(out.data());
  const char* i = static_cast<const char*>(in.data());
  const size_t ob = static_cast<size_t>(out.numel()) * dtype_size(out.dtype());
  const size_t ib = static_cast<size_t>(in.numel()) * dtype_size(in.dtype());
  if (ob && ib && o < i + ib && i < o + ob)
    fail(op, std::string(out_name) + " shares memory with " + in_name + "; pass a separate array");
}

void check_finite_param(const char* op, const char* name, float v) {
  if (!std::isfinite(v)) fail(op, std::string(name) + " must be finite, got " + std::to_string(v));
}

// x: (batch, in) against weight: (in, out), both sizes of weight >= 1.
void check_x_against_weight(const char* op, const Tensor& x, const Tensor& w) {
  if (x.dim(1) != w.dim(0))
    fail(op, "x has " + std::to_string(x.dim(1)) + " columns but weight has " + std::to_string(w.dim(0)) +
                 " rows");
  if (w.dim(0) == 0 || w.dim(1) == 0) fail(op, "weight has shape " + w.shape_str() + "; both sizes must be >= 1");
}

// The elements of a small tensor (labels, class weights) on the host, for the checks
// that read values: device memory is not host-addressable on every backend.
template <class T>
std::vector<T> host_values(const Tensor& t) {
  std::vector<T> v(static_cast<size_t>(t.numel()));
  backend_for(t.device()).copy_to_host(v.data(), t.data(), sizeof(T) * v.size());
  return v;
}

void check_labels(const char* op, const Tensor& labels, int64_t classes) {
  const std::vector<int32_t> lab = host_values<int32_t>(labels);
  for (size_t i = 0; i < lab.size(); ++i)
    if (lab[i] < 0 || lab[i] >= classes)
      throw std::out_of_range("[" + std::string(op) + "] labels[" + std::to_string(i) + "] = " +
                              std::to_string(lab[i]) + " is outside [0, " + std::to_string(classes) + ")");
}

void check_precision(const char* op, const Backend& be, Precision p) {
  if (!be.supports(p))
    fail(op, std::string("precision '") + precision_name(p) + "' is not supported on device '" + be.name() +
                 "' (tf32, bf16 and fp16 run on CUDA tensor cores)");
}

// The elements of an index array as host memory: the array itself on the CPU (the
// sparse ops check every index on every call, so no copy), a copy elsewhere.
template <class T>
class HostView {
 public:
  explicit HostView(const Tensor& t) {
    if (t.device().kind == DeviceKind::cpu) {
      data_ = t.ptr<T>();
    } else {
      copy_ = host_values<T>(t);
      data_ = copy_.data();
    }
  }
  const T* data() const { return data_; }

 private:
  const T* data_ = nullptr;
  std::vector<T> copy_;
};

// The optional bias of the sparse products: (out) f32 on x's device.
void check_sparse_bias(const char* op, const Tensor* b, const Tensor& x, const Tensor& y, int64_t out) {
  if (!b) return;
  check(op, "bias", *b, DType::f32, 1);
  check_shape(op, "bias", *b, {out});
  check_device(op, "bias", *b, x);
  check_no_overlap(op, "out", y, "bias", *b);
}

float* f32(const Tensor& t) { return t.ptr<float>(); }
float* f32(const Tensor* t) { return t ? t->ptr<float>() : nullptr; }

}  // namespace

void dense_forward(const Tensor& y, const Tensor* z, const Tensor& x, const Tensor& w, const Tensor& b,
                   Activation act, Precision precision) {
  const char* op = "dense_forward";
  check(op, "x", x, DType::f32, 2);
  check(op, "weight", w, DType::f32, 2);
  check(op, "bias", b, DType::f32, 1);
  check(op, "out", y, DType::f32, 2);
  check_x_against_weight(op, x, w);
  check_shape(op, "bias", b, {w.dim(1)});
  check_shape(op, "out", y, {x.dim(0), w.dim(1)});
  for (const auto& [n, t] : {std::pair{"weight", &w}, {"bias", &b}, {"out", &y}}) check_device(op, n, *t, x);
  check_no_overlap(op, "out", y, "x", x);
  check_no_overlap(op, "out", y, "weight", w);
  check_no_overlap(op, "out", y, "bias", b);
  if (z) {
    check(op, "preact_out", *z, DType::f32, 2);
    check_shape(op, "preact_out", *z, y.shape());
    check_device(op, "preact_out", *z, x);
    check_no_overlap(op, "preact_out", *z, "out", y);
    check_no_overlap(op, "preact_out", *z, "x", x);
    check_no_overlap(op, "preact_out", *z, "weight", w);
    check_no_overlap(op, "preact_out", *z, "bias", b);
  }
  Backend& be = backend_for(x.device());
  check_precision(op, be, precision);
  be.dense_forward(f32(y), f32(z), f32(x), f32(w), f32(b), {x.dim(0), x.dim(1), w.dim(1), precision}, act);
}

void dense_backward(const Tensor* dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                    const Tensor& x, const Tensor& w, const Tensor& y, const Tensor* z, Activation act,
                    Precision precision) {
  const char* op = "dense_backward";
  check(op, "dy", dy, DType::f32, 2);
  check(op, "x", x, DType::f32, 2);
  check(op, "weight", w, DType::f32, 2);
  check(op, "y", y, DType::f32, 2);
  check(op, "dweight", dw, DType::f32, 2);
  check(op, "dbias", db, DType::f32, 1);
  check_x_against_weight(op, x, w);
  const int64_t batch = x.dim(0), in = w.dim(0), out = w.dim(1);
  check_shape(op, "dy", dy, {batch, out});
  check_shape(op, "y", y, {batch, out});
  check_shape(op, "dweight", dw, {in, out});
  check_shape(op, "dbias", db, {out});
  if (activation_needs_preact(act) && !z)
    fail(op, std::string("activation '") + activation_name(act) + "' needs the pre-activation z");
  if (z) {
    check(op, "z", *z, DType::f32, 2);
    check_shape(op, "z", *z, {batch, out});
  }
  std::vector<std::pair<const char*, const Tensor*>> inputs{{"dy", &dy}, {"x", &x}, {"weight", &w}, {"y", &y}};
  if (z) inputs.emplace_back("z", z);
  std::vector<std::pair<const char*, const Tensor*>> outputs{{"dweight", &dw}, {"dbias", &db}};
  if (dx) {
    check(op, "dx", *dx, DType::f32, 2);
    check_shape(op, "dx", *dx, {batch, in});
    outputs.emplace_back("dx", dx);
  }
  for (const auto& [on, o] : outputs) {
    check_device(op, on, *o, x);
    for (const auto& [in_name, i] : inputs) check_no_overlap(op, on, *o, in_name, *i);
  }
  for (const auto& [in_name, i] : inputs) check_device(op, in_name, *i, x);
  for (size_t a = 0; a < outputs.size(); ++a)
    for (size_t c = a + 1; c < outputs.size(); ++c)
      check_no_overlap(op, outputs[a].first, *outputs[a].second, outputs[c].first, *outputs[c].second);
  Backend& be = backend_for(x.device());
  check_precision(op, be, precision);
  // The op leaves dy intact, so dz gets its own buffer (the network executor reuses dy).
  Tensor dz = Tensor::empty(DType::f32, {batch, out});
  be.dense_backward(f32(dx), f32(dw), f32(db), f32(dz), f32(dy), f32(x), f32(w), f32(y), f32(z),
                    {batch, in, out, precision}, act);
}

namespace {
// row_weights: (rows) f32, on a's device, finite and >= 0; not overlapping grad.
void check_row_weights(const char* op, const Tensor* row_weights, int64_t rows, const Tensor& a, const Tensor* grad) {
  if (!row_weights) return;
  check(op, "row_weights", *row_weights, DType::f32, 1);
  check_shape(op, "row_weights", *row_weights, {rows});
  check_device(op, "row_weights", *row_weights, a);
  if (grad) check_no_overlap(op, "grad_out", *grad, "row_weights", *row_weights);
  const std::vector<float> w = host_values<float>(*row_weights);
  for (int64_t i = 0; i < rows; ++i)
    if (!(std::isfinite(w[i]) && w[i] >= 0.0f))
      fail(op, "row_weights[" + std::to_string(i) + "] = " + std::to_string(w[i]) + " must be finite and >= 0");
}
}  // namespace

double softmax_cross_entropy(const Tensor* grad, const Tensor& logits, const Tensor& labels,
                             const Tensor* class_weights, float label_smoothing, const Tensor* row_weights) {
  const char* op = "softmax_cross_entropy";
  check(op, "logits", logits, DType::f32, 2);
  check(op, "labels", labels, DType::i32, 1);
  const int64_t batch = logits.dim(0), classes = logits.dim(1);
  if (batch == 0) fail(op, "logits is empty (batch of 0 rows): the mean loss is undefined");
  if (classes == 0) fail(op, "logits has 0 columns; at least one class is needed");
  check_shape(op, "labels", labels, {batch});
  check_device(op, "labels", labels, logits);
  if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
    fail(op, "label_smoothing must be in [0, 1], got " + std::to_string(label_smoothing));
  if (class_weights) {
    check(op, "class_weights", *class_weights, DType::f32, 1);
    check_shape(op, "class_weights", *class_weights, {classes});
    check_device(op, "class_weights", *class_weights, logits);
    const std::vector<float> cw = host_values<float>(*class_weights);
    for (int64_t c = 0; c < classes; ++c)
      if (!(std::isfinite(cw[c]) && cw[c] >= 0.0f))
        fail(op, "class_weights[" + std::to_string(c) + "] = " + std::to_string(cw[c]) +
                     " must be finite and >= 0");
  }
  check_labels(op, labels, classes);
  if (grad) {
    check(op, "grad_out", *grad, DType::f32, 2);
    check_shape(op, "grad_out", *grad, logits.shape());
    check_device(op, "grad_out", *grad, logits);
    check_no_overlap(op, "grad_out", *grad, "logits", logits);
    check_no_overlap(op, "grad_out", *grad, "labels", labels);
    if (class_weights) check_no_overlap(op, "grad_out", *grad, "class_weights", *class_weights);
  }
  check_row_weights(op, row_weights, batch, logits, grad);
  return backend_for(logits.device())
      .softmax_cross_entropy(f32(grad), f32(logits), labels.ptr<int32_t>(), f32(class_weights), f32(row_weights),
                             batch, classes, label_smoothing);
}

namespace {
// Elementwise losses: same-shape f32 inputs, not empty, optional same-shape grad.
int64_t check_pointwise_loss(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                             const Tensor& b, const Tensor* grad) {
  check(op, a_name, a, DType::f32, -1);
  check(op, b_name, b, DType::f32, -1);
  check_same_shape(op, b_name, b, a_name, a);
  check_device(op, b_name, b, a);
  if (a.numel() == 0) fail(op, std::string(a_name) + " is empty: the mean loss is undefined");
  if (grad) {
    check(op, "grad_out", *grad, DType::f32, -1);
    check_same_shape(op, "grad_out", *grad, a_name, a);
    check_device(op, "grad_out", *grad, a);
    check_no_overlap(op, "grad_out", *grad, a_name, a);
    check_no_overlap(op, "grad_out", *grad, b_name, b);
  }
  return a.numel();
}
}  // namespace

namespace {
// The (rows, cols) view of a pointwise loss's n elements: rows = the first dimension
// with row weights (which need one), else a single row.
std::pair<int64_t, int64_t> loss_rows(const char* op, const char* a_name, const Tensor& a, int64_t n,
                                      const Tensor* row_weights) {
  if (!row_weights) return {1, n};
  if (a.ndim() == 0) fail(op, std::string(a_name) + " is a scalar; row_weights needs a first (row) dimension");
  return {a.dim(0), n / a.dim(0)};
}
}  // namespace

double binary_cross_entropy_with_logits(const Tensor* grad, const Tensor& logits, const Tensor& targets,
                                        const Tensor* row_weights) {
  const char* op = "binary_cross_entropy_with_logits";
  const int64_t n = check_pointwise_loss(op, "logits", logits, "targets", targets, grad);
  const auto [rows, cols] = loss_rows(op, "logits", logits, n, row_weights);
  check_row_weights(op, row_weights, rows, logits, grad);
  return backend_for(logits.device())
      .binary_cross_entropy_with_logits(f32(grad), f32(logits), f32(targets), f32(row_weights), rows, cols);
}

double mse(const Tensor* grad, const Tensor& pred, const Tensor& target, const Tensor* row_weights) {
  const char* op = "mse";
  const int64_t n = check_pointwise_loss(op, "pred", pred, "target", target, grad);
  const auto [rows, cols] = loss_rows(op, "pred", pred, n, row_weights);
  check_row_weights(op, row_weights, rows, pred, grad);
  return backend_for(pred.device()).mse(f32(grad), f32(pred), f32(target), f32(row_weights), rows, cols);
}

int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  const char* op = "count_correct";
  check(op, "logits", logits, DType::f32, 2);
  check(op, "labels", labels, DType::i32, 1);
  if (logits.dim(1) == 0) fail(op, "logits has 0 columns; at least one class is needed");
  check_shape(op, "labels", labels, {logits.dim(0)});
  check_device(op, "labels", labels, logits);
  // One column is a binary classifier: labels 0 and 1.
  check_labels(op, labels, logits.dim(1) == 1 ? 2 : logits.dim(1));
  return backend_for(logits.device())
      .count_correct(f32(logits), labels.ptr<int32_t>(), logits.dim(0), logits.dim(1));
}

void confusion_matrix_update(const Tensor& counts, const Tensor& logits, const Tensor& labels) {
  const char* op = "confusion_matrix_update";
  check(op, "counts", counts, DType::i64, 2);
  check(op, "logits", logits, DType::f32, 2);
  check(op, "labels", labels, DType::i32, 1);
  const int64_t k = logits.dim(1);
  if (k == 0) fail(op, "logits has 0 columns; at least one class is needed");
  // One column is a binary classifier: labels 0 and 1, a 2 x 2 matrix.
  const int64_t classes = k == 1 ? 2 : k;
  check_shape(op, "labels", labels, {logits.dim(0)});
  check_shape(op, "counts", counts, {classes, classes});
  check_device(op, "labels", labels, logits);
  check_device(op, "counts", counts, logits);
  check_no_overlap(op, "counts", counts, "logits", logits);
  check_no_overlap(op, "counts", counts, "labels", labels);
  check_labels(op, labels, classes);
  backend_for(logits.device())
      .confusion_matrix_update(counts.ptr<int64_t>(), f32(logits), labels.ptr<int32_t>(), logits.dim(0), k);
}

void regression_stats_update(const Tensor& stats, const Tensor& pred, const Tensor& target, const Tensor& shift) {
  const char* op = "regression_stats_update";
  check(op, "stats", stats, DType::f64, 2);
  check(op, "pred", pred, DType::f32, 2);
  check(op, "target", target, DType::f32, 2);
  check_same_shape(op, "target", target, "pred", pred);
  check(op, "shift", shift, DType::f64, 1);
  check_shape(op, "stats", stats, {4, pred.dim(1)});
  check_shape(op, "shift", shift, {pred.dim(1)});
  check_device(op, "target", target, pred);
  check_device(op, "shift", shift, pred);
  check_device(op, "stats", stats, pred);
  check_no_overlap(op, "stats", stats, "shift", shift);
  check_no_overlap(op, "stats", stats, "pred", pred);
  check_no_overlap(op, "stats", stats, "target", target);
  backend_for(pred.device())
      .regression_stats_update(stats.ptr<double>(), f32(pred), f32(target), shift.ptr<double>(), pred.dim(0),
                               pred.dim(1));
}

void dropout(const Tensor& y, const Tensor& x, float rate, uint64_t seed, uint64_t stream) {
  const char* op = "dropout";
  check(op, "x", x, DType::f32, -1);
  check(op, "out", y, DType::f32, -1);
  check_same_shape(op, "out", y, "x", x);
  check_device(op, "out", y, x);
  if (!(rate >= 0.0f && rate < 1.0f)) fail(op, "rate must be in [0, 1), got " + std::to_string(rate));
  // In place is allowed (y == x exactly); a partial overlap is not.
  if (y.data() != x.data()) check_no_overlap(op, "out", y, "x", x);
  backend_for(x.device()).dropout(f32(y), f32(x), x.numel(), rate, seed, stream);
}

void check_segments(const char* op, const std::vector<Segment>& segments, int64_t n) {
  int64_t prev_end = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const Segment& seg = segments[s];
    if (seg.begin < prev_end || seg.end < seg.begin || seg.end > n) {
      std::ostringstream os;
      os << "no_decay segment " << s << " = [" << seg.begin << ", " << seg.end
         << ") must lie in [0, " << n << "), after the previous one, with begin <= end";
      fail(op, os.str());
    }
    prev_end = seg.end;
  }
}

void check_sgd_config(const char* op, const SgdConfig& c) {
  check_finite_param(op, "lr", c.lr);
  check_finite_param(op, "momentum", c.momentum);
  check_finite_param(op, "weight_decay", c.weight_decay);
  if (c.lr < 0.0f) fail(op, "lr must be >= 0, got " + std::to_string(c.lr));
  if (c.momentum < 0.0f) fail(op, "momentum must be >= 0, got " + std::to_string(c.momentum));
  if (c.weight_decay < 0.0f) fail(op, "weight_decay must be >= 0, got " + std::to_string(c.weight_decay));
  if (c.nesterov && c.momentum == 0.0f) fail(op, "nesterov needs momentum > 0");
}

void check_adam_config(const char* op, const AdamConfig& c) {
  check_finite_param(op, "lr", c.lr);
  check_finite_param(op, "eps", c.eps);
  check_finite_param(op, "weight_decay", c.weight_decay);
  if (c.lr < 0.0f) fail(op, "lr must be >= 0, got " + std::to_string(c.lr));
  if (!(c.beta1 >= 0.0f && c.beta1 < 1.0f)) fail(op, "beta1 must be in [0, 1), got " + std::to_string(c.beta1));
  if (!(c.beta2 >= 0.0f && c.beta2 < 1.0f)) fail(op, "beta2 must be in [0, 1), got " + std::to_string(c.beta2));
  if (!(c.eps > 0.0f)) fail(op, "eps must be > 0, got " + std::to_string(c.eps));
  if (c.weight_decay < 0.0f) fail(op, "weight_decay must be >= 0, got " + std::to_string(c.weight_decay));
  if (c.step < 1) fail(op, "step must be >= 1 (the count of updates including this one), got " + std::to_string(c.step));
}

void sgd_update(const Tensor& param, const Tensor* velocity, const Tensor& grad,
                const std::vector<Segment>& no_decay, const SgdConfig& config) {
  const char* op = "sgd_update";
  check(op, "param", param, DType::f32, -1);
  check(op, "grad", grad, DType::f32, -1);
  check_same_shape(op, "grad", grad, "param", param);
  check_device(op, "grad", grad, param);
  check_sgd_config(op, config);
  if (config.momentum != 0.0f && !velocity) fail(op, "momentum > 0 needs a velocity buffer");
  if (velocity) {
    check(op, "velocity", *velocity, DType::f32, -1);
    check_same_shape(op, "velocity", *velocity, "param", param);
    check_device(op, "velocity", *velocity, param);
    check_no_overlap(op, "velocity", *velocity, "param", param);
    check_no_overlap(op, "velocity", *velocity, "grad", grad);
  }
  check_no_overlap(op, "param", param, "grad", grad);
  check_segments(op, no_decay, param.numel());
  backend_for(param.device())
      .sgd_update(f32(param), f32(velocity), f32(grad), param.numel(), no_decay.data(),
                  static_cast<int64_t>(no_decay.size()), config);
}

void adam_update(const Tensor& param, const Tensor& m, const Tensor& v, const Tensor* vmax,
                 const Tensor& grad, const std::vector<Segment>& no_decay, const AdamConfig& config) {
  const char* op = "adam_update";
  check(op, "param", param, DType::f32, -1);
  std::vector<std::pair<const char*, const Tensor*>> all{{"param", &param}, {"m", &m}, {"v", &v}, {"grad", &grad}};
  if (config.amsgrad && !vmax) fail(op, "amsgrad needs a vmax buffer");
  if (vmax) all.emplace_back("vmax", vmax);
  for (size_t a = 1; a < all.size(); ++a) {
    check(op, all[a].first, *all[a].second, DType::f32, -1);
    check_same_shape(op, all[a].first, *all[a].second, "param", param);
    check_device(op, all[a].first, *all[a].second, param);
  }
  for (size_t a = 0; a < all.size(); ++a)
    for (size_t c = a + 1; c < all.size(); ++c)
      check_no_overlap(op, all[a].first, *all[a].second, all[c].first, *all[c].second);
  check_adam_config(op, config);
  check_segments(op, no_decay, param.numel());
  backend_for(param.device())
      .adam_update(f32(param), f32(m), f32(v), config.amsgrad ? f32(vmax) : nullptr, f32(grad),
                   param.numel(), no_decay.data(), static_cast<int64_t>(no_decay.size()), config);
}

double clip_by_global_norm(const Tensor& grad, float max_norm) {
  const char* op = "clip_by_global_norm";
  check(op, "grad", grad, DType::f32, -1);
  if (!(std::isfinite(max_norm) && max_norm > 0.0f))
    fail(op, "max_norm must be finite and > 0, got " + std::to_string(max_norm));
  return backend_for(grad.device()).clip_by_global_norm(f32(grad), grad.numel(), max_norm);
}

double l1_l2_penalty(const Tensor* grad, const Tensor& param, float l1, float l2) {
  const char* op = "l1_l2_penalty";
  check(op, "param", param, DType::f32, -1);
  if (grad) {
    check(op, "grad", *grad, DType::f32, -1);
    check_same_shape(op, "grad", *grad, "param", param);
    check_device(op, "grad", *grad, param);
    check_no_overlap(op, "grad", *grad, "param", param);
  }
  if (!(std::isfinite(l1) && l1 >= 0.0f)) fail(op, "l1 must be finite and >= 0, got " + std::to_string(l1));
  if (!(std::isfinite(l2) && l2 >= 0.0f)) fail(op, "l2 must be finite and >= 0, got " + std::to_string(l2));
  return backend_for(param.device())
      .l1_l2_penalty(grad ? f32(*grad) : nullptr, f32(param), param.numel(), l1, l2);
}

void apply_mask(const Tensor& param, const Tensor& keep) {
  const char* op = "apply_mask";
  check(op, "param", param, DType::f32, -1);
  check(op, "keep", keep, DType::u8, -1);
  check_same_shape(op, "keep", keep, "param", param);
  check_device(op, "keep", keep, param);
  check_no_overlap(op, "param", param, "keep", keep);
  backend_for(param.device()).apply_mask(f32(param), keep.ptr<uint8_t>(), param.numel());
}

namespace {

// The CSR of W^T for `in` inputs: offsets (out + 1) i32, index (nnz) i32, values (nnz)
// f32 on one device, offsets[0] = 0, non-decreasing to nnz, each output's inputs strictly
// ascending inside [0, in): what the kernels trust to stay inside x and values. First the
// arrays' dtypes, sizes and devices, then (check_csr_structure) their contents.
void check_csr_arrays(const char* op, const Tensor& offsets, const Tensor& index, const Tensor& values) {
  check(op, "offsets", offsets, DType::i32, 1);
  check(op, "index", index, DType::i32, 1);
  check(op, "values", values, DType::f32, 1);
  const int64_t out = offsets.dim(0) - 1;
  if (out < 1) fail(op, "offsets has " + std::to_string(out + 1) + " entries; it needs out + 1 >= 2");
  check_same_shape(op, "values", values, "index", index);
  check_device(op, "index", index, offsets);
  check_device(op, "values", values, offsets);
}

// The structure of arrays check_csr_arrays accepted.
void check_csr_structure(const char* op, const Tensor& offsets, const Tensor& index, int64_t in) {
  const int64_t out = offsets.dim(0) - 1, nnz = index.dim(0);
  const HostView<int32_t> off(offsets);
  const int32_t* o = off.data();
  if (o[0] != 0) fail(op, "offsets[0] = " + std::to_string(o[0]) + "; it must be 0");
  for (int64_t j = 0; j < out; ++j)
    if (o[j + 1] < o[j])
      fail(op, "offsets decrease at " + std::to_string(j + 1) + " (" + std::to_string(o[j]) + " then " +
                   std::to_string(o[j + 1]) + "); they must be non-decreasing");
  if (o[out] != nnz)
    fail(op, "offsets[" + std::to_string(out) + "] = " + std::to_string(o[out]) + " but index and values have " +
                 std::to_string(nnz) + " entries");
  const HostView<int32_t> idx_view(index);
  const int32_t* idx = idx_view.data();
  // Every call checks every index, so cheaply: one branch-free pass that vectorizes
  // counts the descents (idx[k] <= idx[k - 1]), which may only sit where a run starts;
  // with each run strictly ascending, its first and last entries bound all the others.
  // A slow pass runs only to name the culprit.
  uint32_t descents = 0;
  for (int64_t k = 1; k < nnz; ++k) descents += idx[k] <= idx[k - 1];
  uint32_t allowed = 0;
  bool inside = true;
  for (int64_t j = 0; j < out; ++j) {
    if (o[j + 1] == o[j]) continue;
    inside &= idx[o[j]] >= 0 && idx[o[j + 1] - 1] < in;
    if (o[j] > 0) allowed += idx[o[j]] <= idx[o[j] - 1];
  }
  const bool ok = inside && descents == allowed;
  if (!ok) {
    for (int64_t j = 0; j < out; ++j)
      for (int64_t k = o[j]; k < o[j + 1]; ++k) {
        if (idx[k] < 0 || idx[k] >= in)
          fail(op, "index[" + std::to_string(k) + "] = " + std::to_string(idx[k]) + " is outside [0, " +
                       std::to_string(in) + ") (x has " + std::to_string(in) + " columns)");
        if (k > o[j] && idx[k] <= idx[k - 1])
          fail(op, "index[" + std::to_string(k) + "] = " + std::to_string(idx[k]) + " follows " +
                       std::to_string(idx[k - 1]) + " in output " + std::to_string(j) +
                       "; each output's inputs must be strictly ascending");
      }
  }
}

CsrMatrix csr_of(const Tensor& offsets, const Tensor& index, const Tensor& values, int64_t in) {
  return {offsets.ptr<int32_t>(), index.ptr<int32_t>(), f32(values), in, offsets.dim(0) - 1, index.dim(0)};
}

// x, y and bias of a sparse product with `in` inputs and `out` outputs.
void check_sparse_io(const char* op, const Tensor& y, const Tensor& x, const Tensor* b, int64_t in, int64_t out) {
  check(op, "x", x, DType::f32, 2);
  check(op, "out", y, DType::f32, 2);
  if (x.dim(1) != in)
    fail(op, "x has " + std::to_string(x.dim(1)) + " columns but the weight has " + std::to_string(in) + " inputs");
  check_shape(op, "out", y, {x.dim(0), out});
  check_device(op, "out", y, x);
  check_no_overlap(op, "out", y, "x", x);
  check_sparse_bias(op, b, x, y, out);
}

}  // namespace

void sparse_dense_forward(const Tensor& y, const Tensor& x, const Tensor& offsets, const Tensor& index,
                          const Tensor& values, const Tensor* b, Activation act) {
  const char* op = "sparse_dense_forward";
  check(op, "x", x, DType::f32, 2);
  const int64_t in = x.dim(1);
  if (in == 0) fail(op, "x has 0 columns; the layer needs at least one input");
  check_csr_arrays(op, offsets, index, values);
  check_sparse_io(op, y, x, b, in, offsets.dim(0) - 1);
  for (const auto& [n, t] : {std::pair{"offsets", &offsets}, {"index", &index}, {"values", &values}}) {
    check_device(op, n, *t, x);
    check_no_overlap(op, "out", y, n, *t);
  }
  // The structure, on every call (sparse_pack checks it once).
  check_csr_structure(op, offsets, index, in);
  backend_for(x.device()).sparse_dense_forward(f32(y), f32(x), csr_of(offsets, index, values, in),
                                               b ? f32(*b) : nullptr, x.dim(0), act);
}

PackedCsr::PackedCsr(Backend& backend, int64_t in, int64_t out, int64_t nnz)
    : backend_(&backend), in_(in), out_(out), nnz_(nnz), offsets_(&backend), index_(&backend), values_(&backend),
      packed_(&backend) {
  // At least one element each, so that an empty index is still a pointer.
  offsets_.reserve(static_cast<size_t>(out + 1));
  index_.reserve(static_cast<size_t>(nnz > 0 ? nnz : 1));
  values_.reserve(static_cast<size_t>(nnz > 0 ? nnz : 1));
}

CsrMatrix PackedCsr::matrix() const { return {offsets_.data(), index_.data(), values_.data(), in_, out_, nnz_}; }

void PackedCsr::fill(const CsrMatrix& host) {
  backend_->copy_to_device(offsets_.data(), host.offsets, sizeof(int32_t) * static_cast<size_t>(out_ + 1));
  if (nnz_ > 0) {
    backend_->copy_to_device(index_.data(), host.index, sizeof(int32_t) * static_cast<size_t>(nnz_));
    backend_->copy_to_device(values_.data(), host.values, sizeof(float) * static_cast<size_t>(nnz_));
  }
  const size_t bytes = backend_->sparse_packed_bytes(host);
  if (bytes == 0) return;
  backend_->sparse_pack(packed_.reserve(bytes), host);
  packed_bytes_ = bytes;
}

std::shared_ptr<PackedCsr> sparse_pack(const Tensor& offsets, const Tensor& index, const Tensor& values, int64_t in) {
  const char* op = "sparse_pack";
  if (in < 1) fail(op, "in_features must be >= 1, got " + std::to_string(in));
  if (in > INT32_MAX) fail(op, "in_features must fit int32 (the index dtype), got " + std::to_string(in));
  check_csr_arrays(op, offsets, index, values);
  check_csr_structure(op, offsets, index, in);
  Backend& be = backend_for(offsets.device());
  auto packed = std::make_shared<PackedCsr>(be, in, offsets.dim(0) - 1, index.dim(0));
  const HostView<int32_t> host_offsets(offsets), host_index(index);
  const HostView<float> host_values(values);
  packed->fill({host_offsets.data(), host_index.data(), host_values.data(), in, offsets.dim(0) - 1, index.dim(0)});
  return packed;
}

void sparse_dense_forward(const Tensor& y, const Tensor& x, const PackedCsr& w, const Tensor* b, Activation act) {
  const char* op = "sparse_dense_forward";
  if (!(w.device() == x.device()))
    fail(op, "weight is packed for " + w.device().name() + " but x is on " + x.device().name());
  check_sparse_io(op, y, x, b, w.in(), w.out());
  Backend& be = backend_for(x.device());
  if (!(w.packed() && be.sparse_dense_forward_packed(f32(y), f32(x), w.packed(), b ? f32(*b) : nullptr, x.dim(0), act)))
    be.sparse_dense_forward(f32(y), f32(x), w.matrix(), b ? f32(*b) : nullptr, x.dim(0), act);
}

void nm_dense_forward(const Tensor& y, const Tensor& x, const Tensor& values, const Tensor& index, const Tensor* b,
                      Activation act, int n, int m) {
  const char* op = "nm_dense_forward";
  if (!(m >= 1 && m <= 256)) fail(op, "m must be in [1, 256] (a slot's row is a uint8), got " + std::to_string(m));
  if (!(n >= 1 && n <= m)) fail(op, "n must be in [1, m = " + std::to_string(m) + "], got " + std::to_string(n));
  check(op, "x", x, DType::f32, 2);
  check(op, "values", values, DType::f32, 2);
  check(op, "index", index, DType::u8, 2);
  check(op, "out", y, DType::f32, 2);
  const int64_t in = x.dim(1), out = values.dim(1);
  if (in == 0) fail(op, "x has 0 columns; the layer needs at least one input");
  if (out == 0) fail(op, "values has 0 columns; the layer needs at least one output");
  const int64_t groups = (in + m - 1) / m;
  if (values.dim(0) != groups * n)
    fail(op, "values has " + std::to_string(values.dim(0)) + " rows, expected ceil(in / m) n = " +
                 std::to_string(groups * n) + " for in = " + std::to_string(in) + ", " + std::to_string(n) + ":" +
                 std::to_string(m));
  check_same_shape(op, "index", index, "values", values);
  check_shape(op, "out", y, {x.dim(0), out});
  for (const auto& [nm, t] : {std::pair{"values", &values}, {"index", &index}, {"out", &y}}) check_device(op, nm, *t, x);
  for (const auto& [nm, t] : {std::pair{"x", &x}, {"values", &values}, {"index", &index}})
    check_no_overlap(op, "out", y, nm, *t);
  check_sparse_bias(op, b, x, y, out);

  // Every slot's row must lie in its group (the last group has in - (groups - 1) m rows),
  // or the kernel would read past x: one vectorizable pass, then one to name the culprit.
  const HostView<uint8_t> idx_view(index);
  const uint8_t* idx = idx_view.data();
  const int64_t last_size = in - (groups - 1) * m, full = (groups - 1) * n * out, total = groups * n * out;
  uint8_t full_max = 0, last_max = 0;
  for (int64_t k = 0; k < full; ++k) full_max = idx[k] > full_max ? idx[k] : full_max;
  for (int64_t k = full; k < total; ++k) last_max = idx[k] > last_max ? idx[k] : last_max;
  const bool ok = full_max < m && last_max < last_size;
  if (!ok)
    for (int64_t k = 0; k < total; ++k) {
      const int64_t g = k / (n * out), size = g == groups - 1 ? last_size : m;
      if (idx[k] >= size)
        fail(op, "index[" + std::to_string(k / out) + ", " + std::to_string(k % out) + "] = " +
                     std::to_string(idx[k]) + " is outside its group of " + std::to_string(size) + " rows");
    }
  NmMatrix w;
  w.values = f32(values);
  w.index = index.ptr<uint8_t>();
  w.in = in;
  w.out = out;
  w.n = n;
  w.m = m;
  backend_for(x.device()).nm_dense_forward(f32(y), f32(x), w, b ? f32(*b) : nullptr, x.dim(0), act);
}

}  // namespace customml::ops

// ---- int8 ----

namespace customml::ops {
namespace {

// Calls f(p) with a host pointer to a tensor's elements: in place on host-addressable
// devices (a quantized input is scanned without a copy), else to a host copy.
template <class T, class F>
void with_host_values(const Tensor& t, F&& f) {
  if (backend_for(t.device()).host_addressable()) {
    f(t.ptr<const T>());
  } else {
    const std::vector<T> v = host_values<T>(t);
    f(v.data());
  }
}

// Runs f(index, value) over a tensor's elements.
template <class T, class F>
void scan_values(const Tensor& t, F&& f) {
  with_host_values<T>(t, [&](const T* p) {
    for (int64_t i = 0, n = t.numel(); i < n; ++i) f(i, p[i]);
  });
}


// "x[2, 3]" for flat index i of a (rows, cols) tensor, "x[5]" for a vector.
std::string element_name(const char* name, const Tensor& t, int64_t i) {
  if (t.ndim() == 2) return std::string(name) + "[" + std::to_string(i / t.dim(1)) + ", " + std::to_string(i % t.dim(1)) + "]";
  return std::string(name) + "[" + std::to_string(i) + "]";
}

std::string float_str(float v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// Whether every element of p (n) stays finite when multiplied by factor: a branch-free sum
// of (x * factor) * 0, NaN exactly when some product is not finite, so the pass vectorizes.
bool all_finite_scaled(const float* p, int64_t n, float factor) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += (p[i + l] * factor) * 0.0f;
  for (int64_t l = 0; i + l < n; ++l) acc[l] += (p[i + l] * factor) * 0.0f;
  float all = 0.0f;
  for (float a : acc) all += a;
  return all == 0.0f;
}

// Fails naming the first element of t (f32, on the host at p) that is NaN or inf.
void fail_on_non_finite(const char* op, const char* name, const Tensor& t, const float* p) {
  for (int64_t i = 0, n = t.numel(); i < n; ++i)
    if (!std::isfinite(p[i]))
      fail(op, element_name(name, t, i) + " is " + float_str(p[i]) + "; it must be finite");
}

void check_all_finite(const char* op, const char* name, const Tensor& t) {
  with_host_values<float>(t, [&](const float* p) {
    if (!all_finite_scaled(p, t.numel(), 1.0f)) fail_on_non_finite(op, name, t, p);
  });
}

void check_scales(const char* op, const char* name, const Tensor& t) {
  scan_values<float>(t, [&](int64_t i, float v) {
    if (!(std::isfinite(v) && v > 0.0f))
      fail(op, element_name(name, t, i) + " is " + float_str(v) + "; scales must be positive and finite");
  });
}

void check_codes(const char* op, const char* name, const Tensor& t, int32_t lo, int32_t hi) {
  scan_values<int32_t>(t, [&](int64_t i, int32_t v) {
    if (v < lo || v > hi)
      fail(op, element_name(name, t, i) + " = " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "]");
  });
}

void check_qtype(const char* op, const char* name, const Tensor& t) {
  if (t.dtype() != DType::i8 && t.dtype() != DType::u8)
    throw TypeError(std::string("[") + op + "] " + name + " must be int8 or uint8, got " + dtype_name(t.dtype()));
}

const char* axis_name(QuantAxis axis) {
  switch (axis) {
    case QuantAxis::tensor: return "tensor";
    case QuantAxis::row: return "row";
    case QuantAxis::column: return "column";
  }
  return "?";
}

// scale and zero of a (rows, cols) tensor quantized along axis; q names the code tensor.
void check_quant_params(const char* op, const Tensor& scale, const Tensor* zero, const Tensor& q, const Tensor& ref,
                        QuantAxis axis) {
  const int64_t len = axis == QuantAxis::tensor ? 1 : axis == QuantAxis::row ? ref.dim(0) : ref.dim(1);
  check(op, "scale", scale, DType::f32, 1);
  if (scale.dim(0) != len)
    fail(op, "scale has shape " + scale.shape_str() + ", expected (" + std::to_string(len) + ",) for axis '" +
                 axis_name(axis) + "' of a " + ref.shape_str() + " tensor");
  check_device(op, "scale", scale, ref);
  check_scales(op, "scale", scale);
  if (zero) {
    check(op, "zero", *zero, DType::i32, 1);
    check_same_shape(op, "zero", *zero, "scale", scale);
    check_device(op, "zero", *zero, ref);
    if (q.dtype() == DType::i8) check_codes(op, "zero", *zero, -127, 127);
    else check_codes(op, "zero", *zero, 0, 255);
  }
}

}  // namespace

void quantize(const Tensor& q, const Tensor& x, const Tensor& scale, const Tensor* zero, QuantAxis axis) {
  const char* op = "quantize";
  check(op, "x", x, DType::f32, 2);
  check_qtype(op, "out", q);
  check(op, "out", q, q.dtype(), 2);
  check_same_shape(op, "out", q, "x", x);
  check_device(op, "out", q, x);
  check_no_overlap(op, "out", q, "x", x);
  check_quant_params(op, scale, zero, q, x, axis);
  check_no_overlap(op, "out", q, "scale", scale);
  if (zero) check_no_overlap(op, "out", q, "zero", *zero);
  check_all_finite(op, "x", x);
  backend_for(x.device())
      .quantize(q.data(), q.dtype(), f32(x), f32(scale), zero ? zero->ptr<int32_t>() : nullptr, x.dim(0), x.dim(1),
                axis);
}

void dequantize(const Tensor& x, const Tensor& q, const Tensor& scale, const Tensor* zero, QuantAxis axis) {
  const char* op = "dequantize";
  check_qtype(op, "q", q);
  check(op, "q", q, q.dtype(), 2);
  check(op, "out", x, DType::f32, 2);
  check_same_shape(op, "out", x, "q", q);
  check_device(op, "out", x, q);
  check_no_overlap(op, "out", x, "q", q);
  check_quant_params(op, scale, zero, q, q, axis);
  check_no_overlap(op, "out", x, "scale", scale);
  if (zero) check_no_overlap(op, "out", x, "zero", *zero);
  backend_for(q.device())
      .dequantize(f32(x), q.data(), q.dtype(), f32(scale), zero ? zero->ptr<int32_t>() : nullptr, q.dim(0), q.dim(1),
                  axis);
}

void quantize_rows_dynamic(const Tensor& q, const Tensor& scale, const Tensor& zero, const Tensor& x) {
  const char* op = "quantize_rows_dynamic";
  check(op, "x", x, DType::f32, 2);
  check(op, "out", q, DType::u8, 2);
  check(op, "scale_out", scale, DType::f32, 1);
  check(op, "zero_out", zero, DType::i32, 1);
  check_same_shape(op, "out", q, "x", x);
  check_shape(op, "scale_out", scale, {x.dim(0)});
  check_shape(op, "zero_out", zero, {x.dim(0)});
  const std::pair<const char*, const Tensor*> all[] = {{"x", &x}, {"out", &q}, {"scale_out", &scale}, {"zero_out", &zero}};
  for (size_t a = 1; a < 4; ++a) check_device(op, all[a].first, *all[a].second, x);
  for (size_t a = 0; a < 4; ++a)
    for (size_t c = a + 1; c < 4; ++c) check_no_overlap(op, all[c].first, *all[c].second, all[a].first, *all[a].second);
  // x finite, and (hi - lo) / 255 finite: a row holding both ~3e38 and ~-3e38 has no scale.
  // Only an element beyond half the float32 maximum can make that happen, so one pass that
  // doubles every element finds both problems, and rows are ranged only after it fails.
  const int64_t rows = x.dim(0), cols = x.dim(1);
  with_host_values<float>(x, [&](const float* p) {
    if (all_finite_scaled(p, x.numel(), 2.0f)) return;
    fail_on_non_finite(op, "x", x, p);
    for (int64_t r = 0; r < rows; ++r) {
      float lo = 0.0f, hi = 0.0f;
      for (const float* v = p + r * cols; v < p + (r + 1) * cols; ++v) {
        lo = *v < lo ? *v : lo;
        hi = *v > hi ? *v : hi;
      }
      if (!std::isfinite(hi - lo))
        fail(op, "row " + std::to_string(r) + " of x spans [" + float_str(lo) + ", " + float_str(hi) +
                     "], wider than the float32 range");
    }
  });
  backend_for(x.device())
      .quantize_rows_dynamic(q.ptr<uint8_t>(), f32(scale), zero.ptr<int32_t>(), f32(x), x.dim(0), x.dim(1));
}

PackedS8::PackedS8(Backend& backend, int64_t k, int64_t n)
    : backend_(&backend), k_(k), n_(n), nbytes_(backend.gemm_s8_packed_bytes(k, n)) {
  data_ = backend_->allocate(nbytes_);
}

PackedS8::~PackedS8() {
  if (data_) backend_->deallocate(data_);
}

std::shared_ptr<PackedS8> gemm_s8_pack(const Tensor& w) {
  const char* op = "gemm_s8_pack";
  check(op, "weight", w, DType::i8, 2);
  if (w.dim(0) < 1 || w.dim(1) < 1) fail(op, "weight has shape " + w.shape_str() + "; both sizes must be >= 1");
  if (w.dim(0) > kGemmS8MaxK)
    fail(op, "weight has " + std::to_string(w.dim(0)) + " rows, more than " + std::to_string(kGemmS8MaxK) +
                 " (beyond that an int32 accumulator can overflow)");
  scan_values<int8_t>(w, [&](int64_t i, int8_t v) {
    if (v == -128) fail(op, element_name("weight", w, i) + " = -128 is outside [-127, 127] (symmetric int8 codes)");
  });
  Backend& be = backend_for(w.device());
  auto packed = std::make_shared<PackedS8>(be, w.dim(0), w.dim(1));
  be.gemm_s8_pack(packed->data(), w.ptr<int8_t>(), w.dim(0), w.dim(1));
  return packed;
}

void gemm_s8(const Tensor& y, const Tensor& a, const PackedS8& w, const Tensor* a_scale, const Tensor& a_zero,
             const Tensor* w_scale, const Tensor* bias, Activation act, std::optional<float> out_scale,
             std::optional<int32_t> out_zero) {
  const char* op = "gemm_s8";
  check(op, "a", a, DType::u8, 2);
  if (!(w.device() == a.device()))
    fail(op, "weight is packed for " + w.device().name() + " but a is on " + a.device().name());
  if (a.dim(1) != w.k())
    fail(op, "a has " + std::to_string(a.dim(1)) + " columns but weight has " + std::to_string(w.k()) + " rows");
  const DType out = y.dtype();
  if (out != DType::f32 && out != DType::u8 && out != DType::i32)
    throw TypeError(std::string("[") + op + "] out must be float32, uint8 or int32, got " + dtype_name(out));
  check(op, "out", y, out, 2);
  check_shape(op, "out", y, {a.dim(0), w.n()});
  check_device(op, "out", y, a);
  check_no_overlap(op, "out", y, "a", a);
  check(op, "a_zero", a_zero, DType::i32, 1);
  if (a_zero.dim(0) != 1 && a_zero.dim(0) != a.dim(0))
    fail(op, "a_zero has shape " + a_zero.shape_str() + ", expected (1,) or (" + std::to_string(a.dim(0)) + ",)");
  check_device(op, "a_zero", a_zero, a);
  check_no_overlap(op, "out", y, "a_zero", a_zero);
  check_codes(op, "a_zero", a_zero, 0, 255);
  GemmS8Epilogue e;
  e.a_zero = a_zero.ptr<int32_t>();
  e.a_per_row = a_zero.dim(0) != 1;
  e.act = act;
  if (out == DType::i32) {
    const std::pair<const char*, bool> unused[] = {{"a_scale", a_scale != nullptr}, {"w_scale", w_scale != nullptr},
                                                   {"bias", bias != nullptr}, {"out_scale", out_scale.has_value()},
                                                   {"out_zero", out_zero.has_value()}};
    for (const auto& [name, given] : unused)
      if (given) fail(op, std::string(name) + " was given but an int32 out receives the unscaled sums");
    if (act != Activation::identity)
      fail(op, std::string("activation '") + activation_name(act) + "' was given but an int32 out receives the unscaled sums");
  } else {
    if (!a_scale) fail(op, "a_scale is required for a float32 or uint8 out");
    if (!w_scale) fail(op, "w_scale is required for a float32 or uint8 out");
    check(op, "a_scale", *a_scale, DType::f32, 1);
    check_same_shape(op, "a_scale", *a_scale, "a_zero", a_zero);
    check(op, "w_scale", *w_scale, DType::f32, 1);
    if (w_scale->dim(0) != 1 && w_scale->dim(0) != w.n())
      fail(op, "w_scale has shape " + w_scale->shape_str() + ", expected (1,) or (" + std::to_string(w.n()) + ",)");
    for (const auto& [n, t] : {std::pair{"a_scale", a_scale}, {"w_scale", w_scale}}) {
      check_device(op, n, *t, a);
      check_no_overlap(op, "out", y, n, *t);
      check_scales(op, n, *t);
    }
    if (bias) {
      check(op, "bias", *bias, DType::f32, 1);
      check_shape(op, "bias", *bias, {w.n()});
      check_device(op, "bias", *bias, a);
      check_no_overlap(op, "out", y, "bias", *bias);
      check_all_finite(op, "bias", *bias);
    }
    if (out == DType::u8) {
      if (!out_scale || !out_zero) fail(op, "out_scale and out_zero are required for a uint8 out");
      if (!(std::isfinite(*out_scale) && *out_scale > 0.0f))
        fail(op, "out_scale is " + float_str(*out_scale) + "; scales must be positive and finite");
      if (*out_zero < 0 || *out_zero > 255) fail(op, "out_zero = " + std::to_string(*out_zero) + " is outside [0, 255]");
      e.out_scale = *out_scale;
      e.out_zero = *out_zero;
    } else if (out_scale || out_zero) {
      fail(op, "out_scale and out_zero apply to a uint8 out only");
    }
    e.a_scale = f32(a_scale);
    e.w_scale = f32(w_scale);
    e.w_per_channel = w_scale->dim(0) != 1;
    e.bias = f32(bias);
  }
  backend_for(a.device())
      .gemm_s8(out == DType::f32 ? y.ptr<float>() : nullptr, out == DType::u8 ? y.ptr<uint8_t>() : nullptr,
               out == DType::i32 ? y.ptr<int32_t>() : nullptr, a.ptr<uint8_t>(), w.data(), {a.dim(0), a.dim(1), w.n()}, e);
}

void feature_affine(const Tensor& y, const Tensor& x, const Tensor& scale, const Tensor& shift) {
  const char* op = "feature_affine";
  check(op, "x", x, DType::f32, 2);
  check(op, "scale", scale, DType::f32, 1);
  check(op, "shift", shift, DType::f32, 1);
  check(op, "y", y, DType::f32, 2);
  const int64_t rows = x.dim(0), cols = x.dim(1);
  check_shape(op, "scale", scale, {cols});
  check_shape(op, "shift", shift, {cols});
  check_shape(op, "y", y, {rows, cols});
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"x", &x}, {"scale", &scale}, {"shift", &shift}}) {
    check_device(op, name, *t, y);
    check_no_overlap(op, "y", y, name, *t);
  }
  backend_for(x.device()).feature_affine(f32(y), f32(x), f32(scale), f32(shift), rows, cols);
}

}  // namespace customml::ops
