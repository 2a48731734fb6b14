// The portable elementwise kernels (one lane, the specification the SIMD tables are
// tested against) and the run-time choice of table.

#include "cpu/elementwise.h"

#include <atomic>

#include "cpu/elementwise_kernels.h"

namespace customml::cpu {

const ElementwiseKernels kElementwisePortable = elementwise_table(dropout_portable);

namespace {
std::atomic<const ElementwiseKernels*> g_table{nullptr};
}  // namespace

const ElementwiseKernels& elementwise_for(IsaLevel level) {
#ifdef CUSTOMML_X86_KERNELS
  if (static_cast<int>(level) >= static_cast<int>(IsaLevel::avx512)) return kElementwiseAvx512;
  if (level == IsaLevel::avx2) return kElementwiseAvx2;
#endif
  return kElementwisePortable;
}

void select_elementwise(IsaLevel level) { g_table.store(&elementwise_for(level), std::memory_order_release); }

const ElementwiseKernels& elementwise() {
  const ElementwiseKernels* t = g_table.load(std::memory_order_acquire);
  if (!t) {
    active_isa();  // the first call selects every family
    t = g_table.load(std::memory_order_acquire);
  }
  return *t;
}

}  // namespace customml::cpu
