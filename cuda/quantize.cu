// Launchers of quantize, dequantize (grid-stride, four elements per thread), fake_quantize
// (the two in one pass, an element per thread) and quantize_rows_dynamic (a warp per row); QAT's symmetric_scales and
// observe_range.

#include "cuda/device_backend.h"
#include "cuda/quantize.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::quantize(void* q, DType qtype, const float* x, const float* scale, const int32_t* zero,
                             int64_t rows, int64_t cols, QuantAxis axis) {
  DeviceContext& ctx = this->ctx();
  const int64_t n = rows * cols;
  if (n == 0) return;
  const dim3 grid(grid_stride_blocks(n, kThreads * kQuantVec));
  if (qtype == DType::i8)
    launch(quantize_kernel<int8_t>, grid, dim3(kThreads), 0, ctx.stream, static_cast<int8_t*>(q), x, scale, zero, rows,
           cols, axis);
  else
    launch(quantize_kernel<uint8_t>, grid, dim3(kThreads), 0, ctx.stream, static_cast<uint8_t*>(q), x, scale, zero,
           rows, cols, axis);
}

void DeviceBackend::dequantize(float* x, const void* q, DType qtype, const float* scale, const int32_t* zero,
                               int64_t rows, int64_t cols, QuantAxis axis) {
  DeviceContext& ctx = this->ctx();
  const int64_t n = rows * cols;
  if (n == 0) return;
  const dim3 grid(grid_stride_blocks(n, kThreads * kQuantVec));
  if (qtype == DType::i8)
    launch(dequantize_kernel<int8_t>, grid, dim3(kThreads), 0, ctx.stream, x, static_cast<const int8_t*>(q), scale,
           zero, rows, cols, axis);
  else
    launch(dequantize_kernel<uint8_t>, grid, dim3(kThreads), 0, ctx.stream, x, static_cast<const uint8_t*>(q), scale,
           zero, rows, cols, axis);
}

void DeviceBackend::fake_quantize(float* y, void*, DType qtype, const float* x, const float* scale, const int32_t* zero,
                                  int64_t rows, int64_t cols, QuantAxis axis) {
  DeviceContext& ctx = this->ctx();
  const int64_t n = rows * cols;
  if (n == 0) return;
  const dim3 grid(grid_stride_blocks(n, kThreads));
  if (qtype == DType::i8)
    launch(fake_quantize_kernel<int8_t>, grid, dim3(kThreads), 0, ctx.stream, y, x, scale, zero, rows, cols, axis);
  else
    launch(fake_quantize_kernel<uint8_t>, grid, dim3(kThreads), 0, ctx.stream, y, x, scale, zero, rows, cols, axis);
}

void DeviceBackend::quantize_rows_dynamic(uint8_t* q, float* scale, int32_t* zero, const float* x, int64_t rows,
                                          int64_t cols) {
  DeviceContext& ctx = this->ctx();
  if (rows == 0) return;
  launch(quantize_rows_dynamic_kernel, dim3(exact_blocks(rows, kRowsPerQuantBlock)), dim3(kThreads), 0, ctx.stream, q,
         scale, zero, x, rows, cols);
}

void DeviceBackend::nan_rows_of_nonfinite(float* y, const float* x, int64_t rows, int64_t x_cols, int64_t y_cols) {
  DeviceContext& ctx = this->ctx();
  if (rows == 0) return;
  launch(nan_rows_of_nonfinite_kernel, dim3(exact_blocks(rows, kRowsPerQuantBlock)), dim3(kThreads), 0, ctx.stream, y,
         x, rows, x_cols, y_cols);
}

void DeviceBackend::symmetric_scales(float* scale, const float* w, int64_t rows, int64_t cols, QuantAxis axis) {
  DeviceContext& ctx = this->ctx();
  if (axis == QuantAxis::column) {
    if (cols == 0) return;
    launch(symmetric_scales_columns_kernel, dim3(exact_blocks(cols, kThreads)), dim3(kThreads), 0, ctx.stream, scale, w,
           rows, cols);
  } else {
    launch(symmetric_scales_tensor_kernel, dim3(1), dim3(kThreads), 0, ctx.stream, scale, w, rows * cols);
  }
}

void DeviceBackend::observe_range(double* range, float* scale, int32_t* zero, const float* x, int64_t n, float momentum,
                                  bool first) {
  DeviceContext& ctx = this->ctx();
  launch(observe_range_kernel, dim3(1), dim3(kThreads), 0, ctx.stream, range, scale, zero, x, n, momentum, first);
}

}  // namespace customml::CUSTOMML_CUDA_NS
