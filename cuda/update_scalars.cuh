#pragma once
// Defines: GradientScaling and HalfTwin, how the optimizer update kernels read their
// gradient and write the parameters' 16-bit twin under UpdateScalars (backend.h). The
// gradient is scaled as scale_by_kernel and then as clip_scale_kernel would have done it
// in place, each product in double rounded to float, so the update gives their bits
// without their passes (the clipping norm also from the dense backward's slots:
// clip_norm). Device functions only: any kernel file may include it.

#include "cuda/common.cuh"
#include "cuda/half_bits.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// The gradients' global norm the update clips by: *u.norm, or the square root of the sum
// of u's norm slots in a fixed order, so every block gets the same bits: each thread adds
// a contiguous slice of them in slot order (one or two slots up to Trainer::kMaxNormSlots),
// then block_sum's tree (warp shuffles, the warps' sums in warp order), a few dependent
// adds instead of a serial sum of kThreads slices in thread 0 (docs/decisions.md, "Clipping's
// norm"). Unused where u clips by neither. Every thread of the block calls it.
__device__ __forceinline__ double clip_norm(const UpdateScalars& u) {
  if (!u.norm_slots) return u.norm ? *u.norm : 0.0;
  __shared__ double norm;
  CUSTOMML_POISON_SHARED(norm);
  const int64_t per = (u.norm_slot_count + kThreads - 1) / kThreads, begin = threadIdx.x * per;
  double slice = 0.0;
  for (int64_t i = begin; i < begin + per && i < u.norm_slot_count; ++i) slice += u.norm_slots[i];
  const double total = block_sum(slice);
  if (threadIdx.x == 0) norm = sqrt(total);
  __syncthreads();
  return norm;
}

struct GradientScaling {
  double unscale = 1.0, clip = 1.0;
  bool unscales = false, clips = false;
  // Reads the factors from device memory (once per thread, before the element loop); norm:
  // clip_norm(u).
  __device__ __forceinline__ GradientScaling(const UpdateScalars& u, double norm) {
    if (u.unscale) {
      unscale = *u.unscale;
      unscales = true;
    }
    if (u.norm || u.norm_slots) {
      clip = static_cast<double>(u.max_norm) / (norm + 1e-6);
      clips = clip < 1.0;
    }
  }
  // The gradient g as the update uses it.
  __device__ __forceinline__ float operator()(float g) const {
    if (unscales) g = static_cast<float>(g * unscale);
    if (clips) g = static_cast<float>(g * clip);
    return g;
  }
};

// The parameters' 16-bit twin (UpdateScalars::half), written as each parameter is: at its
// parameter index, or in a padded kernel's rows (UpdateScalars::half_rows; a division only
// there, the table's few entries read from the cache).
struct HalfTwin {
  uint16_t* half;
  bool bf16;
  int64_t first;
  const HalfRows* rows;
  int64_t row_count;
  __device__ __forceinline__ explicit HalfTwin(const UpdateScalars& u)
      : half(u.half), bf16(u.half_bf16), first(u.half_first), rows(u.half_rows), row_count(u.half_row_count) {}
  // The twin index of the update's parameter i.
  __device__ __forceinline__ int64_t index(int64_t i) const {
    const int64_t j = first + i;
    for (int64_t e = 0; e < row_count; ++e) {
      const HalfRows r = rows[e];
      if (j >= r.begin && j < r.end) return r.dst + (j - r.begin) / r.cols * r.ld + (j - r.begin) % r.cols;
    }
    return j;
  }
  __device__ __forceinline__ void store4(int64_t i0, const float (&p)[4]) const {
    if (!half) return;
    CUSTOMML_UNROLL
    for (int j = 0; j < 4; ++j) half[index(i0 + j)] = half_bits(p[j], bf16);
  }
  __device__ __forceinline__ void store(int64_t i, float p) const {
    if (half) half[index(i)] = half_bits(p, bf16);
  }
};

}  // namespace customml::CUSTOMML_CUDA_NS
