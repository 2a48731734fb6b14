// Launchers of the dense layer: the tiled GEMM with its epilogue, and the backward pass.

#include "cuda/dense.cuh"
#include "cuda/device_backend.h"

namespace customml::CUSTOMML_CUDA_NS {
namespace {
// Column tiles on gridDim.x (up to 2^31 - 1); row tiles on gridDim.y, whose limit of
// 65535 is met by launching at most that many row tiles at a time.
void gemm(DeviceContext& ctx, const GemmParams& p, Precision precision) {
  static_assert(kGemmBm == kTcBm && kGemmBn == kTcBn, "both GEMMs tile C alike");
  constexpr int64_t kMaxRows = 65535 * static_cast<int64_t>(kGemmBm);
  for (int64_t r0 = 0; r0 < p.m; r0 += kMaxRows) {
    GemmParams part = p;
    part.m = p.m - r0 < kMaxRows ? p.m - r0 : kMaxRows;
    part.a = p.a + r0 * p.a_rs;
    part.c = p.c + r0 * p.ldc;
    if (p.preact) part.preact = p.preact + r0 * p.ldc;
    const dim3 grid(exact_blocks(p.n, kGemmBn), exact_blocks(part.m, kGemmBm));
    switch (precision) {
      case Precision::fp32: launch(gemm_kernel, grid, dim3(kGemmThreads), 0, ctx.stream, part); break;
      case Precision::tf32:
        launch(gemm_tc_kernel<nvcuda::wmma::precision::tf32>, grid, dim3(kTcThreads), 0, ctx.stream, part);
        break;
      case Precision::bf16: launch(gemm_tc_kernel<__nv_bfloat16>, grid, dim3(kTcThreads), 0, ctx.stream, part); break;
      case Precision::fp16: launch(gemm_tc_kernel<__half>, grid, dim3(kTcThreads), 0, ctx.stream, part); break;
    }
  }
}
}  // namespace

// x: (batch, in)  w: (in, out)  b: (out) -> y: (batch, out), z: (batch, out) optional
void DeviceBackend::dense_forward(float* y, float* z, const float* x, const float* w, const float* b, DenseShape s,
                                  Activation act) {
  DeviceContext& ctx = this->ctx();
  if (s.batch == 0) return;
  gemm(ctx, {s.batch, s.out, s.in, x, s.in, 1, w, s.out, 1, y, s.out, b, act, z}, s.precision);
}

// dy, y, z: (batch, out)  x: (batch, in)  w: (in, out) -> dx (batch, in), dw (in, out), db (out);
// dx, or dw and db together (a frozen layer), may be null and are then skipped.
void DeviceBackend::dense_backward(float* dx, float* dw, float* db, float* dz, const float* dy, const float* x,
                                   const float* w, const float* y, const float* z, DenseShape s, Activation act) {
  DeviceContext& ctx = this->ctx();
  const int64_t count = s.batch * s.out;
  if (count > 0)
    launch(dense_dz_kernel, dim3(grid_stride_blocks(count, kThreads)), dim3(kThreads), 0, ctx.stream, dz, dy, y, z,
           count, act);
  if (dw) {
    launch(dense_db_kernel, dim3(exact_blocks(s.out, kThreads)), dim3(kThreads), 0, ctx.stream, db,
           static_cast<const float*>(dz), s.batch, s.out);
    // dw (in, out) = x^T (in, batch) . dz (batch, out); with batch 0, the bias-free epilogue writes zeros
    gemm(ctx, {s.in, s.out, s.batch, x, 1, s.in, dz, s.out, 1, dw, s.out, nullptr, Activation::identity, nullptr},
         s.precision);
  }
  // dx (batch, in) = dz (batch, out) . w^T (out, in)
  if (dx && s.batch > 0)
    gemm(ctx, {s.batch, s.in, s.out, dz, s.out, 1, w, 1, s.out, dx, s.in, nullptr, Activation::identity, nullptr},
         s.precision);
}

}  // namespace customml::CUSTOMML_CUDA_NS
