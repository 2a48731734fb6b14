#pragma once
// Defines: CpuBackend, the Backend for "cpu"; each op lives in its own file
// (dense.cpp, softmax_cross_entropy.cpp, ...), memory in cpu_backend.cpp.

#include "backend.h"

namespace customml::cpu {

class CpuBackend final : public Backend {
 public:
  static CpuBackend& instance();

  Device device() const override { return {DeviceKind::cpu, 0}; }
  std::string name() const override { return "cpu"; }

  void* allocate(size_t bytes) override;
  void deallocate(void* p) override;
  void copy_to_device(void* dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;

  void dense_forward(float* y, float* z, const float* x, const float* w, const float* b,
                     DenseShape s, Activation act) override;
  size_t dense_packed_bytes(int64_t in, int64_t out) override;
  void dense_pack(void* packed, const float* w, int64_t in, int64_t out) override;
  void dense_forward_packed(float* y, const float* x, const float* w, const void* packed, const float* b,
                            DenseShape s, Activation act, bool reverse_columns) override;
  void dense_backward(float* dx, float* dw, float* db, float* dz, const float* dy, const float* x,
                      const float* w, const float* y, const float* z, DenseShape s,
                      Activation act) override;
  double softmax_cross_entropy(float* grad, const float* logits, const int32_t* labels,
                               const float* class_weights, const float* row_weights, int64_t batch,
                               int64_t classes, float label_smoothing) override;
  double binary_cross_entropy_with_logits(float* grad, const float* logits, const float* targets,
                                          const float* row_weights, int64_t rows, int64_t cols) override;
  double mse(float* grad, const float* pred, const float* target, const float* row_weights, int64_t rows,
             int64_t cols) override;
  void confusion_matrix_update(int64_t* counts, const float* logits, const int32_t* labels, int64_t batch,
                               int64_t k) override;
  void regression_stats_update(double* stats, const float* pred, const float* target, const double* shift,
                               int64_t batch, int64_t outputs) override;
  int64_t count_correct(const float* logits, const int32_t* labels, int64_t batch,
                        int64_t classes) override;
  void dropout(float* y, const float* x, int64_t n, float rate, uint64_t seed,
               uint64_t stream) override;
  void sgd_update(float* param, float* velocity, const float* grad, int64_t n,
                  const Segment* no_decay, int64_t n_no_decay, const SgdConfig& c) override;
  void adam_update(float* param, float* m, float* v, float* vmax, const float* grad, int64_t n,
                   const Segment* no_decay, int64_t n_no_decay, const AdamConfig& c) override;
  double clip_by_global_norm(float* grad, int64_t n, float max_norm) override;
  void scale(float* x, int64_t n, double coef) override;
  double l1_l2_penalty(float* grad, const float* param, int64_t n, float l1, float l2) override;
  void quantize(void* q, DType qtype, const float* x, const float* scale, const int32_t* zero, int64_t rows,
                int64_t cols, QuantAxis axis) override;
  void dequantize(float* x, const void* q, DType qtype, const float* scale, const int32_t* zero, int64_t rows,
                  int64_t cols, QuantAxis axis) override;
  void quantize_rows_dynamic(uint8_t* q, float* scale, int32_t* zero, const float* x, int64_t rows,
                             int64_t cols) override;
  size_t gemm_s8_packed_bytes(int64_t k, int64_t n) override;
  void gemm_s8_pack(void* packed, const int8_t* w, int64_t k, int64_t n) override;
  void gemm_s8(float* y_f32, uint8_t* y_u8, int32_t* y_i32, const uint8_t* a, const void* packed, GemmS8Shape s,
               const GemmS8Epilogue& e) override;
  void apply_mask(float* param, const uint8_t* keep, int64_t n) override;
  void sparse_dense_forward(float* y, const float* x, const CsrMatrix& w, const float* b, int64_t batch,
                            Activation act) override;
  size_t sparse_packed_bytes(const CsrMatrix& w) override;
  void sparse_pack(void* packed, const CsrMatrix& w) override;
  bool sparse_dense_forward_packed(float* y, const float* x, const void* packed, const float* b, int64_t batch,
                                   Activation act) override;
  void nm_dense_forward(float* y, const float* x, const NmMatrix& w, const float* b, int64_t batch,
                        Activation act) override;
  void feature_affine(float* y, const float* x, const float* scale, const float* shift, int64_t rows,
                      int64_t cols) override;

 private:
  CpuBackend();
};

// Calls f(begin, end, decay) over [0, n) in order, splitting at the no-decay
// segments: decay is false inside a segment. The optimizers use it to stay one pass.
template <class F>
void for_each_decay_range(int64_t n, const Segment* no_decay, int64_t n_no_decay, F&& f) {
  int64_t pos = 0;
  for (int64_t s = 0; s < n_no_decay; ++s) {
    if (no_decay[s].begin > pos) f(pos, no_decay[s].begin, true);
    f(no_decay[s].begin, no_decay[s].end, false);
    pos = no_decay[s].end;
  }
  if (pos < n) f(pos, n, true);
}

}  // namespace customml::cpu
