// Binary cross-entropy on logits, with its gradient, on the CPU.

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"

namespace customml::cpu {

// logits, targets: (rows, cols)  row_weights: (rows) or null -> grad: (rows, cols) or
// null; loss (1) = sum_ij w_i l_ij / (cols W), W = sum_i w_i (w_i = 1 without weights), with
// l = max(z, 0) - z t + log1p(exp(-|z|)), which never overflows, and
// dL/dz_ij = w_i (sigmoid(z_ij) - t_ij) / (cols W).
void CpuBackend::binary_cross_entropy_with_logits(float* grad, double* loss, const float* logits, const float* targets,
                                                  const float* row_weights, int64_t rows, int64_t cols) {
  *loss = elementwise().binary_cross_entropy_with_logits(grad, logits, targets, row_weights, rows, cols);
}

}  // namespace customml::cpu
