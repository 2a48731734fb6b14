#pragma once
// Defines: the device helpers the kernels share: warp and block reductions in a fixed
// order (so a reduction's result does not depend on scheduling), grid sizing, the float4
// split of flat elementwise passes, and the configuration structs passed to kernels by value.

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "backend.h"
#include "cuda/launch.h"

// Full unrolling of a short fixed-trip loop, so its arrays stay in registers; spelled
// for each compiler (host GCC warns about `#pragma unroll`).
#if defined(__CUDACC__)
#define CUSTOMML_UNROLL _Pragma("unroll")
#else
#define CUSTOMML_UNROLL _Pragma("GCC unroll 16")
#endif

// After each static __shared__ declaration: the emulator fills the variable with 0xFF bytes
// (NaN in floats) at its first use in each block, as the GPU leaves it uninitialized, so a
// read before a write shows (tests/test_simt.py checks that every declaration has one).
#if defined(__CUDACC__)
#define CUSTOMML_POISON_SHARED(name)
#else
#define CUSTOMML_POISON_SHARED(name) ::customml::simt::poison_shared(&(name), sizeof(name))
#endif

namespace customml::CUSTOMML_CUDA_NS {

constexpr int kThreads = 256;  // threads per block for the elementwise and reduction kernels
constexpr int kWarps = kThreads / 32;
// Reductions use a fixed number of blocks (not one derived from the device), so their
// partial sums, added on the host in block order, give the same result everywhere.
constexpr int kReduceBlocks = 120;

// Blocks for a grid-stride loop over n items: enough to fill any device, capped so that
// the grid stays small; the loop covers the rest.
inline unsigned grid_stride_blocks(int64_t n, int per_block) {
  const int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 4096 ? 4096 : b));
}

// Blocks for one block per `per_block` items along gridDim.x (limit 2^31 - 1).
inline unsigned exact_blocks(int64_t n, int per_block) {
  const int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

// Butterfly sum over the 32 lanes: every lane ends with the same total, accumulated in
// the same order whatever the scheduling.
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <class T>
__device__ __forceinline__ T warp_max(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const T o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = o > v ? o : v;
  }
  return v;
}

// Sum over a block of kThreads threads; the result is valid in thread 0.
template <class T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T warp_totals[kWarps];
  CUSTOMML_POISON_SHARED(warp_totals);
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  T total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kWarps; ++w) total += warp_totals[w];
  __syncthreads();  // warp_totals may be reused by the next call
  return total;
}

// Maximum over a block of kThreads threads; every thread gets the result.
__device__ __forceinline__ float block_max(float v) {
  __shared__ float warp_maxima[kWarps];
  __shared__ float result;
  CUSTOMML_POISON_SHARED(warp_maxima);
  CUSTOMML_POISON_SHARED(result);
  v = warp_max(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_maxima[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = warp_maxima[0];
    for (int w = 1; w < kWarps; ++w) m = warp_maxima[w] > m ? warp_maxima[w] : m;
    result = m;
  }
  __syncthreads();
  return result;
}

// The class a warp's row of logits predicts, in every lane: the first maximum (as
// numpy.argmax), or for a single logit 1 when it is > 0, else 0. Each lane keeps the
// first maximum of its strided share; merging keeps the larger value, and the smaller
// index on ties.
__device__ __forceinline__ int64_t warp_predicted_class(const float* row, int64_t classes, int lane) {
  if (classes == 1) return row[0] > 0.0f;
  float best = row[lane < classes ? lane : 0];
  int64_t best_c = lane < classes ? lane : 0;
  for (int64_t c = lane + 32; c < classes; c += 32)
    if (row[c] > best) {
      best = row[c];
      best_c = c;
    }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, offset);
    const int64_t oc = __shfl_xor_sync(0xffffffffu, best_c, offset);
    if (ov > best || (ov == best && oc < best_c)) {
      best = ov;
      best_c = oc;
    }
  }
  return best_c;
}

// A block of kWarps warps, a row each, lane 0 holding its row's hit (0 or 1) -> how many
// of the block's rows hit, in thread 0 (0 in the others). Every thread calls it (a barrier).
__device__ __forceinline__ int64_t block_warp_hits(int64_t hit) {
  __shared__ int64_t hits[kWarps];
  CUSTOMML_POISON_SHARED(hits);
  if (threadIdx.x % 32 == 0) hits[threadIdx.x / 32] = hit;
  __syncthreads();
  int64_t sum = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kWarps; ++w) sum += hits[w];
  return sum;
}

// The float4 split of an elementwise pass over n floats of several arrays: the first
// `head` elements one per thread (up to the arrays' first 16-byte boundary), then `vecs`
// float4s, one 16-byte load and store per array, then the remaining n - head - 4 vecs
// elements one per thread. A float4 can be loaded from every array at once only where
// they share one address modulo 16 bytes; where they do not (or a float is not 4-byte
// aligned), every element is scalar: head = n, vecs = 0. Null arrays (an optional
// buffer not in use) do not count.
struct Vec4Split {
  int64_t head = 0;
  int64_t vecs = 0;
};

inline Vec4Split vec4_split(int64_t n, std::initializer_list<const void*> arrays) {
  int64_t offset = -1;  // the common address modulo 16
  for (const void* a : arrays) {
    if (!a) continue;
    const int64_t r = static_cast<int64_t>(reinterpret_cast<uintptr_t>(a) & 15);
    if (offset >= 0 && r != offset) return {n, 0};
    offset = r;
  }
  if (offset < 0 || offset % 4) return {n, 0};
  const int64_t head = std::min<int64_t>(n, offset ? (16 - offset) / 4 : 0);
  return {head, (n - head) / 4};
}

// Threads for a pass split by vec4_split: one per float4 or per scalar element, whichever
// part is longer (the grid-stride loops cover the rest).
inline unsigned vec4_blocks(int64_t n, const Vec4Split& s) {
  return grid_stride_blocks(std::max<int64_t>(s.vecs, n - 4 * s.vecs), kThreads);
}

// The flat index of the k-th scalar element of a split: the head, then the tail.
__device__ __forceinline__ int64_t vec4_scalar_index(const Vec4Split& s, int64_t k) {
  return k < s.head ? k : k + 4 * s.vecs;
}

// The four floats at p (16-byte aligned) into registers, and back.
__device__ __forceinline__ void load4(float (&a)[4], const float* p) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  a[0] = q.x;
  a[1] = q.y;
  a[2] = q.z;
  a[3] = q.w;
}
__device__ __forceinline__ void store4(float* p, const float (&a)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(a[0], a[1], a[2], a[3]);
}

// x (n) *= coef, each product in double then rounded (the coefficient may be below
// float32's normal range): split (vec4_split of x) gives float4s, one per thread, then the
// head and tail elements. The body of the scale op and of clipping's scaling pass.
__device__ __forceinline__ void scale_elements(float* x, int64_t n, Vec4Split split, double coef) {
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t u = first; u < split.vecs; u += stride) {
    float a[4];
    load4(a, x + split.head + 4 * u);
    CUSTOMML_UNROLL
    for (int j = 0; j < 4; ++j) a[j] = static_cast<float>(a[j] * coef);
    store4(x + split.head + 4 * u, a);
  }
  for (int64_t k = first; k < n - 4 * split.vecs; k += stride) {
    const int64_t i = vec4_scalar_index(split, k);
    x[i] = static_cast<float>(x[i] * coef);
  }
}

// The first no-decay segment (sorted, disjoint) that ends after flat index i, or
// n_no_decay: a binary search over the handful a model has.
__device__ __forceinline__ int64_t segment_after(const Segment* no_decay, int64_t n_no_decay, int64_t i) {
  int64_t lo = 0, hi = n_no_decay;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (no_decay[mid].end <= i)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// Whether flat index i takes weight decay: not inside any no-decay segment.
__device__ __forceinline__ bool takes_decay(const Segment* no_decay, int64_t n_no_decay, int64_t i) {
  const int64_t s = segment_after(no_decay, n_no_decay, i);
  return !(s < n_no_decay && no_decay[s].begin <= i);
}

// takes_decay of the four elements i0 .. i0 + 3, element by element (a segment may
// begin or end between any two of them): one search, then a walk over the segments the
// four reach.
__device__ __forceinline__ void takes_decay4(bool (&decay)[4], const Segment* no_decay, int64_t n_no_decay,
                                             int64_t i0) {
  int64_t s = segment_after(no_decay, n_no_decay, i0);
  CUSTOMML_UNROLL
  for (int j = 0; j < 4; ++j) {
    const int64_t i = i0 + j;
    while (s < n_no_decay && no_decay[s].end <= i) ++s;
    decay[j] = !(s < n_no_decay && no_decay[s].begin <= i);
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
