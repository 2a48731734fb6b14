// Which layers a device's GEMM epilogues fuse into a Dense layer's launches (the Dropout
// masks, the activation derivative of the layer below) and which 16-bit outputs a training
// step reads: the predicates the forward and backward passes of trainer.cpp ask.

#include <vector>

#include "trainer.h"

namespace customml {

bool Trainer::dense_reads_output(size_t l) const {
  const std::vector<LayerSpec>& layers = model_.layers();
  size_t j = l + 1;
  while (j < layers.size() && layers[j].kind == LayerSpec::Kind::dropout && layers[j].rate == 0.0f) ++j;
  return j < layers.size() && layers[j].kind == LayerSpec::Kind::dense;
}

namespace {
// Stands for a 16-bit buffer in Backend::dense_half_reads' layout queries: aligned as every
// allocation is; only its address is read.
alignas(256) const uint16_t kStandIn[8] = {};
}  // namespace

HalfReads Trainer::half_reads(size_t l, bool backward) const {
  const std::vector<LayerSpec>& layers = model_.layers();
  // under QAT, the fake-quantized operands have no copies
  if (!half_operands(precision_) || !model_.half_params() || fake_[l]) return {};
  if (backward && l < lowest_trainable_) return {};  // the backward stops above it
  const int64_t in = l == 0 ? model_.input_dim() : model_.widths()[l - 1];
  const DenseShape s{1,
                     in,
                     layers[l].units,
                     precision_,
                     {model_.half_params() + model_.half_weight_offset(l), kStandIn, nullptr, kStandIn}};
  return backend_->dense_half_reads(s, backward, layers[l].trainable, l > lowest_trainable_);
}

bool Trainer::half_output_read(size_t l) const {
  const std::vector<LayerSpec>& layers = model_.layers();
  if (!dense_reads_output(l)) return false;
  size_t j = l + 1;
  while (layers[j].kind != LayerSpec::Kind::dense) ++j;
  return half_reads(j, false).x || half_reads(j, true).x;
}

size_t Trainer::derivative_fused_below(size_t l) const {
  const std::vector<LayerSpec>& layers = model_.layers();
  if (!backend_->fuses_derivative()) return layers.size();
  size_t j = l;
  while (j-- > 0 && layers[j].kind == LayerSpec::Kind::dropout && (layers[j].rate == 0.0f || dropout_fused_above(j))) {
  }
  return j < l && layers[j].kind == LayerSpec::Kind::dense ? j : layers.size();
}

bool Trainer::loss_applies_derivative(const BatchShare& share) const {
  const std::vector<LayerSpec>& layers = model_.layers();
  return backend_->fuses_derivative() && share.weight == 1.0 && !layers.empty() &&
         layers.back().kind == LayerSpec::Kind::dense;
}

void Trainer::loss_derivative(LossMetrics& m, const BatchShare& share, const float* y, const float* z,
                              uint16_t* dz16) const {
  if (!loss_applies_derivative(share)) return;
  const Activation a = model_.layers().back().activation;
  m.top = {a, y, activation_needs_preact(a) ? z : nullptr,
           half_reads(model_.layers().size() - 1, true).dy ? dz16 : nullptr};
  m.top_bf16 = precision_ == Precision::bf16;
}

bool Trainer::dropout_fused_below(size_t l) const {
  const std::vector<LayerSpec>& layers = model_.layers();
  return l > 0 && l < layers.size() && layers[l].kind == LayerSpec::Kind::dropout && layers[l].rate > 0.0f &&
         layers[l - 1].kind == LayerSpec::Kind::dense && backend_->fuses_dropout();
}

bool Trainer::dropout_fused_above(size_t l) const {
  const std::vector<LayerSpec>& layers = model_.layers();
  return l + 1 < layers.size() && layers[l].kind == LayerSpec::Kind::dropout && layers[l].rate > 0.0f &&
         layers[l + 1].kind == LayerSpec::Kind::dense && backend_->fuses_dropout();
}

}  // namespace customml
