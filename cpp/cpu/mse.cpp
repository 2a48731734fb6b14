// Mean squared error with its gradient on the CPU.

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"

namespace customml::cpu {

// pred, target: (rows, cols)  row_weights: (rows) or null -> grad: (rows, cols) or null;
// loss (1) = sum_ij w_i d_ij^2 / (cols W) with d = pred - target, W = sum_i w_i (w_i = 1
// without weights: the mean over all elements), and dL/dpred_ij = 2 w_i d_ij / (cols W).
void CpuBackend::mse(float* grad, double* loss, const float* pred, const float* target, const float* row_weights,
                     int64_t rows, int64_t cols) {
  *loss = elementwise().mse(grad, pred, target, row_weights, rows, cols);
}

}  // namespace customml::cpu
