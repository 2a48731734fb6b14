// The elementwise kernels of cpu/elementwise_kernels.h and cpu/philox_simd.h compiled for AVX-512 (16 lanes).

#include "cpu/elementwise_kernels.h"
#include "cpu/philox_simd.h"

namespace customml::cpu {

const ElementwiseKernels kElementwiseAvx512 = elementwise_table(ew_dropout);

}  // namespace customml::cpu
