#pragma once
// Defines: sum_row_pieces, how the row-wise losses (soft-label cross-entropy,
// distillation) spread a batch over the thread pool reproducibly.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/thread_pool.h"

namespace customml::cpu {

// Calls rows(begin, count) -> a partial sum, over pieces of whole rows of about
// kParallelChunk elements spread over the pool (one piece below kParallelMinElements),
// and returns the partial sums added in piece order. The pieces depend on the shape
// alone, so the result is the same for every thread count.
template <class Rows>
double sum_row_pieces(int64_t batch, int64_t classes, Rows&& rows) {
  if (parallel_chunk_count(batch * classes) == 1) return rows(int64_t{0}, batch);
  const int64_t per = std::max<int64_t>(1, kParallelChunk / classes);
  const int64_t pieces = (batch + per - 1) / per;
  std::vector<double> partial(static_cast<size_t>(pieces));
  ThreadPool::instance().parallel_for(static_cast<int>(pieces), [&](int p) {
    const int64_t begin = p * per;
    partial[static_cast<size_t>(p)] = rows(begin, std::min(per, batch - begin));
  });
  double sum = 0.0;
  for (double v : partial) sum += v;
  return sum;
}

// The total weight W = sum_i row_weights[i] (batch without weights) in float64, in
// order, and 1 / W (0 when every weight is 0: the mean is then 0 with a zero gradient).
inline double inverse_row_weight_total(const float* row_weights, int64_t batch) {
  double total = static_cast<double>(batch);
  if (row_weights) {
    total = 0.0;
    for (int64_t i = 0; i < batch; ++i) total += static_cast<double>(row_weights[i]);
  }
  return total > 0.0 ? 1.0 / total : 0.0;
}

}  // namespace customml::cpu
