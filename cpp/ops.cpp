// The Tensor-level ops of ops.h (dense, losses, metrics, dropout, optimizers, regularizers,
// preprocessing): each validates its arguments once, naming op and argument, then runs on
// its tensors' device through backend_for(); the sparse and int8 ops are in ops_sparse.cpp
// and ops_int8.cpp.

#include "ops.h"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "ops_checks.h"

namespace customml::ops {

using namespace detail;

namespace {

void check_labels(const char* op, const Tensor& labels, int64_t classes) {
  const std::vector<int32_t> lab = host_values<int32_t>(labels);
  for (size_t i = 0; i < lab.size(); ++i)
    if (lab[i] < 0 || lab[i] >= classes)
      throw std::out_of_range("[" + std::string(op) + "] labels[" + std::to_string(i) +
                              "] = " + std::to_string(lab[i]) + " is outside [0, " + std::to_string(classes) + ")");
}

void check_precision(const char* op, const Backend& be, Precision p) {
  if (!be.supports(p))
    fail(op, std::string("precision '") + precision_name(p) + "' is not supported on device '" + be.name() +
                 "' (tf32, bf16 and fp16 run on CUDA tensor cores)");
}

}  // namespace

void dense_forward(const Tensor& y, const Tensor* z, const Tensor& x, const Tensor& w, const Tensor& b, Activation act,
                   Precision precision) {
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

void dense_backward(const Tensor* dx, const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                    const Tensor& w, const Tensor& y, const Tensor* z, Activation act, Precision precision) {
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
        fail(op, "class_weights[" + std::to_string(c) + "] = " + std::to_string(cw[c]) + " must be finite and >= 0");
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
  Backend& be = backend_for(logits.device());
  DeviceScalar<double> loss(be);
  be.softmax_cross_entropy(f32(grad), loss.ptr(), f32(logits), labels.ptr<int32_t>(), f32(class_weights),
                           f32(row_weights), batch, classes, label_smoothing);
  return loss.value();
}

namespace {
// A (batch, classes) f32 input of a row-wise loss, not empty, with its gradient's checks.
void check_row_loss(const char* op, const char* name, const Tensor& a, const Tensor* grad) {
  check(op, name, a, DType::f32, 2);
  if (a.dim(0) == 0) fail(op, std::string(name) + " is empty (batch of 0 rows): the mean loss is undefined");
  if (a.dim(1) == 0) fail(op, std::string(name) + " has 0 columns; at least one class is needed");
  if (!grad) return;
  check(op, "grad_out", *grad, DType::f32, 2);
  check_shape(op, "grad_out", *grad, a.shape());
  check_device(op, "grad_out", *grad, a);
}
}  // namespace

double softmax_cross_entropy_soft(const Tensor* grad, const Tensor& logits, const Tensor& targets,
                                  const Tensor* row_weights) {
  const char* op = "softmax_cross_entropy";
  check_row_loss(op, "logits", logits, grad);
  check(op, "targets", targets, DType::f32, 2);
  check_same_shape(op, "targets", targets, "logits", logits);
  check_device(op, "targets", targets, logits);
  if (grad) {
    check_no_overlap(op, "grad_out", *grad, "logits", logits);
    check_no_overlap(op, "grad_out", *grad, "targets", targets);
  }
  const int64_t batch = logits.dim(0), classes = logits.dim(1);
  check_row_weights(op, row_weights, batch, logits, grad);
  Backend& be = backend_for(logits.device());
  DeviceScalar<double> loss(be);
  be.softmax_cross_entropy_soft(f32(grad), loss.ptr(), f32(logits), f32(targets), f32(row_weights), batch, classes);
  return loss.value();
}

double distillation_loss(const Tensor* grad, const Tensor& student, const Tensor& teacher, const Tensor& labels,
                         float temperature, float alpha, const Tensor* row_weights) {
  const char* op = "distillation_loss";
  check_row_loss(op, "student_logits", student, grad);
  check(op, "teacher_logits", teacher, DType::f32, 2);
  check_same_shape(op, "teacher_logits", teacher, "student_logits", student);
  check_device(op, "teacher_logits", teacher, student);
  const int64_t batch = student.dim(0), classes = student.dim(1);
  check(op, "labels", labels, DType::i32, 1);
  check_shape(op, "labels", labels, {batch});
  check_device(op, "labels", labels, student);
  // A temperature below 0.05 turns logits of a few units into exp(-100) and less: no
  // softening is left to learn from, and 1 / T overflows long before T reaches 0.
  if (!(std::isfinite(temperature) && temperature >= 0.05f))
    fail(op, "temperature must be finite and >= 0.05, got " + std::to_string(temperature));
  if (!(alpha >= 0.0f && alpha <= 1.0f)) fail(op, "alpha must be in [0, 1], got " + std::to_string(alpha));
  check_labels(op, labels, classes);
  if (grad) {
    check_no_overlap(op, "grad_out", *grad, "student_logits", student);
    check_no_overlap(op, "grad_out", *grad, "teacher_logits", teacher);
    check_no_overlap(op, "grad_out", *grad, "labels", labels);
  }
  check_row_weights(op, row_weights, batch, student, grad);
  Backend& be = backend_for(student.device());
  DeviceScalar<double> loss(be);
  be.distillation_loss(f32(grad), loss.ptr(), f32(student), f32(teacher), labels.ptr<int32_t>(), f32(row_weights),
                       batch, classes, temperature, alpha);
  return loss.value();
}

namespace {
// Elementwise losses: same-shape f32 inputs, not empty, optional same-shape grad.
int64_t check_pointwise_loss(const char* op, const char* a_name, const Tensor& a, const char* b_name, const Tensor& b,
                             const Tensor* grad) {
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
  Backend& be = backend_for(logits.device());
  DeviceScalar<double> loss(be);
  be.binary_cross_entropy_with_logits(f32(grad), loss.ptr(), f32(logits), f32(targets), f32(row_weights), rows, cols);
  return loss.value();
}

double mse(const Tensor* grad, const Tensor& pred, const Tensor& target, const Tensor* row_weights) {
  const char* op = "mse";
  const int64_t n = check_pointwise_loss(op, "pred", pred, "target", target, grad);
  const auto [rows, cols] = loss_rows(op, "pred", pred, n, row_weights);
  check_row_weights(op, row_weights, rows, pred, grad);
  Backend& be = backend_for(pred.device());
  DeviceScalar<double> loss(be);
  be.mse(f32(grad), loss.ptr(), f32(pred), f32(target), f32(row_weights), rows, cols);
  return loss.value();
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
  Backend& be = backend_for(logits.device());
  DeviceScalar<int64_t> correct(be);
  be.count_correct(correct.ptr(), f32(logits), labels.ptr<int32_t>(), logits.dim(0), logits.dim(1));
  return correct.value();
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

void dropout(const Tensor& y, const Tensor& x, float rate, uint64_t seed, uint64_t stream, uint64_t first) {
  const char* op = "dropout";
  check(op, "x", x, DType::f32, -1);
  check(op, "out", y, DType::f32, -1);
  check_same_shape(op, "out", y, "x", x);
  check_device(op, "out", y, x);
  if (!(rate >= 0.0f && rate < 1.0f)) fail(op, "rate must be in [0, 1), got " + std::to_string(rate));
  // In place is allowed (y == x exactly); a partial overlap is not.
  if (y.data() != x.data()) check_no_overlap(op, "out", y, "x", x);
  backend_for(x.device()).dropout(f32(y), f32(x), x.numel(), rate, seed, stream, first, nullptr, 0);
}

void check_segments(const char* op, const std::vector<Segment>& segments, int64_t n) {
  int64_t prev_end = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const Segment& seg = segments[s];
    if (seg.begin < prev_end || seg.end < seg.begin || seg.end > n) {
      std::ostringstream os;
      os << "no_decay segment " << s << " = [" << seg.begin << ", " << seg.end << ") must lie in [0, " << n
         << "), after the previous one, with begin <= end";
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
  if (c.step < 1)
    fail(op, "step must be >= 1 (the count of updates including this one), got " + std::to_string(c.step));
}

void sgd_update(const Tensor& param, const Tensor& grad, const Tensor* velocity, const std::vector<Segment>& no_decay,
                const SgdConfig& config) {
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
      .sgd_update(f32(param), f32(grad), f32(velocity), param.numel(), no_decay.data(),
                  static_cast<int64_t>(no_decay.size()), config, nullptr, {});
}

void adam_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const Tensor* vmax,
                 const std::vector<Segment>& no_decay, const AdamConfig& config) {
  const char* op = "adam_update";
  check(op, "param", param, DType::f32, -1);
  std::vector<std::pair<const char*, const Tensor*>> all{{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}};
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
      .adam_update(f32(param), f32(grad), f32(m), f32(v), config.amsgrad ? f32(vmax) : nullptr, param.numel(),
                   no_decay.data(), static_cast<int64_t>(no_decay.size()), config, nullptr, {});
}

double clip_by_global_norm(const Tensor& grad, float max_norm) {
  const char* op = "clip_by_global_norm";
  check(op, "grad", grad, DType::f32, -1);
  if (!(std::isfinite(max_norm) && max_norm > 0.0f))
    fail(op, "max_norm must be finite and > 0, got " + std::to_string(max_norm));
  Backend& be = backend_for(grad.device());
  DeviceScalar<double> norm(be);
  be.clip_by_global_norm(f32(grad), norm.ptr(), grad.numel(), max_norm);
  return norm.value();
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
  Backend& be = backend_for(param.device());
  DeviceScalar<double> penalty(be);
  be.l1_l2_penalty(grad ? f32(*grad) : nullptr, penalty.ptr(), f32(param), param.numel(), l1, l2);
  return penalty.value();
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
// y: x's shape, f32, on its device, and x itself or sharing no memory with it: the
// probability ops run in place (predict_proba writes over the logits).
void check_same_or_separate(const char* op, const Tensor& y, const Tensor& x) {
  check(op, "y", y, DType::f32, -1);
  check_same_shape(op, "y", y, "x", x);
  check_device(op, "y", y, x);
  if (y.data() != x.data()) check_no_overlap(op, "y", y, "x", x);
}
}  // namespace

void softmax(const Tensor& y, const Tensor& x) {
  const char* op = "softmax";
  check(op, "x", x, DType::f32, 2);
  if (x.dim(1) == 0) fail(op, "x has 0 columns; softmax needs at least one");
  check_same_or_separate(op, y, x);
  backend_for(x.device()).softmax(f32(y), f32(x), x.dim(0), x.dim(1));
}

void sigmoid(const Tensor& y, const Tensor& x) {
  const char* op = "sigmoid";
  check(op, "x", x, DType::f32, -1);
  check_same_or_separate(op, y, x);
  backend_for(x.device()).sigmoid(f32(y), f32(x), x.numel());
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
