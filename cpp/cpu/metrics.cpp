// The metrics' per-batch statistics on the CPU: the rows predicted right (accuracy), a
// confusion matrix for classification, column sums for regression. count_correct runs
// the ISA level's kernel (cpu/elementwise_kernels.h); the other two are plain loops:
// they run once per batch over the outputs, a small fraction of a training step, and as
// the specification of the CUDA kernels they read as one.

#include <cmath>

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"

namespace customml::cpu {

// logits: (batch, classes)  labels: (batch) -> correct += the rows predicted right (first
// maximum wins, as numpy.argmax; one column: (logit > 0) == (label != 0)).
void CpuBackend::count_correct(int64_t* correct, const float* logits, const int32_t* labels, int64_t batch,
                               int64_t classes) {
  *correct += elementwise().count_correct(logits, labels, batch, classes);
}

// logits: (batch, k)  labels: (batch) -> counts: (classes, classes) += 1 at
// [label, prediction]; the prediction is the first maximal logit (numpy.argmax, as
// count_correct) or, with k == 1, logit > 0 (classes = 2).
void CpuBackend::confusion_matrix_update(int64_t* counts, const float* logits, const int32_t* labels, int64_t batch,
                                         int64_t k) {
  const int64_t classes = k == 1 ? 2 : k;
  for (int64_t i = 0; i < batch; ++i) {
    const float* row = logits + i * k;
    int64_t pred = 0;
    if (k == 1) {
      pred = row[0] > 0.0f;
    } else {
      for (int64_t c = 1; c < k; ++c)
        if (row[c] > row[pred]) pred = c;
    }
    ++counts[labels[i] * classes + pred];
  }
}

// pred, target: (batch, outputs)  shift: (outputs) -> stats: (4, outputs) += per column
// [sum |e|, sum e^2, sum d, sum d^2] with e = pred - target and d = target - shift in
// float64.
void CpuBackend::regression_stats_update(double* stats, const float* pred, const float* target, const double* shift,
                                         int64_t batch, int64_t outputs) {
  double* abs_err = stats;
  double* sq_err = stats + outputs;
  double* sum_y = stats + 2 * outputs;
  double* sum_y2 = stats + 3 * outputs;
  for (int64_t i = 0; i < batch; ++i)
    for (int64_t j = 0; j < outputs; ++j) {
      const double y = target[i * outputs + j];
      const double e = static_cast<double>(pred[i * outputs + j]) - y;
      const double d = y - shift[j];
      abs_err[j] += std::fabs(e);
      sq_err[j] += e * e;
      sum_y[j] += d;
      sum_y2[j] += d * d;
    }
}

// sum (1) += value (1) * weight
void CpuBackend::accumulate(double* sum, const double* value, double weight, const StepState* gate) {
  if (!(gate && gate->skip != 0.0)) *sum += *value * weight;
}

}  // namespace customml::cpu
