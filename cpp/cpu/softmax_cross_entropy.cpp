// Softmax cross-entropy on the CPU: loss and gradient in one kernel per row; the
// probabilities are recomputed where the gradient is written, never stored.

#include <cmath>

#include "cpu/cpu_backend.h"

namespace customml::cpu {

// logits: (batch, classes)  labels: (batch)  class_weights: (classes) or null
// -> grad: (batch, classes) or null; returns sum_i w_i l_i / sum_i w_i, where
// l_i = -sum_c q_ic log softmax(logits_i)_c, q_i = (1 - eps) onehot(label_i) + eps / classes
// and w_i = class_weights[label_i] (1 without weights).
double CpuBackend::softmax_cross_entropy(float* grad, const float* logits, const int32_t* labels,
                                         const float* class_weights, int64_t batch,
                                         int64_t classes, float label_smoothing) {
  double total_weight = 0.0;
  for (int64_t i = 0; i < batch; ++i) total_weight += class_weights ? class_weights[labels[i]] : 1.0;
  // Every weight zero: the mean is defined as 0 with a zero gradient.
  const double inv_total = total_weight > 0.0 ? 1.0 / total_weight : 0.0;
  const float off = label_smoothing / static_cast<float>(classes);
  const float on = 1.0f - label_smoothing + off;
  double loss = 0.0;
  for (int64_t i = 0; i < batch; ++i) {
    const float* row = logits + i * classes;
    const int32_t y = labels[i];
    // Shifting by the row maximum keeps exp() in (0, 1]: stable for logits of +-1e4.
    float mx = row[0];
    for (int64_t c = 1; c < classes; ++c) mx = row[c] > mx ? row[c] : mx;
    double sum = 0.0, sum_shifted = 0.0;
    for (int64_t c = 0; c < classes; ++c) {
      const float d = row[c] - mx;
      sum += std::exp(d);
      sum_shifted += d;
    }
    const double log_sum = std::log(sum);
    // -sum_c q_c (d_c - log_sum) = log_sum - (1 - eps) d_y - (eps / C) sum_c d_c
    const double row_loss = log_sum - (1.0 - label_smoothing) * (row[y] - mx) -
                            static_cast<double>(off) * sum_shifted;
    const double w = class_weights ? class_weights[y] : 1.0;
    loss += w * row_loss;
    if (grad) {
      // dL/dlogit_c = w_i / W * (softmax_c - q_c)
      const float scale = static_cast<float>(w * inv_total);
      const float inv_sum = static_cast<float>(1.0 / sum);
      float* g = grad + i * classes;
      for (int64_t c = 0; c < classes; ++c) {
        const float p = std::exp(row[c] - mx) * inv_sum;
        g[c] = scale * (p - (c == y ? on : off));
      }
    }
  }
  return loss * inv_total;
}

// logits: (batch, classes)  labels: (batch) -> count of rows predicted right
int64_t CpuBackend::count_correct(const float* logits, const int32_t* labels, int64_t batch,
                                  int64_t classes) {
  int64_t correct = 0;
  for (int64_t i = 0; i < batch; ++i) {
    const float* row = logits + i * classes;
    if (classes == 1) {
      correct += (row[0] > 0.0f) == (labels[i] != 0);
      continue;
    }
    // First maximum wins, as numpy.argmax.
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c)
      if (row[c] > row[best]) best = c;
    correct += best == labels[i];
  }
  return correct;
}

}  // namespace customml::cpu
