// Trainer's argument checks: a batch's inputs, targets, sample weights and indices, each
// bad one a clear exception naming it (moved out of trainer.cpp, which holds the step).

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer.h"

namespace customml {

void Trainer::check_targets(const void* y, const int64_t* index, int64_t b) const {
  if (loss_.kind == LossKind::mse) return;
  const int32_t* labels = static_cast<const int32_t*>(y);
  const int64_t classes = loss_.kind == LossKind::binary_cross_entropy ? 2 : model_.output_dim();
  for (int64_t i = 0; i < b; ++i) {
    const int64_t r = index ? index[i] : i;
    if (labels[r] < 0 || labels[r] >= classes)
      throw std::out_of_range("y[" + std::to_string(r) + "] = " + std::to_string(labels[r]) + " is outside [0, " +
                              std::to_string(classes) + ")");
  }
}

void Trainer::check_soft_targets(const char* op, const float* soft_targets) const {
  if (!soft_targets) return;
  const std::string pre = std::string("[") + op + "] ";
  if (loss_.kind != LossKind::softmax_cross_entropy && loss_.kind != LossKind::distillation)
    throw std::invalid_argument(pre + "probability targets apply to the softmax cross-entropy loss, not " +
                                loss_name(loss_.kind));
  // Class weights are indexed by a label; the probability targets are used as given
  // (fit applies label smoothing to them before the first batch).
  if (loss_.kind == LossKind::softmax_cross_entropy && !loss_.class_weights.empty())
    throw std::invalid_argument(pre +
                                "class_weights need integer labels; weight probability targets' rows with "
                                "sample_weight");
}

void Trainer::check_inputs(const char* op, const Tensor& x, const Tensor* y, const Tensor* sample_weight) const {
  const std::string pre = std::string("[") + op + "] ";
  const int64_t input_dim = model_.input_dim(), output_dim = model_.output_dim();
  if (x.dtype() != DType::f32) throw TypeError(pre + "x must be float32, got " + dtype_name(x.dtype()));
  if (x.ndim() != 2) throw std::invalid_argument(pre + "x must be 2-D (samples, features), got shape " + x.shape_str());
  if (!x.is_contiguous()) throw std::invalid_argument(pre + "x must be C-contiguous");
  if (x.dim(1) != input_dim)
    throw std::invalid_argument(pre + "x has " + std::to_string(x.dim(1)) + " features but the model expects " +
                                std::to_string(input_dim));
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
    if (y->dtype() != DType::f32)
      throw TypeError(pre + "y must be float32 for loss 'mse', got " + dtype_name(y->dtype()));
    if (y->shape() != std::vector<int64_t>{x.dim(0), output_dim})
      throw std::invalid_argument(pre + "y has shape " + y->shape_str() + ", expected (" + std::to_string(x.dim(0)) +
                                  ", " + std::to_string(output_dim) + ")");
  } else {
    if (y->dtype() != DType::i32)
      throw TypeError(pre + "y (class labels) must be int32, got " + dtype_name(y->dtype()));
    if (y->shape() != std::vector<int64_t>{x.dim(0)})
      throw std::invalid_argument(pre + "y has shape " + y->shape_str() + " but x has " + std::to_string(x.dim(0)) +
                                  " rows");
  }
}

void Trainer::check_batch(const void* y, const float* sample_weight, int64_t n, const int64_t* index, int64_t b,
                          const float* soft_targets) const {
  if (!compiled_) throw std::runtime_error("[fit] the model must be compiled before training");
  if (loss_.kind == LossKind::distillation && !soft_targets)
    throw std::invalid_argument("[fit] the distillation loss trains on a teacher's logits: use customml.distill");
  check_soft_targets("fit", soft_targets);
  if (b < 0) throw std::invalid_argument("[fit] a batch share cannot have a negative row count");
  for (int64_t i = 0; i < b; ++i)
    if (index[i] < 0 || index[i] >= n)
      throw std::out_of_range("[fit] batch index " + std::to_string(index[i]) + " is outside [0, " + std::to_string(n) +
                              ")");
  check_targets(y, index, b);
  if (sample_weight)
    for (int64_t i = 0; i < b; ++i)
      if (!(std::isfinite(sample_weight[index[i]]) && sample_weight[index[i]] >= 0.0f))
        throw std::invalid_argument("[fit] sample_weight[" + std::to_string(index[i]) +
                                    "] = " + std::to_string(sample_weight[index[i]]) + " must be finite and >= 0");
  if (model_.any_quantized())
    throw std::runtime_error(
        "[fit] a quantized model cannot be trained: fine-tune the float model (or quantize.qat) and quantize again");
}

}  // namespace customml
