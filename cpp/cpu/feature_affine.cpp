// The per-feature affine map of the preprocessing layers (Normalization, Rescaling) on the CPU.

#include "cpu/cpu_backend.h"

namespace customml::cpu {

// x: (rows, cols)  scale, shift: (cols) -> y: (rows, cols) = x * scale + shift, a float32
// product then a float32 sum (no fused multiply-add), as the ONNX Mul and Add it exports to.
// The inner loop has no dependence between columns, so the compiler vectorizes it.
void CpuBackend::feature_affine(float* y, const float* x, const float* scale, const float* shift, int64_t rows,
                                int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float p = xr[c] * scale[c];
      yr[c] = p + shift[c];
    }
  }
}

}  // namespace customml::cpu
