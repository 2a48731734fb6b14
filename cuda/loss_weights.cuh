#pragma once
// Defines: loss_weight_total_kernel, the total weight W = sum_i w_i of a batch that the
// weighted losses divide by (softmax cross-entropy, binary cross-entropy, mse).

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/loss_epilogue.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// labels (batch) (read only with class weights), class_weights (classes) or null,
// row_weights (batch) or null -> total (1) = sum_i class_weights[label_i] row_weights[i],
// a missing factor being 1. One block of kThreads; the order is fixed, so W is
// deterministic.
__global__ void loss_weight_total_kernel(double* total, const int32_t* labels, const float* class_weights,
                                         const float* row_weights, int64_t batch) {
  const double sum = batch_weight_total(labels, class_weights, row_weights, batch);
  if (threadIdx.x == 0) *total = sum;
}

}  // namespace customml::CUSTOMML_CUDA_NS
