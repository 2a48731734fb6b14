#pragma once
// Defines: softmax_cross_entropy_kernel (a warp per row) and
// softmax_cross_entropy_block_kernel (a block per row, for many classes): the row's max
// and exp sum in one online pass, then loss and gradient, probabilities never stored, and
// the batch's loss and metrics finished in the same launch; softmax_cross_entropy_soft_kernel.

#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/loss_epilogue.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// w_i = class_weights[label_i] row_weights[i], a null factor being 1 (exact in float64).
__device__ __forceinline__ double softmax_row_weight(const float* class_weights, const float* row_weights, int32_t y,
                                                     int64_t i) {
  return (class_weights ? static_cast<double>(class_weights[y]) : 1.0) *
         (row_weights ? static_cast<double>(row_weights[i]) : 1.0);
}

// The row loss w * (log_sum - (1 - eps) d_y - eps / C sum_c d_c) with d = row - max
// (as cpu/softmax_cross_entropy.cpp), shared by the warp and block kernels.
__device__ __forceinline__ double softmax_row_loss(const float* row, float mx, double sum, double sum_shifted, double w,
                                                   int32_t y, int64_t classes, float label_smoothing) {
  const double off = static_cast<double>(label_smoothing / static_cast<float>(classes));
  return w * (log(sum) - (1.0 - label_smoothing) * (row[y] - mx) - off * sum_shifted);
}

// One thread's share of a row (elements first, first + stride, ...) in a single read:
// the running max m of its logits, the sum of exp(z - m) and the sum of (z - m) over
// them, both rescaled to the new max whenever it grows (Milakov and Gimelshein's online
// softmax), and how many terms the sums hold. Each term is formed as exp(fl32(z - m))
// and fl32(z - m) with m <= the row max, so it errs no more than the two-pass kernel's
// exp(fl32(z - max)); a rescale multiplies by exp(m_old - m_new) taken in double, whose
// roundings stay far below float32's however often the max grows.
struct OnlineRowStats {
  float max = -INFINITY;
  double sum = 0.0;          // sum exp(z - max)
  double sum_shifted = 0.0;  // sum (z - max)
  int64_t terms = 0;

  __device__ __forceinline__ void add(float z) {
    if (z > max) {
      if (terms > 0) rebase(z);
      max = z;
    }
    // a -inf logit adds exp(-inf) = 0 and -inf, as under a finite row max (not NaN)
    const float d = z == -INFINITY ? -INFINITY : z - max;
    sum += expf(d);
    sum_shifted += d;
    ++terms;
  }
  // The sums relative to a max `to` >= max instead of max.
  __device__ __forceinline__ void rebase(float to) {
    const double shift = static_cast<double>(max) - static_cast<double>(to);  // <= 0
    sum *= exp(shift);
    sum_shifted += static_cast<double>(terms) * shift;
  }
};

__device__ __forceinline__ OnlineRowStats online_row_stats(const float* row, int64_t classes, int64_t first,
                                                           int64_t stride) {
  OnlineRowStats st;
  for (int64_t c = first; c < classes; c += stride) st.add(row[c]);
  return st;
}

// This thread's sums relative to the row max mx (>= its own max): its own terms only,
// ready to be added across the row's threads.
__device__ __forceinline__ void rebase_to_row_max(OnlineRowStats& st, float mx) {
  if (st.terms > 0 && st.max != mx) st.rebase(mx);
}

// The gradient row g = w / W (softmax - q), stored through scaled (at the row's offset);
// this thread writes classes first, first + stride, ...
__device__ __forceinline__ void softmax_grad_row(float* g, const float* row, float mx, double sum, double w,
                                                 double total, int32_t y, int64_t classes, float label_smoothing,
                                                 int64_t first, int64_t stride, ScaledGrad scaled) {
  const float off = label_smoothing / static_cast<float>(classes);
  const float on = 1.0f - label_smoothing + off;
  const float scale = static_cast<float>(total > 0.0 ? w / total : 0.0);
  const float inv_sum = static_cast<float>(1.0 / sum);
  // Not unrolled: the unrolled copies of ScaledGrad::store (the top layer's derivative and
  // dz's 16-bit copy) made ptxas spill (sm_80); the loop is memory-bound.
#if defined(__CUDACC__)
#pragma unroll 1
#endif
  for (int64_t c = first; c < classes; c += stride) {
    const float p = expf(row[c] - mx) * inv_sum;
    scaled.store(g, c, scale * (p - (c == y ? on : off)));
  }
}

// logits (batch, classes), labels (batch), class_weights (classes) or null, row_weights
// (batch) or null -> grad (batch, classes) or null, and g's results: the loss, the mean
// sum_i w_i l_i / W with W = sum_i w_i, and the metrics (the correct count too when
// g.block_correct is set, the confusion matrix when g.metrics.confusion is), in one
// launch. A warp per row, kWarps rows per block; every block finds W itself (the gradient
// scales by w_i / W), the last one sums the row losses
// (cuda/loss_epilogue.cuh). The loss is as cpu/softmax_cross_entropy.cpp.
__global__ void __launch_bounds__(kThreads)
    softmax_cross_entropy_kernel(LossGrid g, float* grad, const float* logits, const int32_t* labels,
                                 const float* class_weights, const float* row_weights, int64_t batch, int64_t classes,
                                 float label_smoothing) {
  const double total = batch_weight_total(labels, class_weights, row_weights, batch);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row_index = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  int64_t hit = 0;
  if (row_index < batch) {  // no early exit: the block meets at finish_loss_grid's barriers
    const float* row = logits + row_index * classes;
    const int32_t y = labels[row_index];
    OnlineRowStats st = online_row_stats(row, classes, lane, 32);
    const float mx = warp_max(st.max);
    rebase_to_row_max(st, mx);
    const double sum = warp_sum(st.sum);
    const double sum_shifted = warp_sum(st.sum_shifted);
    const double w = softmax_row_weight(class_weights, row_weights, y, row_index);
    if (lane == 0) g.row_loss[row_index] = softmax_row_loss(row, mx, sum, sum_shifted, w, y, classes, label_smoothing);
    if (grad)
      softmax_grad_row(grad + row_index * classes, row, mx, sum, w, total, y, classes, label_smoothing, lane, 32,
                       ScaledGrad(g.metrics, classes, row_index));
    hit = warp_row_hit(g, row, classes, labels, row_index, lane);
  }
  finish_loss_grid(g, total, batch, block_warp_hits(hit));
}

// As softmax_cross_entropy_kernel with a block of kThreads per row (grid: batch blocks),
// for rows too long for one warp to keep the memory system busy.
__global__ void __launch_bounds__(kThreads)
    softmax_cross_entropy_block_kernel(LossGrid g, float* grad, const float* logits, const int32_t* labels,
                                       const float* class_weights, const float* row_weights, int64_t batch,
                                       int64_t classes, float label_smoothing) {
  __shared__ double sums[2];
  __shared__ int64_t hit;
  CUSTOMML_POISON_SHARED(sums);
  CUSTOMML_POISON_SHARED(hit);
  const double total = batch_weight_total(labels, class_weights, row_weights, batch);
  const int64_t row_index = blockIdx.x;
  const float* row = logits + row_index * classes;
  const int32_t y = labels[row_index];
  OnlineRowStats st = online_row_stats(row, classes, threadIdx.x, kThreads);
  const float mx = block_max(st.max);
  rebase_to_row_max(st, mx);
  // block_sum leaves its total in thread 0; share both through shared memory
  const double sum = block_sum(st.sum);
  if (threadIdx.x == 0) sums[0] = sum;
  const double sum_shifted = block_sum(st.sum_shifted);
  if (threadIdx.x == 0) sums[1] = sum_shifted;
  // The first warp finds the predicted class as count_correct_kernel does (a warp per row).
  if (threadIdx.x < 32) {
    const int64_t row_hit = warp_row_hit(g, row, classes, labels, row_index, static_cast<int>(threadIdx.x));
    if (threadIdx.x == 0) hit = row_hit;
  }
  __syncthreads();
  const double w = softmax_row_weight(class_weights, row_weights, y, row_index);
  if (threadIdx.x == 0)
    g.row_loss[row_index] = softmax_row_loss(row, mx, sums[0], sums[1], w, y, classes, label_smoothing);
  if (grad)
    softmax_grad_row(grad + row_index * classes, row, mx, sums[0], w, total, y, classes, label_smoothing, threadIdx.x,
                     kThreads, ScaledGrad(g.metrics, classes, row_index));
  finish_loss_grid(g, total, batch, g.block_correct && threadIdx.x == 0 ? hit : 0);
}

// Soft labels. logits, targets: (batch, classes)  labels (batch): the targets' argmax,
// read when g.block_correct is set  row_weights: (batch) or null -> g.row_loss (batch) =
// w_i l_i with l_i = Q log S - sum_{q_c != 0} q_c d_c (d = z - max, S = sum_c e^d, Q =
// sum_c q_c), grad (batch, classes) or null = w_i / W (Q softmax(z) - q), as
// cpu/soft_target_kernels.h, and g's results in the same launch, as
// softmax_cross_entropy_kernel: a warp per row, kWarps rows per block, W found by every
// block, the row losses summed by the last (cuda/loss_epilogue.cuh).
__global__ void __launch_bounds__(kThreads)
    softmax_cross_entropy_soft_kernel(LossGrid g, float* grad, const float* logits, const float* targets,
                                      const int32_t* labels, const float* row_weights, int64_t batch, int64_t classes) {
  const double total = batch_weight_total(nullptr, nullptr, row_weights, batch);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row_index = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  int64_t hit = 0;
  if (row_index < batch) {  // no early exit: the block meets at finish_loss_grid's barriers
    const float* z = logits + row_index * classes;
    const float* q = targets + row_index * classes;
    float mx = -INFINITY;  // a NaN reaches the sums through its own term
    for (int64_t c = lane; c < classes; c += 32) mx = z[c] > mx ? z[c] : mx;
    mx = warp_max(mx);
    double sum = 0.0, qsum = 0.0, qd = 0.0;
    for (int64_t c = lane; c < classes; c += 32) {
      const float d = z[c] - mx;
      sum += expf(d);
      qsum += q[c];
      if (q[c] != 0.0f) qd += static_cast<double>(q[c]) * static_cast<double>(d);  // 0 log 0 = 0
    }
    sum = warp_sum(sum);
    qsum = warp_sum(qsum);
    qd = warp_sum(qd);
    const double w = row_weights ? static_cast<double>(row_weights[row_index]) : 1.0;
    if (lane == 0) g.row_loss[row_index] = w * (qsum * log(sum) - qd);
    if (grad) {
      const float scale = static_cast<float>(total > 0.0 ? w / total : 0.0), qp = static_cast<float>(qsum / sum);
      const ScaledGrad scaled(g.metrics, classes, row_index);
      float* gr = grad + row_index * classes;
      for (int64_t c = lane; c < classes; c += 32) scaled.store(gr, c, scale * (qp * expf(z[c] - mx) - q[c]));
    }
    hit = warp_row_hit(g, z, classes, labels, row_index, lane);
  }
  finish_loss_grid(g, total, batch, block_warp_hits(hit));
}

}  // namespace customml::CUSTOMML_CUDA_NS
