// The pruning kernels of cpu/sparse_kernels.h compiled for AVX-512 (16 lanes), and the
// small-batch product over the packed layout of cpu/sparse_packed.h, which needs the 32-entry
// permute (vpermt2ps) only AVX-512 has. Names: the CSR product's transposed tile is 4x16
// (vectors x lanes of batch rows), the N:M product's block 4x64 (outputs x batch lanes),
// the packed product's group 8x16 (blocks x lanes of outputs).

#include "cpu/sparse.h"
#include "cpu/sparse_kernels.h"

namespace customml::cpu {
namespace {

// R rows (1, 2 or 4) through blocks k0 .. k0 + NB - 1 of group g's nb blocks (all of them
// for R <= 2; four at a time for R = 4, whose 16 accumulators and 8 vectors of x leave
// registers for the step's loads): per step the 32 inputs of each row from the step's base
// in two registers, each block's 16 positions permute them into lanes, and a masked FMA adds
// the nonzeros (lanes without one keep their sum, bit for bit). R rows share each step's
// loads of values, positions and mask.
template <int R, int NB>
void packed_group(float* y, const float* x, const CsrPacked& w, const float* b, int64_t g, int64_t k0, int64_t nb,
                  Activation act) {
  __m512 acc[R][NB];
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < NB; ++k) acc[r][k] = _mm512_setzero_ps();
  const int64_t first = w.group_first[g], steps = w.group_first[g + 1] - first;
  const int32_t* base = w.base + first;
  const float* v = w.values + (first * kPackGroup + k0) * kPackLanes;
  const uint8_t* pos = w.index + (first * kPackGroup + k0) * kPackLanes;
  const uint16_t* mask = w.mask + first * kPackGroup + k0;
  const int64_t skip = nb - NB;  // the other blocks' slots in each step
  for (int64_t s = 0; s < steps; ++s) {
    const float* xs = x + base[s];
    const int64_t left = w.in - base[s];
    __m512 lo[R], hi[R];
    if (left >= kPackWindow) {
      for (int r = 0; r < R; ++r) {
        lo[r] = _mm512_loadu_ps(xs + r * w.in);
        hi[r] = _mm512_loadu_ps(xs + r * w.in + kLanes);
      }
    } else {  // the last steps: no read past the row (positions there are never used)
      const __mmask16 m_lo = left >= kLanes ? static_cast<__mmask16>(0xFFFF) : first_n(left);
      const __mmask16 m_hi = left > kLanes ? first_n(left - kLanes) : static_cast<__mmask16>(0);
      for (int r = 0; r < R; ++r) {
        lo[r] = _mm512_maskz_loadu_ps(m_lo, xs + r * w.in);
        hi[r] = _mm512_maskz_loadu_ps(m_hi, xs + r * w.in + kLanes);
      }
    }
#pragma GCC unroll 8
    for (int k = 0; k < NB; ++k) {
      const __m512i p = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(pos)));
      const __m512 wv = _mm512_load_ps(v);
      const __mmask16 lanes = *mask;
      for (int r = 0; r < R; ++r)
        acc[r][k] = _mm512_mask3_fmadd_ps(wv, _mm512_permutex2var_ps(lo[r], p, hi[r]), acc[r][k], lanes);
      v += kPackLanes;
      pos += kPackLanes;
      ++mask;
    }
    v += skip * kPackLanes;
    pos += skip * kPackLanes;
    mask += skip;
  }
  // The epilogue (bias, activation, a short last block) loops over the blocks at run time;
  // reading the sums from memory there keeps acc in registers through the steps (indexed by
  // k at run time, GCC kept acc in memory and stored all of it after every step).
  alignas(64) float sums[R][NB][kPackLanes];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int k = 0; k < NB; ++k) _mm512_store_ps(sums[r][k], acc[r][k]);
  const int64_t j0 = (g * kPackGroup + k0) * kPackLanes;
  for (int k = 0; k < NB; ++k) {
    const int64_t j = j0 + k * kPackLanes, n = w.out - j < kPackLanes ? w.out - j : kPackLanes;
    const Vf bias = b ? load_n(b + j, n) : set1(0.0f);
    for (int r = 0; r < R; ++r) store_n(y + r * w.out + j, n, activate(Vf{_mm512_load_ps(sums[r][k])} + bias, act));
  }
}

template <int R, int NB>
void packed_blocks(float* y, const float* x, const CsrPacked& w, const float* b, int64_t g, int64_t k0, int64_t nb,
                   Activation act) {
  if (nb - k0 >= NB) {
    packed_group<R, NB>(y, x, w, b, g, k0, nb, act);
  } else if constexpr (NB > 1) {
    packed_blocks<R, NB - 1>(y, x, w, b, g, k0, nb, act);
  }
}

template <int R>
void packed_rows(float* y, const float* x, const CsrPacked& w, const float* b, int64_t g0, int64_t g1, Activation act) {
  constexpr int kBlocks = R <= 2 ? kPackGroup : 4;  // blocks one pass over a group's steps sums
  const int64_t blocks = (w.out + kPackLanes - 1) / kPackLanes;
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t nb = blocks - g * kPackGroup < kPackGroup ? blocks - g * kPackGroup : kPackGroup;
    for (int64_t k0 = 0; k0 < nb; k0 += kBlocks) packed_blocks<R, kBlocks>(y, x, w, b, g, k0, nb, act);
  }
}

// Batches up to this many rows take the packed product: every four rows stream the packed
// weight twice more (once per half of a group's blocks), while the transposed path
// (kGatherMaxRows and up) pays for its transpositions. Measured on Zen 5 (90% sparse, relu) with chunks of 32 inputs,
// 38-40% of the lanes filled, the two crossed between 8 and 12 rows at 784 -> 256 and near 12 at 256 -> 256; layouts at
// least half full (sparse.cpp) serve every batch.
constexpr int64_t kPackedMaxRows = 8;

static_assert(kPackLanes == kLanes && kPackWindow == 2 * kLanes, "the layout is one vector of outputs, two of x");

// Rows in fours (each half of a group's blocks streams the group's steps once for four
// rows), then a pair, then a last odd row alone.
void sparse_dense_packed(float* y, const float* x, const CsrPacked& w, const float* b, int64_t rows, int64_t g0,
                         int64_t g1, Activation act) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) packed_rows<4>(y + r * w.out, x + r * w.in, w, b, g0, g1, act);
  for (; r + 2 <= rows; r += 2) packed_rows<2>(y + r * w.out, x + r * w.in, w, b, g0, g1, act);
  if (r < rows) packed_rows<1>(y + r * w.out, x + r * w.in, w, b, g0, g1, act);
}

}  // namespace

const SparseKernels kSparseAvx512{
    "avx512",      "f32_sparse_dense__avx512_4x16",        "f32_nm_dense__avx512_4x64", sparse_dense_simd,
    nm_dense_simd, "f32_sparse_dense_packed__avx512_8x16", sparse_dense_packed,         kPackedMaxRows};

}  // namespace customml::cpu
