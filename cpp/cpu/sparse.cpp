// Pruned weights on the CPU: the dense layer's forward pass over CSR and N:M sparse
// kernels. The portable kernels here are the specification the SIMD tables
// (cpu/sparse_kernels.h) are tested against; this file also cuts the batch into tiles
// for the thread pool and owns the per-thread scratch.

#include "cpu/sparse.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>

#include "cpu/cpu_backend.h"
#include "cpu/sparse_kernels.h"
#include "cpu/thread_pool.h"

namespace customml::cpu {
namespace {

// x: (rows, in)  w: CSR of W^T -> y[:, j0:j1] = act(x W + b): each output sums its
// nonzeros in stored (ascending input) order, then adds the bias.
void f32_sparse_dense__portable(float* y, const float* x, const CsrMatrix& w, const float* b, int64_t rows, int64_t j0,
                                int64_t j1, Activation act, ScratchFn) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * w.in;
    float* yr = y + r * w.out;
    for (int64_t j = j0; j < j1; ++j) {
      float s = 0.0f;
      for (int64_t k = w.offsets[j]; k < w.offsets[j + 1]; ++k) s += w.values[k] * xr[w.index[k]];
      yr[j] = s;
    }
    bias_activation(yr + j0, b ? b + j0 : nullptr, j1 - j0, act);
  }
}

// x: (rows, in)  w: N:M -> y[:, j0:j1] = act(x W + b): each output sums its slots in
// slot order (group by group), unused slots included (their value is 0).
void f32_nm_dense__portable(float* y, const float* x, const NmMatrix& w, const float* b, int64_t rows, int64_t j0,
                            int64_t j1, Activation act, ScratchFn) {
  const int64_t slots = nm_groups(w) * w.n;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * w.in;
    float* yr = y + r * w.out;
    for (int64_t j = j0; j < j1; ++j) yr[j] = 0.0f;
    for (int64_t s = 0; s < slots; ++s) {
      const float* xg = xr + (s / w.n) * w.m;
      const float* v = w.values + s * w.out;
      const uint8_t* idx = w.index + s * w.out;
      for (int64_t j = j0; j < j1; ++j) yr[j] += v[j] * xg[idx[j]];
    }
    bias_activation(yr + j0, b ? b + j0 : nullptr, j1 - j0, act);
  }
}

std::atomic<const SparseKernels*> g_table{nullptr};

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

// Scratch for one thread, grown on demand and reused by every later call: the steady
// state allocates nothing.
float* thread_scratch(int64_t floats) {
  thread_local std::unique_ptr<float, FreeDeleter> buffer;
  thread_local int64_t capacity = 0;
  if (floats > capacity) {
    const size_t bytes = (static_cast<size_t>(floats) * sizeof(float) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    buffer.reset(static_cast<float*>(p));
    capacity = floats;
  }
  return buffer.get();
}

// Below this many multiply-adds a product runs on the calling thread: waking a worker
// costs microseconds, more than a batch-1 layer takes.
constexpr int64_t kParallelMinMacs = int64_t{1} << 18;

// Runs kernel over tiles of kSparseTileRows rows; when there are fewer tiles than
// threads, each tile's outputs are split too (in multiples of 16 columns). Every output
// element is computed by one task with a sum order that depends on neither the split
// nor the thread count.
template <class Kernel, class Matrix>
void run_tiles(Kernel kernel, float* y, const float* x, const Matrix& w, const float* b, int64_t batch, Activation act,
               int64_t macs) {
  if (batch == 0) return;
  const int64_t tiles = (batch + kSparseTileRows - 1) / kSparseTileRows;
  ThreadPool& pool = ThreadPool::instance();
  const int64_t threads = macs >= kParallelMinMacs ? pool.num_threads() : 1;
  const int64_t panels = (w.out + 15) / 16;
  int64_t chunks = tiles >= threads ? 1 : (threads + tiles - 1) / tiles;
  if (chunks > panels) chunks = panels;
  const auto task = [&](int t) {
    const int64_t tile = t / chunks, c = t % chunks;
    const int64_t j0 = panels * c / chunks * 16, j1_panels = panels * (c + 1) / chunks * 16;
    const int64_t j1 = j1_panels < w.out ? j1_panels : w.out;
    const int64_t r0 = tile * kSparseTileRows;
    const int64_t rows = batch - r0 < kSparseTileRows ? batch - r0 : kSparseTileRows;
    kernel(y + r0 * w.out, x + r0 * w.in, w, b, rows, j0, j1, act, thread_scratch);
  };
  const int64_t tasks = tiles * chunks;
  if (threads <= 1 || tasks == 1) {
    for (int64_t t = 0; t < tasks; ++t) task(static_cast<int>(t));
  } else {
    pool.parallel_for(static_cast<int>(tasks), task);
  }
}

}  // namespace

const SparseKernels kSparsePortable{"portable", "f32_sparse_dense__portable", "f32_nm_dense__portable",
                                    f32_sparse_dense__portable, f32_nm_dense__portable};

void select_sparse(IsaLevel level) {
  const SparseKernels* t = &kSparsePortable;
#ifdef CUSTOMML_X86_KERNELS
  if (static_cast<int>(level) >= static_cast<int>(IsaLevel::avx512))
    t = &kSparseAvx512;
  else if (level == IsaLevel::avx2)
    t = &kSparseAvx2;
#endif
  g_table.store(t, std::memory_order_release);
}

const SparseKernels& sparse_kernels() {
  const SparseKernels* t = g_table.load(std::memory_order_acquire);
  if (!t) {
    active_isa();  // the first call selects every family
    t = g_table.load(std::memory_order_acquire);
  }
  return *t;
}

// x: (batch, in)  w: CSR of W^T (in, out)  b: (out) or null -> y: (batch, out)
void CpuBackend::sparse_dense_forward(float* y, const float* x, const CsrMatrix& w, const float* b, int64_t batch,
                                      Activation act) {
  run_tiles(sparse_kernels().csr_forward, y, x, w, b, batch, act, batch * w.nnz);
}

// The packed layout is built only where a kernel reads it (AVX-512 here).
size_t CpuBackend::sparse_packed_bytes(const CsrMatrix& w) {
  return sparse_kernels().csr_packed_forward ? csr_packed_bytes(w) : 0;
}

void CpuBackend::sparse_pack(void* packed, const CsrMatrix& w) { csr_pack(packed, w); }

// x: (batch, in)  packed: W (in, out)  b: (out) or null -> y: (batch, out), for batches up to
// the kernel's packed_max_rows, and for every batch when at least half the layout's lanes
// hold a nonzero (2:4 fills them all): it then costs no more than the other paths at any
// batch (measured on Zen 5, 2:4 784 -> 256: 35 against 76 us for the N:M kernel at batch
// 16, 271 against 319 at 128; 90% random CSR, 50-58% of the lanes filled: 94 against 99 us
// for the transposed path at 784 -> 256 and batch 128, 31 against 43 at 256 -> 256). Large products split the groups of
// outputs over the threads, or the rows when there are fewer groups than threads; each output is summed by one task in
// one order whatever the split.
bool CpuBackend::sparse_dense_forward_packed(float* y, const float* x, const void* packed, const float* b,
                                             int64_t batch, Activation act) {
  const SparseKernels& k = sparse_kernels();
  if (!k.csr_packed_forward) return false;
  const CsrPacked p = csr_packed_view(packed);
  if (batch > k.packed_max_rows && 2 * p.nnz < p.lanes) return false;
  if (batch == 0) return true;
  ThreadPool& pool = ThreadPool::instance();
  const int64_t threads = batch * p.nnz >= kParallelMinMacs ? pool.num_threads() : 1;
  if (threads <= 1) {
    k.csr_packed_forward(y, x, p, b, batch, 0, p.groups, act);
  } else if (p.groups >= threads) {
    pool.parallel_for(static_cast<int>(threads), [&](int t) {
      k.csr_packed_forward(y, x, p, b, batch, p.groups * t / threads, p.groups * (t + 1) / threads, act);
    });
  } else {
    // Row ranges of even length, so that the pairs the kernel takes are the same.
    const int64_t pairs = (batch + 1) / 2;
    pool.parallel_for(static_cast<int>(threads), [&](int t) {
      const int64_t r0 = 2 * (pairs * t / threads), r1 = std::min<int64_t>(batch, 2 * (pairs * (t + 1) / threads));
      if (r1 > r0) k.csr_packed_forward(y + r0 * p.out, x + r0 * p.in, p, b, r1 - r0, 0, p.groups, act);
    });
  }
  return true;
}

// x: (batch, in)  w: N:M (in, out)  b: (out) or null -> y: (batch, out)
void CpuBackend::nm_dense_forward(float* y, const float* x, const NmMatrix& w, const float* b, int64_t batch,
                                  Activation act) {
  run_tiles(sparse_kernels().nm_forward, y, x, w, b, batch, act, batch * nm_groups(w) * w.n * w.out);
}

}  // namespace customml::cpu
