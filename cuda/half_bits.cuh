#pragma once
// Defines: half_bits (a float rounded to a 16-bit tensor-core format, as its bits), the one
// conversion behind every 16-bit copy of an operand (cuda/gemm_tc.cuh's staging of a float
// operand, the weights' twin written by the optimizer updates and Model's writes): round
// to nearest even, as the tensor-core staging rounded before the copies existed, so the
// GEMMs see the same bits. Device functions only: any kernel file may include it.

#include <cstdint>

#include "cuda/common.cuh"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#else
#include "simt/wmma.h"
#endif

namespace customml::CUSTOMML_CUDA_NS {

// bf16: bfloat16, else IEEE binary16.
__device__ __forceinline__ uint16_t half_bits(float v, bool bf16) {
#if defined(__CUDACC__)
  return bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
#else
  return bf16 ? __float2bfloat16(v).bits : __float2half(v).bits;
#endif
}

}  // namespace customml::CUSTOMML_CUDA_NS
