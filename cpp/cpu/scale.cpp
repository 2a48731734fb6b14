// Scaling a flat buffer in place on the CPU: the second pass of global-norm clipping, and
// the fp16 loss scale (the parameter gradients scaled back down).

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "cpu/thread_pool.h"

namespace customml::cpu {

// x: (n) *= coef, each product in float64 then rounded to float32.
void CpuBackend::scale(float* x, int64_t n, double coef) {
  const ElementwiseKernels& k = elementwise();
  for_each_chunk(n, [&](int64_t, int64_t b, int64_t e) { k.scale(x + b, e - b, coef); });
}

void CpuBackend::scale_by(float* x, int64_t n, const double* coef) { scale(x, n, *coef); }

}  // namespace customml::cpu
