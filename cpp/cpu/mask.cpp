// Pruning masks on the CPU: the weights a mask removes set to zero, once after pruning
// and after every optimizer update, so pruned weights stay exactly zero while training.

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "cpu/thread_pool.h"

namespace customml::cpu {

// param, keep: (n) -> param[i] = 0 where keep[i] == 0.
void CpuBackend::apply_mask(float* param, const uint8_t* keep, int64_t n) {
  const ElementwiseKernels& k = elementwise();
  for_each_chunk(n, [&](int64_t, int64_t b, int64_t e) { k.apply_mask(param + b, keep + b, e - b); });
}

}  // namespace customml::cpu
