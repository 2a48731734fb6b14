// Softmax cross-entropy on the CPU: loss and gradient in one kernel per row; the
// probabilities are never stored (the kernels are in cpu/elementwise_kernels.h).

#include <algorithm>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "cpu/row_pieces.h"
#include "cpu/thread_pool.h"

namespace customml::cpu {

// logits: (batch, classes)  labels: (batch)  class_weights: (classes) or null
// row_weights: (batch) or null -> grad: (batch, classes) or null; loss (1) =
// sum_i w_i l_i / sum_i w_i, where l_i = -sum_c q_ic log softmax(logits_i)_c,
// q_i = (1 - eps) onehot(label_i) + eps / classes and w_i = class_weights[label_i]
// row_weights[i] (a missing factor is 1).
//
// Rows are independent, so large batches are cut into pieces of about kParallelChunk
// elements (whole rows), spread over the pool; the pieces depend on the shape alone and
// their loss sums are added in piece order, so the result is the same for every thread
// count.
void CpuBackend::softmax_cross_entropy(float* grad, double* loss, const float* logits, const int32_t* labels,
                                       const float* class_weights, const float* row_weights, int64_t batch,
                                       int64_t classes, float label_smoothing) {
  double total_weight = 0.0;
  for (int64_t i = 0; i < batch; ++i)
    total_weight += (class_weights ? static_cast<double>(class_weights[labels[i]]) : 1.0) *
                    (row_weights ? static_cast<double>(row_weights[i]) : 1.0);
  // Every weight zero: the mean is defined as 0 with a zero gradient.
  const double inv_total = total_weight > 0.0 ? 1.0 / total_weight : 0.0;
  const ElementwiseKernels& k = elementwise();
  if (parallel_chunk_count(batch * classes) == 1) {
    *loss = k.softmax_cross_entropy(grad, logits, labels, class_weights, row_weights, batch, classes, label_smoothing,
                                    inv_total) *
            inv_total;
    return;
  }
  const int64_t rows = std::max<int64_t>(1, kParallelChunk / classes);
  const int64_t pieces = (batch + rows - 1) / rows;
  std::vector<double> partial(static_cast<size_t>(pieces));
  ThreadPool::instance().parallel_for(static_cast<int>(pieces), [&](int p) {
    const int64_t begin = p * rows, n = std::min(rows, batch - begin);
    partial[static_cast<size_t>(p)] = k.softmax_cross_entropy(
        grad ? grad + begin * classes : nullptr, logits + begin * classes, labels + begin, class_weights,
        row_weights ? row_weights + begin : nullptr, n, classes, label_smoothing, inv_total);
  });
  double sum = 0.0;
  for (double l : partial) sum += l;
  *loss = sum * inv_total;
}

}  // namespace customml::cpu

namespace customml::cpu {

// logits, targets: (batch, classes)  row_weights: (batch) or null -> grad: (batch,
// classes) or null; loss (1) = sum_i w_i l_i / sum_i w_i, l_i = -sum_c targets_ic log
// softmax(logits_i)_c (cpu/soft_target_kernels.h).
void CpuBackend::softmax_cross_entropy_soft(float* grad, double* loss, const float* logits, const float* targets,
                                            const float* row_weights, int64_t batch, int64_t classes) {
  const double inv_total = inverse_row_weight_total(row_weights, batch);
  const ElementwiseKernels& k = elementwise();
  *loss = inv_total * sum_row_pieces(batch, classes, [&](int64_t begin, int64_t n) {
            const int64_t at = begin * classes;
            return k.softmax_cross_entropy_soft(grad ? grad + at : nullptr, logits + at, targets + at,
                                                row_weights ? row_weights + begin : nullptr, n, classes, inv_total);
          });
}

}  // namespace customml::cpu
