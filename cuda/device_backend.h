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
                               int64_t batch, int64_t classes, float label_smoothing) override {
    return ::customml::CUSTOMML_CUDA_NS::softmax_cross_entropy(ctx(), grad, logits, labels, class_weights, batch, classes, label_smoothing);
  }
  double binary_cross_entropy_with_logits(float* grad, const float* logits, const float* targets,
                                          int64_t n) override {
    return ::customml::CUSTOMML_CUDA_NS::binary_cross_entropy_with_logits(ctx(), grad, logits, targets, n);
  }
  double mse(float* grad, const float* pred, const float* target, int64_t n) override {
    return ::customml::CUSTOMML_CUDA_NS::mse(ctx(), grad, pred, target, n);
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
  void apply_mask(float* param, const uint8_t* keep, int64_t n) override {
    ::customml::CUSTOMML_CUDA_NS::apply_mask(ctx(), param, keep, n);
  }
  void quantize(void* q, DType qtype, const float* x, const float* scale, const int32_t* zero, int64_t rows,
                int64_t cols, QuantAxis axis) override {
    ::customml::CUSTOMML_CUDA_NS::quantize(ctx(), q, qtype, x, scale, zero, rows, cols, axis);
  }
  void dequantize(float* x, const void* q, DType qtype, const float* scale, const int32_t* zero, int64_t rows,
                  int64_t cols, QuantAxis axis) override {
    ::customml::CUSTOMML_CUDA_NS::dequantize(ctx(), x, q, qtype, scale, zero, rows, cols, axis);
  }
  void quantize_rows_dynamic(uint8_t* q, float* scale, int32_t* zero, const float* x, int64_t rows,
                             int64_t cols) override {
    ::customml::CUSTOMML_CUDA_NS::quantize_rows_dynamic(ctx(), q, scale, zero, x, rows, cols);
  }
  size_t gemm_s8_packed_bytes(int64_t k, int64_t n) override {
    return ::customml::CUSTOMML_CUDA_NS::gemm_s8_packed_bytes(k, n);
  }
  void gemm_s8_pack(void* packed, const int8_t* w, int64_t k, int64_t n) override {
    ::customml::CUSTOMML_CUDA_NS::gemm_s8_pack(ctx(), packed, w, k, n);
  }
  void gemm_s8(float* y_f32, uint8_t* y_u8, int32_t* y_i32, const uint8_t* a, const void* packed, GemmS8Shape s,
               const GemmS8Epilogue& e) override {
    ::customml::CUSTOMML_CUDA_NS::gemm_s8(ctx(), y_f32, y_u8, y_i32, a, packed, s, e);
  }
  void sparse_dense_forward(float* y, const float* x, const CsrMatrix& w, const float* b, int64_t batch,
                            Activation act) override {
    ::customml::CUSTOMML_CUDA_NS::sparse_dense_forward(ctx(), y, x, w, b, batch, act);
  }
  void nm_dense_forward(float* y, const float* x, const NmMatrix& w, const float* b, int64_t batch,
                        Activation act) override {
    ::customml::CUSTOMML_CUDA_NS::nm_dense_forward(ctx(), y, x, w, b, batch, act);
  }
 protected:
  // Owned by the subclass: its buffers must be released while its memory methods exist.
  virtual DeviceContext& ctx() = 0;
};

}  // namespace customml::CUSTOMML_CUDA_NS
