// The elementwise kernels of cpu/elementwise_kernels.h compiled for AVX-512 (16 lanes).

#include "cpu/elementwise_kernels.h"

namespace customml::cpu {

const ElementwiseKernels kElementwiseAvx512 = elementwise_table();

}  // namespace customml::cpu
