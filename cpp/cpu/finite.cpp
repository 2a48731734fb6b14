// The finite check over a host float32 array: the chunks of for_each_chunk checked on
// the pool, the first chunk (in order) that holds a non-finite element giving the index.

#include "cpu/finite.h"

#include <vector>

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

}  // namespace customml::cpu
