#pragma once
// Defines: the host emulation of sm_90's warpgroup matrix instructions, in the spellings
// kernels use on the device too (customml::ptx): smem_descriptor, wgmma_fence,
// wgmma_async<T, N, kTransA, kTransB> (wgmma.mma_async.sync.aligned m64nNk16 .f32.bf16 /
// .f16, m64nNk8 .f32.tf32, A and B from shared memory), wgmma_commit_group and
// wgmma_wait_group<N>.
//
// Layouts as the PTX ISA fixes them (and the emulation keeps them; a wrong mapping gives
// wrong results):
// - The accumulator: the 128 threads of a warpgroup (4 consecutive warps, w = warp % 4,
//   g = lane / 4, t = lane % 4) hold N / 2 floats each; register 4i + 2h + e is row
//   16w + g + 8h, column 8i + 2t + e of the 64 x N tile.
// - A (64 x K) and B (N x K) in shared memory, described by a 64-bit descriptor: start
//   address, leading and stride byte offsets (each >> 4, 14 bits), the swizzle mode (bits
//   62-63: 0 none, 1 128 B, 2 64 B, 3 32 B). One instruction reads 32 bytes of K. K-major
//   (not transposed): 8-row groups `stride` bytes apart, each row 16 bytes (no swizzle; the
//   second 16 bytes of K `leading` bytes on) or the pattern's width (32, 64, 128 bytes).
//   MN-major (transposed, 16-bit types only): 16 bytes of M or N per row of 8 k, groups of
//   the pattern's width `leading` bytes apart and 8-k groups `stride` bytes apart (no
//   swizzle: the roles swapped). The swizzle XORs address bits [4, 4+B) with [7, 7+B)
//   (Swizzle<B,4,3>, B = 3, 2, 1), the pattern TMA writes (simt/tma.h).
//
// Asynchrony: an issued wgmma sets its accumulator registers to a signaling NaN and reads
// A and B (this thread's elements) through the descriptors; the wait_group that covers its
// group checks that shared memory still holds what was read (the GPU may read it any time
// until then), computes D = A B (+ D as it was at issue, when accumulating) and writes the
// registers. Several in flight into the same registers chain (the PTX ISA allows it for the
// same shape). So a read of the accumulators before the wait reads NaN. Products exact,
// summed in float in k order from the accumulator (the GPU's order and rounding are
// unspecified: tests bound, as for mma.sync); tf32 operands are read as their top 19 bits
// (cuda/simt/mma.h).
//
// Refused: operand shared memory changed between the issue and the wait covering it (a
// TMA landing after the issue: its mbarrier wait missing or late; a stage refilled or
// stored into early); a wgmma with no wgmma.fence since the thread's last wait_group
// (stricter than the ISA, which asks for one where the registers were accessed in between:
// our kernels fence every batch); accumulator registers written after the fence and before
// the wgmma that uses them (checked for registers named by wgmma_fence_operands before the
// fence, or used by an earlier wgmma: the fence records their bits); registers written while
// a wgmma is in flight (checked at a chained wgmma and at the wait; arithmetic counts, as the
// signaling NaN turns quiet); a partial warpgroup, threads of one warpgroup issuing different
// wgmmas or different numbers of them (.aligned), a wait with wgmmas not committed, a
// thread that exits with wgmmas in flight, operands outside the block's dynamic shared
// memory, a transposed tf32 operand, a descriptor base offset other than 0 (not emulated)
// and, with base offset 0, a swizzled operand whose start is rows into its pattern's
// repeat (address bits 7 and up, below 8 x the width; the bits below 7 step k).
// Refused at issue as well: operand bytes the asynchronous proxy may not see, i.e. written
// by ordinary (generic) shared stores with no fence.proxy.async since. The emulator keeps
// the proxy's view of dynamic shared memory (the block's poison, the bytes tensor copies
// write, and all of it at each fence.proxy.async) and compares an operand's bytes with it.
// Not checked: reads of the accumulators between the fence and the wgmma (a read is
// invisible here; the ISA asks for the fence after them too); writes, before the first
// fence, of registers never named; that a thread's fence.proxy.async covers only its own
// stores (here any thread's fence publishes the whole block's, so a fence by one thread
// after a __syncthreads passes where the ISA asks each writer to fence); a generic store
// that writes the bytes the view already holds.

#include <cstdint>
#include <type_traits>

#include "simt/async_proxy.h"
#include "simt/runtime.h"
#include "simt/wmma.h"

namespace customml::ptx {

enum class Swizzle : uint64_t { none = 0, b128 = 1, b64 = 2, b32 = 3 };

// The descriptor of an operand starting at `start` (16-byte aligned) in dynamic shared
// memory; leading and stride in bytes (multiples of 16).
inline uint64_t smem_descriptor(const void* start, unsigned leading, unsigned stride, Swizzle swizzle) {
  const uint32_t address = simt::shared_offset(start, 16, "wgmma descriptor");
  return (address & 0x3FFFFu) >> 4 | static_cast<uint64_t>((leading & 0x3FFFFu) >> 4) << 16 |
         static_cast<uint64_t>((stride & 0x3FFFFu) >> 4) << 32 | static_cast<uint64_t>(swizzle) << 62;
}

inline void wgmma_fence() { simt::async_proxy::wgmma_fence(); }
// fence.proxy.async.shared::cta: after operands written with ordinary shared stores,
// before the wgmma that reads them. Only the emulator's test kernels write operands so
// (cuda/sm90.cuh has no device spelling until a kernel does).
inline void fence_proxy_async() { simt::async_proxy::fence_proxy_async(); }
// On the GPU a compiler fence on the accumulator registers; here it names them, so that
// the next wgmma_fence records their values (see "Refused" above).
template <int kRegisters>
inline void wgmma_fence_operands(float (&d)[kRegisters]) {
  simt::async_proxy::wgmma_fence_operands(d, kRegisters);
}
inline void wgmma_commit_group() { simt::async_proxy::wgmma_commit_group(); }
template <int kPending>
inline void wgmma_wait_group() {
  static_assert(kPending >= 0 && kPending <= 7, "wgmma.wait_group takes 0 to 7");
  simt::async_proxy::wgmma_wait_group(kPending);
}

// T: __nv_bfloat16 or __half (k16), or nvcuda::wmma::precision::tf32 (k8). accumulate:
// D = A B + D, else D = A B.
template <class T, int N, bool kTransA, bool kTransB>
inline void wgmma_async(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  using simt::async_proxy::WgmmaType;
  constexpr WgmmaType type = std::is_same_v<T, __nv_bfloat16> ? WgmmaType::bf16
                             : std::is_same_v<T, __half>      ? WgmmaType::f16
                                                              : WgmmaType::tf32;
  static_assert(type != WgmmaType::tf32 || std::is_same_v<T, nvcuda::wmma::precision::tf32>,
                "wgmma_async takes __nv_bfloat16, __half or precision::tf32");
  static_assert(type != WgmmaType::tf32 || (!kTransA && !kTransB), "tf32 operands are K-major");
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "N: 8 to 256 in steps of 8");
  simt::async_proxy::wgmma_mma_async(d, N, desc_a, desc_b, accumulate, kTransA, kTransB, type);
}

}  // namespace customml::ptx
