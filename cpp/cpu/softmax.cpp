// The output probabilities on the CPU: softmax over each row, and the logistic sigmoid,
// through the vectorized exp and sigmoid of the active ISA level (cpu/vmath.h).

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"

namespace customml::cpu {

// x: (rows, cols) -> y: (rows, cols) = e^(x - m) / sum_c e^(x_c - m), m the row's maximum
// (so no exp overflows); the sum in float64. A NaN, or +inf (inf - inf), makes its row NaN,
// as NumPy's and torch's softmax do.
void CpuBackend::softmax(float* y, const float* x, int64_t rows, int64_t cols) {
  const UnaryFn exp = elementwise().exp;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float m = xr[0];
    for (int64_t c = 1; c < cols; ++c) m = xr[c] > m ? xr[c] : m;
    for (int64_t c = 0; c < cols; ++c) yr[c] = xr[c] - m;
    exp(yr, yr, cols);
    double sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) sum += yr[c];
    const float s = static_cast<float>(sum);
    for (int64_t c = 0; c < cols; ++c) yr[c] /= s;
  }
}

// x: (n) -> y: (n) = 1 / (1 + e^-x), without overflow for any x (cpu/vmath.h: vsigmoid).
void CpuBackend::sigmoid(float* y, const float* x, int64_t n) { elementwise().sigmoid(y, x, n); }

}  // namespace customml::cpu
