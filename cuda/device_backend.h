#pragma once
// Defines: DeviceBackend, the Backend of a CUDA-model device: every op of backend_ops.def,
// each defined in its launcher file cuda/<family>.cu (sizes the grids, starts the kernels
// of cuda/<family>.cuh through launch(), finishes reductions), in the namespace it is
// compiled in (customml::cuda under nvcc, customml::cuda_emulated on the host), so the real
// backend and the emulated one share them; each adds its own memory.

#include "backend.h"
#include "cuda/device_context.h"

namespace customml::CUSTOMML_CUDA_NS {

class DeviceBackend : public Backend {
 public:
  // The executor stages batches through copies (the emulated device's memory is host
  // memory, but it takes the real device's path so that tests cover it).
  bool host_addressable() const override { return false; }
  bool supports(Precision) const override { return true; }  // tensor cores: sm_80 and later
  void round_to_half(uint16_t* dst, const float* src, int64_t n, int64_t cols, int64_t ld, Precision format) override;
  int64_t folded_penalties() const override;
  bool fuses_dropout() const override { return true; }     // the GEMM epilogue: cuda/dense.cuh
  bool fuses_derivative() const override { return true; }  // dx's store: cuda/dense.cuh
  int64_t dense_norm_slots(const DenseShape& s, bool dx) const override;
  HalfReads dense_half_reads(const DenseShape& s, bool backward, bool dw, bool dx) const override;
  void fake_quantize(float* y, void* codes, DType qtype, const float* x, const float* scale, const int32_t* zero,
                     int64_t rows, int64_t cols, QuantAxis axis) override;

#define CUSTOMML_OP(ret, name, params) ret name params override;
#include "backend_ops.def"
#undef CUSTOMML_OP
  void softmax_cross_entropy_metrics(float* grad, double* loss, const float* logits, const int32_t* labels,
                                     const float* class_weights, const float* row_weights, int64_t batch,
                                     int64_t classes, float label_smoothing, const LossMetrics& m) override;
  void binary_cross_entropy_with_logits_metrics(float* grad, double* loss, const float* logits, const float* targets,
                                                const int32_t* labels, const float* row_weights, int64_t rows,
                                                int64_t cols, const LossMetrics& m) override;
  void mse_metrics(float* grad, double* loss, const float* pred, const float* target, const float* row_weights,
                   int64_t rows, int64_t cols, const LossMetrics& m) override;
  void softmax_cross_entropy_soft_metrics(float* grad, double* loss, const float* logits, const float* targets,
                                          const int32_t* labels, const float* row_weights, int64_t batch,
                                          int64_t classes, const LossMetrics& m) override;
  void distillation_loss_metrics(float* grad, double* loss, const float* student, const float* teacher,
                                 const int32_t* labels, const float* row_weights, int64_t batch, int64_t classes,
                                 float temperature, float alpha, const LossMetrics& m) override;

 protected:
  // Owned by the subclass: its buffers must be released while its memory methods exist.
  virtual DeviceContext& ctx() = 0;
};

}  // namespace customml::CUSTOMML_CUDA_NS
