#pragma once
// Defines: sm_90's asynchronous primitives as kernels spell them (customml::ptx): the
// mbarrier (init, arrive, arrive.expect_tx, a wait on a phase's parity), elect.sync,
// setmaxnreg, the TMA's 2-D tiled load into shared memory completing on an mbarrier,
// wgmma's shared-memory matrix descriptor, fence, commit_group, wait_group and m64n256k16
// (bf16, f16; f32 accumulators), and sm90_shared(), the block's dynamic shared memory
// 1024-byte aligned (the swizzle patterns repeat every 1024 bytes of the address). Under
// nvcc, inline PTX, compiled where the target has sm_90a's features (CUSTOMML_SM90A: wgmma
// and the TMA need the arch-specific target; elsewhere a kernel that uses them compiles
// empty and is never launched); on the host, the emulation of cuda/simt/tma.h and
// cuda/simt/wgmma.h (their comments: the layouts, and what the emulator checks). And the
// host side: encode_tensor_map_2d (cuTensorMapEncodeTiled, through the runtime's driver
// entry point so that nothing links libcuda).

#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define CUSTOMML_SM90A 1
#endif

namespace customml::ptx {

using TensorMap = CUtensorMap;
enum class Swizzle : uint64_t { none = 0, b128 = 1, b64 = 2, b32 = 3 };

#if defined(CUSTOMML_SM90A)
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ unsigned char* sm90_shared() {
  extern __shared__ __align__(1024) unsigned char sm90_dynamic[];
  const uint32_t skip = (1024 - (shared_address(sm90_dynamic) & 1023)) & 1023;
  return sm90_dynamic + skip;
}
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(count) : "memory");
}
// After mbarrier_init, before the barrier that publishes it: makes the initialization
// visible to the asynchronous proxy (the TMA completing on it) too.
__device__ __forceinline__ void mbarrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(shared_address(bar)) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)), "r"(bytes)
               : "memory");
}
// Until the phase of this parity has completed (try_wait suspends for a time the
// hardware chooses, then the loop asks again).
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n"
      "}\n" ::"r"(shared_address(bar)),
      "r"(parity)
      : "memory");
}
// elect.sync over the full warp: true in one lane (the ISA does not say which).
__device__ __forceinline__ bool elect_one_sync() {
  uint32_t elected = 0;
  asm volatile(
      "{\n"
      ".reg .b32 lane;\n"
      ".reg .pred p;\n"
      "elect.sync lane|p, 0xffffffff;\n"
      "selp.u32 %0, 1, 0, p;\n"
      "}\n"
      : "=r"(elected));
  return elected != 0;
}
// The warpgroup's registers a thread: .dec returns the rest to the CTA's pool, .inc waits
// until the pool has what it asks (every warp of the warpgroup executes the same).
template <unsigned kRegisters>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegisters));
}
template <unsigned kRegisters>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegisters));
}
// The box whose first element is (row, column) of the map's tensor into dst (a CTA's own
// shared memory is its shared::cluster window), completing its bytes on bar.
__device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, int column, int row, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::
          "r"(shared_address(dst)),
      "l"(map), "r"(column), "r"(row), "r"(shared_address(bar))
      : "memory");
}
__device__ __forceinline__ uint64_t smem_descriptor(const void* start, unsigned leading, unsigned stride,
                                                    Swizzle swizzle) {
  return (shared_address(start) & 0x3FFFFu) >> 4 | static_cast<uint64_t>((leading & 0x3FFFFu) >> 4) << 16 |
         static_cast<uint64_t>((stride & 0x3FFFFu) >> 4) << 32 | static_cast<uint64_t>(swizzle) << 62;
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit_group() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}
// Ties the accumulator registers to this point: the compiler may not move their reads
// or writes across it (around the asynchronous wgmma and its wait).
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[128]) {
  asm volatile(""
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                 "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                 "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
                 "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
                 "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
                 "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
                 "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
                 "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
                 "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
                 "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
                 "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
                 "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]),
                 "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]),
                 "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]),
                 "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]),
                 "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127]));
}
// D (64 x 256, this thread's 128 registers) = A B + D (accumulate) or A B; A K-major, B
// MN-major when kTransB (the layouts: cuda/simt/wgmma.h).
// The one wgmma shape the kernels use, m64n256k16, for an operand type TYPE (a PTX type
// string): 128 accumulators, both operands from shared-memory descriptors.
#define CUSTOMML_WGMMA_M64N256K16(TYPE)                                                                                \
  asm volatile(                                                                                                        \
      "{\n"                                                                                                            \
      ".reg .pred p;\n"                                                                                                \
      "setp.ne.b32 p, %130, 0;\n"                                                                                      \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE                                                     \
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "    \
      "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, " \
      "%45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, " \
      "%67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, " \
      "%89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, "  \
      "%109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, "   \
      "%127}, %128, %129, p, 1, 1, %131, %132;\n"                                                                      \
      "}\n"                                                                                                            \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),    \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),         \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),        \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),        \
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),        \
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),        \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),        \
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]),        \
        "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),        \
        "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]),        \
        "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]),        \
        "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]),        \
        "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]),   \
        "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),              \
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]),              \
        "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]),              \
        "+f"(d[126]), "+f"(d[127])                                                                                     \
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int>(accumulate)), "n"(static_cast<int>(kTransA)),                   \
        "n"(static_cast<int>(kTransB)))

template <class T, int N, bool kTransA, bool kTransB>
__device__ __forceinline__ void wgmma_async(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  static_assert(N == 256, "the kernels use m64n256 only");
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>, "bf16 or f16");
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    CUSTOMML_WGMMA_M64N256K16("bf16");
  else
    CUSTOMML_WGMMA_M64N256K16("f16");
}
#undef CUSTOMML_WGMMA_M64N256K16
#endif  // CUSTOMML_SM90A

// The host side, before a launch: the map of a rows x columns matrix of element_bytes
// elements (columns contiguous, rows row_bytes apart) in boxes of box_rows x box_columns,
// swizzled by swizzle_bytes (0, 32, 64 or 128; std::invalid_argument otherwise, as the
// emulator's), zeros past the edges.
inline void encode_tensor_map_2d(TensorMap* map, const void* global, unsigned element_bytes, uint64_t rows,
                                 uint64_t columns, uint64_t row_bytes, unsigned box_rows, unsigned box_columns,
                                 unsigned swizzle_bytes) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      fn = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  if (!encode) throw std::runtime_error("CUDA: the driver has no cuTensorMapEncodeTiled");
  const cuuint64_t dims[2] = {columns, rows}, strides[1] = {row_bytes};
  const cuuint32_t box[2] = {box_columns, box_rows}, element_strides[2] = {1, 1};
  const CUtensorMapDataType type =
      element_bytes == 2 ? CU_TENSOR_MAP_DATA_TYPE_UINT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
  // Each width its own mode: a pattern the map does not state would land the box in a
  // layout the wgmma descriptors do not describe.
  CUtensorMapSwizzle swizzle;
  switch (swizzle_bytes) {
    case 0: swizzle = CU_TENSOR_MAP_SWIZZLE_NONE; break;
    case 32: swizzle = CU_TENSOR_MAP_SWIZZLE_32B; break;
    case 64: swizzle = CU_TENSOR_MAP_SWIZZLE_64B; break;
    case 128: swizzle = CU_TENSOR_MAP_SWIZZLE_128B; break;
    default:
      throw std::invalid_argument("tensor map: swizzle of 0, 32, 64 or 128 bytes, not " +
                                  std::to_string(swizzle_bytes));
  }
  const CUresult r = encode(map, type, 2, const_cast<void*>(global), dims, strides, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) throw std::runtime_error("CUDA: cuTensorMapEncodeTiled failed (" + std::to_string(r) + ")");
}

}  // namespace customml::ptx
#else
#include "simt/tma.h"
#include "simt/wgmma.h"

#define CUSTOMML_SM90A 1

namespace customml::ptx {
inline unsigned char* sm90_shared() { return static_cast<unsigned char*>(simt::dynamic_shared()); }
// The emulator's barriers are visible to its TMA once initialized.
inline void mbarrier_init_fence() {}
}  // namespace customml::ptx
#endif
