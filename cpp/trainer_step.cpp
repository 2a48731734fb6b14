// Trainer's optimizer step: after the backward pass, fp16's overflow check and loss-scale
// update, the kernel penalties, global-norm clipping and the update, each scalar they
// decide left on the device and read there by the next kernel (the update scales the
// gradients as it reads them: UpdateScalars), so the step launches only the passes whose
// data it needs (docs/decisions.md, "CUDA").

#include <stdexcept>

#include "trainer.h"

namespace customml {

void Trainer::run_optimizer(const StepState* gate, const UpdateScalars& scalars) {
  // One fused pass per run of trainable layers (usually one: the layers above a frozen
  // base); frozen parameters and their state are never touched, so they stay bit-identical
  // whatever the weight decay.
  float* params = model_.params();
  for (const UpdateRange& r : update_ranges_) {
    const int64_t n = r.end - r.begin, nd = static_cast<int64_t>(r.no_decay.size());
    UpdateScalars u = scalars;  // and the weights' 16-bit twin, written with them
    if (model_.half_params()) {
      u.half = model_.half_params();
      u.half_bf16 = model_.half_format() == Precision::bf16;
      u.half_first = r.begin;
      u.half_rows = model_.half_rows_device();
      u.half_row_count = static_cast<int64_t>(model_.half_rows().size());
    }
    if (opt_.kind == OptimizerConfig::Kind::adam) {
      AdamConfig c = opt_.adam;
      c.step = step_;
      backend_->adam_update(params + r.begin, grads_.data() + r.begin, state_a_.data() + r.begin,
                            state_b_.data() + r.begin, c.amsgrad ? state_c_.data() + r.begin : nullptr, n,
                            r.no_decay.data(), nd, c, gate, u);
    } else {
      backend_->sgd_update(params + r.begin, grads_.data() + r.begin,
                           opt_.sgd.momentum != 0.0f ? state_a_.data() + r.begin : nullptr, n, r.no_decay.data(), nd,
                           opt_.sgd, gate, u);
    }
  }
}

void Trainer::gather_penalty_terms(bool with_grad) {
  const std::vector<LayerSpec>& layers = model_.layers();
  penalty_terms_.clear();  // keeps its capacity: no allocation per step
  int64_t width = model_.input_dim();
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerSpec& s = layers[l];
    if (s.kind != LayerSpec::Kind::dense) continue;
    // A frozen layer's penalty still counts in the loss (as in Keras) but takes no gradient.
    const int64_t w = model_.weight_offsets()[l];
    if (s.l1 > 0.0f || s.l2 > 0.0f)
      penalty_terms_.push_back(
          {with_grad && s.trainable ? grads_.data() + w : nullptr, model_.params() + w, width * s.units, s.l1, s.l2});
    width = s.units;
  }
}

void Trainer::add_kernel_penalty(bool with_grad, int64_t rows, const StepState* gate) {
  gather_penalty_terms(with_grad);
  backend_->kernel_penalties(scalars_.data() + kPenalty, metrics_.loss_sum(), penalty_terms_.data(),
                             static_cast<int64_t>(penalty_terms_.size()), static_cast<double>(rows), gate);
}

bool Trainer::penalties_foldable() const {
  if (!model_.regularized() || precision_ == Precision::fp16) return false;
  int64_t terms = 0;
  for (const LayerSpec& s : model_.layers()) terms += s.kind == LayerSpec::Kind::dense && (s.l1 > 0.0f || s.l2 > 0.0f);
  return terms <= backend_->folded_penalties();
}

bool Trainer::norm_from_slots() const {  // after fold_penalties_ is set
  return opt_.clip_norm > 0.0f && (!model_.regularized() || fold_penalties_) && precision_ != Precision::fp16 &&
         backend_->dense_norm_slots(DenseShape{1, 1, 1, precision_}, false) > 0;
}

int64_t Trainer::norm_slots_of(size_t l, int64_t b) const {
  const LayerSpec& s = model_.layers()[l];
  if (s.kind != LayerSpec::Kind::dense || !s.trainable || l < lowest_trainable_) return 0;
  const int64_t in_width = l == 0 ? model_.input_dim() : model_.widths()[l - 1];
  return backend_->dense_norm_slots(DenseShape{b, in_width, s.units, precision_}, l > lowest_trainable_);
}

void Trainer::reserve_norm_slots(int64_t b) {
  norm_slot_count_ = 0;
  if (!slot_norm_) return;
  for (size_t l = lowest_trainable_; l < model_.layers().size(); ++l) norm_slot_count_ += norm_slots_of(l, b);
  // Every update block reads all the slots: at most kMaxNormSlots (4 KB of doubles) never
  // reads more than the block's own gradients (256 threads a float4, 4 KB at least), so the
  // slots cost at most the norm pass's read. Above (large layers), the pass is cheaper.
  if (norm_slot_count_ > kMaxNormSlots) {
    slot_norm_ = false;
    norm_slot_count_ = 0;
    return;
  }
  norm_slots_.reserve(static_cast<size_t>(norm_slot_count_));
}

void Trainer::apply_gradients(int64_t b) {
  if (!compiled_) throw std::runtime_error("[fit] the model must be compiled before training");
  const int64_t num_params = model_.num_params();
  const StepState* gate = precision_ == Precision::fp16 ? step_state_.data() : nullptr;
  const bool clip = opt_.clip_norm > 0.0f;
  double* norm = scalars_.data() + kNorm;
  UpdateScalars scalars;
  scalars.lr = step_lr_;  // a step graph's learning rate, staged per step; null: the config's
  if (gate) {
    // The norm pass doubles as the overflow check, and its last block takes the decision
    // (step_state.h): an overflowing step is skipped by the gated kernels below (no update,
    // no penalty in the loss, the step count stays) without the host waiting for the
    // device (docs/decisions.md). The update unscales the gradients as it reads them,
    // unless the penalty or the clipping norm needs them unscaled first.
    backend_->global_norm(norm, grads_.data(), num_params, step_state_.data(), kLossScaleGrowthInterval);
    if (model_.regularized() || clip)
      backend_->scale_by(grads_.data(), num_params, &gate->unscale);
    else
      scalars.unscale = &gate->unscale;
  }
  // The penalty belongs to the loss (as Keras reports it), so its gradient is added
  // before clipping, at the weights the forward pass used (and to unscaled gradients).
  if (model_.regularized() && !fold_penalties_) add_kernel_penalty(true, b, gate);
  if (clip && slot_norm_) {  // the update sums the backward's slots itself
    scalars.norm_slots = norm_slots_.data();
    scalars.norm_slot_count = norm_slot_count_;
    scalars.max_norm = opt_.clip_norm;
  } else if (clip) {  // the update scales the gradients by the norm it reads
    backend_->global_norm(norm, grads_.data(), num_params, nullptr, 0);
    scalars.norm = norm;
    scalars.max_norm = opt_.clip_norm;
  }
  if (!gate) ++step_;
  // In a step graph the update reads the step count from the device (step_gates_[1]).
  run_optimizer(gate ? gate : step_gates_ ? step_gates_ + 1 : nullptr, scalars);
  model_.apply_masks();  // unchanged weights on a skipped step: a no-op then
}

}  // namespace customml
