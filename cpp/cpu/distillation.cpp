// The distillation loss on the CPU (Hinton, Vinyals and Dean 2015): loss and gradient in
// one kernel per row (cpu/soft_target_kernels.h), probabilities never stored.

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "cpu/row_pieces.h"

namespace customml::cpu {

// student, teacher: (batch, classes)  labels: (batch)  row_weights: (batch) or null ->
// grad: (batch, classes) or null; loss (1) = sum_i w_i l_i / sum_i w_i, l_i =
// alpha T^2 KL(softmax(teacher_i / T) || softmax(student_i / T)) + (1 - alpha)
// CE(softmax(student_i), label_i), w_i = row_weights[i] (1 without).
void CpuBackend::distillation_loss(float* grad, double* loss, const float* student, const float* teacher,
                                   const int32_t* labels, const float* row_weights, int64_t batch, int64_t classes,
                                   float temperature, float alpha) {
  const double inv_total = inverse_row_weight_total(row_weights, batch);
  const ElementwiseKernels& k = elementwise();
  *loss = inv_total * sum_row_pieces(batch, classes, [&](int64_t begin, int64_t n) {
            const int64_t at = begin * classes;
            return k.distillation_loss(grad ? grad + at : nullptr, student + at, teacher + at,
                                       labels ? labels + begin : nullptr, row_weights ? row_weights + begin : nullptr,
                                       n, classes, temperature, alpha, inv_total);
          });
}

}  // namespace customml::cpu
