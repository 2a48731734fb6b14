// Launchers of the metrics' statistics: count_correct (per-block counts, then their sum
// added to a device counter), confusion_matrix_update and regression_stats_update (both add
// into a device buffer): none reads anything back.

#include "cuda/device_backend.h"
#include "cuda/metrics.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::count_correct(int64_t* correct, const float* logits, const int32_t* labels, int64_t batch,
                                  int64_t classes) {
  DeviceContext& ctx = this->ctx();
  if (batch == 0) return;
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  const unsigned blocks = exact_blocks(batch, kWarps);
  int64_t* counts = ctx.counts.reserve(blocks);
  launch(count_correct_kernel, dim3(blocks), dim3(kThreads), 0, ctx.stream, counts, logits, labels, batch, classes);
  sum_counts(ctx, correct, counts, static_cast<int64_t>(blocks));
}

void DeviceBackend::confusion_matrix_update(int64_t* counts, const float* logits, const int32_t* labels, int64_t batch,
                                            int64_t k) {
  DeviceContext& ctx = this->ctx();
  if (batch == 0) return;
  launch(confusion_matrix_update_kernel, dim3(exact_blocks(batch, kWarps)), dim3(kThreads), 0, ctx.stream, counts,
         logits, labels, batch, k);
}

void DeviceBackend::regression_stats_update(double* stats, const float* pred, const float* target, const double* shift,
                                            int64_t batch, int64_t outputs) {
  DeviceContext& ctx = this->ctx();
  if (batch == 0) return;
  launch(regression_stats_update_kernel, dim3(exact_blocks(outputs, kThreads)), dim3(kThreads), 0, ctx.stream, stats,
         pred, target, shift, batch, outputs);
}

}  // namespace customml::CUSTOMML_CUDA_NS
