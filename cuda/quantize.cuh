#pragma once
// Defines: quantize_kernel, dequantize_kernel (static scales per tensor, row or column),
// fake_quantize_kernel (the two in one pass) and quantize_rows_dynamic_kernel (a warp per
// row: its range, then its codes); QAT's symmetric_scales_*_kernel and observe_range_kernel.

#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/quantize_math.cuh"
#include "moving_range.h"

namespace customml::CUSTOMML_CUDA_NS {

// Which scale / zero entry flat element i of a (rows, cols) array uses; the 64-bit
// division (a long instruction sequence on the GPU) only where the axis needs it.
__device__ __forceinline__ int64_t quant_param_index(QuantAxis axis, int64_t i, int64_t cols) {
  switch (axis) {
    case QuantAxis::tensor: return 0;
    case QuantAxis::row: return i / cols;
    case QuantAxis::column: return i % cols;
  }
  return 0;
}

// Four consecutive elements per thread: one 16-byte load of x and one 4-byte store of
// codes where both are aligned and the four lie in the array, element by element
// otherwise. The scale's index is derived per element, so runs of four may cross rows.
constexpr int kQuantVec = 4;

// T's codes: int8_t in [-127, 127] (symmetric: -128 unused), uint8_t in [0, 255].
template <class T>
struct CodeRange {
  static constexpr int32_t lo = sizeof(T) == 1 && static_cast<T>(-1) < 0 ? -127 : 0;
  static constexpr int32_t hi = lo < 0 ? 127 : 255;
};

// x: (rows, cols) f32  scale, zero (zero null: 0): (1), (rows) or (cols) per axis
// -> q: (rows, cols) T (int8_t codes in [-127, 127], uint8_t in [0, 255])
template <class T>
__global__ void quantize_kernel(T* q, const float* x, const float* scale, const int32_t* zero, int64_t rows,
                                int64_t cols, QuantAxis axis) {
  constexpr int32_t lo = CodeRange<T>::lo, hi = CodeRange<T>::hi;
  const int64_t n = rows * cols;
  const bool aligned = (reinterpret_cast<uintptr_t>(x) & 15) == 0 && (reinterpret_cast<uintptr_t>(q) & 3) == 0;
  for (int64_t i0 = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * kQuantVec; i0 < n;
       i0 += static_cast<int64_t>(gridDim.x) * blockDim.x * kQuantVec) {
    float v[kQuantVec];
    const bool whole = aligned && i0 + kQuantVec <= n;
    if (whole) {
      const float4 x4 = *reinterpret_cast<const float4*>(x + i0);
      v[0] = x4.x;
      v[1] = x4.y;
      v[2] = x4.z;
      v[3] = x4.w;
    } else {
      CUSTOMML_UNROLL
      for (int e = 0; e < kQuantVec; ++e) v[e] = i0 + e < n ? x[i0 + e] : 0.0f;
    }
    uint32_t packed = 0;
    CUSTOMML_UNROLL
    for (int e = 0; e < kQuantVec; ++e) {
      const int64_t i = i0 + e;
      // Past the end the row index would be `rows`: one scale and zero past theirs.
      if (i >= n) break;
      const int64_t p = quant_param_index(axis, i, cols);
      const int32_t c = quantize_value(v[e], scale[p], zero ? zero[p] : 0, lo, hi);
      packed |= (static_cast<uint32_t>(c) & 0xFFu) << (8 * e);
      if (!whole) q[i] = static_cast<T>(c);
    }
    if (whole) *reinterpret_cast<uint32_t*>(q + i0) = packed;
  }
}

// q: (rows, cols) T -> x: (rows, cols) f32 = scale * (q - zero): the difference is exact
// in int32, one rounding in the product.
template <class T>
__global__ void dequantize_kernel(float* x, const T* q, const float* scale, const int32_t* zero, int64_t rows,
                                  int64_t cols, QuantAxis axis) {
  const int64_t n = rows * cols;
  const bool aligned = (reinterpret_cast<uintptr_t>(x) & 15) == 0 && (reinterpret_cast<uintptr_t>(q) & 3) == 0;
  for (int64_t i0 = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * kQuantVec; i0 < n;
       i0 += static_cast<int64_t>(gridDim.x) * blockDim.x * kQuantVec) {
    const bool whole = aligned && i0 + kQuantVec <= n;
    T c[kQuantVec];
    if (whole) {
      const uint32_t packed = *reinterpret_cast<const uint32_t*>(q + i0);
      CUSTOMML_UNROLL
      for (int e = 0; e < kQuantVec; ++e) c[e] = static_cast<T>((packed >> (8 * e)) & 0xFFu);
    } else {
      CUSTOMML_UNROLL
      for (int e = 0; e < kQuantVec; ++e) c[e] = i0 + e < n ? q[i0 + e] : T{0};
    }
    float v[kQuantVec] = {};
    CUSTOMML_UNROLL
    for (int e = 0; e < kQuantVec; ++e) {
      const int64_t i = i0 + e;
      if (i >= n) break;  // as in quantize_kernel: no scale or zero read past theirs
      const int64_t p = quant_param_index(axis, i, cols);
      v[e] = scale[p] * static_cast<float>(static_cast<int32_t>(c[e]) - (zero ? zero[p] : 0));
    }
    if (whole) {
      *reinterpret_cast<float4*>(x + i0) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      CUSTOMML_UNROLL
      for (int e = 0; e < kQuantVec; ++e)
        if (i0 + e < n) x[i0 + e] = v[e];
    }
  }
}

// x: (rows, cols) f32 -> y: (rows, cols) f32 = dequantize(quantize(x)) with T's codes, as
// quantize_kernel then dequantize_kernel compute them (the same quantize_value and product),
// the codes never stored: QAT's fake quantization in one pass. y may be x.
template <class T>
__global__ void fake_quantize_kernel(float* y, const float* x, const float* scale, const int32_t* zero, int64_t rows,
                                     int64_t cols, QuantAxis axis) {
  constexpr int32_t lo = CodeRange<T>::lo, hi = CodeRange<T>::hi;
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = quant_param_index(axis, i, cols);
    const int32_t z = zero ? zero[p] : 0;
    const int32_t c = quantize_value(x[i], scale[p], z, lo, hi);
    y[i] = scale[p] * static_cast<float>(c - z);
  }
}

// The dynamic quantization of one row from its range (lo <= 0 <= hi): the scale maps it
// onto 0 .. 255 and the zero point is the code of 0.0. A range too small for
// (hi - lo) / 255 to be a positive float (all zeros, or a few subnormals) takes scale 1,
// as on the CPU.
struct RowQuantization {
  float scale;
  int32_t zero;
};
__device__ __forceinline__ RowQuantization row_quantization(float lo, float hi) {
  float scale = (hi - lo) / 255.0f;
  if (scale == 0.0f) scale = 1.0f;
  return {scale, quantize_value(-lo, scale, 0, 0, 255)};
}

constexpr int kRowsPerQuantBlock = kThreads / 32;  // a warp per row

// x: (rows, x_cols)  y: (rows, y_cols) -> y's row NaN where x's holds a NaN or an infinity
// (v - v is 0 exactly for finite v, NaN otherwise). A warp per row, as below.
__global__ void __launch_bounds__(kThreads)
    nan_rows_of_nonfinite_kernel(float* y, const float* x, int64_t rows, int64_t x_cols, int64_t y_cols) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerQuantBlock + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps leave together: the vote below sees all 32 lanes
  const float* xr = x + row * x_cols;
  bool bad = false;
  for (int64_t c = lane; c < x_cols; c += 32) bad = bad || !(xr[c] - xr[c] == 0.0f);
  if (!__any_sync(0xFFFFFFFFu, bad)) return;
  float* yr = y + row * y_cols;
  for (int64_t c = lane; c < y_cols; c += 32) yr[c] = nanf("");
}

// x: (rows, cols) -> scale, zero: (rows), q: (rows, cols) u8; lo = min(0, min x),
// hi = max(0, max x) per row: min and max are exact, so the warp's reduction order does
// not matter. grid (ceil(rows / 8)), block kThreads.
__global__ void __launch_bounds__(kThreads)
    quantize_rows_dynamic_kernel(uint8_t* q, float* scale, int32_t* zero, const float* x, int64_t rows, int64_t cols) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerQuantBlock + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps leave together: the shuffles below see all 32 lanes
  const float* xr = x + row * cols;
  float lo = 0.0f, hi = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    lo = fminf(lo, xr[c]);
    hi = fmaxf(hi, xr[c]);
  }
  lo = -warp_max(-lo);
  hi = warp_max(hi);
  const RowQuantization rq = row_quantization(lo, hi);
  if (lane == 0) {
    scale[row] = rq.scale;
    zero[row] = rq.zero;
  }
  uint8_t* qr = q + row * cols;
  for (int64_t c = lane; c < cols; c += 32)
    qr[c] = static_cast<uint8_t>(quantize_value(xr[c], rq.scale, rq.zero, 0, 255));
}

// NaN is left out of the maxima: fmaxf returns the other operand.
// w: (rows, cols) -> scale: (cols) = max |w[:, j]| / 127 (1 where 0), a thread per column
// walking down it (a warp reads 32 adjacent columns of a row at once). grid (ceil(cols /
// kThreads)), block kThreads.
__global__ void __launch_bounds__(kThreads)
    symmetric_scales_columns_kernel(float* scale, const float* w, int64_t rows, int64_t cols) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= cols) return;
  float m = 0.0f;
  for (int64_t i = 0; i < rows; ++i) m = fmaxf(m, fabsf(w[i * cols + j]));
  scale[j] = m > 0.0f ? m / 127.0f : 1.0f;
}

// w: (n) -> scale (1) = max |w| / 127 (1 where 0). One block: the maximum is exact in
// any order. grid (1), block kThreads.
__global__ void __launch_bounds__(kThreads) symmetric_scales_tensor_kernel(float* scale, const float* w, int64_t n) {
  float m = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) m = fmaxf(m, fabsf(w[i]));
  m = block_max(m);
  if (threadIdx.x == 0) *scale = m > 0.0f ? m / 127.0f : 1.0f;
}

// x: (n) -> the batch range with 0 (exact in any order) moved into range, and its
// encoding (moving_range.h). One block: QAT calls it once per layer and step on a
// batch's activations. grid (1), block kThreads.
__global__ void __launch_bounds__(kThreads)
    observe_range_kernel(double* range, float* scale, int32_t* zero, const float* x, int64_t n, float momentum,
                         bool first) {
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    lo = fminf(lo, x[i]);
    hi = fmaxf(hi, x[i]);
  }
  lo = -block_max(-lo);
  hi = block_max(hi);
  if (threadIdx.x != 0) return;
  const RangeEncoding e = update_moving_range(range, lo, hi, momentum, first);
  *scale = e.scale;
  *zero = e.zero;
}

}  // namespace customml::CUSTOMML_CUDA_NS
