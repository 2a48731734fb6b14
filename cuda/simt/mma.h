#pragma once
// Defines: the host emulation of the warp-level matrix instructions that cuda/gemm_tc.cuh
// spells in inline PTX on the device (customml::ptx): ldmatrix.sync.aligned.m8n8.x4
// (.trans too) .shared.b16, and mma.sync.aligned m16n8k16 (bf16, f16) and m16n8k8 (tf32),
// row.col, with f32 accumulators.
//
// Unlike simt/wmma.h (whose fragment layout is unspecified, so each lane may hold the
// whole tile), these instructions have fragment layouts fixed by the PTX ISA ("Matrix
// Fragments for mma.m16n8k16 / mma.m16n8k8", "Warp-level matrix load instruction:
// ldmatrix"), and the emulation keeps exactly those: each lane holds only its own
// registers, and an instruction sees the others' through the warp. A kernel that maps
// elements to lanes or registers wrongly computes wrong results here as on the GPU.
//
// Layouts, with g = lane / 4 and t = lane % 4 (two 16-bit elements per 32-bit register,
// the lower column or k in the low half):
// - ldmatrix x4: lanes 8i..8i+7 give the row addresses (16 bytes each) of matrix i; each
//   lane receives r[i] = matrix i's row g, elements 2t and 2t+1. With .trans, the matrix
//   is transposed first: r[i] = rows 2t and 2t+1 of column g.
// - m16n8k16 (16-bit): A (16 x 16) a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g,
//   2t+8..), a[3] = (g+8, 2t+8..); B (16 x 8) b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8..,
//   n g).
// - m16n8k8 (tf32, one element per register): a[0] = (g, t), a[1] = (g+8, t), a[2] = (g,
//   t+4), a[3] = (g+8, t+4); b[0] = (k t, n g), b[1] = (k t+4, n g). The PTX ISA leaves
//   tf32's layout in a register implementation-defined; GPUs are observed to read the top
//   19 bits, so the emulation ignores the low 13 (our kernels pass cvt.rna results only).
// - C and D (16 x 8, f32): c[e] = (g + 8 (e / 2), 2t + e % 2).
//
// Misuse is refused with an exception, where the GPU gives wrong results or a fault: a
// row address that is not 16-byte aligned, a warp in which not all 32 lanes execute the
// instruction (.aligned: a partial warp, an exited or divergent lane), or lanes of one
// warp at different matrix instructions.
//
// Products are exact in float (at most 11 x 11 significant bits) unless they underflow; each D element is its
// C element plus the products added in k order in float. The GPU's internal order and
// rounding of that sum are unspecified, so tests bound the result (tests/test_dense.py)
// rather than match the hardware's bits.

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "simt/wmma.h"

namespace customml::ptx {
namespace detail {

enum class Instruction { ldmatrix, ldmatrix_trans, mma_bf16, mma_f16, mma_tf32 };
inline const char* name(Instruction i) {
  switch (i) {
    case Instruction::ldmatrix: return "ldmatrix.x4";
    case Instruction::ldmatrix_trans: return "ldmatrix.x4.trans";
    case Instruction::mma_bf16: return "mma.m16n8k16 bf16";
    case Instruction::mma_f16: return "mma.m16n8k16 f16";
    case Instruction::mma_tf32: return "mma.m16n8k8 tf32";
  }
  return "?";
}

// What one lane brings to a warp-wide instruction: the instruction, and where its
// operands are (a row address, or its a and b registers).
struct Deposit {
  Instruction instruction;
  const void* first;
  const void* second;
};

// Every lane's deposit, once all 32 have arrived. The deposits point into the lanes' own
// memory, so the caller reads them and then calls done() before any lane may change it.
struct Warp {
  const Deposit* lanes[32];

  explicit Warp(const Deposit& mine) {
    const uint64_t* all = simt::warp_exchange(0xffffffffu, reinterpret_cast<uintptr_t>(&mine));
    const unsigned present = simt::warp_participants();
    if (present != 0xffffffffu)
      throw std::runtime_error(std::string(name(mine.instruction)) +
                               ": executed by a warp in which not every lane takes part (participants mask " +
                               std::to_string(present) +
                               "); the instruction is .aligned: all 32 lanes must execute it (a partial warp, an "
                               "exited or a divergent lane is undefined on the GPU)");
    for (int l = 0; l < 32; ++l) {
      lanes[l] = reinterpret_cast<const Deposit*>(all[l]);
      if (lanes[l]->instruction != mine.instruction)
        throw std::runtime_error(std::string("lane ") + std::to_string(simt::lane_id()) + " executed " +
                                 name(mine.instruction) + " while lane " + std::to_string(l) + " executed " +
                                 name(lanes[l]->instruction) + ": one warp-wide instruction at a time");
    }
  }
  // Every lane has read what it needs: the deposits may go.
  static void done() { simt::warp_exchange(0xffffffffu, 0); }
};

inline uint16_t half_at(const void* row, int element) {
  uint16_t v;
  std::memcpy(&v, static_cast<const char*>(row) + 2 * element, 2);
  return v;
}

inline void ldmatrix_x4(uint32_t (&r)[4], const void* row, Instruction instruction) {
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
    throw std::runtime_error(std::string(name(instruction)) + ": lane " + std::to_string(simt::lane_id()) +
                             "'s row address is not 16-byte aligned");
  const Deposit mine{instruction, row, nullptr};
  const Warp warp(mine);
  const unsigned lane = simt::lane_id(), g = lane / 4, t = lane % 4;
  uint32_t out[4];
  for (unsigned i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (instruction == Instruction::ldmatrix) {
      const void* own_row = warp.lanes[8 * i + g]->first;
      lo = half_at(own_row, static_cast<int>(2 * t));
      hi = half_at(own_row, static_cast<int>(2 * t + 1));
    } else {
      lo = half_at(warp.lanes[8 * i + 2 * t]->first, static_cast<int>(g));
      hi = half_at(warp.lanes[8 * i + 2 * t + 1]->first, static_cast<int>(g));
    }
    out[i] = static_cast<uint32_t>(lo) | static_cast<uint32_t>(hi) << 16;
  }
  Warp::done();  // the memory is read by all before any lane goes on to overwrite it
  std::memcpy(r, out, sizeof(out));
}

inline float tf32_value(uint32_t bits) {
  bits &= 0xFFFFE000u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float half_value(uint32_t bits, Instruction instruction) {
  if (instruction == Instruction::mma_bf16) return __bfloat162float(__nv_bfloat16{static_cast<uint16_t>(bits)});
  return __half2float(__half{static_cast<uint16_t>(bits)});
}

// D = A B + C for the calling lane's four D elements; A and B gathered from the warp.
inline void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                Instruction instruction) {
  const Deposit mine{instruction, a, b};
  const Warp warp(mine);
  const bool tf32 = instruction == Instruction::mma_tf32;
  const int depth = tf32 ? 8 : 16;
  auto a_at = [&](int row, int k) {
    const auto* regs = static_cast<const uint32_t*>(warp.lanes[(row % 8) * 4 + (tf32 ? k % 4 : (k % 8) / 2)]->first);
    if (tf32) return tf32_value(regs[(row >= 8) + 2 * (k >= 4)]);
    return half_value(regs[(row >= 8) + 2 * (k >= 8)] >> (16 * (k % 2)), instruction);
  };
  auto b_at = [&](int k, int n) {
    const auto* regs = static_cast<const uint32_t*>(warp.lanes[n * 4 + (tf32 ? k % 4 : (k % 8) / 2)]->second);
    if (tf32) return tf32_value(regs[k >= 4]);
    return half_value(regs[k >= 8] >> (16 * (k % 2)), instruction);
  };
  const int lane = static_cast<int>(simt::lane_id()), g = lane / 4, t = lane % 4;
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e / 2), col = 2 * t + e % 2;
    float sum = c[e];
    for (int k = 0; k < depth; ++k) sum += a_at(row, k) * b_at(k, col);
    out[e] = sum;
  }
  Warp::done();  // every lane has read the others' registers: d may overwrite a, b or c
  std::memcpy(d, out, sizeof(out));
}

}  // namespace detail

// The spellings cuda/gemm_tc.cuh uses on the device too (there: inline PTX). row: this
// lane's row address in shared memory.
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  detail::ldmatrix_x4(r, row, detail::Instruction::ldmatrix);
}
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  detail::ldmatrix_x4(r, row, detail::Instruction::ldmatrix_trans);
}
// T: __nv_bfloat16 or __half (m16n8k16), or nvcuda::wmma::precision::tf32 (m16n8k8).
template <class T>
inline void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  using detail::Instruction;
  constexpr Instruction instruction = std::is_same_v<T, __nv_bfloat16> ? Instruction::mma_bf16
                                      : std::is_same_v<T, __half>      ? Instruction::mma_f16
                                                                       : Instruction::mma_tf32;
  static_assert(instruction != Instruction::mma_tf32 || std::is_same_v<T, nvcuda::wmma::precision::tf32>,
                "mma_sync takes __nv_bfloat16, __half or precision::tf32");
  detail::mma(d, a, b, c, instruction);
}

}  // namespace customml::ptx
