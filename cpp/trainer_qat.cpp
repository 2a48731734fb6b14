// Quantization-aware training (issue #6): fake quantization of a Dense layer's weights and
// inputs in the training forward pass, with the straight-through estimator. The codes go
// through the same quantize / dequantize kernels as inference, so training sees exactly
// the values the int8 plan will compute with.

#include <stdexcept>
#include <string>

#include "trainer.h"

namespace customml {

void Trainer::set_fake_quantization(int64_t layer, bool per_channel, bool inputs, float momentum) {
  if (!(momentum >= 0.0f && momentum < 1.0f))
    throw std::invalid_argument("[set_fake_quantization] momentum must be in [0, 1), got " + std::to_string(momentum));
  const DenseLayerState& p = model_.dense("set_fake_quantization", layer);
  auto f = std::make_unique<FakeQuant>(backend_);
  f->per_channel = per_channel;
  f->inputs = inputs;
  f->momentum = momentum;
  f->w.reserve(static_cast<size_t>(p.in * p.out));
  f->w_codes.reserve(static_cast<size_t>(p.in * p.out));
  f->w_scale.reserve(static_cast<size_t>(per_channel ? p.out : 1));
  f->x_scale.reserve(1);
  f->x_zero.reserve(1);
  f->range.reserve(2);
  f->batch_range.reserve(2);
  f->batch_ends.reserve(2);
  fake_[static_cast<size_t>(layer)] = std::move(f);
  ++config_count_;  // the step's launches change (a recorded step graph is stale)
}

void Trainer::clear_fake_quantization(int64_t layer) {
  model_.dense("clear_fake_quantization", layer);
  fake_[static_cast<size_t>(layer)].reset();
  ++config_count_;
}

std::pair<double, double> Trainer::fake_input_range(int64_t layer) const {
  model_.dense("fake_input_range", layer);
  const FakeQuant* f = fake_[static_cast<size_t>(layer)].get();
  if (!f) throw std::invalid_argument("[fake_input_range] layer " + std::to_string(layer) + " is not fake-quantized");
  if (!f->range_set) return {0.0, 0.0};
  double range[2];
  backend_->copy_to_host(range, f->range.data(), sizeof(range));  // asked for, not part of a step
  return {range[0], range[1]};
}

// Both ranges are computed on the device (symmetric_scales, observe_range), so a QAT
// training step never waits for it (in one process; see observe_input_range).

const float* Trainer::fake_weights(size_t l) {
  const DenseLayerState& p = *model_.dense_state(l);
  FakeQuant& f = *fake_[l];
  const float* w = model_.params() + model_.weight_offsets()[l];
  // Symmetric int8 scales from this step's weights, as customml.quantize.quantize_weights.
  const QuantAxis axis = f.per_channel ? QuantAxis::column : QuantAxis::tensor;
  backend_->symmetric_scales(f.w_scale.data(), w, p.in, p.out, axis);
  backend_->fake_quantize(f.w.data(), f.w_codes.data(), DType::i8, w, f.w_scale.data(), nullptr, p.in, p.out, axis);
  return f.w.data();
}

void Trainer::observe_input_range(FakeQuant& f, const float* input, int64_t n, const BatchShare& share) {
  if (!share.combine_range) {
    backend_->observe_range(f.range.data(), f.x_scale.data(), f.x_zero.data(), input, n, f.momentum, !f.range_set);
  } else {
    // This rank's batch range (observe_range's first-batch form, into scratch), the
    // caller's combination of the ranks' (a min and max all-reduce), then that range
    // averaged in as one process averages the global batch's: observe_range of the two
    // ends gives back exactly (lo, hi), since lo <= 0 <= hi. Two host copies per layer and
    // step (the step waits for the device there), under data parallelism only.
    backend_->observe_range(f.batch_range.data(), f.x_scale.data(), f.x_zero.data(), input, n, 0.0f, true);
    double mine[2];
    backend_->copy_to_host(mine, f.batch_range.data(), sizeof(mine));
    const std::pair<float, float> all = share.combine_range(static_cast<float>(mine[0]), static_cast<float>(mine[1]));
    const float ends[2] = {all.first, all.second};
    backend_->copy_to_device(f.batch_ends.data(), ends, sizeof(ends));
    backend_->observe_range(f.range.data(), f.x_scale.data(), f.x_zero.data(), f.batch_ends.data(), 2, f.momentum,
                            !f.range_set);
  }
  f.range_set = true;
}

const float* Trainer::fake_input(size_t l, const float* input, int64_t b, const BatchShare& share) {
  const DenseLayerState& p = *model_.dense_state(l);
  FakeQuant& f = *fake_[l];
  if (!f.inputs) return input;
  // A moving average of the batch ranges, encoded as inference encodes a static input
  // (customml.quantize.activation_encoding).
  observe_input_range(f, input, b * p.in, share);
  f.x.reserve(static_cast<size_t>(b * p.in));
  f.x_codes.reserve(static_cast<size_t>(b * p.in));
  backend_->fake_quantize(f.x.data(), f.x_codes.data(), DType::u8, input, f.x_scale.data(), f.x_zero.data(), b, p.in,
                          QuantAxis::tensor);
  return f.x.data();
}

}  // namespace customml
