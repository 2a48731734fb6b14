#pragma once
// Defines: ElementwiseKernels, the table of the elementwise and reduction kernels (losses,
// metrics, dropout, optimizer updates, clipping, pruning masks, the finite check, the vectorized math) for one
// ISA level, and the run-time choice between the portable, AVX2 and AVX-512 tables.

#include <cstdint>

#include "cpu/isa.h"
#include "private_api.h"

namespace customml::cpu {

// One optimizer range's constants: the caller splits the flat buffer at the no-decay
// segments (for_each_decay_range) and passes each range's weight decay folded in.
struct SgdStep {
  float lr, momentum, weight_decay;
  bool nesterov;
};
struct AdamStep {
  float shrink;  // 1 - lr wd for AdamW (decoupled), else 1
  float l2;      // wd for Adam (L2 on the gradient), else 0
  float beta1, beta2, step_size, bias2_sqrt, eps;
};

using UnaryFn = void (*)(float* y, const float* x, int64_t n);
using DropoutFn = void (*)(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream,
                           uint64_t first);

// Each entry has the signature and semantics of the CpuBackend op it implements
// (cpp/cpu/<op>.cpp states them); the variants differ only in rounding (see each
// test's tolerance) and, for reductions, in a summation order fixed per ISA level.
struct ElementwiseKernels {
  const char* isa;  // "portable", "avx2", "avx512": the variants are f32_<op>__<isa>
  // softmax cross-entropy of `batch` rows, the gradient scaled by inv_total (1 / the
  // weight of the whole batch, which the caller may split into pieces of rows); returns
  // sum_i w_i l_i over these rows, not yet divided by the total weight
  double (*softmax_cross_entropy)(float* grad, const float* logits, const int32_t* labels, const float* class_weights,
                                  const float* row_weights, int64_t batch, int64_t classes, float label_smoothing,
                                  double inv_total);
  // the losses against a target distribution (cpu/soft_target_kernels.h), likewise
  double (*softmax_cross_entropy_soft)(float* grad, const float* logits, const float* targets, const float* row_weights,
                                       int64_t batch, int64_t classes, double inv_total);
  double (*distillation_loss)(float* grad, const float* student, const float* teacher, const int32_t* labels,
                              const float* row_weights, int64_t batch, int64_t classes, float temperature, float alpha,
                              double inv_total);
  int64_t (*count_correct)(const float* logits, const int32_t* labels, int64_t batch, int64_t classes);
  double (*binary_cross_entropy_with_logits)(float* grad, const float* logits, const float* targets,
                                             const float* row_weights, int64_t rows, int64_t cols);
  double (*mse)(float* grad, const float* pred, const float* target, const float* row_weights, int64_t rows,
                int64_t cols);
  DropoutFn dropout;
  // param, grad, velocity (null when momentum == 0): (n), one decay range
  void (*sgd_update)(float* param, const float* grad, float* velocity, int64_t n, const SgdStep& s);
  // param, grad, m, v, vmax (null unless amsgrad): (n), one decay range
  void (*adam_update)(float* param, const float* grad, float* m, float* v, float* vmax, int64_t n, const AdamStep& s);
  double (*sum_squares)(const float* x, int64_t n);                  // sum x_i^2 in float64
  void (*scale)(float* x, int64_t n, double coef);                   // x_i = fl32(x_i coef), product in float64
  void (*apply_mask)(float* param, const uint8_t* keep, int64_t n);  // param_i = 0 where keep_i == 0
  int64_t (*first_nonfinite)(const float* x, int64_t n);             // index of the first NaN or +-inf, or -1
  // dst (n) = src rounded to bf16 (bf16) or fp16 as bits: the host's rounding of a staged
  // batch, the device's bits (half_round.h)
  void (*round_to_half)(uint16_t* dst, const float* src, int64_t n, bool bf16);
  // The vectorized math of cpu/vmath.h over arrays, for tests/test_vmath.py.
  UnaryFn exp, exp_nonpositive, log, log1p, log1p_unit, tanh, sigmoid, gelu;
};

// The portable dropout (cpu/dropout.cpp), scalar Philox from random.h: the stream the
// SIMD variants (cpu/philox_simd.h) reproduce bit for bit.
void dropout_portable(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream, uint64_t first);

extern const ElementwiseKernels kElementwisePortable;
#ifdef CUSTOMML_X86_KERNELS
extern const ElementwiseKernels kElementwiseAvx2;
extern const ElementwiseKernels kElementwiseAvx512;
#endif

// The table for the active ISA level (selected with every other family by isa.cpp).
CUSTOMML_PRIVATE_API const ElementwiseKernels& elementwise();
// The table for a given level (the best one at or below it), whatever the active level.
CUSTOMML_PRIVATE_API const ElementwiseKernels& elementwise_for(IsaLevel level);
void select_elementwise(IsaLevel level);

}  // namespace customml::cpu
