#include "network.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "network_internal.h"
#include "ops.h"

namespace customml {

LossKind parse_loss(const std::string& name) {
  for (LossKind k : {LossKind::softmax_cross_entropy, LossKind::binary_cross_entropy, LossKind::mse})
    if (name == loss_name(k)) return k;
  throw std::invalid_argument("unknown loss '" + name +
                              "'; expected softmax_cross_entropy, binary_cross_entropy or mse");
}

const char* loss_name(LossKind k) {
  switch (k) {
    case LossKind::softmax_cross_entropy: return "softmax_cross_entropy";
    case LossKind::binary_cross_entropy: return "binary_cross_entropy";
    case LossKind::mse: return "mse";
  }
  return "?";
}

Network::Network(int64_t input_dim, std::vector<LayerSpec> layers, const Device& device)
    : device_(device), backend_(&backend_for(device)), input_dim_(input_dim), layers_(std::move(layers)),
      params_(backend_), grads_(backend_), state_a_(backend_), state_b_(backend_), state_c_(backend_),
      class_weights_(backend_), affine_(backend_), confusion_(backend_), regression_(backend_), regression_shift_(backend_) {
  if (input_dim < 1) throw std::invalid_argument("[Network] input_dim must be >= 1, got " + std::to_string(input_dim));
  if (layers_.empty()) throw std::invalid_argument("[Network] needs at least one layer");
  int64_t width = input_dim;
  max_width_ = input_dim;
  int64_t affine_floats = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerSpec& s = layers_[l];
    affine_offsets_.push_back(-1);
    if (s.kind == LayerSpec::Kind::affine) {
      if (l > 0 && layers_[l - 1].kind != LayerSpec::Kind::affine)
        throw std::invalid_argument("[Network] layer " + std::to_string(l) +
                                    ": preprocessing (affine) layers must come first, before any dense or dropout layer");
      check_affine(l, s.scale.data(), s.scale.size(), s.shift.data(), s.shift.size());
      affine_offsets_.back() = affine_floats;
      affine_floats += 2 * input_dim;
      weight_offsets_.push_back(-1);
      bias_offsets_.push_back(-1);
    } else if (s.kind == LayerSpec::Kind::dense) {
      if (s.units < 1)
        throw std::invalid_argument("[Network] layer " + std::to_string(l) + ": units must be >= 1, got " +
                                    std::to_string(s.units));
      if (!(std::isfinite(s.l1) && s.l1 >= 0.0f && std::isfinite(s.l2) && s.l2 >= 0.0f))
        throw std::invalid_argument("[Network] layer " + std::to_string(l) +
                                    ": kernel regularizer l1 and l2 must be finite and >= 0, got " +
                                    std::to_string(s.l1) + " and " + std::to_string(s.l2));
      regularized_ = regularized_ || s.l1 > 0.0f || s.l2 > 0.0f;
      weight_offsets_.push_back(num_params_);
      num_params_ += width * s.units;
      bias_offsets_.push_back(num_params_);
      num_params_ += s.units;
      width = s.units;
    } else {
      if (!(s.rate >= 0.0f && s.rate < 1.0f))
        throw std::invalid_argument("[Network] layer " + std::to_string(l) + ": dropout rate must be in [0, 1), got " +
                                    std::to_string(s.rate));
      weight_offsets_.push_back(-1);
      bias_offsets_.push_back(-1);
    }
    widths_.push_back(width);
    max_width_ = width > max_width_ ? width : max_width_;
  }
  width = input_dim;
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (layers_[l].kind == LayerSpec::Kind::dense) {
      plans_.push_back(std::make_unique<LayerPlan>(backend_, width, layers_[l].units));
      width = layers_[l].units;
    } else {
      plans_.emplace_back();
    }
  }
  packs_dense_ = backend_->dense_packed_bytes(1, 1) > 0;
  affine_.reserve(static_cast<size_t>(affine_floats));
  for (size_t l = 0; l < layers_.size(); ++l)
    if (affine_offsets_[l] >= 0) upload_affine(l, layers_[l].scale.data(), layers_[l].shift.data());
  params_.reserve(static_cast<size_t>(num_params_));
  backend_->fill_zero(params_.data(), sizeof(float) * static_cast<size_t>(num_params_));
  grads_.reserve(static_cast<size_t>(num_params_));
  train_ws_ = std::make_unique<Workspace>(backend_, layers_.size());
  plan_updates();
}

void Network::plan_updates() {
  update_ranges_.clear();
  lowest_trainable_ = layers_.size();
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerSpec& s = layers_[l];
    if (s.kind != LayerSpec::Kind::dense) continue;
    const int64_t begin = weight_offsets_[l], end = bias_offsets_[l] + s.units;
    if (!s.trainable) {
      backend_->fill_zero(grads_.data() + begin, sizeof(float) * static_cast<size_t>(end - begin));
      continue;
    }
    if (lowest_trainable_ == layers_.size()) lowest_trainable_ = l;
    // Layers are laid out back to back, so adjacent trainable layers make one range.
    if (update_ranges_.empty() || update_ranges_.back().end != begin) update_ranges_.push_back({begin, begin, {}});
    UpdateRange& r = update_ranges_.back();
    r.end = end;
    // Biases take no weight decay (DESIGN decision 2).
    r.no_decay.push_back({bias_offsets_[l] - r.begin, end - r.begin});
  }
}

void Network::check_affine(size_t layer, const float* scale, size_t n_scale, const float* shift,
                           size_t n_shift) const {
  const std::string pre = "[Network] layer " + std::to_string(layer) + ": ";
  if (n_scale != static_cast<size_t>(input_dim_) || n_shift != static_cast<size_t>(input_dim_))
    throw std::invalid_argument(pre + "affine scale and shift need " + std::to_string(input_dim_) +
                                " values each (one per input feature), got " + std::to_string(n_scale) + " and " +
                                std::to_string(n_shift));
  for (size_t i = 0; i < n_scale; ++i)
    if (!(std::isfinite(scale[i]) && std::isfinite(shift[i])))
      throw std::invalid_argument(pre + "affine scale and shift must be finite (feature " + std::to_string(i) + ")");
}

void Network::upload_affine(size_t layer, const float* scale, const float* shift) {
  const size_t n = static_cast<size_t>(input_dim_);
  float* dst = affine_.data() + affine_offsets_[layer];
  backend_->copy_to_device(dst, scale, sizeof(float) * n);
  backend_->copy_to_device(dst + n, shift, sizeof(float) * n);
}

void Network::set_affine(int64_t layer, const float* scale, const float* shift) {
  if (layer < 0 || layer >= static_cast<int64_t>(layers_.size()) ||
      layers_[static_cast<size_t>(layer)].kind != LayerSpec::Kind::affine)
    throw std::invalid_argument("[Network] layer " + std::to_string(layer) + " is not an affine layer");
  const size_t l = static_cast<size_t>(layer), n = static_cast<size_t>(input_dim_);
  check_affine(l, scale, n, shift, n);
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  layers_[l].scale.assign(scale, scale + n);
  layers_[l].shift.assign(shift, shift + n);
  upload_affine(l, scale, shift);
  invalidate_plan();
}

void Network::set_trainable(int64_t layer, bool trainable) {
  if (layer < 0 || layer >= static_cast<int64_t>(layers_.size()))
    throw std::out_of_range("[Network] layer " + std::to_string(layer) + " is outside [0, " +
                            std::to_string(layers_.size()) + ")");
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  layers_[static_cast<size_t>(layer)].trainable = trainable;
  plan_updates();
}

bool Network::trainable(int64_t layer) const {
  if (layer < 0 || layer >= static_cast<int64_t>(layers_.size()))
    throw std::out_of_range("[Network] layer " + std::to_string(layer) + " is outside [0, " +
                            std::to_string(layers_.size()) + ")");
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  return layers_[static_cast<size_t>(layer)].trainable;
}

void Network::run_optimizer() {
  // One fused pass per run of trainable layers (usually one: the layers above a frozen
  // base); frozen parameters and their state are never touched, so they stay bit-identical
  // whatever the weight decay.
  for (const UpdateRange& r : update_ranges_) {
    const int64_t n = r.end - r.begin, nd = static_cast<int64_t>(r.no_decay.size());
    if (opt_.kind == OptimizerConfig::Kind::adam) {
      AdamConfig c = opt_.adam;
      c.step = step_;
      backend_->adam_update(params_.data() + r.begin, state_a_.data() + r.begin, state_b_.data() + r.begin,
                            c.amsgrad ? state_c_.data() + r.begin : nullptr, grads_.data() + r.begin, n,
                            r.no_decay.data(), nd, c);
    } else {
      backend_->sgd_update(params_.data() + r.begin, opt_.sgd.momentum != 0.0f ? state_a_.data() + r.begin : nullptr,
                           grads_.data() + r.begin, n, r.no_decay.data(), nd, opt_.sgd);
    }
  }
}

Network::~Network() { delete spare_.load(); }

void Network::read_params(float* dst, int64_t offset, int64_t n) const {
  if (offset < 0 || n < 0 || offset + n > num_params_)
    throw std::out_of_range("[Network] parameter range [" + std::to_string(offset) + ", " +
                            std::to_string(offset + n) + ") is outside [0, " + std::to_string(num_params_) + ")");
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  backend_->copy_to_host(dst, params_.data() + offset, sizeof(float) * static_cast<size_t>(n));
}

void Network::write_params(const float* src, int64_t offset, int64_t n) {
  if (offset < 0 || n < 0 || offset + n > num_params_)
    throw std::out_of_range("[Network] parameter range [" + std::to_string(offset) + ", " +
                            std::to_string(offset + n) + ") is outside [0, " + std::to_string(num_params_) + ")");
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  backend_->copy_to_device(params_.data() + offset, src, sizeof(float) * static_cast<size_t>(n));
  apply_masks();
  invalidate_plan();
}

int Network::state_slots() const {
  if (!compiled_) return 0;
  if (opt_.kind == OptimizerConfig::Kind::adam) return opt_.adam.amsgrad ? 3 : 2;
  return opt_.sgd.momentum != 0.0f ? 1 : 0;
}

// Callers hold mutex_: compile changes which slots exist.
const Buffer<float>& Network::state_buffer(int slot, int64_t offset, int64_t n) const {
  const int slots = state_slots();
  if (slot < 0 || slot >= slots)
    throw std::out_of_range("[Network] optimizer state slot " + std::to_string(slot) + " is outside [0, " +
                            std::to_string(slots) + ")" + (compiled_ ? "" : " (the network is not compiled)"));
  if (offset < 0 || n < 0 || offset + n > num_params_)
    throw std::out_of_range("[Network] optimizer state range [" + std::to_string(offset) + ", " +
                            std::to_string(offset + n) + ") is outside [0, " + std::to_string(num_params_) + ")");
  return slot == 0 ? state_a_ : slot == 1 ? state_b_ : state_c_;
}

void Network::read_state(float* dst, int slot, int64_t offset, int64_t n) const {
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  const Buffer<float>& b = state_buffer(slot, offset, n);
  backend_->copy_to_host(dst, b.data() + offset, sizeof(float) * static_cast<size_t>(n));
}

void Network::write_state(const float* src, int slot, int64_t offset, int64_t n) {
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  const Buffer<float>& b = state_buffer(slot, offset, n);
  backend_->copy_to_device(b.data() + offset, src, sizeof(float) * static_cast<size_t>(n));
}

void Network::set_loss_scale(double scale, int64_t good_steps) {
  if (!(std::isfinite(scale) && scale > 0.0) || good_steps < 0 || good_steps >= kLossScaleGrowthInterval)
    throw std::invalid_argument("[Network] loss scale must be finite and > 0 with good steps in [0, " +
                                std::to_string(kLossScaleGrowthInterval) + ")");
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  loss_scale_ = scale;
  good_steps_ = good_steps;
}

void Network::set_step(int64_t step) {
  if (step < 0) throw std::invalid_argument("[Network] step must be >= 0, got " + std::to_string(step));
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  if (!compiled_) throw std::invalid_argument("[Network] set_step needs a compiled network (compile resets the step)");
  step_ = step;
}

void Network::set_learning_rate(float lr) {
  if (!(std::isfinite(lr) && lr >= 0.0f))
    throw std::invalid_argument("[set_learning_rate] learning_rate must be finite and >= 0, got " + std::to_string(lr));
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  opt_.sgd.lr = lr;
  opt_.adam.lr = lr;
}

float Network::learning_rate() const {
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  return opt_.kind == OptimizerConfig::Kind::adam ? opt_.adam.lr : opt_.sgd.lr;
}

double Network::kernel_penalty(bool with_grad) {
  double penalty = 0.0;
  int64_t width = input_dim_;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerSpec& s = layers_[l];
    if (s.kind != LayerSpec::Kind::dense) continue;
    // A frozen layer's penalty still counts in the loss (as in Keras) but takes no gradient.
    if (s.l1 > 0.0f || s.l2 > 0.0f)
      penalty += backend_->l1_l2_penalty(with_grad && s.trainable ? grads_.data() + weight_offsets_[l] : nullptr,
                                         params_.data() + weight_offsets_[l], width * s.units, s.l1, s.l2);
    width = s.units;
  }
  return penalty;
}

void Network::compile(const LossConfig& loss, const OptimizerConfig& opt, Precision precision) {
  if (!backend_->supports(precision))
    throw std::invalid_argument(std::string("[compile] precision '") + precision_name(precision) +
                                "' is not supported on device '" + backend_->name() +
                                "' (tf32, bf16 and fp16 run on CUDA tensor cores)");
  const int64_t out = output_dim();
  if (loss.kind == LossKind::binary_cross_entropy && out != 1)
    throw std::invalid_argument("[compile] loss 'binary_cross_entropy' needs one output unit, the last layer has " +
                                std::to_string(out));
  if (loss.kind == LossKind::softmax_cross_entropy && !loss.class_weights.empty() &&
      static_cast<int64_t>(loss.class_weights.size()) != out)
    throw std::invalid_argument("[compile] class_weights has " + std::to_string(loss.class_weights.size()) +
                                " entries but the model has " + std::to_string(out) + " classes");
  for (size_t c = 0; c < loss.class_weights.size(); ++c)
    if (!(std::isfinite(loss.class_weights[c]) && loss.class_weights[c] >= 0.0f))
      throw std::invalid_argument("[compile] class_weights[" + std::to_string(c) + "] must be finite and >= 0");
  if (!(loss.label_smoothing >= 0.0f && loss.label_smoothing <= 1.0f))
    throw std::invalid_argument("[compile] label_smoothing must be in [0, 1]");
  if (opt.kind == OptimizerConfig::Kind::sgd) ops::check_sgd_config("compile", opt.sgd);
  else ops::check_adam_config("compile", opt.adam);
  if (!(std::isfinite(opt.clip_norm) && opt.clip_norm >= 0.0f))
    throw std::invalid_argument("[compile] clipnorm must be finite and > 0");

  std::unique_lock<WriterPreferringLock> lock(mutex_);
  loss_ = loss;
  opt_ = opt;
  const size_t n = static_cast<size_t>(num_params_);
  auto zeroed = [&](Buffer<float>& b) {
    b.reserve(n);
    backend_->fill_zero(b.data(), sizeof(float) * n);
  };
  if (opt.kind == OptimizerConfig::Kind::adam) {
    zeroed(state_a_);
    zeroed(state_b_);
    if (opt.adam.amsgrad) zeroed(state_c_);
  } else if (opt.sgd.momentum != 0.0f) {
    zeroed(state_a_);
  }
  if (!loss.class_weights.empty()) {
    class_weights_.reserve(loss.class_weights.size());
    backend_->copy_to_device(class_weights_.data(), loss.class_weights.data(), sizeof(float) * loss.class_weights.size());
  }
  precision_ = precision;
  loss_scale_ = kInitialLossScale;
  good_steps_ = 0;
  step_ = 0;
  compiled_ = true;
  metrics_ = MetricCounters{};
  stats_ = MetricStats{};
  scores_.clear();
  class_probs_.clear();
  class_labels_.clear();
}

void Network::set_metric_stats(const MetricStats& stats) {
  if (!compiled_) throw std::runtime_error("[compile] the model must be compiled before choosing metrics");
  const bool classification = loss_.kind != LossKind::mse;
  const int64_t out = output_dim();
  if ((stats.confusion || stats.scores) && !classification)
    throw std::invalid_argument("[compile] classification metrics need a classification loss, not mse");
  if (stats.regression && classification)
    throw std::invalid_argument(std::string("[compile] regression metrics need the loss mse, not ") +
                                loss_name(loss_.kind));
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  stats_ = stats;
  metric_classes_ = out == 1 ? 2 : out;
  if (stats_.confusion) confusion_.reserve(static_cast<size_t>(metric_classes_ * metric_classes_));
  if (stats_.regression) {
    regression_.reserve(static_cast<size_t>(4 * out));
    regression_shift_.reserve(static_cast<size_t>(out));
  }
  lock.unlock();
  reset_metrics();
}

void Network::reset_metrics() {
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  metrics_ = MetricCounters{};
  if (stats_.confusion)
    backend_->fill_zero(confusion_.data(), sizeof(int64_t) * static_cast<size_t>(metric_classes_ * metric_classes_));
  if (stats_.regression) backend_->fill_zero(regression_.data(), sizeof(double) * static_cast<size_t>(4 * output_dim()));
  scores_.clear();  // keeps its capacity: the next epoch appends without allocating
  class_probs_.clear();
  class_labels_.clear();
  shift_set_ = false;
}

std::vector<int64_t> Network::confusion_matrix() const {
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  if (!stats_.confusion) return {};
  std::vector<int64_t> counts(static_cast<size_t>(metric_classes_ * metric_classes_));
  backend_->copy_to_host(counts.data(), confusion_.data(), sizeof(int64_t) * counts.size());
  return counts;
}

std::vector<double> Network::regression_stats() const {
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  if (!stats_.regression) return {};
  std::vector<double> stats(static_cast<size_t>(4 * output_dim()));
  backend_->copy_to_host(stats.data(), regression_.data(), sizeof(double) * stats.size());
  return stats;
}

namespace {
// The exact area under the ROC curve of (score, label != 0) pairs (sorted in place), as
// sklearn.metrics.roc_auc_score; NaN for one class only or a NaN score.
double binary_roc_auc(std::vector<std::pair<double, int32_t>>& scores_) {
  for (const auto& p : scores_)
    if (std::isnan(p.first)) return NAN;  // no order to rank by (sklearn refuses NaN too)
  // Sorting reorders the pairs only; the area does not depend on their order, so later
  // batches keep appending.
  std::sort(scores_.begin(), scores_.end(),
            [](const std::pair<double, int32_t>& a, const std::pair<double, int32_t>& b) { return a.first < b.first; });
  // Mann-Whitney: each positive scores 1 per negative ranked below it and 1/2 per negative
  // tied with it; integer counts (exact), one division at the end.
  int64_t neg_below = 0, pos = 0, neg = 0;
  double wins2 = 0.0;  // twice the sum, in float64: exact below 2^53
  for (size_t i = 0; i < scores_.size();) {
    size_t j = i;
    int64_t p = 0, n = 0;
    for (; j < scores_.size() && scores_[j].first == scores_[i].first; ++j) (scores_[j].second ? p : n) += 1;
    wins2 += static_cast<double>(p) * static_cast<double>(2 * neg_below + n);
    neg_below += n;
    pos += p;
    neg += n;
    i = j;
  }
  if (pos == 0 || neg == 0) return NAN;
  return wins2 / 2.0 / (static_cast<double>(pos) * static_cast<double>(neg));
}
}  // namespace

double Network::roc_auc() {
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  if (!stats_.scores) return NAN;
  const int64_t out = output_dim();
  if (out <= 2) return binary_roc_auc(scores_);
  // One-vs-rest, macro average (sklearn's multi_class="ovr", average="macro"): each
  // class's probabilities against "is this class", then the unweighted mean. sklearn
  // needs every class in the labels; a missing one gives NaN here, as one class does.
  std::vector<std::pair<double, int32_t>> pairs(class_labels_.size());
  double total = 0.0;
  for (int64_t c = 0; c < out; ++c) {
    for (size_t i = 0; i < class_labels_.size(); ++i)
      pairs[i] = {class_probs_[i * static_cast<size_t>(out) + static_cast<size_t>(c)], class_labels_[i] == c};
    total += binary_roc_auc(pairs);
  }
  return total / static_cast<double>(out);
}

void Network::record_metric_stats(Workspace& ws, const float* logits, int64_t b) {
  const int64_t out = output_dim();
  if (stats_.confusion) backend_->confusion_matrix_update(confusion_.data(), logits, ws.labels.data(), b, out);
  if (stats_.regression) {
    if (!shift_set_) {
      // Any typical target serves; the first row of the first batch costs nothing to find.
      const float* host = backend_->host_addressable() ? ws.targets.data() : ws.host_targets.data();
      std::vector<double> shift(host, host + out);
      backend_->copy_to_device(regression_shift_.data(), shift.data(), sizeof(double) * shift.size());
      shift_set_ = true;
    }
    backend_->regression_stats_update(regression_.data(), logits, ws.targets.data(), regression_shift_.data(), b,
                                      out);
  }
  if (stats_.scores) {
    const bool direct = backend_->host_addressable();
    const float* host = logits;
    if (!direct) {
      host_logits_.resize(static_cast<size_t>(b * out));
      backend_->copy_to_host(host_logits_.data(), logits, sizeof(float) * host_logits_.size());
      host = host_logits_.data();
    }
    const int32_t* labels = direct ? ws.labels.data() : ws.host_labels.data();
    if (out > 2) {
      // One-vs-rest needs each class's probability: the ranks of P(c | x) across rows are
      // not those of logit c, since every row has its own normalizer.
      for (int64_t i = 0; i < b; ++i) {
        const float* row = host + i * out;
        const float mx = *std::max_element(row, row + out);
        double sum = 0.0;
        const size_t first = class_probs_.size();
        for (int64_t c = 0; c < out; ++c) {
          class_probs_.push_back(std::exp(static_cast<double>(row[c]) - static_cast<double>(mx)));
          sum += class_probs_.back();
        }
        for (size_t k = first; k < class_probs_.size(); ++k) class_probs_[k] /= sum;
        class_labels_.push_back(labels[i]);
      }
      return;
    }
    for (int64_t i = 0; i < b; ++i) {
      const double score = out == 1 ? static_cast<double>(host[i])
                                    : static_cast<double>(host[2 * i + 1]) - static_cast<double>(host[2 * i]);
      scores_.emplace_back(score, labels[i]);
    }
  }
}

void Network::check_targets(const void* y, const int64_t* index, int64_t b) const {
  if (loss_.kind == LossKind::mse) return;
  const int32_t* labels = static_cast<const int32_t*>(y);
  const int64_t classes = loss_.kind == LossKind::binary_cross_entropy ? 2 : output_dim();
  for (int64_t i = 0; i < b; ++i) {
    const int64_t r = index ? index[i] : i;
    if (labels[r] < 0 || labels[r] >= classes)
      throw std::out_of_range("y[" + std::to_string(r) + "] = " + std::to_string(labels[r]) + " is outside [0, " +
                              std::to_string(classes) + ")");
  }
}

void Network::check_inputs(const char* op, const Tensor& x, const Tensor* y, const Tensor* sample_weight) const {
  const std::string pre = std::string("[") + op + "] ";
  if (x.dtype() != DType::f32) throw TypeError(pre + "x must be float32, got " + dtype_name(x.dtype()));
  if (x.ndim() != 2) throw std::invalid_argument(pre + "x must be 2-D (samples, features), got shape " + x.shape_str());
  if (!x.is_contiguous()) throw std::invalid_argument(pre + "x must be C-contiguous");
  if (x.dim(1) != input_dim_)
    throw std::invalid_argument(pre + "x has " + std::to_string(x.dim(1)) + " features but the model expects " +
                                std::to_string(input_dim_));
  if (sample_weight) {
    if (sample_weight->dtype() != DType::f32)
      throw TypeError(pre + "sample_weight must be float32, got " + dtype_name(sample_weight->dtype()));
    if (sample_weight->shape() != std::vector<int64_t>{x.dim(0)} || !sample_weight->is_contiguous())
      throw std::invalid_argument(pre + "sample_weight has shape " + sample_weight->shape_str() +
                                  "; expected a C-contiguous array of shape (" + std::to_string(x.dim(0)) + ",)");
  }
  if (!y) return;
  if (!y->is_contiguous()) throw std::invalid_argument(pre + "y must be C-contiguous");
  if (compiled_ && loss_.kind == LossKind::mse) {
    if (y->dtype() != DType::f32) throw TypeError(pre + "y must be float32 for loss 'mse', got " + dtype_name(y->dtype()));
    if (y->shape() != std::vector<int64_t>{x.dim(0), output_dim()})
      throw std::invalid_argument(pre + "y has shape " + y->shape_str() + ", expected (" + std::to_string(x.dim(0)) +
                                  ", " + std::to_string(output_dim()) + ")");
  } else {
    if (y->dtype() != DType::i32) throw TypeError(pre + "y (class labels) must be int32, got " + dtype_name(y->dtype()));
    if (y->shape() != std::vector<int64_t>{x.dim(0)})
      throw std::invalid_argument(pre + "y has shape " + y->shape_str() + " but x has " + std::to_string(x.dim(0)) +
                                  " rows");
  }
}

void Network::stage_batch(Workspace& ws, const float* x, const void* y, const float* sample_weight,
                          const int64_t* index, int64_t start, int64_t b) const {
  // Rows are gathered straight into host-addressable device buffers; elsewhere into
  // host staging buffers that are then copied over.
  const bool direct = backend_->host_addressable();
  const int64_t out = output_dim();
  auto row = [&](int64_t i) { return index ? index[i] : start + i; };
  const size_t in_bytes = sizeof(float) * static_cast<size_t>(b * input_dim_);
  if (!direct) ws.host_input.resize(static_cast<size_t>(b * input_dim_));
  float* in = direct ? ws.input.data() : ws.host_input.data();
  for (int64_t i = 0; i < b; ++i)
    std::memcpy(in + i * input_dim_, x + row(i) * input_dim_, sizeof(float) * static_cast<size_t>(input_dim_));
  if (!direct) backend_->copy_to_device(ws.input.data(), in, in_bytes);
  if (sample_weight) {
    if (!direct) ws.host_row_weights.resize(static_cast<size_t>(b));
    float* w = direct ? ws.row_weights.data() : ws.host_row_weights.data();
    for (int64_t i = 0; i < b; ++i) w[i] = sample_weight[row(i)];
    if (!direct) backend_->copy_to_device(ws.row_weights.data(), w, sizeof(float) * static_cast<size_t>(b));
  }
  if (!y) return;
  const bool float_targets = loss_.kind != LossKind::softmax_cross_entropy;
  const size_t n_targets = static_cast<size_t>(loss_.kind == LossKind::mse ? b * out : b);
  if (!direct) {
    ws.host_targets.resize(n_targets);
    ws.host_labels.resize(static_cast<size_t>(b));
  }
  float* targets = direct ? ws.targets.data() : ws.host_targets.data();
  int32_t* labels = direct ? ws.labels.data() : ws.host_labels.data();
  if (loss_.kind == LossKind::mse) {
    const float* t = static_cast<const float*>(y);
    for (int64_t i = 0; i < b; ++i)
      std::memcpy(targets + i * out, t + row(i) * out, sizeof(float) * static_cast<size_t>(out));
  } else {
    const int32_t* src = static_cast<const int32_t*>(y);
    for (int64_t i = 0; i < b; ++i) labels[i] = src[row(i)];
    // Binary cross-entropy takes its 0/1 labels as float targets too (accuracy uses the labels).
    if (float_targets)
      for (int64_t i = 0; i < b; ++i) targets[i] = static_cast<float>(labels[i]);
  }
  if (direct) return;
  if (float_targets) backend_->copy_to_device(ws.targets.data(), targets, sizeof(float) * n_targets);
  if (loss_.kind != LossKind::mse) backend_->copy_to_device(ws.labels.data(), labels, sizeof(int32_t) * static_cast<size_t>(b));
}

const float* Network::forward(Workspace& ws, const float* input, int64_t b, bool training, float* out) const {
  if (!training && planned_forward_needed()) return forward_planned(ws, input, b, out);
  const float* cur = input;
  int64_t width = input_dim_;
  const size_t last = layers_.size() - 1;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerSpec& s = layers_[l];
    ws.layer_in[l] = cur;
    // At inference the last layer writes straight into the caller's buffer.
    float* dst = (!training && out && l == last) ? out : ws.act[l].data();
    if (s.kind == LayerSpec::Kind::affine) {
      const float* scale = affine_.data() + affine_offsets_[l];
      backend_->feature_affine(dst, cur, scale, scale + width, b, width);
    } else if (s.kind == LayerSpec::Kind::dense) {
      float* z = training && activation_needs_preact(s.activation) ? ws.preact[l].data() : nullptr;
      const float* w = params_.data() + weight_offsets_[l];
      if (training && plans_[l]->fake) {
        w = fake_weights(l);
        cur = fake_input(l, cur, b);
        ws.layer_in[l] = cur;
      }
      ws.layer_w[l] = w;
      backend_->dense_forward(dst, z, cur, w, params_.data() + bias_offsets_[l], {b, width, s.units, precision_},
                              s.activation);
      width = s.units;
    } else if (training && s.rate > 0.0f) {
      // One stream per (step, layer): no two masks share random numbers.
      backend_->dropout(dst, cur, b * width, s.rate, seed_,
                        static_cast<uint64_t>(step_) * layers_.size() + l);
    } else if (dst == out) {
      std::memcpy(dst, cur, sizeof(float) * static_cast<size_t>(b * width));
    } else {
      continue;  // dropout at inference is the identity: pass cur through
    }
    cur = dst;
  }
  return cur;
}

double Network::loss_and_count(Workspace& ws, const float* logits, const float* row_weights, int64_t b,
                               bool with_grad) {
  const int64_t out = output_dim();
  float* grad = with_grad ? ws.grad_a.data() : nullptr;
  double loss = 0.0;
  switch (loss_.kind) {
    case LossKind::softmax_cross_entropy:
      loss = backend_->softmax_cross_entropy(grad, logits, ws.labels.data(),
                                             loss_.class_weights.empty() ? nullptr : class_weights_.data(),
                                             row_weights, b, out, loss_.label_smoothing);
      break;
    case LossKind::binary_cross_entropy:
      loss = backend_->binary_cross_entropy_with_logits(grad, logits, ws.targets.data(), row_weights, b, 1);
      break;
    case LossKind::mse:
      loss = backend_->mse(grad, logits, ws.targets.data(), row_weights, b, out);
      break;
  }
  metrics_.loss_sum += loss * static_cast<double>(b);
  metrics_.count += b;
  if (loss_.kind != LossKind::mse) metrics_.correct += backend_->count_correct(logits, ws.labels.data(), b, out);
  record_metric_stats(ws, logits, b);
  return loss;
}

std::unique_ptr<Network::Workspace> Network::acquire_workspace() const {
  if (Workspace* ws = spare_.exchange(nullptr, std::memory_order_acquire)) return std::unique_ptr<Workspace>(ws);
  {
    std::lock_guard lock(pool_mutex_);
    if (!pool_.empty()) {
      auto ws = std::move(pool_.back());
      pool_.pop_back();
      return ws;
    }
  }
  return std::make_unique<Workspace>(backend_, layers_.size());
}

void Network::release_workspace(std::unique_ptr<Workspace> ws) const {
  Workspace* empty = nullptr;
  if (spare_.compare_exchange_strong(empty, ws.get(), std::memory_order_release, std::memory_order_relaxed)) {
    ws.release();
    return;
  }
  std::lock_guard lock(pool_mutex_);
  pool_.push_back(std::move(ws));
}

namespace {
// Grows the per-layer buffers to hold `rows` rows; no-op once it is large enough.
void reserve_rows(std::vector<Buffer<float>>& act, std::vector<Buffer<float>>& preact,
                  const std::vector<LayerSpec>& layers, const std::vector<int64_t>& widths, int64_t rows,
                  bool training) {
  const size_t r = static_cast<size_t>(rows);
  for (size_t l = 0; l < layers.size(); ++l) {
    act[l].reserve(r * static_cast<size_t>(widths[l]));
    if (training && layers[l].kind == LayerSpec::Kind::dense && activation_needs_preact(layers[l].activation))
      preact[l].reserve(r * static_cast<size_t>(widths[l]));
  }
}
}  // namespace

void Network::reserve_quantized(Workspace& ws, int64_t rows) const {
  bool any = false;
  for (const auto& p : plans_) any = any || (p && p->quant);
  if (!any) return;
  ws.q_a.reserve(static_cast<size_t>(rows * max_width_));
  ws.q_b.reserve(static_cast<size_t>(rows * max_width_));
  ws.q_scale.reserve(static_cast<size_t>(rows));
  ws.q_zero.reserve(static_cast<size_t>(rows));
}

double Network::train_batch(const float* x, const void* y, const float* sample_weight, int64_t n,
                            const int64_t* index, int64_t b) {
  if (!compiled_) throw std::runtime_error("[fit] the model must be compiled before training");
  if (b < 1) throw std::invalid_argument("[fit] a batch needs at least one row");
  for (int64_t i = 0; i < b; ++i)
    if (index[i] < 0 || index[i] >= n)
      throw std::out_of_range("[fit] batch index " + std::to_string(index[i]) + " is outside [0, " +
                              std::to_string(n) + ")");
  check_targets(y, index, b);
  if (sample_weight)
    for (int64_t i = 0; i < b; ++i)
      if (!(std::isfinite(sample_weight[index[i]]) && sample_weight[index[i]] >= 0.0f))
        throw std::invalid_argument("[fit] sample_weight[" + std::to_string(index[i]) + "] = " +
                                    std::to_string(sample_weight[index[i]]) + " must be finite and >= 0");
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  for (const auto& p : plans_)
    if (p && p->quant)
      throw std::runtime_error(
          "[fit] a quantized model cannot be trained: fine-tune the float model (or quantize.qat) and quantize again");
  Workspace& ws = *train_ws_;
  const size_t rows = static_cast<size_t>(b);
  reserve_rows(ws.act, ws.preact, layers_, widths_, b, true);
  ws.input.reserve(rows * static_cast<size_t>(input_dim_));
  ws.grad_a.reserve(rows * static_cast<size_t>(max_width_));
  ws.grad_b.reserve(rows * static_cast<size_t>(max_width_));
  ws.targets.reserve(rows * static_cast<size_t>(output_dim()));
  ws.labels.reserve(rows);
  if (sample_weight) ws.row_weights.reserve(rows);
  stage_batch(ws, x, y, sample_weight, index, 0, b);

  const float* logits = forward(ws, ws.input.data(), b, true, nullptr);
  const double loss = loss_and_count(ws, logits, sample_weight ? ws.row_weights.data() : nullptr, b, true);
  const bool scaled = precision_ == Precision::fp16;
  if (scaled) backend_->scale(ws.grad_a.data(), b * output_dim(), loss_scale_);

  // Backward: gradient w.r.t. each layer's output in cur, ping-ponging between two
  // buffers; dense layers overwrite it with dz in place.
  // Backward stops at the lowest trainable dense layer: nothing below it needs a
  // gradient (the layers before the first dense layer have no parameters at all).
  float* cur = ws.grad_a.data();
  float* other = ws.grad_b.data();
  for (size_t l = layers_.size(); l-- > lowest_trainable_;) {
    const LayerSpec& s = layers_[l];
    const int64_t in_width = l == 0 ? input_dim_ : widths_[l - 1];
    const bool need_dx = l > lowest_trainable_;
    if (s.kind == LayerSpec::Kind::dense) {
      float* dx = need_dx ? other : nullptr;
      // A frozen layer above it passes the gradient on without the weight-gradient work.
      // The kernel is the one the forward pass used (fake-quantized under QAT).
      backend_->dense_backward(dx, s.trainable ? grads_.data() + weight_offsets_[l] : nullptr,
                               s.trainable ? grads_.data() + bias_offsets_[l] : nullptr, cur, cur, ws.layer_in[l],
                               ws.layer_w[l], ws.act[l].data(), ws.preact[l].data(),
                               {b, in_width, s.units, precision_}, s.activation);
      if (!need_dx) break;
      float* t = cur;
      cur = other;
      other = t;
    } else {
      if (!need_dx) break;
      if (s.rate > 0.0f)
        backend_->dropout(cur, cur, b * in_width, s.rate, seed_, static_cast<uint64_t>(step_) * layers_.size() + l);
    }
  }

  if (scaled) {
    // The norm pass doubles as the overflow check (an infinite limit never clips).
    const double norm = backend_->clip_by_global_norm(grads_.data(), num_params_, INFINITY);
    if (!std::isfinite(norm)) {
      loss_scale_ *= 0.5;
      good_steps_ = 0;
      return loss;  // the step is skipped: no update, no penalty, and the step count stays
    }
    backend_->scale(grads_.data(), num_params_, 1.0 / loss_scale_);
    if (++good_steps_ == kLossScaleGrowthInterval) {
      loss_scale_ *= 2.0;
      good_steps_ = 0;
    }
  }
  // The penalty belongs to the loss (as Keras reports it), so its gradient is added
  // before clipping, at the weights the forward pass used (and to unscaled gradients).
  double penalty = 0.0;
  if (regularized_) {
    penalty = kernel_penalty(true);
    metrics_.loss_sum += penalty * static_cast<double>(b);
  }
  if (opt_.clip_norm > 0.0f) backend_->clip_by_global_norm(grads_.data(), num_params_, opt_.clip_norm);
  ++step_;
  run_optimizer();
  apply_masks();
  invalidate_plan();
  return loss + penalty;
}

void Network::evaluate(const float* x, const void* y, int64_t n, int64_t batch_size) {
  if (!compiled_) throw std::runtime_error("[evaluate] the model must be compiled before evaluation");
  if (batch_size < 1) throw std::invalid_argument("[evaluate] batch_size must be >= 1");
  check_targets(y, nullptr, n);
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  Workspace& ws = *train_ws_;
  const int64_t rows = n < batch_size ? n : batch_size;
  reserve_rows(ws.act, ws.preact, layers_, widths_, rows, false);
  reserve_quantized(ws, rows);
  ws.input.reserve(static_cast<size_t>(rows * input_dim_));
  ws.targets.reserve(static_cast<size_t>(rows * output_dim()));
  ws.labels.reserve(static_cast<size_t>(rows));
  for (int64_t start = 0; start < n; start += batch_size) {
    const int64_t b = n - start < batch_size ? n - start : batch_size;
    stage_batch(ws, x, y, nullptr, nullptr, start, b);
    loss_and_count(ws, forward(ws, ws.input.data(), b, false, nullptr), nullptr, b, false);
  }
  // The weights are the same for every batch: one penalty, weighted by all n rows.
  if (regularized_) metrics_.loss_sum += kernel_penalty(false) * static_cast<double>(n);
}

void Network::predict(float* out, const float* x, int64_t n, int64_t batch_size) const {
  if (batch_size < 1) throw std::invalid_argument("[predict] batch_size must be >= 1");
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  std::unique_ptr<Workspace> ws = acquire_workspace();
  const int64_t rows = n < batch_size ? n : batch_size;
  reserve_rows(ws->act, ws->preact, layers_, widths_, rows, false);
  reserve_quantized(*ws, rows);
  const int64_t out_dim = output_dim();
  if (backend_->host_addressable()) {
    // Contiguous batches of the caller's x are read in place: nothing is staged.
    for (int64_t start = 0; start < n; start += batch_size) {
      const int64_t b = n - start < batch_size ? n - start : batch_size;
      forward(*ws, x + start * input_dim_, b, false, out + start * out_dim);
    }
  } else {
    ws->input.reserve(static_cast<size_t>(rows * input_dim_));
    // More rows than the workspace's graphs were recorded at may have moved its buffers.
    if (rows > ws->graph_rows) {
      ws->clear_graphs();
      ws->graph_rows = rows;
    }
    for (int64_t start = 0; start < n; start += batch_size) {
      const int64_t b = n - start < batch_size ? n - start : batch_size;
      backend_->copy_to_device(ws->input.data(), x + start * input_dim_, sizeof(float) * static_cast<size_t>(b * input_dim_));
      const float* y = forward_replayed(*ws, b);
      backend_->copy_to_host(out + start * out_dim, y, sizeof(float) * static_cast<size_t>(b * out_dim));
    }
  }
  release_workspace(std::move(ws));
}

}  // namespace customml
