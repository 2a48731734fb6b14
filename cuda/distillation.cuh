#pragma once
// Defines: distillation_loss_kernel (a warp per row): Hinton et al.'s soft-target loss,
// its gradient and the step's metric sums in one launch, the probabilities never stored.

#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/loss_epilogue.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// student, teacher: (batch, classes)  labels: (batch), not read when alpha == 1 and
// lg.block_correct is null  row_weights: (batch) or null -> lg.row_loss (batch) = w_i l_i, grad
// (batch, classes) or null = w_i / W d l_i / d student_i, with (as
// cpu/soft_target_kernels.h) a = (s - max s) / T, b = (t - max t) / T, d = s - max s,
// A, B, D their exp sums:
//   l_i = alpha T^2 (sum_c e^b (b - a) / B - log B + log A) + (1 - alpha) (log D - d_y)
//   grad = alpha T (e^a / A - e^b / B) + (1 - alpha) (e^d / D - onehot(y)), times w_i / W.
// A warp per row, kWarps rows per block; each lane reads its classes three times (the
// maxima, the sums, the gradient), recomputing the exponentials: a row is the model's
// output width, so the re-reads hit L1. Sums in float64 in a fixed order (lane-strided,
// then the butterfly): deterministic. W = sum_i w_i is found by every block, and the last
// block finishes the loss and lg's metrics (cuda/loss_epilogue.cuh), as
// softmax_cross_entropy_kernel does.
// One row's loss into lg.row_loss and its gradient, by the row's warp.
__device__ __forceinline__ void distillation_row(const LossGrid& lg, float* grad, const float* student,
                                                 const float* teacher, const int32_t* labels, const float* row_weights,
                                                 double total, int64_t row_index, int64_t classes, float temperature,
                                                 float alpha, int lane) {
  const float* s = student + row_index * classes;
  const float* t = teacher + row_index * classes;
  const bool hard = alpha != 1.0f;
  // A NaN may lose every comparison here, but it reaches the sums through its own term.
  float ms = -INFINITY, mt = -INFINITY;
  for (int64_t c = lane; c < classes; c += 32) {
    ms = s[c] > ms ? s[c] : ms;
    mt = t[c] > mt ? t[c] : mt;
  }
  ms = warp_max(ms);
  mt = warp_max(mt);
  const float inv_t = 1.0f / temperature;
  double sa = 0.0, sb = 0.0, sd = 0.0, cross = 0.0;
  for (int64_t c = lane; c < classes; c += 32) {
    const float d = s[c] - ms, a = d * inv_t, b = (t[c] - mt) * inv_t;
    const float eb = expf(b);
    sa += expf(a);
    sb += eb;
    if (hard) sd += expf(d);
    // 0 log 0 = 0: a class the teacher gives no mass adds nothing, even against a = -inf
    if (eb != 0.0f) cross += static_cast<double>(eb) * (static_cast<double>(b) - static_cast<double>(a));
  }
  sa = warp_sum(sa);
  sb = warp_sum(sb);
  sd = warp_sum(sd);
  cross = warp_sum(cross);
  const double T = static_cast<double>(temperature),
               w = row_weights ? static_cast<double>(row_weights[row_index]) : 1.0;
  const int32_t y = hard ? labels[row_index] : 0;
  if (lane == 0) {
    double l = static_cast<double>(alpha) * T * T * (cross / sb - log(sb) + log(sa));
    if (hard) l += (1.0 - static_cast<double>(alpha)) * (log(sd) - (static_cast<double>(s[y]) - ms));
    lg.row_loss[row_index] = w * l;
  }
  if (!grad) return;
  const double scale = total > 0.0 ? w / total : 0.0;
  const float k_soft = static_cast<float>(scale * alpha * T), ia = static_cast<float>(1.0 / sa),
              ib = static_cast<float>(1.0 / sb);
  const float k_hard = static_cast<float>(scale * (1.0 - static_cast<double>(alpha))),
              id = static_cast<float>(hard ? 1.0 / sd : 0.0);
  const ScaledGrad scaled(lg.metrics, classes, row_index);
  float* g = grad + row_index * classes;
  for (int64_t c = lane; c < classes; c += 32) {
    const float d = s[c] - ms;
    float r = k_soft * (expf(d * inv_t) * ia - expf((t[c] - mt) * inv_t) * ib);
    if (hard) r += k_hard * (expf(d) * id - (c == y ? 1.0f : 0.0f));
    scaled.store(g, c, r);
  }
}

__global__ void __launch_bounds__(kThreads)
    distillation_loss_kernel(LossGrid lg, float* grad, const float* student, const float* teacher,
                             const int32_t* labels, const float* row_weights, int64_t batch, int64_t classes,
                             float temperature, float alpha) {
  const double total = batch_weight_total(nullptr, nullptr, row_weights, batch);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row_index = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  int64_t hit = 0;
  if (row_index < batch) {  // no early exit: the block meets at finish_loss_grid's barriers
    distillation_row(lg, grad, student, teacher, labels, row_weights, total, row_index, classes, temperature, alpha,
                     lane);
    hit = warp_row_hit(lg, student + row_index * classes, classes, labels, row_index, lane);
  }
  finish_loss_grid(lg, total, batch, block_warp_hits(hit));
}

}  // namespace customml::CUSTOMML_CUDA_NS
