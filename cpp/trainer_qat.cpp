// Quantization-aware training (issue #6): fake quantization of a Dense layer's weights and
// inputs in the training forward pass, with the straight-through estimator. The codes go
// through the same quantize / dequantize kernels as inference, so training sees exactly
// the values the int8 plan will compute with.

#include <algorithm>
#include <cmath>
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
  fake_[static_cast<size_t>(layer)] = std::move(f);
}

void Trainer::clear_fake_quantization(int64_t layer) {
  model_.dense("clear_fake_quantization", layer);
  fake_[static_cast<size_t>(layer)].reset();
}

std::pair<double, double> Trainer::fake_input_range(int64_t layer) const {
  model_.dense("fake_input_range", layer);
  const FakeQuant* f = fake_[static_cast<size_t>(layer)].get();
  if (!f) throw std::invalid_argument("[fake_input_range] layer " + std::to_string(layer) + " is not fake-quantized");
  return {f->lo, f->hi};
}

namespace {
// The host copy of n device floats: the device memory itself where the host can address it.
const float* on_host(Backend* be, std::vector<float>& staging, const float* src, int64_t n) {
  if (be->host_addressable()) return src;
  staging.resize(static_cast<size_t>(n));
  be->copy_to_host(staging.data(), src, sizeof(float) * staging.size());
  return staging.data();
}
}  // namespace

const float* Trainer::fake_weights(size_t l) {
  const DenseLayerState& p = *model_.dense_state(l);
  FakeQuant& f = *fake_[l];
  const float* w = model_.params() + model_.weight_offsets()[l];
  // Symmetric int8 scales from this step's weights: max |w| / 127 per output column (or
  // over the kernel); an all-zero column gets 1, as customml.quantize.quantize_weights.
  const float* hw = on_host(backend_, f.host, w, p.in * p.out);
  const int64_t n_scales = f.per_channel ? p.out : 1;
  std::vector<float> amax(static_cast<size_t>(n_scales), 0.0f);
  for (int64_t i = 0; i < p.in; ++i)
    for (int64_t j = 0; j < p.out; ++j) {
      float& m = amax[static_cast<size_t>(f.per_channel ? j : 0)];
      m = std::max(m, std::fabs(hw[i * p.out + j]));
    }
  for (float& m : amax) m = m > 0.0f ? m / 127.0f : 1.0f;
  backend_->copy_to_device(f.w_scale.data(), amax.data(), sizeof(float) * amax.size());
  const QuantAxis axis = f.per_channel ? QuantAxis::column : QuantAxis::tensor;
  backend_->quantize(f.w_codes.data(), DType::i8, w, f.w_scale.data(), nullptr, p.in, p.out, axis);
  backend_->dequantize(f.w.data(), f.w_codes.data(), DType::i8, f.w_scale.data(), nullptr, p.in, p.out, axis);
  return f.w.data();
}

const float* Trainer::fake_input(size_t l, const float* input, int64_t b) {
  const DenseLayerState& p = *model_.dense_state(l);
  FakeQuant& f = *fake_[l];
  if (!f.inputs) return input;
  const float* hx = on_host(backend_, f.host, input, b * p.in);
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < b * p.in; ++i) {
    lo = std::min(lo, hx[i]);
    hi = std::max(hi, hx[i]);
  }
  // An exponential moving average of the batch ranges (as PyTorch's
  // MovingAverageMinMaxObserver): a stable range that still follows the weights.
  if (!f.range_set) {
    f.lo = lo;
    f.hi = hi;
    f.range_set = true;
  } else {
    f.lo = f.momentum * f.lo + (1.0 - f.momentum) * lo;
    f.hi = f.momentum * f.hi + (1.0 - f.momentum) * hi;
  }
  // Asymmetric uint8 as inference encodes it (customml.quantize.activation_encoding).
  float scale = static_cast<float>((f.hi - f.lo) / 255.0);
  int32_t zero = 0;
  if (scale > 0.0f) {
    zero = static_cast<int32_t>(std::clamp(std::nearbyint(static_cast<float>(-f.lo) / scale), 0.0f, 255.0f));
  } else {
    scale = 1.0f;
  }
  backend_->copy_to_device(f.x_scale.data(), &scale, sizeof(float));
  backend_->copy_to_device(f.x_zero.data(), &zero, sizeof(int32_t));
  f.x.reserve(static_cast<size_t>(b * p.in));
  f.x_codes.reserve(static_cast<size_t>(b * p.in));
  backend_->quantize(f.x_codes.data(), DType::u8, input, f.x_scale.data(), f.x_zero.data(), b, p.in, QuantAxis::tensor);
  backend_->dequantize(f.x.data(), f.x_codes.data(), DType::u8, f.x_scale.data(), f.x_zero.data(), b, p.in,
                       QuantAxis::tensor);
  return f.x.data();
}

}  // namespace customml
