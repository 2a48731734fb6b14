// Softmax cross-entropy on the CPU: loss and gradient in one kernel per row; the
// probabilities are never stored (the kernels are in cpu/elementwise_kernels.h).

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"

namespace customml::cpu {

// logits: (batch, classes)  labels: (batch)  class_weights: (classes) or null
// row_weights: (batch) or null -> grad: (batch, classes) or null; returns
// sum_i w_i l_i / sum_i w_i, where l_i = -sum_c q_ic log softmax(logits_i)_c,
// q_i = (1 - eps) onehot(label_i) + eps / classes and w_i = class_weights[label_i]
// row_weights[i] (a missing factor is 1).
double CpuBackend::softmax_cross_entropy(float* grad, const float* logits, const int32_t* labels,
                                         const float* class_weights, const float* row_weights, int64_t batch,
                                         int64_t classes, float label_smoothing) {
  return elementwise().softmax_cross_entropy(grad, logits, labels, class_weights, row_weights, batch, classes,
                                             label_smoothing);
}

// logits: (batch, classes)  labels: (batch) -> count of rows predicted right (first
// maximum wins, as numpy.argmax)
int64_t CpuBackend::count_correct(const float* logits, const int32_t* labels, int64_t batch,
                                  int64_t classes) {
  return elementwise().count_correct(logits, labels, batch, classes);
}

}  // namespace customml::cpu
