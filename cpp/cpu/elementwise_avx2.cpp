// The elementwise kernels of cpu/elementwise_kernels.h compiled for AVX2 + FMA (8 lanes).

#include "cpu/elementwise_kernels.h"

namespace customml::cpu {

const ElementwiseKernels kElementwiseAvx2 = elementwise_table();

}  // namespace customml::cpu
