#pragma once
// Defines: gemm_wgmma_kernel, the GEMMs of cuda/dense.cuh for bf16 / fp16 on sm_90a
// (Hopper), forward and the backward's pair (dW with db, dx through the layer below's
// derivative): TMA loads of 16-bit operands into a ring of shared-memory stages completing
// on mbarriers, and wgmma from those stages into float accumulators; the epilogue is
// store_c's (the forward's bias, preact and activation; the backward's db row, dx's
// derivative and 16-bit copy, the tiles' sums of squares), as gemm_tc_kernel's. The
// primitives and their layouts: cuda/sm90.cuh (device), cuda/simt/tma.h and
// cuda/simt/wgmma.h (host emulation).
//
// Warp-specialized, as CUTLASS's sm90 kernels: a block is three warpgroups. The first is
// the producer: one elected thread of its first warp issues the TMA loads, the others exit
// at once, and it gives its registers up (setmaxnreg.dec to kWgProducerRegisters) to the
// two consumer warpgroups (setmaxnreg.inc to kWgConsumerRegisters), which compute a 128 x
// 256 tile of C, each 64 rows with m64n256k16 (128 accumulators per thread: the registers
// the producer gave). k goes in slices of 64 (128 bytes of 16-bit values: one row of the
// 128-byte swizzle), kWgStages of them in a ring. Per stage, the TMA brings A's 128 x 64
// and B's 256 x 64 (48 KiB in all, announced to the stage's full mbarrier), each operand
// K-major (rows along k: one box of the tile's rows x 64 k) or MN-major (rows along m or n,
// read with wgmma's transpose: boxes of 64 k x 64), as the product's layout (WgLayout) has
// it. Elements past the edges arrive as zeros (the TMA's fill), so partial tiles need
// no checks before the epilogue's. Each stage also has an empty mbarrier, one arrival per
// consumer thread: a consumer arrives once its wgmmas that read the stage are complete
// (wait_group 1 after the next slice's issue: only that slice's in flight), and the
// producer waits for the phase before refilling it. No block-wide barrier in the loop: the
// producer keeps kWgStages - 1 slices loading ahead of the one computed, and each consumer
// warpgroup goes at its own pace.

#include <climits>
#include <cstdint>
#include <stdexcept>

#include "backend.h"
#include "cuda/dense.cuh"
#include "cuda/device_context.h"
#include "cuda/sm90.cuh"
#include "host_device.h"

namespace customml::CUSTOMML_CUDA_NS {

constexpr int kWgBm = 128, kWgBn = 256, kWgBk = 64, kWgStages = 4, kWgConsumers = 256, kWgThreads = 128 + kWgConsumers;
// setmaxnreg's counts: a 384-thread block starts with 168 registers a thread (65536 / 384,
// in steps of 8; ptxas allocates that much to a kernel that reallocates); the producer's
// 128 threads give 128 each back, which the consumers' 256 take (168 + 64 = 232).
constexpr unsigned kWgProducerRegisters = 40, kWgConsumerRegisters = 232;
constexpr unsigned kWgABytes = kWgBm * kWgBk * 2, kWgBBoxBytes = kWgBk * 64 * 2;
constexpr unsigned kWgStageBytes = kWgABytes + kWgBn / 64 * kWgBBoxBytes;
// the mbarriers' kilobyte (full, then empty), the stages, and a kilobyte to align them
constexpr size_t kWgSharedBytes = 1024 + kWgStages * static_cast<size_t>(kWgStageBytes) + 1024;

// The operands' layouts of a product, each an instance of the kernel's loop: the forward
// (A = x K-major, B = W MN-major), the backward's dW = x^T dz (A = x^T MN-major: x's
// rows are m-contiguous; B = dz MN-major) and dx = dz W^T (A = dz K-major; B = W^T
// K-major: W's rows are k-contiguous).
enum class WgLayout { forward, dw, dx };
CUSTOMML_HD constexpr bool wg_mn_a(WgLayout l) { return l == WgLayout::dw; }
CUSTOMML_HD constexpr bool wg_mn_b(WgLayout l) { return l != WgLayout::dx; }

// What a launch passes: up to two products (the backward's dW and dx, as GemmPair: blocks
// [0, blocks0) take problem 0, the rest problem 1; a forward launch has problem 0 only) and
// their operands' tensor maps (a K-major operand in boxes of its tile's rows x 64 k, an
// MN-major one in boxes of 64 k x 64 of m or n, all 128-byte swizzled).
struct WgmmaGemm {
  GemmParams p[2];
  ptx::TensorMap a[2], b[2];
  unsigned blocks0, tiles_n[2];
  // dW's norm slots (GemmParams::sq): as many as the sm_80 kernels' tiles (the count
  // follows the shape, dense_norm_slots); tile i fills slot i and zeros i + blocks0, ...
  int64_t sq_slots;
};

#if defined(CUSTOMML_SM90A)  // the device code for sm_90a (and the emulator's), whose PTX it uses
// The backward's db, bit for bit gemm_tc_kernel's (and the float32 kernels'): column c of
// dz (B) summed in float in the parts order (each part from zero in k order, the parts'
// sums added in order from zero), 16 loads in flight (the adds stay in order): the block's
// read of dz's column strip (4 MiB at 4096 x 256) is latency-bound, as long as a tile's
// main loop or two, in the few blocks of db's row while the others' tiles go on.
__device__ __forceinline__ float wgmma_db(const GemmParams& p, int64_t c) {
  const float* col = p.b + c * p.b_cs;
  float total = 0.0f;
  for (int64_t k0 = 0; k0 < p.k; k0 += p.part_depth) {
    const int64_t end = p.part_depth < p.k - k0 ? k0 + p.part_depth : p.k;
    float sum = 0.0f;
    int64_t k = k0;
    for (; k + 16 <= end; k += 16) {
      float v[16];
      CUSTOMML_UNROLL
      for (int i = 0; i < 16; ++i) v[i] = col[(k + i) * p.b_rs];
      CUSTOMML_UNROLL
      for (int i = 0; i < 16; ++i) sum += v[i];
    }
    for (; k < end; ++k) sum += col[k * p.b_rs];
    total += sum;
  }
  return total;
}

// One block's 128 x 256 tile of problem kProblem (its layout kLayout); shared, the block's
// aligned dynamic shared memory. kGrad: the backward's store (store_c<true>: dx's
// derivative and 16-bit copy; dW's db row and its tiles' sums of squares).
template <class T, WgLayout kLayout, int kProblem, bool kGrad>
__device__ __forceinline__ void wgmma_tile(const WgmmaGemm& g, unsigned tile, unsigned char* shared) {
  constexpr bool kMnA = wg_mn_a(kLayout), kMnB = wg_mn_b(kLayout);
  const GemmParams& p = g.p[kProblem];
  auto* full = reinterpret_cast<uint64_t*>(shared);
  uint64_t* empty = full + kWgStages;
  uint64_t* squared = empty + kWgStages;  // the consumer warps' sums of squares are in
  uint64_t* drained = squared + 1;        // every consumer's wgmmas are complete
  auto* warp_squares = reinterpret_cast<double*>(drained + 1);
  unsigned char* stages = shared + 1024;
  const int tid = static_cast<int>(threadIdx.x), warpgroup = tid / 128, t = tid % 128;
  const int row0 = static_cast<int>(tile / g.tiles_n[kProblem]) * kWgBm,
            col0 = static_cast<int>(tile % g.tiles_n[kProblem]) * kWgBn;
  // a tile of dW's db row alone (m a multiple of 128) multiplies nothing
  const int slices = row0 < p.m ? static_cast<int>((p.k + kWgBk - 1) / kWgBk) : 0;
  if (tid == 0) {
    for (int s = 0; s < kWgStages; ++s) {
      ptx::mbarrier_init(&full[s], 1);
      ptx::mbarrier_init(&empty[s], kWgConsumers);
    }
    ptx::mbarrier_init(squared, kWgConsumers / 32);
    ptx::mbarrier_init(drained, kWgConsumers);
    ptx::mbarrier_init_fence();
  }
  __syncthreads();  // the block's one: the barriers are initialized
  if (warpgroup == 0) {
    ptx::setmaxnreg_dec<kWgProducerRegisters>();
    if (tid < 32 && ptx::elect_one_sync()) {
      for (int slice = 0; slice < slices; ++slice) {
        // The first pass finds every stage empty (the wait for parity 1 of a fresh barrier,
        // the phase "before" its first, returns at once); pass r waits for the consumers'
        // r-th release of the stage.
        const int s = slice % kWgStages, k0 = slice * kWgBk;
        ptx::mbarrier_wait(&empty[s], (static_cast<unsigned>(slice / kWgStages) & 1u) ^ 1u);
        unsigned char* a = stages + s * kWgStageBytes;
        unsigned char* b = a + kWgABytes;
        ptx::mbarrier_arrive_expect_tx(&full[s], kWgStageBytes);
        if constexpr (kMnA) {
          for (int box = 0; box < kWgBm / 64; ++box)
            ptx::tma_load_2d(a + box * kWgBBoxBytes, &g.a[kProblem], row0 + 64 * box, k0, &full[s]);
        } else {
          ptx::tma_load_2d(a, &g.a[kProblem], k0, row0, &full[s]);
        }
        if constexpr (kMnB) {
          for (int box = 0; box < kWgBn / 64; ++box)
            ptx::tma_load_2d(b + box * kWgBBoxBytes, &g.b[kProblem], col0 + 64 * box, k0, &full[s]);
        } else {
          ptx::tma_load_2d(b, &g.b[kProblem], k0, col0, &full[s]);
        }
      }
    }
    return;  // every load lands on a full barrier some consumer waits for
  }
  ptx::setmaxnreg_inc<kWgConsumerRegisters>();
  const int group = warpgroup - 1;
  float d[kWgBn / 2];
  CUSTOMML_UNROLL
  for (int j = 0; j < kWgBn / 2; ++j) d[j] = 0.0f;
  for (int slice = 0; slice < slices; ++slice) {
    const int s = slice % kWgStages;
    ptx::mbarrier_wait(&full[s], static_cast<unsigned>(slice / kWgStages) & 1u);
    const unsigned char* a = stages + s * kWgStageBytes + group * (kWgABytes / 2);
    const unsigned char* b = stages + s * kWgStageBytes + kWgABytes;
    ptx::wgmma_fence_operands(d);
    ptx::wgmma_fence();
    CUSTOMML_UNROLL
    for (int kk = 0; kk < kWgBk / 16; ++kk) {
      // K-major: rows of 128 bytes (64 k), 8-row groups 1024 apart, 16 k = 32 bytes on.
      // MN-major: 8-k groups of 64 elements' rows 1024 apart (16 k = 2048 bytes on), each
      // further 64 of m or n a box (8 KiB) on. A consumer's 64 rows of A: 8 KiB on in both.
      const uint64_t da = kMnA ? ptx::smem_descriptor(a + 2048 * kk, kWgBBoxBytes, 1024, ptx::Swizzle::b128)
                               : ptx::smem_descriptor(a + 32 * kk, 16, 1024, ptx::Swizzle::b128);
      const uint64_t db = kMnB ? ptx::smem_descriptor(b + 2048 * kk, kWgBBoxBytes, 1024, ptx::Swizzle::b128)
                               : ptx::smem_descriptor(b + 32 * kk, 16, 1024, ptx::Swizzle::b128);
      ptx::wgmma_async<T, kWgBn, kMnA, kMnB>(d, da, db, true);
    }
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group<1>();  // the previous slice's wgmmas are complete (this thread's)
    ptx::wgmma_fence_operands(d);
    if (slice > 0) ptx::mbarrier_arrive(&empty[(slice - 1) % kWgStages]);  // its stage may be refilled
  }
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operands(d);
  // store_c (the forward's bias, preact, activation, dropout mask and 16-bit copy; the
  // backward's derivative, mask and copy) inlined 128 times would be most of the kernel's
  // code (the forward's unrolled: 39 k SASS instructions, 1.3 k rolled): the
  // accumulators go through shared memory instead, into the ring (every load has landed;
  // once every consumer thread has waited for its wgmmas: a wait covers the waiting thread's
  // only, and both warpgroups read B), each thread's float4 i at (i x 256 + its index) x 16
  // bytes, then one rolled loop stores them (half of them at a time, with a loop between,
  // made ptxas serialize the wgmmas: C7515). The same store_c with the same floats: the
  // bits are the unrolled store's.
  ptx::mbarrier_arrive(drained);
  ptx::mbarrier_wait(drained, 0);
  float* mine = reinterpret_cast<float*>(stages) + (tid - 128) * 4;
  CUSTOMML_UNROLL
  for (int j = 0; j < kWgBn / 2; j += 4) store4(mine + j * kWgConsumers, reinterpret_cast<const float(&)[4]>(d[j]));
  // The accumulator layout (cuda/simt/wgmma.h): register j of thread t is row
  // 16 (t / 32) + (t % 32) / 4 + 8 ((j / 2) % 2), column 8 (j / 4) + 2 (t % 4) + j % 2.
  const int row = row0 + 64 * group + 16 * (t / 32) + (t % 32) / 4, col = col0 + 2 * (t % 4);
  double sq = 0.0;
  CUSTOMML_NO_UNROLL
  for (int j = 0; j < kWgBn / 2; ++j) {
    const int r = row + 8 * ((j / 2) % 2);
    if (r < p.m) sq += store_c<kGrad>(p, r, col + 8 * (j / 4) + j % 2, mine[j / 4 * 4 * kWgConsumers + j % 4]);
  }
  if constexpr (kGrad) {
    // Row m (dW's db) is summed from dz in float.
    const int64_t c = col0 + tid - 128;
    if (p.db && row0 <= p.m && p.m < row0 + kWgBm && c < p.n) sq += store_c<true>(p, p.m, c, wgmma_db(p, c));
    if (p.sq) {
      // The tile's sum of squares: each warp's by shuffles, then the warps' in warp order
      // by the first consumer thread (store_tile_squares' order; an mbarrier, not a block
      // barrier: the producer's threads have exited).
      sq = warp_sum(sq);
      const int warp = (tid - 128) / 32;
      if (tid % 32 == 0) {
        warp_squares[warp] = sq;
        ptx::mbarrier_arrive(squared);
      }
      if (tid == 128) {
        ptx::mbarrier_wait(squared, 0);
        double total = 0.0;
        for (int w = 0; w < kWgConsumers / 32; ++w) total += warp_squares[w];
        p.sq[tile] = total;
        for (int64_t slot = tile + g.blocks0; slot < g.sq_slots; slot += g.blocks0) p.sq[slot] = 0.0;
      }
    }
  }
}

#endif

// grid: problem 0's tiles (blocks0 of them), then problem 1's, each row-major over its
// 128 x 256 tiles; block kWgThreads (the producer warpgroup, then the consumers); dynamic
// shared memory kWgSharedBytes. T: __nv_bfloat16 or __half; kGrad: the backward's pair
// (dW, then dx; either may have no tiles), else a forward product.
template <class T, bool kGrad>
__global__ void __launch_bounds__(kWgThreads, 1) gemm_wgmma_kernel(const __grid_constant__ WgmmaGemm g) {
#if defined(CUSTOMML_SM90A)
  unsigned char* shared = ptx::sm90_shared();
  if constexpr (!kGrad)
    wgmma_tile<T, WgLayout::forward, 0, false>(g, blockIdx.x, shared);
  else if (blockIdx.x < g.blocks0)
    wgmma_tile<T, WgLayout::dw, 0, true>(g, blockIdx.x, shared);
  else
    wgmma_tile<T, WgLayout::dx, 1, true>(g, blockIdx.x - g.blocks0, shared);
#elif defined(__CUDA_ARCH__)
  __trap();  // never launched without sm_90a code (wgmma_path): loud if it were
#endif
}

// Whether a product's operands fit layout l: 16-bit copies of both whose rows (k's for an
// MN-major operand, m's or n's for a K-major one) are contiguous, 16-byte aligned and a
// multiple of 16 bytes apart (the TMA's rules); a forward product has no backward extras.
inline bool wgmma_operands_fit(const GemmParams& p, WgLayout l = WgLayout::forward) {
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  const int64_t a_unit = wg_mn_a(l) ? p.a16_rs : p.a16_cs, a_pitch = wg_mn_a(l) ? p.a16_cs : p.a16_rs;
  const int64_t b_unit = wg_mn_b(l) ? p.b16_cs : p.b16_rs, b_pitch = wg_mn_b(l) ? p.b16_rs : p.b16_cs;
  return p.a16 && p.b16 && (l != WgLayout::forward || (!p.db && p.grad_act == Activation::identity)) && a_unit == 1 &&
         b_unit == 1 && a_pitch % 8 == 0 && b_pitch % 8 == 0 && aligned(p.a16) && aligned(p.b16) && p.k <= INT32_MAX &&
         p.m <= INT32_MAX - kWgBm && p.n <= INT32_MAX - kWgBn;
}

// A product's 128 x 256 tiles (dW's db row included).
inline int64_t wgmma_tiles(const GemmParams& p) {
  return ((p.m + (p.db ? 1 : 0) + kWgBm - 1) / kWgBm) * ((p.n + kWgBn - 1) / kWgBn);
}

// Whether gemm() takes gemm_wgmma_kernel for count products of layouts ls: on a Hopper
// (ctx.sm90: compute capability 9.0, whose code the fatbin has as sm_90a), bf16 / fp16,
// operands that fit, and a shape where it pays off: 128 x 256 tiles of at least one wave
// in all (ctx.wgmma_min_tiles, an H100's 132 SMs: below, the sm_80 kernel's 64 x 64 tiles
// keep 8x as many SMs busy) and k for the whole ring of stages in each (kWgStages x kWgBk =
// 256: below, the pipeline's fill is most of the work). Otherwise the sm_80 kernel
// (gemm_tc_kernel), the fallback everywhere, and on a Hopper too when the build has no
// sm_90a code.
inline bool wgmma_path(const DeviceContext& ctx, const GemmParams* ps, const WgLayout* ls, int count,
                       Precision precision) {
  bool sm90 = ctx.sm90;
#if defined(__CUDACC__) && !defined(CUSTOMML_CUDA_SM90A_CODE)
  sm90 = false;  // the fatbin has no sm_90a code (CMAKE_CUDA_ARCHITECTURES without 90a)
#endif
  if (!sm90 || (precision != Precision::bf16 && precision != Precision::fp16)) return false;
  int64_t tiles = 0;
  for (int i = 0; i < count; ++i) {
    if (!wgmma_operands_fit(ps[i], ls[i]) || ps[i].k < kWgStages * kWgBk) return false;
    tiles += wgmma_tiles(ps[i]);
  }
  return tiles >= ctx.wgmma_min_tiles;
}
inline bool wgmma_path(const DeviceContext& ctx, const GemmParams& p, Precision precision) {
  const WgLayout forward = WgLayout::forward;
  return wgmma_path(ctx, &p, &forward, 1, precision);
}

// The backward's products (dense.cu's backward_params: dW then dx, or either alone) as
// gemm_wgmma_kernel's pair: problem 0 dW, problem 1 dx; false if they do not take it.
inline bool wgmma_backward(const DeviceContext& ctx, const GemmParams* ps, int count, Precision precision,
                           GemmParams (&pair)[2]) {
  // dW's A is x read transposed (rows of k contiguous along m), dx's dz (contiguous along k)
  const bool dw_first = ps[0].a_rs == 1 && ps[0].a_cs != 1;
  const WgLayout ls[2] = {dw_first ? WgLayout::dw : WgLayout::dx, WgLayout::dx};
  if (!wgmma_path(ctx, ps, ls, count, precision)) return false;
  pair[0] = dw_first ? ps[0] : GemmParams{};
  pair[1] = count == 2 ? ps[1] : dw_first ? GemmParams{} : ps[0];
  return true;
}

// Launches gemm_wgmma_kernel<T, kGrad> for ps (count 1, the forward; or the backward's
// pair from wgmma_backward, a problem with m == 0 having no tiles; sq_slots: dW's norm
// slots, at least its tiles) on stream.
template <class T, bool kGrad>
void launch_wgmma(const GemmParams* ps, Stream stream, int64_t sq_slots = 0) {
  WgmmaGemm g{};
  g.sq_slots = sq_slots;
  int64_t tiles[2] = {0, 0};
  for (int i = 0; i < (kGrad ? 2 : 1); ++i) {
    const GemmParams& p = ps[i];
    g.p[i] = p;
    if (p.m == 0) continue;
    const WgLayout l = kGrad ? (i == 0 ? WgLayout::dw : WgLayout::dx) : WgLayout::forward;
    const auto m = static_cast<uint64_t>(p.m), n = static_cast<uint64_t>(p.n), k = static_cast<uint64_t>(p.k);
    if (wg_mn_a(l))  // rows k, columns m, in boxes of 64 x 64
      ptx::encode_tensor_map_2d(&g.a[i], p.a16, 2, k, m, static_cast<uint64_t>(p.a16_cs) * 2, kWgBk, 64, 128);
    else  // rows m, columns k, in boxes of the tile's rows x 64
      ptx::encode_tensor_map_2d(&g.a[i], p.a16, 2, m, k, static_cast<uint64_t>(p.a16_rs) * 2, kWgBm, kWgBk, 128);
    if (wg_mn_b(l))
      ptx::encode_tensor_map_2d(&g.b[i], p.b16, 2, k, n, static_cast<uint64_t>(p.b16_rs) * 2, kWgBk, 64, 128);
    else
      ptx::encode_tensor_map_2d(&g.b[i], p.b16, 2, n, k, static_cast<uint64_t>(p.b16_cs) * 2, kWgBn, kWgBk, 128);
    tiles[i] = wgmma_tiles(p);
    g.tiles_n[i] = static_cast<unsigned>((p.n + kWgBn - 1) / kWgBn);
  }
  g.blocks0 = static_cast<unsigned>(tiles[0]);
#if defined(__CUDACC__)
  static const bool raised = [] {
    return cudaFuncSetAttribute(gemm_wgmma_kernel<T, kGrad>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                static_cast<int>(kWgSharedBytes)) == cudaSuccess;
  }();
  if (!raised) throw std::runtime_error("CUDA: the wgmma GEMM's shared memory could not be raised");
#endif
  launch(gemm_wgmma_kernel<T, kGrad>, dim3(static_cast<unsigned>(tiles[0] + tiles[1])), dim3(kWgThreads),
         kWgSharedBytes, stream, g);
}

}  // namespace customml::CUSTOMML_CUDA_NS
