#include "trainer.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "cpu/elementwise.h"
#include "ops.h"
#include "trainer_graph.h"

namespace customml {

LossKind parse_loss(const std::string& name) {
  for (LossKind k :
       {LossKind::softmax_cross_entropy, LossKind::binary_cross_entropy, LossKind::mse, LossKind::distillation})
    if (name == loss_name(k)) return k;
  throw std::invalid_argument("unknown loss '" + name +
                              "'; expected softmax_cross_entropy, binary_cross_entropy, mse or distillation");
}

const char* loss_name(LossKind k) {
  switch (k) {
    case LossKind::softmax_cross_entropy: return "softmax_cross_entropy";
    case LossKind::binary_cross_entropy: return "binary_cross_entropy";
    case LossKind::mse: return "mse";
    case LossKind::distillation: return "distillation";
  }
  return "?";
}

namespace {
// The 16-bit twin of Dense layer l's kernel w (HalfOperands::w) where the model keeps one
// and w is its own kernel (not QAT's fake-quantized copy); else null.
const uint16_t* half_kernel(const Model& m, size_t l, const float* w) {
  return m.half_params() && w == m.params() + m.weight_offsets()[l] ? m.half_params() + m.half_weight_offset(l)
                                                                    : nullptr;
}
}  // namespace

// The buffers of one training (or evaluation) batch of up to `rows` rows. Device buffers
// are host-addressable on the cpu backend, so batches are gathered straight into them.
struct Trainer::Workspace {
  Workspace(Backend* be, size_t n_layers)
      : input(be),
        input16(be),
        grad_a(be),
        grad_b(be),
        targets(be),
        labels(be),
        row_weights(be),
        grad16_a(be),
        grad16_b(be) {
    for (size_t l = 0; l < n_layers; ++l) {
      act.emplace_back(be);
      preact.emplace_back(be);
      act16.emplace_back(be);
    }
    layer_in.resize(n_layers);
    layer_in16.resize(n_layers);
    layer_w.resize(n_layers);
  }
  Buffer<float> input;                // (rows, input_dim)
  Buffer<uint16_t> input16;           // (rows, half_ld(input_dim)), bf16 / fp16: the batch's copy (half_input)
  std::vector<Buffer<float>> act;     // act[l]: (rows, width_l), layer l's output
  std::vector<Buffer<float>> preact;  // preact[l]: (rows, width_l), gelu layers only
  // act16[l]: Dense layer l's output rounded to bf16 / fp16 (those precisions only; rows
  // half_ld(width_l) apart, as every 16-bit copy: backend.h): the
  // next Dense layer's A as the tensor cores read it (HalfOperands)
  std::vector<Buffer<uint16_t>> act16;
  Buffer<float> grad_a, grad_b;  // (rows, max_width): backward ping-pong
  Buffer<float> targets;         // (rows, output_dim): mse and binary cross-entropy
  Buffer<int32_t> labels;        // (rows): classification labels
  Buffer<float> row_weights;     // (rows): the batch's sample weights, when fit has them
  // (rows, half_ld(max_width)), bf16 / fp16 only: dz's 16-bit copies beside grad_a / grad_b, written
  // by the dx store of the Dense layer above (DerivativeBelow::dz16)
  Buffer<uint16_t> grad16_a, grad16_b;
  // Host staging of a batch for devices whose memory the host cannot address.
  std::vector<float> host_input, host_targets, host_row_weights;
  std::vector<uint16_t> host_input16;
  std::vector<int32_t> host_labels;
  // The host copy of the last uploaded batch's targets (host_targets, or a step graph's
  // pinned slot): the regression metrics take their shift from it.
  const float* uploaded_targets = nullptr;
  // layer_in[l]: what layer l read in the last forward pass (a pass-through dropout
  // leaves its own act buffer unwritten, so backward must not assume act[l - 1]).
  std::vector<const float*> layer_in;
  // layer_in16[l]: layer_in[l]'s 16-bit copy as the forward pass read it, or null
  std::vector<const uint16_t*> layer_in16;
  // layer_w[l]: the kernel Dense layer l multiplied by in the last forward pass: its own,
  // or its fake-quantized copy under quantization-aware training.
  std::vector<const float*> layer_w;
};

Trainer::Trainer(Model& model)
    : model_(model),
      backend_(model.backend()),
      grads_(backend_),
      state_a_(backend_),
      state_b_(backend_),
      state_c_(backend_),
      class_weights_(backend_),
      step_state_(backend_),
      metrics_(backend_),
      scalars_(backend_),
      norm_slots_(backend_),
      ws_(std::make_unique<Workspace>(backend_, model.layers().size())),
      eval_ws_(std::make_unique<InferenceWorkspace>(backend_, model.layers().size())) {
  fake_.resize(model.layers().size());
  grads_.reserve(static_cast<size_t>(model.num_params()));
  scalars_.reserve(2);
  step_state_.reserve(1);
  plan_updates();
}

Trainer::~Trainer() = default;

void Trainer::plan_updates() {
  ++config_count_;
  const std::vector<LayerSpec>& layers = model_.layers();
  update_ranges_.clear();
  lowest_trainable_ = layers.size();
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerSpec& s = layers[l];
    if (s.kind != LayerSpec::Kind::dense) continue;
    const int64_t begin = model_.weight_offsets()[l], end = model_.bias_offsets()[l] + s.units;
    if (!s.trainable) {
      backend_->fill_zero(grads_.data() + begin, sizeof(float) * static_cast<size_t>(end - begin));
      continue;
    }
    if (lowest_trainable_ == layers.size()) lowest_trainable_ = l;
    // Layers are laid out back to back, so adjacent trainable layers make one range.
    if (update_ranges_.empty() || update_ranges_.back().end != begin) update_ranges_.push_back({begin, begin, {}});
    UpdateRange& r = update_ranges_.back();
    r.end = end;
    // Biases take no weight decay (DESIGN decision 2).
    r.no_decay.push_back({model_.bias_offsets()[l] - r.begin, end - r.begin});
  }
}

int Trainer::state_slots() const {
  if (!compiled_) return 0;
  if (opt_.kind == OptimizerConfig::Kind::adam) return opt_.adam.amsgrad ? 3 : 2;
  return opt_.sgd.momentum != 0.0f ? 1 : 0;
}

const Buffer<float>& Trainer::state_buffer(int slot, int64_t offset, int64_t n) const {
  const int slots = state_slots();
  if (slot < 0 || slot >= slots)
    throw std::out_of_range("[Network] optimizer state slot " + std::to_string(slot) + " is outside [0, " +
                            std::to_string(slots) + ")" + (compiled_ ? "" : " (the network is not compiled)"));
  if (offset < 0 || n < 0 || offset + n > model_.num_params())
    throw std::out_of_range("[Network] optimizer state range [" + std::to_string(offset) + ", " +
                            std::to_string(offset + n) + ") is outside [0, " + std::to_string(model_.num_params()) +
                            ")");
  return slot == 0 ? state_a_ : slot == 1 ? state_b_ : state_c_;
}

void Trainer::read_state(float* dst, int slot, int64_t offset, int64_t n) const {
  const Buffer<float>& b = state_buffer(slot, offset, n);
  backend_->copy_to_host(dst, b.data() + offset, sizeof(float) * static_cast<size_t>(n));
}

void Trainer::write_state(const float* src, int slot, int64_t offset, int64_t n) {
  const Buffer<float>& b = state_buffer(slot, offset, n);
  backend_->copy_to_device(b.data() + offset, src, sizeof(float) * static_cast<size_t>(n));
}

StepState Trainer::read_step_state() const {
  StepState s{};
  backend_->copy_to_host(&s, step_state_.data(), sizeof(s));
  return s;
}

void Trainer::write_step_state(const StepState& s) { backend_->copy_to_device(step_state_.data(), &s, sizeof(s)); }

int64_t Trainer::step() const {
  return precision_ == Precision::fp16 ? static_cast<int64_t>(read_step_state().step) : step_;
}

double Trainer::loss_scale() const { return precision_ == Precision::fp16 ? read_step_state().scale : loss_scale_; }

int64_t Trainer::loss_scale_good_steps() const {
  return precision_ == Precision::fp16 ? static_cast<int64_t>(read_step_state().good_steps) : good_steps_;
}

void Trainer::set_loss_scale(double scale, int64_t good_steps) {
  if (!(std::isfinite(scale) && scale > 0.0) || good_steps < 0 || good_steps >= kLossScaleGrowthInterval)
    throw std::invalid_argument("[Network] loss scale must be finite and > 0 with good steps in [0, " +
                                std::to_string(kLossScaleGrowthInterval) + ")");
  loss_scale_ = scale;
  good_steps_ = good_steps;
  if (precision_ != Precision::fp16) return;
  StepState s = read_step_state();
  s.scale = scale;
  s.good_steps = static_cast<double>(good_steps);
  write_step_state(s);
}

void Trainer::set_step(int64_t step) {
  if (step < 0) throw std::invalid_argument("[Network] step must be >= 0, got " + std::to_string(step));
  if (!compiled_) throw std::invalid_argument("[Network] set_step needs a compiled network (compile resets the step)");
  step_ = step;
  if (precision_ != Precision::fp16) return;
  StepState s = read_step_state();
  s.step = static_cast<double>(step);
  write_step_state(s);
}

void Trainer::set_learning_rate(float lr) {
  if (!(std::isfinite(lr) && lr >= 0.0f))
    throw std::invalid_argument("[set_learning_rate] learning_rate must be finite and >= 0, got " + std::to_string(lr));
  opt_.sgd.lr = lr;
  opt_.adam.lr = lr;
}

float Trainer::learning_rate() const { return opt_.kind == OptimizerConfig::Kind::adam ? opt_.adam.lr : opt_.sgd.lr; }

void Trainer::compile(const LossConfig& loss, const OptimizerConfig& opt, Precision precision) {
  if (!backend_->supports(precision))
    throw std::invalid_argument(std::string("[compile] precision '") + precision_name(precision) +
                                "' is not supported on device '" + backend_->name() +
                                "' (tf32, bf16 and fp16 run on CUDA tensor cores)");
  const int64_t out = model_.output_dim();
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
  if (loss.kind == LossKind::distillation &&
      !(std::isfinite(loss.temperature) && loss.temperature >= 0.05f && loss.alpha >= 0.0f && loss.alpha <= 1.0f))
    throw std::invalid_argument("[compile] the distillation loss needs temperature >= 0.05 and alpha in [0, 1]");
  if (opt.kind == OptimizerConfig::Kind::sgd)
    ops::check_sgd_config("compile", opt.sgd);
  else
    ops::check_adam_config("compile", opt.adam);
  if (!(std::isfinite(opt.clip_norm) && opt.clip_norm >= 0.0f))
    throw std::invalid_argument("[compile] clipnorm must be finite and > 0");

  loss_ = loss;
  opt_ = opt;
  const size_t n = static_cast<size_t>(model_.num_params());
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
    backend_->copy_to_device(class_weights_.data(), loss.class_weights.data(),
                             sizeof(float) * loss.class_weights.size());
  }
  precision_ = precision;
  model_.set_half_format(precision);  // the weights' 16-bit twin, at bf16 and fp16 only
  loss_scale_ = kInitialLossScale;
  good_steps_ = 0;
  step_ = 0;
  if (precision == Precision::fp16) write_step_state({0.0, kInitialLossScale, 0.0, 0.0, 1.0});
  compiled_ = true;
  ++config_count_;
  metrics_.clear_choice();
}

void Trainer::choose_metrics(const MetricStats& stats) {
  if (!compiled_) throw std::runtime_error("[compile] the model must be compiled before choosing metrics");
  const bool classification = loss_.kind != LossKind::mse;
  if ((stats.confusion || stats.scores) && !classification)
    throw std::invalid_argument("[compile] classification metrics need a classification loss, not mse");
  if (stats.regression && classification)
    throw std::invalid_argument(std::string("[compile] regression metrics need the loss mse, not ") +
                                loss_name(loss_.kind));
  metrics_.choose(stats, model_.output_dim());
  ++config_count_;
}

void Trainer::stage_batch(const float* x, const void* y, const float* sample_weight, const int64_t* index,
                          int64_t start, int64_t b, bool half_x) {
  Workspace& ws = *ws_;
  // Rows are gathered straight into host-addressable device buffers; elsewhere into
  // host staging buffers that are then copied over.
  if (backend_->host_addressable()) {
    gather_batch({ws.input.data(), ws.row_weights.data(), ws.targets.data(), ws.labels.data(),
                  half_x ? ws.input16.data() : nullptr},
                 x, y, sample_weight, index, start, b);
    return;
  }
  const size_t rows = static_cast<size_t>(b), values = rows * static_cast<size_t>(model_.input_dim());
  ws.host_input.resize(half_x ? 0 : values);
  ws.host_input16.resize(half_x ? rows * static_cast<size_t>(half_ld(model_.input_dim())) : 0);
  ws.host_row_weights.resize(rows);
  ws.host_targets.resize(rows * static_cast<size_t>(model_.output_dim()));
  ws.host_labels.resize(rows);
  const HostBatch h{ws.host_input.data(), ws.host_row_weights.data(), ws.host_targets.data(), ws.host_labels.data(),
                    half_x ? ws.host_input16.data() : nullptr};
  gather_batch(h, x, y, sample_weight, index, start, b);
  upload_batch(h, b, sample_weight != nullptr, y != nullptr);
}

void Trainer::gather_batch(const HostBatch& h, const float* x, const void* y, const float* sample_weight,
                           const int64_t* index, int64_t start, int64_t b) const {
  const int64_t input_dim = model_.input_dim(), out = model_.output_dim();
  auto row = [&](int64_t i) { return index ? index[i] : start + i; };
  // in 16 bits: the device's rounding (cpp/half_round.h), so the GEMM sees the bits it would
  // have rounded; rows half_ld apart (the pads not written: no GEMM reads them)
  for (int64_t i = 0; i < b; ++i) {
    if (h.input16)
      cpu::elementwise().round_to_half(h.input16 + i * half_ld(input_dim), x + row(i) * input_dim, input_dim,
                                       precision_ == Precision::bf16);
    else
      std::memcpy(h.input + i * input_dim, x + row(i) * input_dim, sizeof(float) * static_cast<size_t>(input_dim));
  }
  if (sample_weight)
    for (int64_t i = 0; i < b; ++i) h.row_weights[i] = sample_weight[row(i)];
  if (!y) return;
  if (loss_.kind == LossKind::mse) {
    const float* t = static_cast<const float*>(y);
    for (int64_t i = 0; i < b; ++i)
      std::memcpy(h.targets + i * out, t + row(i) * out, sizeof(float) * static_cast<size_t>(out));
  } else {
    const int32_t* src = static_cast<const int32_t*>(y);
    for (int64_t i = 0; i < b; ++i) h.labels[i] = src[row(i)];
    // Binary cross-entropy takes its 0/1 labels as float targets too (accuracy uses the labels).
    if (loss_.kind == LossKind::binary_cross_entropy)
      for (int64_t i = 0; i < b; ++i) h.targets[i] = static_cast<float>(h.labels[i]);
  }
}

void Trainer::upload_batch(const HostBatch& h, int64_t b, bool row_weights, bool targets, bool soft) {
  Workspace& ws = *ws_;
  ws.uploaded_targets = h.targets;
  const size_t rows = static_cast<size_t>(b);
  const size_t values = rows * static_cast<size_t>(model_.input_dim());
  if (h.input16)
    backend_->copy_to_device(ws.input16.data(), h.input16,
                             sizeof(uint16_t) * rows * static_cast<size_t>(half_ld(model_.input_dim())));
  else
    backend_->copy_to_device(ws.input.data(), h.input, sizeof(float) * values);
  if (row_weights) backend_->copy_to_device(ws.row_weights.data(), h.row_weights, sizeof(float) * rows);
  if (!targets) return;
  if (loss_.kind == LossKind::binary_cross_entropy || loss_.kind == LossKind::mse)
    backend_->copy_to_device(
        ws.targets.data(), h.targets,
        sizeof(float) * rows * static_cast<size_t>(loss_.kind == LossKind::mse ? model_.output_dim() : 1));
  if (loss_.kind != LossKind::mse) backend_->copy_to_device(ws.labels.data(), h.labels, sizeof(int32_t) * rows);
  if (soft)
    backend_->copy_to_device(ws.targets.data(), h.targets,
                             sizeof(float) * rows * static_cast<size_t>(model_.output_dim()));
}

void Trainer::stage_rows(float* dst, const float* src, const int64_t* index, int64_t start, int64_t b, int64_t cols) {
  const bool direct = backend_->host_addressable();
  const size_t row_bytes = sizeof(float) * static_cast<size_t>(cols);
  if (!direct) ws_->host_targets.resize(static_cast<size_t>(b * cols));
  float* rows = direct ? dst : ws_->host_targets.data();
  for (int64_t i = 0; i < b; ++i) std::memcpy(rows + i * cols, src + (index ? index[i] : start + i) * cols, row_bytes);
  if (!direct) backend_->copy_to_device(dst, rows, row_bytes * static_cast<size_t>(b));
}

bool Trainer::half_input(const BatchShare& share) const {
  const std::vector<LayerSpec>& layers = model_.layers();
  if (!ws_->input16.data() || !ws_->grad16_a.data()) return false;  // none at this precision
  size_t f = 0;
  while (f < layers.size() && layers[f].kind == LayerSpec::Kind::dropout && layers[f].rate == 0.0f) ++f;
  if (f == layers.size() || layers[f].kind != LayerSpec::Kind::dense || !half_reads(f, false).x) return false;
  if (lowest_trainable_ != f) return true;  // the backward stops above it
  // Its dW reads dz's copy where the Dense layer above's dx store (or the loss) wrote it.
  size_t above = f + 1;
  while (above < layers.size() && layers[above].kind != LayerSpec::Kind::dense) ++above;
  const bool dz_ready = above < layers.size() ? derivative_fused_below(above) == f : loss_applies_derivative(share);
  return dz_ready && half_reads(f, true).x;
}

const float* Trainer::forward(int64_t b, const BatchShare& share) {
  Workspace& ws = *ws_;
  const std::vector<LayerSpec>& layers = model_.layers();
  const float* params = model_.params();
  const float* cur = ws.input.data();
  // cur in 16 bits, when the Dense layer below wrote it so, or the batch was staged so
  const uint16_t* cur16 = half_input(share) ? ws.input16.data() : nullptr;
  int64_t width = model_.input_dim();
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerSpec& s = layers[l];
    ws.layer_in[l] = cur;
    ws.layer_in16[l] = nullptr;
    float* dst = ws.act[l].data();
    uint16_t* dst16 = nullptr;
    if (s.kind == LayerSpec::Kind::affine) {
      const float* scale = model_.affine() + model_.affine_offset(l);
      backend_->feature_affine(dst, cur, scale, scale + width, b, width);
    } else if (s.kind == LayerSpec::Kind::dense) {
      float* z = activation_needs_preact(s.activation) ? ws.preact[l].data() : nullptr;
      const float* w = params + model_.weight_offsets()[l];
      if (fake_[l]) {
        w = fake_weights(l);
        cur = fake_input(l, cur, b, share);
        cur16 = nullptr;
        ws.layer_in[l] = cur;
      }
      ws.layer_w[l] = w;
      ws.layer_in16[l] = cur16;
      // the 16-bit copy only where the next Dense layer's launches read it (not before a
      // Dropout that masks it, nor at the output, nor where that layer rounds its A itself)
      if (half_output_read(l)) dst16 = ws.act16[l].data();
      DenseShape shape{b, width, s.units, precision_, {half_kernel(model_, l, w), cur16, dst16}};
      if (dropout_fused_below(l + 1))  // the Dropout layer's output too
        shape.dropout = dropout_mask(ws.act[l + 1].data(), layers[l + 1].rate, l + 1,
                                     static_cast<uint64_t>(share.first_row * s.units));
      backend_->dense_forward(dst, z, cur, w, params + model_.bias_offsets()[l], shape, s.activation);
      width = s.units;
    } else if (s.rate > 0.0f) {
      if (!dropout_fused_below(l))
        dropout(dst, cur, b * width, s.rate, l, static_cast<uint64_t>(share.first_row * width));
    } else {
      continue;  // a dropout of rate 0 is the identity: pass cur through
    }
    cur = dst;
    cur16 = dst16;
  }
  return cur;
}

void Trainer::dropout(float* y, const float* x, int64_t n, float rate, size_t l, uint64_t first) {
  const DropoutMask m = dropout_mask(y, rate, l, first);
  backend_->dropout(y, x, n, rate, m.seed, m.stream, first, m.gate, m.per_step);
}

DropoutMask Trainer::dropout_mask(float* out, float rate, size_t l, uint64_t first) const {
  // One stream per (step, layer): no two masks share random numbers. In fp16 (and in a
  // step graph) the device holds the step count, and the kernel reads it there.
  const uint64_t layers = model_.layers().size();
  const StepState* gate = precision_ == Precision::fp16 ? step_state_.data() : step_gates_;
  if (gate) return {out, rate, seed_, l, first, gate, layers};
  return {out, rate, seed_, static_cast<uint64_t>(step_) * layers + l, first, nullptr, 0};
}

void Trainer::loss_and_count(const float* logits, const float* row_weights, int64_t b, bool with_grad, bool soft,
                             const BatchShare& share) {
  Workspace& ws = *ws_;
  const int64_t out = model_.output_dim();
  float* grad = with_grad ? ws.grad_a.data() : nullptr;
  double* loss = metrics_.batch_loss();
  const double loss_rows =
      share.global_rows > 0 ? share.weight * static_cast<double>(share.global_rows) : static_cast<double>(b);
  // The loss ops add the batch's loss and correct count to the metrics themselves and scale
  // the gradient by fp16's loss scale before the backward pass (one launch on CUDA).
  const auto folded_metrics = [&] {
    LossMetrics m = metrics_.loss_metrics(b, loss_rows, {ws.labels.data(), ws.targets.data(), ws.uploaded_targets});
    if (grad && precision_ == Precision::fp16) m.grad_scale = &step_state_.data()->scale;
    if (grad) loss_derivative(m, share, ws.act.back().data(), ws.preact.back().data(), ws.grad16_a.data());
    if (grad && fold_penalties_) {  // their gradients: dW's stores (run_gradients)
      gather_penalty_terms(false);
      m.penalties = penalty_terms_.data();
      m.penalty_count = static_cast<int64_t>(penalty_terms_.size());
      m.penalty = scalars_.data() + kPenalty;
      m.penalty_weight = static_cast<double>(b);
    }
    return m;
  };
  switch (loss_.kind) {
    case LossKind::softmax_cross_entropy:
      if (soft) {
        backend_->softmax_cross_entropy_soft_metrics(grad, loss, logits, ws.targets.data(), ws.labels.data(),
                                                     row_weights, b, out, folded_metrics());
        break;
      }
      backend_->softmax_cross_entropy_metrics(grad, loss, logits, ws.labels.data(),
                                              loss_.class_weights.empty() ? nullptr : class_weights_.data(),
                                              row_weights, b, out, loss_.label_smoothing, folded_metrics());
      break;
    case LossKind::binary_cross_entropy:
      backend_->binary_cross_entropy_with_logits_metrics(grad, loss, logits, ws.targets.data(), ws.labels.data(),
                                                         row_weights, b, 1, folded_metrics());
      break;
    case LossKind::mse:
      backend_->mse_metrics(grad, loss, logits, ws.targets.data(), row_weights, b, out, folded_metrics());
      break;
    case LossKind::distillation:
      // Training stages the teacher's logits into targets; evaluate has none and reports
      // the labels' cross-entropy.
      if (with_grad) {
        backend_->distillation_loss_metrics(grad, loss, logits, ws.targets.data(), ws.labels.data(), row_weights, b,
                                            out, loss_.temperature, loss_.alpha, folded_metrics());
      } else {
        backend_->softmax_cross_entropy_metrics(nullptr, loss, logits, ws.labels.data(), nullptr, nullptr, b, out, 0.0f,
                                                folded_metrics());
      }
      break;
  }
  metrics_.record_scores(logits, ws.labels.data(), b);
}

namespace {
// Grows the per-layer buffers to hold `rows` rows; no-op once it is large enough.
void reserve_rows(std::vector<Buffer<float>>& act, std::vector<Buffer<float>>& preact,
                  const std::vector<LayerSpec>& layers, const std::vector<int64_t>& widths, int64_t rows) {
  const size_t r = static_cast<size_t>(rows);
  for (size_t l = 0; l < layers.size(); ++l) {
    act[l].reserve(r * static_cast<size_t>(widths[l]));
    if (layers[l].kind == LayerSpec::Kind::dense && activation_needs_preact(layers[l].activation))
      preact[l].reserve(r * static_cast<size_t>(widths[l]));
  }
}
}  // namespace

void Trainer::train_batch(const float* x, const void* y, const float* sample_weight, int64_t n, const int64_t* index,
                          int64_t b, const float* soft_targets) {
  if (b < 1) throw std::invalid_argument("[fit] a batch needs at least one row");
  // The step's loss and update take the penalties (not compute_gradients and
  // apply_gradients called apart: a data-parallel step adds them after the gradients' sum).
  struct FoldScope {
    bool &fold, &slots;
    ~FoldScope() { fold = slots = false; }
  } scope{fold_penalties_, slot_norm_};
  fold_penalties_ = penalties_foldable();
  slot_norm_ = norm_from_slots();
  if (graph_) {
    train_batch_graphed(x, y, sample_weight, n, index, b, soft_targets);
    return;
  }
  compute_gradients(x, y, sample_weight, n, index, b, BatchShare{}, soft_targets);
  apply_gradients(b);
}

void Trainer::compute_gradients(const float* x, const void* y, const float* sample_weight, int64_t n,
                                const int64_t* index, int64_t b, const BatchShare& share, const float* soft_targets) {
  check_batch(y, sample_weight, n, index, b, soft_targets);
  if (b == 0) {  // an empty share of a global batch takes part with a zero gradient
    backend_->fill_zero(grads_.data(), sizeof(float) * static_cast<size_t>(model_.num_params()));
    // and in the other ranks' input ranges, with none of its own.
    for (const auto& f : fake_)
      if (f && f->inputs && share.combine_range) observe_input_range(*f, nullptr, 0, share);
    return;
  }
  reserve_batch(b, sample_weight != nullptr);
  stage_batch(x, y, sample_weight, index, 0, b, half_input(share));
  if (soft_targets) stage_rows(ws_->targets.data(), soft_targets, index, 0, b, model_.output_dim());
  run_gradients(b, share, sample_weight != nullptr, soft_targets != nullptr);
}

void Trainer::reserve_batch(int64_t b, bool row_weights) {
  Workspace& ws = *ws_;
  const int64_t input_dim = model_.input_dim(), out = model_.output_dim();
  const size_t rows = static_cast<size_t>(b);
  reserve_rows(ws.act, ws.preact, model_.layers(), model_.widths(), b);
  for (size_t l = 0; l < model_.layers().size(); ++l) {
    if (half_operands(precision_) && model_.layers()[l].kind == LayerSpec::Kind::dense)
      ws.act16[l].reserve(rows * static_cast<size_t>(half_ld(model_.widths()[l])));
    else
      ws.act16[l].release();  // none at the other precisions, also after a recompile
  }
  ws.input.reserve(rows * static_cast<size_t>(input_dim));
  if (half_operands(precision_))
    ws.input16.reserve(rows * static_cast<size_t>(half_ld(input_dim)));
  else
    ws.input16.release();
  ws.grad_a.reserve(rows * static_cast<size_t>(model_.max_width()));
  ws.grad_b.reserve(rows * static_cast<size_t>(model_.max_width()));
  for (Buffer<uint16_t>* g : {&ws.grad16_a, &ws.grad16_b}) {
    if (half_operands(precision_))
      g->reserve(rows * static_cast<size_t>(half_ld(model_.max_width())));
    else
      g->release();
  }
  ws.targets.reserve(rows * static_cast<size_t>(out));
  ws.labels.reserve(rows);
  if (row_weights) ws.row_weights.reserve(rows);
  reserve_norm_slots(b);
}

void Trainer::run_gradients(int64_t b, const BatchShare& share, bool row_weights, bool soft) {
  Workspace& ws = *ws_;
  const std::vector<LayerSpec>& layers = model_.layers();
  const int64_t input_dim = model_.input_dim(), out = model_.output_dim();
  loss_and_count(forward(b, share), row_weights ? ws.row_weights.data() : nullptr, b, true, soft, share);
  if (share.weight != 1.0) backend_->scale(ws.grad_a.data(), b * out, share.weight);

  // Backward: gradient w.r.t. each layer's output in cur, ping-ponging between two
  // buffers; dense layers overwrite it with dz in place.
  // Backward stops at the lowest trainable dense layer: nothing below it needs a
  // gradient (the layers before the first dense layer have no parameters at all).
  // Where the device fuses it, a Dense layer's dx store writes the Dense layer below's dz
  // (its derivative applied, and dz's 16-bit copy), and that layer reads dz as it is.
  float* cur = ws.grad_a.data();
  float* other = ws.grad_b.data();
  int64_t slots = 0;                     // the norm slots filled so far (slot_norm_), in backward order
  uint16_t* cur16 = ws.grad16_a.data();  // cur's 16-bit copy, once dz_ready
  uint16_t* other16 = ws.grad16_b.data();
  bool dz_ready = loss_applies_derivative(share);  // cur holds dz (the dx store above or the loss applied act')
  for (size_t l = layers.size(); l-- > lowest_trainable_;) {
    const LayerSpec& s = layers[l];
    const int64_t in_width = l == 0 ? input_dim : model_.widths()[l - 1];
    const bool need_dx = l > lowest_trainable_;
    if (s.kind == LayerSpec::Kind::dense) {
      float* dx = need_dx ? other : nullptr;
      // A frozen layer above it passes the gradient on without the weight-gradient work.
      // The kernel is the one the forward pass used (fake-quantized under QAT).
      DenseShape shape{b, in_width, s.units, precision_, {half_kernel(model_, l, ws.layer_w[l]), ws.layer_in16[l]}};
      if (dz_ready && half_reads(l, true).dy) shape.half.dy = cur16;  // written only then
      if (need_dx && dropout_fused_above(l - 1))                      // dx through the Dropout layer's mask
        shape.dropout = dropout_mask(dx, layers[l - 1].rate, l - 1, static_cast<uint64_t>(share.first_row * in_width));
      if (slot_norm_ && s.trainable) {
        shape.norm_slots = norm_slots_.data() + slots;
        slots += norm_slots_of(l, b);
      }
      if (fold_penalties_ && s.trainable && (s.l1 > 0.0f || s.l2 > 0.0f))
        shape.penalty = {model_.params() + model_.weight_offsets()[l], s.l1, s.l2};
      const size_t below = need_dx ? derivative_fused_below(l) : layers.size();
      if (below < layers.size())
        shape.below = {layers[below].activation, ws.act[below].data(), ws.preact[below].data(),
                       half_reads(below, true).dy ? other16 : nullptr};
      backend_->dense_backward(dx, s.trainable ? grads_.data() + model_.weight_offsets()[l] : nullptr,
                               s.trainable ? grads_.data() + model_.bias_offsets()[l] : nullptr, cur, cur,
                               ws.layer_in[l], ws.layer_w[l], ws.act[l].data(), ws.preact[l].data(), shape,
                               dz_ready ? Activation::identity : s.activation);
      if (!need_dx) break;
      dz_ready = below < layers.size();
      std::swap(cur, other);
      std::swap(cur16, other16);
    } else {
      if (!need_dx) break;
      if (s.rate > 0.0f && !dropout_fused_above(l))
        dropout(cur, cur, b * in_width, s.rate, l, static_cast<uint64_t>(share.first_row * in_width));
    }
  }
}

void Trainer::evaluate(const InferencePlan& plan, const float* x, const void* y, int64_t n, int64_t batch_size,
                       const float* soft_targets) {
  if (!compiled_) throw std::runtime_error("[evaluate] the model must be compiled before evaluation");
  if (batch_size < 1) throw std::invalid_argument("[evaluate] batch_size must be >= 1");
  check_soft_targets("evaluate", soft_targets);
  check_targets(y, nullptr, n);
  Workspace& ws = *ws_;
  const int64_t rows = n < batch_size ? n : batch_size;
  plan.reserve(*eval_ws_, rows);
  // The batch crosses in 16 bits where that is all the plan reads of it (half_input).
  const bool half_x = plan.half_input() && plan.precision() == precision_;
  if (half_x)
    ws.input16.reserve(static_cast<size_t>(rows * half_ld(model_.input_dim())));
  else
    ws.input.reserve(static_cast<size_t>(rows * model_.input_dim()));
  ws.targets.reserve(static_cast<size_t>(rows * model_.output_dim()));
  ws.labels.reserve(static_cast<size_t>(rows));
  for (int64_t start = 0; start < n; start += batch_size) {
    const int64_t b = n - start < batch_size ? n - start : batch_size;
    stage_batch(x, y, nullptr, nullptr, start, b, half_x);
    // The distillation loss evaluates against the labels (there is no teacher here).
    const bool soft = soft_targets && loss_.kind == LossKind::softmax_cross_entropy;
    if (soft) stage_rows(ws.targets.data(), soft_targets, nullptr, start, b, model_.output_dim());
    loss_and_count(plan.forward(*eval_ws_, ws.input.data(), b, nullptr, half_x ? ws.input16.data() : nullptr), nullptr,
                   b, false, soft);
  }
  // The weights are the same for every batch: one penalty, weighted by all n rows.
  if (model_.regularized()) add_kernel_penalty(false, n, nullptr);
}

}  // namespace customml
