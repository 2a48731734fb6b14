#pragma once
// Defines: CsrPacked, the layout in which the AVX-512 small-batch sparse product reads a
// pruned weight (the nonzeros of either format, as a CSR) without gathers, and
// csr_packed_bytes / csr_pack, which build it once per model.
//
// At batch 1 every CSR nonzero costs a random read of x (a gather, about 1.3 cycles per
// element on Zen), which makes a 90%-sparse layer no faster than the dense GEMV. Here x is
// read through windows of kPackWindow = 32 inputs, two vectors that one vpermt2ps selects 16
// lanes from, so a step is a permute and an FMA for 16 outputs at once:
//   - outputs in blocks of kPackLanes = 16 (one vector, lane = output), blocks in groups of
//     kPackGroup = 8 (the accumulators one pass keeps in registers);
//   - a group is a sequence of steps, each with its window's first input (base); step s
//     holds, per block and lane, that output's next nonzero if its input lies in the window
//     (its value, its input's position in the window) and a mask bit, clear where it does not
//     (the FMA then leaves the lane as it is, so padding costs time, never a NaN from 0 * inf);
//   - each step's base is the smallest input any of the group's outputs has still to add,
//     so the output furthest behind always advances and every other one advances too when
//     its next nonzero lies less than 32 inputs further on. At 90% random sparsity 50-60% of
//     the lanes hold a nonzero, against 38-40% for disjoint chunks of 32 (each step padded to
//     the busiest of the 128 outputs), with the same permute and FMA per step and no branch
//     per chunk: a step's two loads of x come from its base;
//   - a group's block steps are stored step by step, block by block.
// Each output therefore adds its nonzeros in ascending input order, one at a time, as the
// CSR stores them.

#include <cstddef>
#include <cstdint>

#include "backend.h"

namespace customml::cpu {

constexpr int kPackLanes = 16;
constexpr int kPackGroup = 8;
constexpr int kPackWindow = 32;  // inputs one step can reach: two vectors of x

// A read-only view of a packed weight (pointers into the bytes csr_pack wrote).
struct CsrPacked {
  int64_t in = 0, out = 0, nnz = 0, groups = 0;
  int64_t lanes = 0;                     // lane slots: block steps x kPackLanes, of which nnz hold a nonzero
  const int64_t* group_first = nullptr;  // (groups + 1): each group's first step; its block steps start
                                         // at kPackGroup times that (only the last group has fewer blocks)
  const int32_t* base = nullptr;         // (steps): each step's first input
  const float* values = nullptr;         // (block steps, kPackLanes)
  const uint8_t* index = nullptr;        // (block steps, kPackLanes): positions in the step's window
  const uint16_t* mask = nullptr;        // (block steps): lane l is a nonzero where bit l is set
};

// The bytes csr_pack writes for w (host memory, 64-byte aligned).
size_t csr_packed_bytes(const CsrMatrix& w);
// w: a structurally valid CSR on the host -> packed (csr_packed_bytes(w) bytes).
void csr_pack(void* packed, const CsrMatrix& w);
// The view of bytes csr_pack wrote.
CsrPacked csr_packed_view(const void* packed);

}  // namespace customml::cpu
