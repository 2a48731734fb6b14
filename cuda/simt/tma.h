#pragma once
// Defines: the host emulation of sm_90's mbarrier and TMA tiled loads, in the spellings
// kernels use on the device too (customml::ptx): mbarrier_init, mbarrier_arrive,
// mbarrier_arrive_expect_tx, mbarrier_wait (try_wait.parity until it succeeds), the
// TensorMap (the GPU's CUtensorMap) and tma_load_2d (cp.async.bulk.tensor.2d.shared.global
// .mbarrier::complete_tx::bytes); and what a warp-specialized kernel adds: elect_one_sync
// (elect.sync), setmaxnreg_inc / setmaxnreg_dec (setmaxnreg.{inc,dec}.sync.aligned.u32).
//
// An mbarrier has a phase (its parity starts at 0), a count of arrivals it expects per
// phase and a transaction count in bytes. A phase completes when all its arrivals are in
// and its transaction count is 0; then the next phase starts with the full count. Waiting
// for parity p returns once the phase of parity p has completed: at once if the current
// phase has the other parity (so a kernel that waits for the wrong parity goes on before
// its data lands, as on the GPU).
//
// A tensor load fills its destination with 0xFF bytes (NaN) when issued and lands when a
// thread waits on its mbarrier after every arrival of the phase is in: it then writes the
// box (elements past the tensor's edges, negative coordinates included, as zeros; the
// rows swizzled by the shared-memory address bits, Swizzle<B,4,3>, as wgmma reads them) and
// delivers its bytes. So a read before the wait reads NaN; a missing arrive.expect_tx
// completes the phase before the copy lands (NaN again, then an error when it lands); an
// overwrite of a stage still being read shows in the results.
//
// Refused with an exception: an mbarrier used before mbarrier.init or overwritten, an
// init count outside 1 to 2^20 - 1, more arrivals in a phase than the count, copies that
// deliver more bytes than expect_tx announced, a block that exits with copies in flight,
// a destination not 128-byte aligned (the PTX ISA) or, under a swizzle, not aligned to the
// pattern's repeat (8 rows of its width), and what cuTensorMapEncodeTiled refuses (global
// address not 16-byte aligned, row stride not a multiple of 16, box dimensions outside 1 to
// 256 or rows not a multiple of 16 bytes). Stricter than the GPU: a swizzled box's rows
// must be the swizzle's width. A phase that cannot complete (expect_tx announced more bytes
// than the copies bring) is a deadlock, reported as one.
//
// Ordering (the empty side of a stage ring): a tensor copy may write its destination any
// time after it is issued, so every wgmma that reads those bytes must be complete and known
// to be by the issuing thread: through that wgmma's thread's wgmma.wait_group, then an
// mbarrier arrive (release) whose completed phase the issuing thread waited for (acquire),
// or a __syncthreads between them. Refused otherwise, at the copy's issue, naming the
// reader: a stage refilled before every consumer arrived, a consumer that arrives before its
// wait_group, a producer that waits on the wrong parity (which goes on at once) or not at
// all. Tracked from a block's first wgmma (by the byte spans of its descriptors).
//
// elect.sync: one lane of those taking part, the first in the block's thread order (the
// ISA does not say which; simt/runtime.h), so a kernel that assumes lane 0 fails under the
// reverse order. setmaxnreg: 24 to 256 registers in steps of 8, by whole warpgroups, every
// thread of one executing the same sequence (.sync.aligned), .inc never below and .dec never
// above what the warp holds; a warp starts with the most the block size allows (65536 / its
// threads, in steps of 8: what ptxas gives a kernel that reallocates), .dec returns
// registers to the CTA's pool and .inc waits until the pool has them (a kernel asking for
// more than the pool can ever give deadlocks, reported as such). Not modeled: registers of
// exited warps returning to the pool (none of ours exits holding more than it released).
//
// Only what our kernels use: 2-D maps, elements of 2 or 4 bytes, zero fill, one CTA (no
// cluster multicast).

#include <cstdint>

#include "simt/async_proxy.h"
#include "simt/runtime.h"

namespace customml::ptx {

using TensorMap = simt::async_proxy::TensorMap;

inline void mbarrier_init(uint64_t* bar, unsigned count) { simt::async_proxy::mbarrier_init(bar, count); }
inline void mbarrier_arrive(uint64_t* bar) { simt::async_proxy::mbarrier_arrive(bar, 0); }
inline void mbarrier_arrive_expect_tx(uint64_t* bar, unsigned bytes) { simt::async_proxy::mbarrier_arrive(bar, bytes); }
inline void mbarrier_wait(uint64_t* bar, unsigned parity) { simt::async_proxy::mbarrier_wait_parity(bar, parity); }

inline bool elect_one_sync() { return simt::elect_one(0xFFFFFFFFu); }
template <unsigned kRegisters>
inline void setmaxnreg_inc() {
  simt::async_proxy::setmaxnreg(true, kRegisters);
}
template <unsigned kRegisters>
inline void setmaxnreg_dec() {
  simt::async_proxy::setmaxnreg(false, kRegisters);
}

// The box of the map whose top-left element is (row, column) into dst, completing on bar.
inline void tma_load_2d(void* dst, const TensorMap* map, int column, int row, uint64_t* bar) {
  simt::async_proxy::tensor_load_2d(dst, map, column, row, bar);
}

// The host side: what cuTensorMapEncodeTiled writes for a rows x columns matrix of
// element_bytes elements (columns contiguous, rows row_bytes apart), boxes of box_rows x
// box_columns, swizzle_bytes 0 (none), 32, 64 or 128. Throws std::invalid_argument where
// the driver returns an error.
inline void encode_tensor_map_2d(TensorMap* map, const void* global, unsigned element_bytes, uint64_t rows,
                                 uint64_t columns, uint64_t row_bytes, unsigned box_rows, unsigned box_columns,
                                 unsigned swizzle_bytes) {
  simt::async_proxy::tensor_map_encode_2d(map, global, element_bytes, rows, columns, row_bytes, box_rows, box_columns,
                                          swizzle_bytes);
}

}  // namespace customml::ptx
