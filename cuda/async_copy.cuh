#pragma once
// Defines: cp_async (an asynchronous copy of 4, 8 or 16 bytes from global to shared memory,
// the bytes past src_bytes zero-filled), cp_async_commit and cp_async_wait<N> (sm_80's
// cp.async and its groups). Under nvcc these are the PTX instructions; the host emulation
// (simt/async_copy.h) performs a thread's copies at its matching wait, so a kernel that
// reads the destination before waiting, or another thread's copy before the barrier after
// that thread's wait, reads wrong values there too, and it refuses misuse.

#if defined(__CUDACC__)
namespace customml::cuda {

// dst_shared and src_global aligned to kBytes; src_bytes (0 to kBytes) are read, the rest
// of the kBytes written as zeros. 16 bytes go through L2 only (.cg: the operands are
// streamed, each block reads a slice once), 4 and 8 through L1 too (.ca: the only forms).
template <int kBytes>
__device__ __forceinline__ void cp_async(void* dst_shared, const void* src_global, int src_bytes) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(dst_shared));
  if constexpr (kBytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src_global), "r"(src_bytes)
                 : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(src_global), "n"(kBytes),
                 "r"(src_bytes)
                 : "memory");
}

// Closes the group of this thread's copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most kPending of this thread's committed groups are incomplete (the
// newest ones): the older groups' copies are then in shared memory, visible to this thread
// (to the others after a __syncthreads).
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

}  // namespace customml::cuda
#else
#include "simt/async_copy.h"

namespace customml::cuda_emulated {
using simt::cp_async;
using simt::cp_async_commit;
using simt::cp_async_wait;
}  // namespace customml::cuda_emulated
#endif
