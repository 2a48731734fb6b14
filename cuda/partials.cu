// Launchers that finish reductions on the device (cuda/partials.cuh), and the accumulate op.

#include "cuda/device_backend.h"
#include "cuda/partials.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void finish_partials(DeviceContext& ctx, double* out, const PartialsSum& p) {
  launch(sum_partials_kernel, dim3(1), dim3(kThreads), 0, ctx.stream, out, p);
}

void sum_counts(DeviceContext& ctx, int64_t* out, const int64_t* counts, int64_t n) {
  launch(sum_counts_kernel, dim3(1), dim3(kThreads), 0, ctx.stream, out, counts, n);
}

void DeviceBackend::accumulate(double* sum, const double* value, double weight, const StepState* gate) {
  launch(accumulate_kernel, dim3(1), dim3(1), 0, ctx().stream, sum, value, weight, gate);
}

}  // namespace customml::CUSTOMML_CUDA_NS
