#pragma once
// Defines: the host emulation of cp.async (cuda/async_copy.cuh): cp_async, cp_async_commit,
// cp_async_wait<N>.
//
// A copy is recorded when issued and performed when its thread waits for its group, never
// earlier; its destination is filled with 0xFF bytes (NaN in floats) meanwhile. So a kernel
// that reads a destination before its own wait reads NaN, and one that reads another
// thread's destination before the barrier that follows that thread's wait reads NaN or the
// buffer's old contents, depending on the thread order (the emulator runs threads forward
// and in reverse): the results differ, as they could on the GPU. Refused as an error of the
// launch: what the PTX ISA forbids or leaves undefined (a copy of a size other than 4, 8 or
// 16 bytes, a source or destination not aligned to it, src_bytes above it) and, stricter
// than the ISA, what is legal but a bug in our kernels: a wait while copies are issued but
// not committed (wait_group does not cover them: a missing commit_group), and a thread that
// exits with copies not yet waited for. Not checked: that the source is global and the
// destination shared memory, and copies of one group overlapping (undefined on the GPU).

#include <cstddef>

#include "simt/simt.h"

namespace customml::simt {

// The primitives, per emulated thread (simt.cpp).
void async_copy(void* dst, const void* src, unsigned bytes, unsigned src_bytes);
void async_commit();
void async_wait(int pending);

template <int kBytes>
inline void cp_async(void* dst_shared, const void* src_global, int src_bytes) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
  async_copy(dst_shared, src_global, kBytes, static_cast<unsigned>(src_bytes));
}
inline void cp_async_commit() { async_commit(); }
template <int kPending>
inline void cp_async_wait() {
  static_assert(kPending >= 0, "cp.async.wait_group takes a count of groups");
  async_wait(kPending);
}

}  // namespace customml::simt
