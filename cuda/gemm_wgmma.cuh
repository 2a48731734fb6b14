#pragma once
// Defines: gemm_wgmma_kernel, the forward GEMM of cuda/dense.cuh for bf16 / fp16 on sm_90a
// (Hopper): TMA loads of 16-bit operands into a ring of shared-memory stages completing
// on mbarriers, and wgmma from those stages into float accumulators; the epilogue is
// store_c's (bias, preact, activation), as gemm_tc_kernel's. The primitives and their
// layouts: cuda/sm90.cuh (device), cuda/simt/tma.h and cuda/simt/wgmma.h (host emulation).
//
// Warp-specialized, as CUTLASS's sm90 kernels: a block is three warpgroups. The first is
// the producer: one elected thread of its first warp issues the TMA loads, the others exit
// at once, and it gives its registers up (setmaxnreg.dec to kWgProducerRegisters) to the
// two consumer warpgroups (setmaxnreg.inc to kWgConsumerRegisters), which compute a 128 x
// 256 tile of C, each 64 rows with m64n256k16 (128 accumulators per thread: the registers
// the producer gave). k goes in slices of 64 (128 bytes of 16-bit values: one row of the
// 128-byte swizzle), kWgStages of them in a ring. Per stage, the TMA brings A's 128 x 64 box
// (K-major: x's rows) and B's as four 64 (k) x 64 (n) boxes (MN-major: W's rows are
// n-contiguous, read with wgmma's transpose), 48 KiB in all, announced to the stage's full
// mbarrier. Elements past the edges arrive as zeros (the TMA's fill), so partial tiles need
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

// What a launch passes: the product and its operands' tensor maps (A: m x k of a16, B:
// k x n of b16, both in boxes of 64 contiguous elements, 128-byte swizzled).
struct WgmmaGemm {
  GemmParams p;
  ptx::TensorMap a, b;
};

// grid: one block per 128 x 256 tile, row-major over the tiles; block kWgThreads (the
// producer warpgroup, then the consumers);
// dynamic shared memory kWgSharedBytes. T: __nv_bfloat16 or __half.
template <class T>
__global__ void __launch_bounds__(kWgThreads, 1) gemm_wgmma_kernel(const __grid_constant__ WgmmaGemm g) {
#if defined(CUSTOMML_SM90A)
  const GemmParams& p = g.p;
  unsigned char* shared = ptx::sm90_shared();
  auto* full = reinterpret_cast<uint64_t*>(shared);
  uint64_t* empty = full + kWgStages;
  unsigned char* stages = shared + 1024;
  const int tid = static_cast<int>(threadIdx.x), warpgroup = tid / 128, t = tid % 128;
  const auto tiles_n = static_cast<unsigned>((p.n + kWgBn - 1) / kWgBn);
  const int row0 = static_cast<int>(blockIdx.x / tiles_n) * kWgBm,
            col0 = static_cast<int>(blockIdx.x % tiles_n) * kWgBn;
  const int slices = static_cast<int>((p.k + kWgBk - 1) / kWgBk);
  if (tid == 0) {
    for (int s = 0; s < kWgStages; ++s) {
      ptx::mbarrier_init(&full[s], 1);
      ptx::mbarrier_init(&empty[s], kWgConsumers);
    }
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
        const int s = slice % kWgStages;
        ptx::mbarrier_wait(&empty[s], (static_cast<unsigned>(slice / kWgStages) & 1u) ^ 1u);
        unsigned char* a = stages + s * kWgStageBytes;
        unsigned char* b = a + kWgABytes;
        ptx::mbarrier_arrive_expect_tx(&full[s], kWgStageBytes);
        ptx::tma_load_2d(a, &g.a, slice * kWgBk, row0, &full[s]);
        for (int box = 0; box < kWgBn / 64; ++box)
          ptx::tma_load_2d(b + box * kWgBBoxBytes, &g.b, col0 + 64 * box, slice * kWgBk, &full[s]);
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
      // A: rows of 128 bytes, 8-row groups 1024 apart, 16 k = 32 bytes on; B: 8-k groups
      // 1024 apart (16 k = 2048 bytes on), each further 64 columns a box (8 KiB) on.
      const uint64_t da = ptx::smem_descriptor(a + 32 * kk, 16, 1024, ptx::Swizzle::b128);
      const uint64_t db = ptx::smem_descriptor(b + 2048 * kk, kWgBBoxBytes, 1024, ptx::Swizzle::b128);
      ptx::wgmma_async<T, kWgBn, false, true>(d, da, db, true);
    }
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group<1>();  // the previous slice's wgmmas are complete (this thread's)
    ptx::wgmma_fence_operands(d);
    if (slice > 0) ptx::mbarrier_arrive(&empty[(slice - 1) % kWgStages]);  // its stage may be refilled
  }
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operands(d);
  // The accumulator layout (cuda/simt/wgmma.h): register j of thread t is row
  // 16 (t / 32) + (t % 32) / 4 + 8 ((j / 2) % 2), column 8 (j / 4) + 2 (t % 4) + j % 2.
  const int row = row0 + 64 * group + 16 * (t / 32) + (t % 32) / 4, col = col0 + 2 * (t % 4);
  CUSTOMML_UNROLL
  for (int j = 0; j < kWgBn / 2; ++j) store_c<false>(p, row + 8 * ((j / 2) % 2), col + 8 * (j / 4) + j % 2, d[j]);
#elif defined(__CUDA_ARCH__)
  __trap();  // never launched without sm_90a code (wgmma_path): loud if it were
#endif
}

// Whether a product can take gemm_wgmma_kernel: a forward one (no db, no activation
// derivative on an operand) with 16-bit copies of both operands whose rows are
// contiguous, 16-byte aligned and a multiple of 16 bytes apart (the TMA's rules).
inline bool wgmma_operands_fit(const GemmParams& p) {
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  return p.a16 && p.b16 && !p.db && p.a_act == Activation::identity && p.b_act == Activation::identity && p.a_cs == 1 &&
         p.b_cs == 1 && p.a_rs % 8 == 0 && p.b_rs % 8 == 0 && aligned(p.a16) && aligned(p.b16) && p.k <= INT32_MAX &&
         p.m <= INT32_MAX - kWgBm && p.n <= INT32_MAX - kWgBn;
}

// Whether gemm() takes gemm_wgmma_kernel for a product: on a Hopper (ctx.sm90: compute
// capability 9.0, whose code the fatbin has as sm_90a), bf16 / fp16, operands that fit,
// and a shape where it pays off: a 128 x 256 grid of at least one wave
// (ctx.wgmma_min_tiles, an H100's 132 SMs: below, the sm_80 kernel's 64 x 64 tiles keep 8x
// as many SMs busy) and k for the whole ring of stages (kWgStages x kWgBk = 256: below, the
// pipeline's fill is most of the work). Otherwise the sm_80 kernel (gemm_tc_kernel), the
// fallback everywhere, and on a Hopper too when the build has no sm_90a code.
inline bool wgmma_path(const DeviceContext& ctx, const GemmParams& p, Precision precision) {
  bool sm90 = ctx.sm90;
#if defined(__CUDACC__) && !defined(CUSTOMML_CUDA_SM90A_CODE)
  sm90 = false;  // the fatbin has no sm_90a code (CMAKE_CUDA_ARCHITECTURES without 90a)
#endif
  if (!sm90 || (precision != Precision::bf16 && precision != Precision::fp16) || !wgmma_operands_fit(p)) return false;
  const int64_t tiles = ((p.m + kWgBm - 1) / kWgBm) * ((p.n + kWgBn - 1) / kWgBn);
  return tiles >= ctx.wgmma_min_tiles && p.k >= kWgStages * kWgBk;
}

// Launches gemm_wgmma_kernel<T> for p (wgmma_operands_fit) on stream.
template <class T>
void launch_wgmma(const GemmParams& p, Stream stream) {
  WgmmaGemm g{p, {}, {}};
  ptx::encode_tensor_map_2d(&g.a, p.a16, 2, static_cast<uint64_t>(p.m), static_cast<uint64_t>(p.k),
                            static_cast<uint64_t>(p.a_rs) * 2, kWgBm, kWgBk, 128);
  ptx::encode_tensor_map_2d(&g.b, p.b16, 2, static_cast<uint64_t>(p.k), static_cast<uint64_t>(p.n),
                            static_cast<uint64_t>(p.b_rs) * 2, kWgBk, 64, 128);
  const int64_t tiles = ((p.m + kWgBm - 1) / kWgBm) * ((p.n + kWgBn - 1) / kWgBn);
#if defined(__CUDACC__)
  static const bool raised = [] {
    return cudaFuncSetAttribute(gemm_wgmma_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                static_cast<int>(kWgSharedBytes)) == cudaSuccess;
  }();
  if (!raised) throw std::runtime_error("CUDA: the wgmma GEMM's shared memory could not be raised");
#endif
  launch(gemm_wgmma_kernel<T>, dim3(static_cast<unsigned>(tiles)), dim3(kWgThreads), kWgSharedBytes, stream, g);
}

}  // namespace customml::CUSTOMML_CUDA_NS
