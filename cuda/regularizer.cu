// Launchers of the L1/L2 kernel penalties: one pass per launch over up to kPenaltyTerms
// kernels (their gradients and per-block partial sums), whose last block adds the
// partials in block order, the terms in order, and the sum into the loss's metrics.

#include "cuda/device_backend.h"
#include "cuda/regularizer.cuh"

namespace customml::CUSTOMML_CUDA_NS {

namespace {
void launch_penalties(DeviceContext& ctx, double* penalty, double* sum, const PenaltyTerm* terms, int64_t count,
                      bool first, double weight, const StepState* gate) {
  PenaltyLaunch p{};
  for (int64_t k = 0; k < count; ++k) p.terms[k] = terms[k];
  p.count = static_cast<int>(count);
  p.first = first;
  p.penalty = penalty;
  p.sum = sum;
  p.weight = weight;
  p.gate = gate;
  p.ticket = ctx.grid_ticket();
  double* partial = ctx.partials.reserve(kReduceBlocks * kPenaltyTerms);
  launch(kernel_penalties_kernel, dim3(kReduceBlocks, static_cast<unsigned>(count)), dim3(kThreads), 0, ctx.stream,
         partial, p);
}
}  // namespace

// The loss launches sum up to kPenaltyTerms penalties in blocks of their own
// (finish_loss_grid), the updates add their gradients (GradientScaling).
int64_t DeviceBackend::folded_penalties() const { return kPenaltyTerms; }

void DeviceBackend::l1_l2_penalty(float* grad, double* penalty, const float* param, int64_t n, float l1, float l2) {
  DeviceContext& ctx = this->ctx();
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  const PenaltyTerm term{grad, param, n, l1, l2};
  launch_penalties(ctx, penalty, nullptr, &term, 1, false, 0.0, nullptr);
}

void DeviceBackend::kernel_penalties(double* penalty, double* sum, const PenaltyTerm* terms, int64_t count,
                                     double weight, const StepState* gate) {
  DeviceContext& ctx = this->ctx();
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  if (count == 0) {
    ctx.memory->fill_zero(penalty, sizeof(double));
    return;
  }
  for (int64_t k = 0; k < count; k += kPenaltyTerms) {
    const int64_t m = count - k < kPenaltyTerms ? count - k : kPenaltyTerms;
    launch_penalties(ctx, penalty, k + m == count ? sum : nullptr, terms + k, m, k == 0, weight, gate);
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
