#pragma once
// Defines: CsrPacked, the layout in which the AVX-512 small-batch sparse product reads a
// pruned weight (the nonzeros of either format, as a CSR) without gathers, and
// csr_packed_bytes / csr_pack, which build it once per model.
//
// At batch 1 every CSR nonzero costs a random read of x (a gather, about 1.3 cycles per
// element on Zen), which makes a 90%-sparse layer no faster than the dense GEMV. Here x is
// read in chunks of kPackChunk = 32 inputs, two vectors that one vpermt2ps selects 16 lanes
// from, so a step is a permute and an FMA for 16 outputs at once:
//   - outputs in blocks of kPackLanes = 16 (one vector, lane = output), blocks in groups of
//     kPackGroup = 8 (the accumulators one pass keeps in registers);
//   - for group g and chunk c, counts[g][c] steps: the most nonzeros any output of the group
//     has among the chunk's inputs; step s holds, per block and lane, that output's s-th
//     nonzero in the chunk (its value, its input's position in the chunk) and a mask bit,
//     clear where the output has no s-th nonzero there (the FMA then leaves its lane as it
//     is, so padding costs time, never a NaN from 0 * inf);
//   - a group's block steps are stored chunk by chunk, step by step, block by block.
// Each output therefore adds its nonzeros in ascending input order, one at a time, as the
// CSR stores them.

#include <cstddef>
#include <cstdint>

#include "backend.h"

namespace customml::cpu {

constexpr int kPackLanes = 16;
constexpr int kPackGroup = 8;
constexpr int kPackChunk = 32;

// A read-only view of a packed weight (pointers into the bytes csr_pack wrote).
struct CsrPacked {
  int64_t in = 0, out = 0, nnz = 0, groups = 0, chunks = 0;
  int64_t lanes = 0;  // lane slots: block steps x kPackLanes, of which nnz hold a nonzero
  const int64_t* group_first = nullptr;  // (groups + 1): each group's first block step
  const uint8_t* counts = nullptr;       // (groups, chunks): steps per group and chunk
  const float* values = nullptr;         // (block steps, kPackLanes)
  const uint8_t* index = nullptr;        // (block steps, kPackLanes): positions in the chunk
  const uint16_t* mask = nullptr;        // (block steps): lane l is a nonzero where bit l is set
};

// The bytes csr_pack writes for w (host memory, 64-byte aligned).
size_t csr_packed_bytes(const CsrMatrix& w);
// w: a structurally valid CSR on the host -> packed (csr_packed_bytes(w) bytes).
void csr_pack(void* packed, const CsrMatrix& w);
// The view of bytes csr_pack wrote.
CsrPacked csr_packed_view(const void* packed);

}  // namespace customml::cpu
