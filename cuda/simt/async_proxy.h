#pragma once
// Defines: the host emulation of sm_90's asynchronous proxy (cuda/simt/async_proxy.cpp):
// mbarrier objects with phases and transaction counts, the tiled tensor copy of the TMA
// (cp.async.bulk.tensor.2d) completing on an mbarrier, and warpgroup-level wgmma with its
// shared-memory matrix descriptors, fence, commit_group and wait_group. The spellings
// kernels use are in simt/tma.h and simt/wgmma.h; this header is what the scheduler
// (simt.cpp) and those spellings call.

#include <cstddef>
#include <cstdint>

namespace customml::simt::async_proxy {

// Called by the scheduler: at a block's start (its threads' state is reset), when a thread
// returns (throws if it leaves wgmma operations not waited for) and when every thread of
// a block has returned (throws if a tensor copy is still in flight).
void block_start(unsigned threads);
void thread_exit(unsigned linear);
void block_end();
// When a __syncthreads releases `threads` (their linear indices): each learns what the
// others know of completed wgmmas (the ordering simt/tma.h describes).
void block_barrier(const unsigned* threads, size_t count);

// mbarrier (an 8-byte object in dynamic shared memory).
void mbarrier_init(uint64_t* bar, unsigned count);
void mbarrier_arrive(uint64_t* bar, unsigned transaction_bytes);
void mbarrier_wait_parity(uint64_t* bar, unsigned parity);

// setmaxnreg.{inc,dec}.sync.aligned.u32 count: the calling thread's share of its warpgroup's
// register reallocation (simt/tma.h).
void setmaxnreg(bool increase, unsigned count);

// A 2-D tiled tensor map, the emulator's CUtensorMap (same size and alignment; the GPU's
// is opaque, written by cuTensorMapEncodeTiled).
struct alignas(64) TensorMap {
  const void* global;
  uint64_t rows, columns;  // columns: the contiguous dimension (dimension 0 of the GPU's map)
  uint64_t row_bytes;      // the stride between rows
  uint32_t element_bytes, box_rows, box_columns, swizzle_bytes;  // swizzle_bytes: 0, 32, 64 or 128
  unsigned char unused[128 - 48];
};
static_assert(sizeof(TensorMap) == 128, "CUtensorMap is 128 bytes");

void tensor_map_encode_2d(TensorMap* map, const void* global, uint32_t element_bytes, uint64_t rows, uint64_t columns,
                          uint64_t row_bytes, uint32_t box_rows, uint32_t box_columns, uint32_t swizzle_bytes);
void tensor_load_2d(void* dst, const TensorMap* map, int column, int row, uint64_t* bar);

// fence.proxy.async.shared::cta: the generic proxy's shared-memory stores so far become
// visible to the asynchronous proxy (wgmma's operand reads).
void fence_proxy_async();

// wgmma.mma_async m64nNk16 (bf16, f16) or m64nNk8 (tf32), f32 accumulators (n / 2 per
// thread at d), A and B from shared-memory descriptors.
enum class WgmmaType { bf16, f16, tf32 };
void wgmma_fence();
// The emulator's side of wgmma_fence_operands: names d (registers floats) as accumulator
// registers, whose values the next wgmma.fence records.
void wgmma_fence_operands(float* d, int registers);
void wgmma_mma_async(float* d, int n, uint64_t desc_a, uint64_t desc_b, bool accumulate, bool trans_a, bool trans_b,
                     WgmmaType type);
void wgmma_commit_group();
void wgmma_wait_group(int pending);

}  // namespace customml::simt::async_proxy
