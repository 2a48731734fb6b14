// The finite check over a host float32 array: the chunks of for_each_chunk checked on
// the pool, the first chunk (in order) that holds a non-finite element giving the index.

#include "cpu/finite.h"

#include <limits>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "cpu/thread_pool.h"

namespace customml::cpu {

int64_t first_nonfinite(const float* x, int64_t n) {
  const ElementwiseKernels& k = elementwise();
  const int64_t chunks = parallel_chunk_count(n);
  if (chunks == 1) return k.first_nonfinite(x, n);
  // Every chunk is checked whole (the common case is all finite, so there is nothing to
  // stop early for); the lowest chunk with a hit holds the first index.
  std::vector<int64_t> found(static_cast<size_t>(chunks), -1);
  for_each_chunk(n, [&](int64_t c, int64_t b, int64_t e) {
    const int64_t i = k.first_nonfinite(x + b, e - b);
    found[static_cast<size_t>(c)] = i < 0 ? -1 : b + i;
  });
  for (int64_t i : found)
    if (i >= 0) return i;
  return -1;
}

// One pass over x on this thread, from one non-finite element to the next (the common
// case finds none in a single scan); a batch's activations, so no pool.
void CpuBackend::nan_rows_of_nonfinite(float* y, const float* x, int64_t rows, int64_t x_cols, int64_t y_cols) {
  const ElementwiseKernels& k = elementwise();
  for (int64_t row = 0; row < rows;) {
    const int64_t at = k.first_nonfinite(x + row * x_cols, (rows - row) * x_cols);
    if (at < 0) return;
    row += at / x_cols;
    for (int64_t j = 0; j < y_cols; ++j) y[row * y_cols + j] = std::numeric_limits<float>::quiet_NaN();
    ++row;
  }
}

}  // namespace customml::cpu
