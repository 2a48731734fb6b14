#pragma once
// Defines: the CUDA layout of packed int8 weights (GemmS8Layout), gemm_s8_pack_kernel
// and gemm_s8_colsum_kernel (the packing), and the int8 GEMMs with the fused epilogue:
// gemm_s8_dp4a_kernel (CUDA cores, __dp4a), gemm_s8_gemv_kernel (its twin for 1 to 4
// rows) and gemm_s8_tc_kernel (tensor cores through wmma).
//
// Both multiply signed by signed bytes: __dp4a has no u8 x s8 form without inline PTX,
// and wmma multiplies s8 by s8 or u8 by u8, never mixed. So each activation byte a is
// flipped to a ^ 0x80 = a - 128 as s8, and the zero point is shifted alike:
// sum (a - zero) w = sum (a - 128) w - (zero - 128) colsum(w).

#include <cstdint>

#include "activation.h"
#include "cuda/common.cuh"
#include "cuda/quantize_math.cuh"

#if defined(__CUDACC__)
#include <mma.h>
#else
#include "simt/wmma.h"
#endif

namespace customml::CUSTOMML_CUDA_NS {

// Packed weights, w (k, n) i8: the column sums colsum (n) int32, then w transposed, wt
// (n, kp) i8 with each row's k padded with zeros to kp, a multiple of 16: a row of wt
// is a col-major wmma B operand (whose leading dimension must be a multiple of 16
// bytes) and its 4-byte groups are __dp4a operands. wt starts 16-byte aligned.
struct GemmS8Layout {
  int64_t kp = 0;
  size_t wt_offset = 0, bytes = 0;
  GemmS8Layout(int64_t k, int64_t n)
      : kp((k + 15) / 16 * 16),
        wt_offset((static_cast<size_t>(n) * sizeof(int32_t) + 15) / 16 * 16),
        bytes(wt_offset + static_cast<size_t>(n) * static_cast<size_t>(kp)) {}
};

constexpr int kPackTile = 32, kPackRows = 8;  // a 32 x 32 tile per block of 32 x 8 threads

// w: (k, n) -> wt: (n, kp), zero where p >= k: a tiled transpose through shared memory,
// so that both the reads of w and the writes of wt are coalesced.
// grid (ceil(kp / 32), ceil(n / 32)), block (32, 8)
__global__ void gemm_s8_pack_kernel(int8_t* wt, const int8_t* w, int64_t k, int64_t n, int64_t kp) {
  __shared__ int8_t tile[kPackTile][kPackTile + 1];
  CUSTOMML_POISON_SHARED(tile);
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kPackTile, j0 = static_cast<int64_t>(blockIdx.y) * kPackTile;
  for (int r = threadIdx.y; r < kPackTile; r += kPackRows) {
    const int64_t p = p0 + r, j = j0 + threadIdx.x;
    tile[r][threadIdx.x] = p < k && j < n ? w[p * n + j] : int8_t{0};
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kPackTile; r += kPackRows) {
    const int64_t j = j0 + r, p = p0 + threadIdx.x;
    if (j < n && p < kp) wt[j * kp + p] = tile[threadIdx.x][r];
  }
}

// w: (k, n) -> colsum: (n) = sum_p w[p, j], a thread per column (exact: |sum| <= 127 k).
__global__ void gemm_s8_colsum_kernel(int32_t* colsum, const int8_t* w, int64_t k, int64_t n) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  int32_t sum = 0;
  for (int64_t p = 0; p < k; ++p) sum += w[p * n + j];
  colsum[j] = sum;
}

// a: (m, k) u8  wt: (n, kp) i8  colsum: (n) -> exactly one of y_f32, y_u8, y_i32: (m, n)
struct GemmS8Params {
  int64_t m, n, k, kp;
  const uint8_t* a;
  const int8_t* wt;
  const int32_t* colsum;
  float* y_f32;
  uint8_t* y_u8;
  int32_t* y_i32;
  GemmS8Epilogue e;
};

// Output (i, j) from acc = sum_p (a[i, p] - 128) w[p, j]. The zero-point correction is
// done in wrapping 32-bit arithmetic: its terms may leave int32 for k near kGemmS8MaxK,
// but the result, sum (a - zero) w, is within 255 * 127 * k < 2^31, so it is exact.
__device__ __forceinline__ void gemm_s8_store(const GemmS8Params& p, int64_t i, int64_t j, int32_t acc) {
  const GemmS8Epilogue& e = p.e;
  const int32_t zero = (e.a_zero ? e.a_zero[e.a_per_row ? i : 0] : 0) - 128;
  const int32_t v = static_cast<int32_t>(static_cast<uint32_t>(acc) -
                                         static_cast<uint32_t>(zero) * static_cast<uint32_t>(p.colsum[j]));
  const int64_t o = i * p.n + j;
  if (p.y_i32) {
    p.y_i32[o] = v;
    return;
  }
  // Rounded as on the CPU: the scale product, its product with v and the bias sum each
  // rounded apart (__fmul_rn keeps nvcc from fusing them into an FMA), so a requantized
  // code is the CPU's, not one off at a rounding tie; no bias leaves a -0 as it is.
  float r = __fmul_rn(e.a_scale[e.a_per_row ? i : 0] * e.w_scale[e.w_per_channel ? j : 0], static_cast<float>(v));
  if (e.bias) r += e.bias[j];
  const float y = act::apply(e.act, r);
  if (p.y_f32)
    p.y_f32[o] = y;
  else
    p.y_u8[o] = static_cast<uint8_t>(quantize_value(y, e.out_scale, e.out_zero, 0, 255));
}

// Four bytes a[row, p .. p + 3] flipped to s8 (a - 128) and packed little-endian, as
// __dp4a and wmma read them; bytes past k or rows past m are 0 (their weights are 0
// too, or their outputs are not stored). One 4-byte load where a row's groups are
// aligned (k % 4 == 0 and an aligned a), else byte by byte.
__device__ __forceinline__ int gemm_s8_load_a4(const GemmS8Params& p, bool a_words, int64_t row, int64_t col) {
  if (row >= p.m || col >= p.k) return 0;
  const uint8_t* src = p.a + row * p.k + col;
  if (a_words) return static_cast<int>(*reinterpret_cast<const uint32_t*>(src) ^ 0x80808080u);
  uint32_t v = 0;
  CUSTOMML_UNROLL
  for (int b = 0; b < 4; ++b)
    if (col + b < p.k) v |= static_cast<uint32_t>(src[b] ^ 0x80u) << (8 * b);
  return static_cast<int>(v);
}

// The dp4a GEMM: a 64 x 64 tile of the output per block of 256 threads, each thread a
// 4 x 4 register tile; 32-byte-deep slices of A and W staged as 4-byte groups through
// two shared-memory buffers (the next slice's global loads are in flight while the
// current one is multiplied; one barrier per slice). Shared rows are [k-group][m or n]
// so that a thread reads its 4 rows' (or columns') groups as one 16-byte load; the row
// pitch of 68 words spreads the stores of the 8 groups of one row over distinct banks.
constexpr int kS8Bm = 64, kS8Bn = 64, kS8Bk = 32, kS8Groups = kS8Bk / 4, kS8Tm = 4, kS8Tn = 4;
constexpr int kS8Threads = (kS8Bm / kS8Tm) * (kS8Bn / kS8Tn);
constexpr int kS8Pitch = kS8Bm + 4;
static_assert(kS8Bm == kS8Bn && kS8Bm * kS8Groups == 2 * kS8Threads, "each thread stages two groups of A and of W");

// grid (ceil(n / 64), ceil(m / 64)), block kS8Threads
__global__ void __launch_bounds__(kS8Threads) gemm_s8_dp4a_kernel(GemmS8Params p) {
  __shared__ __align__(16) int as[2][kS8Groups][kS8Pitch];
  __shared__ __align__(16) int bs[2][kS8Groups][kS8Pitch];
  CUSTOMML_POISON_SHARED(as);
  CUSTOMML_POISON_SHARED(bs);
  const int tid = threadIdx.x;
  const int tx = tid % (kS8Bn / kS8Tn), ty = tid / (kS8Bn / kS8Tn);
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kS8Bm, col0 = static_cast<int64_t>(blockIdx.x) * kS8Bn;
  const bool a_words = p.k % 4 == 0 && (reinterpret_cast<uintptr_t>(p.a) & 3) == 0;
  // Thread t stages group t % 8 of rows (and columns) t / 8 and t / 8 + 32: eight
  // consecutive threads read one row's 32 consecutive bytes.
  const int g = tid % kS8Groups, r = tid / kS8Groups;
  int a_next[2], b_next[2];
  auto fetch = [&](int64_t k0) {
    CUSTOMML_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int rr = r + h * (kS8Bm / 2);
      const int64_t kk = k0 + 4 * g;
      a_next[h] = gemm_s8_load_a4(p, a_words, row0 + rr, kk);
      const int64_t col = col0 + rr;
      b_next[h] = col < p.n && kk < p.kp ? *reinterpret_cast<const int*>(p.wt + col * p.kp + kk) : 0;
    }
  };
  auto stash = [&](int buf) {
    CUSTOMML_UNROLL
    for (int h = 0; h < 2; ++h) {
      as[buf][g][r + h * (kS8Bm / 2)] = a_next[h];
      bs[buf][g][r + h * (kS8Bn / 2)] = b_next[h];
    }
  };

  int acc[kS8Tm][kS8Tn];
  CUSTOMML_UNROLL
  for (int i = 0; i < kS8Tm; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < kS8Tn; ++j) acc[i][j] = 0;
  }
  if (p.k > 0) {
    fetch(0);
    stash(0);
    __syncthreads();
  }
  for (int64_t k0 = 0; k0 < p.k; k0 += kS8Bk) {
    const int cur = static_cast<int>((k0 / kS8Bk) & 1);
    const bool more = k0 + kS8Bk < p.k;
    if (more) fetch(k0 + kS8Bk);
    CUSTOMML_UNROLL
    for (int kg = 0; kg < kS8Groups; ++kg) {
      const int4 a4 = *reinterpret_cast<const int4*>(&as[cur][kg][ty * kS8Tm]);
      const int4 b4 = *reinterpret_cast<const int4*>(&bs[cur][kg][tx * kS8Tn]);
      const int a_frag[kS8Tm] = {a4.x, a4.y, a4.z, a4.w};
      const int b_frag[kS8Tn] = {b4.x, b4.y, b4.z, b4.w};
      CUSTOMML_UNROLL
      for (int i = 0; i < kS8Tm; ++i) {
        CUSTOMML_UNROLL
        for (int j = 0; j < kS8Tn; ++j) acc[i][j] = __dp4a(a_frag[i], b_frag[j], acc[i][j]);
      }
    }
    // The other buffer was last read in the previous slice, before the last barrier.
    if (more) stash(cur ^ 1);
    __syncthreads();
  }

  CUSTOMML_UNROLL
  for (int i = 0; i < kS8Tm; ++i) {
    const int64_t row = row0 + ty * kS8Tm + i;
    if (row >= p.m) continue;
    CUSTOMML_UNROLL
    for (int j = 0; j < kS8Tn; ++j) {
      const int64_t col = col0 + tx * kS8Tn + j;
      if (col < p.n) gemm_s8_store(p, row, col, acc[i][j]);
    }
  }
}

// Batches of 1 to 4 rows (serving), where a 64 x 64 tile would leave most of every
// block idle and launch only n / 64 blocks: a warp per output column, its lanes striding
// over the column's row of wt in 16-byte pieces (coalesced, each four __dp4a operands),
// the lanes' sums added by a butterfly (integer sums: exact in any order).
constexpr int kS8GemvRows = 4;
// grid (ceil(n / 8)), block kThreads
__global__ void __launch_bounds__(kThreads) gemm_s8_gemv_kernel(GemmS8Params p) {
  const int lane = threadIdx.x % 32;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (j >= p.n) return;  // whole warps leave together: the butterfly sees all 32 lanes
  const bool a_words = p.k % 4 == 0 && (reinterpret_cast<uintptr_t>(p.a) & 3) == 0;
  int acc[kS8GemvRows] = {};
  for (int64_t kk = 16 * static_cast<int64_t>(lane); kk < p.kp; kk += 16 * 32) {
    const int4 w4 = *reinterpret_cast<const int4*>(p.wt + j * p.kp + kk);
    CUSTOMML_UNROLL
    for (int i = 0; i < kS8GemvRows; ++i) {
      if (i >= p.m) break;
      acc[i] = __dp4a(gemm_s8_load_a4(p, a_words, i, kk), w4.x, acc[i]);
      acc[i] = __dp4a(gemm_s8_load_a4(p, a_words, i, kk + 4), w4.y, acc[i]);
      acc[i] = __dp4a(gemm_s8_load_a4(p, a_words, i, kk + 8), w4.z, acc[i]);
      acc[i] = __dp4a(gemm_s8_load_a4(p, a_words, i, kk + 12), w4.w, acc[i]);
    }
  }
  CUSTOMML_UNROLL
  for (int i = 0; i < kS8GemvRows; ++i) acc[i] = warp_sum(acc[i]);
  if (lane != 0) return;
  CUSTOMML_UNROLL
  for (int i = 0; i < kS8GemvRows; ++i)
    if (i < p.m) gemm_s8_store(p, i, j, acc[i]);
}

// The tensor-core GEMM: a 64 x 64 tile of the output per block of 4 warps, each warp
// 2 x 2 wmma tiles of 16 x 16 x 16 (s8 x s8 -> s32); 32-byte-deep slices of A and W
// staged in shared memory as two 16-deep halves, so that every fragment starts 32-byte
// aligned with a leading dimension of 16 bytes. The accumulators go back through shared
// memory for the epilogue: which lane holds which fragment element is unspecified, and
// the zero point, scales and bias depend on the row and column.
constexpr int kS8TcBm = 64, kS8TcBn = 64, kS8TcBk = 32, kS8TcThreads = 128;
constexpr int kS8TcHalves = kS8TcBk / 16;
constexpr int kS8TcPitch = kS8TcBn + 4;  // int accumulators: a multiple of 4, and off the bank stride
static_assert(kS8TcBm * kS8TcBk == 4 * 4 * kS8TcThreads && kS8TcBn * kS8TcHalves == kS8TcThreads,
              "each thread stages four 4-byte groups of A and one 16-byte half-row of W");

// grid (ceil(n / 64), ceil(m / 64)), block kS8TcThreads
__global__ void __launch_bounds__(kS8TcThreads) gemm_s8_tc_kernel(GemmS8Params p) {
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) signed char as[kS8TcHalves][kS8TcBm][16];
  __shared__ __align__(32) signed char bs[kS8TcHalves][kS8TcBn][16];  // B col-major: [n][k]
  __shared__ __align__(32) int cs[kS8TcBm][kS8TcPitch];
  CUSTOMML_POISON_SHARED(as);
  CUSTOMML_POISON_SHARED(bs);
  CUSTOMML_POISON_SHARED(cs);
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / 2, wn = warp % 2;  // this warp's 32 x 32 quarter of the tile
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kS8TcBm, col0 = static_cast<int64_t>(blockIdx.x) * kS8TcBn;
  const bool a_words = p.k % 4 == 0 && (reinterpret_cast<uintptr_t>(p.a) & 3) == 0;

  wmma::fragment<wmma::accumulator, 16, 16, 16, int> acc[2][2];
  CUSTOMML_UNROLL
  for (int i = 0; i < 2; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0);
  }
  for (int64_t k0 = 0; k0 < p.k; k0 += kS8TcBk) {
    // A: 64 rows x 8 groups; consecutive threads take consecutive groups of a row.
    CUSTOMML_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int idx = tid + e * kS8TcThreads, r = idx / (kS8TcBk / 4), g = idx % (kS8TcBk / 4);
      *reinterpret_cast<int*>(&as[g / 4][r][(g % 4) * 4]) = gemm_s8_load_a4(p, a_words, row0 + r, k0 + 4 * g);
    }
    {
      // W: a 16-byte half-row of wt per thread (kp is a multiple of 16, so it is whole).
      const int c = tid / kS8TcHalves, h = tid % kS8TcHalves;
      const int64_t col = col0 + c, kk = k0 + 16 * h;
      *reinterpret_cast<int4*>(&bs[h][c][0]) =
          col < p.n && kk < p.kp ? *reinterpret_cast<const int4*>(p.wt + col * p.kp + kk) : make_int4(0, 0, 0, 0);
    }
    __syncthreads();
    CUSTOMML_UNROLL
    for (int h = 0; h < kS8TcHalves; ++h) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> b[2];
      CUSTOMML_UNROLL
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &as[h][wm * 32 + i * 16][0], 16);
      CUSTOMML_UNROLL
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &bs[h][wn * 32 + j * 16][0], 16);
      CUSTOMML_UNROLL
      for (int i = 0; i < 2; ++i) {
        CUSTOMML_UNROLL
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();  // the next slice overwrites as / bs
  }
  CUSTOMML_UNROLL
  for (int i = 0; i < 2; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], kS8TcPitch, wmma::mem_row_major);
  }
  __syncthreads();
  for (int e = tid; e < kS8TcBm * kS8TcBn; e += kS8TcThreads) {
    const int r = e / kS8TcBn, c = e % kS8TcBn;
    const int64_t row = row0 + r, col = col0 + c;
    if (row < p.m && col < p.n) gemm_s8_store(p, row, col, cs[r][c]);
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
