// Launchers of the pruned dense layer's forward passes over CSR and N:M weights.

#include "cuda/device_backend.h"
#include "cuda/sparse.cuh"

namespace customml::CUSTOMML_CUDA_NS {

namespace {
// Output units on gridDim.x; batch tiles on gridDim.y, at most 65535 per launch.
template <class Matrix>
void sparse_forward(DeviceContext& ctx, void (*kernel)(float*, const float*, Matrix, const float*, int64_t, Activation),
                    float* y, const float* x, const Matrix& w, const float* b, int64_t batch, Activation act) {
  if (batch == 0 || w.out == 0) return;
  constexpr int64_t kMaxRows = 65535 * static_cast<int64_t>(kSparseRows);
  for (int64_t r0 = 0; r0 < batch; r0 += kMaxRows) {
    const int64_t rows = batch - r0 < kMaxRows ? batch - r0 : kMaxRows;
    launch(kernel, dim3(exact_blocks(w.out, kSparseCols), exact_blocks(rows, kSparseRows)),
           dim3(kSparseCols, kSparseThreadRows), 0, ctx.stream, y + r0 * w.out, x + r0 * w.in, w, b, rows, act);
  }
}
}  // namespace

void DeviceBackend::sparse_dense_forward(float* y, const float* x, const CsrMatrix& w, const float* b, int64_t batch,
                                         Activation act) {
  DeviceContext& ctx = this->ctx();
  if (batch > 0 && batch <= kSparseRowsPerThread && w.out > 0) {
    launch(sparse_dense_forward_warp_kernel, dim3(exact_blocks(w.out, kWarps)), dim3(kThreads), 0, ctx.stream, y, x, w,
           b, batch, act);
    return;
  }
  sparse_forward(ctx, sparse_dense_forward_kernel, y, x, w, b, batch, act);
}

void DeviceBackend::nm_dense_forward(float* y, const float* x, const NmMatrix& w, const float* b, int64_t batch,
                                     Activation act) {
  DeviceContext& ctx = this->ctx();
  sparse_forward(ctx, nm_dense_forward_kernel, y, x, w, b, batch, act);
}

}  // namespace customml::CUSTOMML_CUDA_NS
