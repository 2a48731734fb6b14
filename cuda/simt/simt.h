#pragma once
// Defines: the CUDA spellings that kernels in cuda/*.cuh use, for the host compiler:
// __global__ and friends, threadIdx/blockIdx/blockDim/gridDim, __shared__,
// __syncthreads, __syncwarp, warp shuffles and votes, atomics, __dp4a, __fmul_rn, __ldg,
// __ldcg, __threadfence, float4, int4. Include it after every other header: its macros would rewrite their code.

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simt/runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
// One instance per OS thread, shared by the fibers of the block that runs on it.
#define __shared__ static thread_local

#define threadIdx (::customml::simt::thread_idx())
#define blockIdx (::customml::simt::block_idx())
#define blockDim (::customml::simt::block_dim())
#define gridDim (::customml::simt::grid_dim())
#define warpSize (::customml::simt::kWarpSize)

using ::customml::simt::dim3;
using ::customml::simt::uint3;

// CUDA's 16-byte vector type: one 128-bit load or store on the device.
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
struct alignas(16) int4 {
  int x, y, z, w;
};
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

inline void __syncthreads() { ::customml::simt::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::customml::simt::warp_exchange(mask, 0); }
// Blocks run one at a time over host memory, so every write is already visible to every
// later reader: the fence orders nothing here (it does on the GPU, where the last-block
// reductions of cuda/loss_epilogue.cuh and split-K's cuda/dense.cu need it).
inline void __threadfence() {}

namespace customml::simt::detail {
template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffles move up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <class T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
// CUDA's segment rule: width splits the warp into groups; lanes read within their group.
inline unsigned group_base(unsigned lane, int width) { return lane & ~static_cast<unsigned>(width - 1); }
}  // namespace customml::simt::detail

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  namespace d = ::customml::simt::detail;
  const unsigned lane = ::customml::simt::lane_id();
  const uint64_t* all = ::customml::simt::warp_exchange(mask, d::to_bits(var));
  const unsigned src = d::group_base(lane, width) + (static_cast<unsigned>(src_lane) % width);
  ::customml::simt::check_shuffle_source(src);
  return d::from_bits<T>(all[src]);
}

template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  namespace d = ::customml::simt::detail;
  const unsigned lane = ::customml::simt::lane_id();
  const uint64_t* all = ::customml::simt::warp_exchange(mask, d::to_bits(var));
  const unsigned base = d::group_base(lane, width);
  const unsigned src = lane + delta;
  // Lanes past the end of their group keep their own value, as on the GPU.
  if (src >= base + static_cast<unsigned>(width)) return var;
  ::customml::simt::check_shuffle_source(src);
  return d::from_bits<T>(all[src]);
}

template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  namespace d = ::customml::simt::detail;
  const unsigned lane = ::customml::simt::lane_id();
  const uint64_t* all = ::customml::simt::warp_exchange(mask, d::to_bits(var));
  const unsigned base = d::group_base(lane, width);
  if (lane < base + delta) return var;
  ::customml::simt::check_shuffle_source(lane - delta);
  return d::from_bits<T>(all[lane - delta]);
}

template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  namespace d = ::customml::simt::detail;
  const unsigned lane = ::customml::simt::lane_id();
  const uint64_t* all = ::customml::simt::warp_exchange(mask, d::to_bits(var));
  const unsigned src = lane ^ static_cast<unsigned>(lane_mask);
  if (src >= d::group_base(lane, width) + static_cast<unsigned>(width)) return var;
  ::customml::simt::check_shuffle_source(src);
  return d::from_bits<T>(all[src]);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const uint64_t* all = ::customml::simt::warp_exchange(mask, predicate != 0);
  unsigned bits = 0;
  for (int l = 0; l < warpSize; ++l)
    if (((mask >> l) & 1u) && all[l]) bits |= 1u << l;
  return bits;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }

// Atomics: blocks run one at a time and fibers switch only at barriers, so a plain
// read-modify-write is atomic here; they still return the old value as CUDA's do.
template <class T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <class T>
T atomicMax(T* address, T value) {
  const T old = *address;
  *address = old < value ? value : old;
  return old;
}
template <class T>
T atomicMin(T* address, T value) {
  const T old = *address;
  *address = value < old ? value : old;
  return old;
}
template <class T>
T atomicExch(T* address, T value) {
  const T old = *address;
  *address = value;
  return old;
}
template <class T>
T atomicCAS(T* address, T compare, T value) {
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}

// Four signed 8-bit products accumulated into c, as the dp4a instruction.
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i) c += static_cast<int8_t>(a >> (8 * i)) * static_cast<int8_t>(b >> (8 * i));
  return c;
}

// A product rounded on its own, never fused into an FMA. The emulation is compiled for
// baseline x86-64, which has no FMA instruction, so a plain product already is.
inline float __fmul_rn(float a, float b) { return a * b; }

template <class T>
T __ldg(const T* p) {
  return *p;
}
// A load from L2, past the SM's L1 (data other blocks stored during this launch).
template <class T>
T __ldcg(const T* p) {
  return *p;
}
