#pragma once
// Defines: DeviceBackend, the Backend ops of a CUDA-model device forwarded to the
// launchers of the namespace it is compiled in (customml::cuda under nvcc,
// customml::cuda_emulated on the host), so the real backend and the emulated one share
// them; each adds its own memory.

#include "backend.h"
#include "cuda/launchers.h"

namespace customml::CUSTOMML_CUDA_NS {

class DeviceBackend : public Backend {
 public:
  // The executor stages batches through copies (the emulated device's memory is host
  // memory, but it takes the real device's path so that tests cover it).
  bool host_addressable() const override { return false; }
  bool supports(Precision) const override { return true; }  // tensor cores: sm_80 and later

  void dense_forward(float* y, float* z, const float* x, const float* w, const float* b, DenseShape s,
                     Activation act) override {
    ::customml::CUSTOMML_CUDA_NS::dense_forward(ctx(), y, z, x, w, b, s, act);
  }
  void dense_backward(float* dx, float* dw, float* db, float* dz, const float* dy, const float* x, const float* w,
                      const float* y, const float* z, DenseShape s, Activation act) override {
    ::customml::CUSTOMML_CUDA_NS::dense_backward(ctx(), dx, dw, db, dz, dy, x, w, y, z, s, act);
  }
  double softmax_cross_entropy(float* grad, const float* logits, const int32_t* labels, const float* class_weights,
                               const float* row_weights, int64_t batch, int64_t classes,
                               float label_smoothing) override {
    return ::customml::CUSTOMML_CUDA_NS::softmax_cross_entropy(ctx(), grad, logits, labels, class_weights, row_weights,
                                                               batch, classes, label_smoothing);
  }
  double binary_cross_entropy_with_logits(float* grad, const float* logits, const float* targets,
                                          const float* row_weights, int64_t rows, int64_t cols) override {
    return ::customml::CUSTOMML_CUDA_NS::binary_cross_entropy_with_logits(ctx(), grad, logits, targets, row_weights,
                                                                          rows, cols);
  }
  double mse(float* grad, const float* pred, const float* target, const float* row_weights, int64_t rows,
             int64_t cols) override {
    return ::customml::CUSTOMML_CUDA_NS::mse(ctx(), grad, pred, target, row_weights, rows, cols);
  }
  void confusion_matrix_update(int64_t* counts, const float* logits, const int32_t* labels, int64_t batch,
                               int64_t k) override {
    ::customml::CUSTOMML_CUDA_NS::confusion_matrix_update(ctx(), counts, logits, labels, batch, k);
  }
  void regression_stats_update(double* stats, const float* pred, const float* target, const double* shift,
                               int64_t batch, int64_t outputs) override {
    ::customml::CUSTOMML_CUDA_NS::regression_stats_update(ctx(), stats, pred, target, shift, batch, outputs);
  }
  int64_t count_correct(const float* logits, const int32_t* labels, int64_t batch, int64_t classes) override {
    return ::customml::CUSTOMML_CUDA_NS::count_correct(ctx(), logits, labels, batch, classes);
  }
  void dropout(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream) override {
    ::customml::CUSTOMML_CUDA_NS::dropout(ctx(), y, x, n, rate, seed, stream);
  }
  void sgd_update(float* param, float* velocity, const float* grad, int64_t n, const Segment* no_decay,
                  int64_t n_no_decay, const SgdConfig& c) override {
    ::customml::CUSTOMML_CUDA_NS::sgd_update(ctx(), param, velocity, grad, n, no_decay, n_no_decay, c);
  }
  void adam_update(float* param, float* m, float* v, float* vmax, const float* grad, int64_t n,
                   const Segment* no_decay, int64_t n_no_decay, const AdamConfig& c) override {
    ::customml::CUSTOMML_CUDA_NS::adam_update(ctx(), param, m, v, vmax, grad, n, no_decay, n_no_decay, c);
  }
  double clip_by_global_norm(float* grad, int64_t n, float max_norm) override {
    return ::customml::CUSTOMML_CUDA_NS::clip_by_global_norm(ctx(), grad, n, max_norm);
  }
  void scale(float* x, int64_t n, double coef) override { ::customml::CUSTOMML_CUDA_NS::scale(ctx(), x, n, coef); }
  double l1_l2_penalty(float* grad, const float* param, int64_t n, float l1, float l2) override {
    return ::customml::CUSTOMML_CUDA_NS::l1_l2_penalty(ctx(), grad, param, n, l1, l2);
  }
  void feature_affine(float* y, const float* x, const float* scale, const float* shift, int64_t rows,
                      int64_t cols) override {
    ::customml::CUSTOMML_CUDA_NS::feature_affine(ctx(), y, x, scale, shift, rows, cols);
  }
 protected:
  // Owned by the subclass: its buffers must be released while its memory methods exist.
  virtual DeviceContext& ctx() = 0;
};

}  // namespace customml::CUSTOMML_CUDA_NS
