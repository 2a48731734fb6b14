// Launchers of the int8 GEMM: the packing of the weights, and the choice between the
// tensor-core, the dp4a and the warp-per-column kernel (docs/decisions.md, "dp4a or
// tensor cores").

#include "cuda/device_backend.h"
#include "cuda/gemm_s8.cuh"

namespace customml::CUSTOMML_CUDA_NS {

size_t DeviceBackend::gemm_s8_packed_bytes(int64_t k, int64_t n) { return GemmS8Layout(k, n).bytes; }

// w: (k, n) i8 -> packed: colsum (n) int32, then wt (n, kp) i8
void DeviceBackend::gemm_s8_pack(void* packed, const int8_t* w, int64_t k, int64_t n) {
  DeviceContext& ctx = this->ctx();
  if (n == 0) return;
  const GemmS8Layout layout(k, n);
  auto* bytes = static_cast<int8_t*>(packed);
  launch(gemm_s8_colsum_kernel, dim3(exact_blocks(n, kThreads)), dim3(kThreads), 0, ctx.stream,
         reinterpret_cast<int32_t*>(bytes), w, k, n);
  if (layout.kp == 0) return;
  launch(gemm_s8_pack_kernel, dim3(exact_blocks(layout.kp, kPackTile), exact_blocks(n, kPackTile)),
         dim3(kPackTile, kPackRows), 0, ctx.stream, bytes + layout.wt_offset, w, k, n, layout.kp);
}

namespace {
enum class S8Kernel { gemv, dp4a, tensor_cores };
// Tensor cores once the batch fills a warp's 32 x 32 quarter of the 64 x 64 tile in
// both directions; below that (latency-bound small batches) the dp4a kernel, and for 1
// to 4 rows its warp-per-column twin.
S8Kernel gemm_s8_kernel_for(GemmS8Shape s) {
  if (s.m >= 32 && s.n >= 32) return S8Kernel::tensor_cores;
  return s.m <= kS8GemvRows ? S8Kernel::gemv : S8Kernel::dp4a;
}
}  // namespace

// a: (m, k) u8  packed: w (k, n) -> one of y_f32, y_u8, y_i32: (m, n)
void DeviceBackend::gemm_s8(float* y_f32, uint8_t* y_u8, int32_t* y_i32, const uint8_t* a, const void* packed,
                            GemmS8Shape s, const GemmS8Epilogue& e) {
  DeviceContext& ctx = this->ctx();
  if (s.m == 0 || s.n == 0) return;
  static_assert(kS8Bm == kS8TcBm && kS8Bn == kS8TcBn, "both GEMMs tile the output alike");
  const GemmS8Layout layout(s.k, s.n);
  const auto* bytes = static_cast<const int8_t*>(packed);
  GemmS8Params p{s.m,   s.n,  s.k,   layout.kp, a, bytes + layout.wt_offset, reinterpret_cast<const int32_t*>(bytes),
                 y_f32, y_u8, y_i32, e};
  const S8Kernel kernel = gemm_s8_kernel_for(s);
  if (kernel == S8Kernel::gemv) {
    launch(gemm_s8_gemv_kernel, dim3(exact_blocks(s.n, kWarps)), dim3(kThreads), 0, ctx.stream, p);
    return;
  }
  // Column tiles on gridDim.x; row tiles on gridDim.y, at most 65535 per launch.
  constexpr int64_t kMaxRows = 65535 * static_cast<int64_t>(kS8Bm);
  for (int64_t r0 = 0; r0 < s.m; r0 += kMaxRows) {
    GemmS8Params part = p;
    part.m = s.m - r0 < kMaxRows ? s.m - r0 : kMaxRows;
    part.a = a + r0 * s.k;
    if (y_f32) part.y_f32 = y_f32 + r0 * s.n;
    if (y_u8) part.y_u8 = y_u8 + r0 * s.n;
    if (y_i32) part.y_i32 = y_i32 + r0 * s.n;
    if (e.a_per_row) {
      part.e.a_scale = e.a_scale + r0;
      if (e.a_zero) part.e.a_zero = e.a_zero + r0;
    }
    const dim3 grid(exact_blocks(s.n, kS8Bn), exact_blocks(part.m, kS8Bm));
    if (kernel == S8Kernel::tensor_cores)
      launch(gemm_s8_tc_kernel, grid, dim3(kS8TcThreads), 0, ctx.stream, part);
    else
      launch(gemm_s8_dp4a_kernel, grid, dim3(kS8Threads), 0, ctx.stream, part);
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
