// The portable float32 GEMM (the specification the SIMD variants are tested
// against) and the run-time dispatch between variants.

#include "cpu/gemm.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "cpu/gemm_driver.h"
#include "cpu/thread_pool.h"

namespace customml::cpu {
namespace {

constexpr int kPortableMr = 4;
constexpr int kPortableNr = 16;

// Plain loops over a 4 x 16 accumulator block: with the baseline ISA the compiler
// turns the inner loop into SSE multiply-adds; the rounding is that of separate
// multiply and add, which the FMA variants differ from by at most one rounding per
// product (the tests' tolerance accounts for that).
void micro_portable(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate) {
  float acc[kPortableMr][kPortableNr];
  for (int i = 0; i < kPortableMr; ++i)
    for (int j = 0; j < kPortableNr; ++j) acc[i][j] = accumulate ? c[i * ldc + j] : 0.0f;
  for (int64_t p = 0; p < kc; ++p) {
    const float* bp = b + p * kPortableNr;
    for (int i = 0; i < kPortableMr; ++i) {
      const float ai = a[p * kPortableMr + i];
      for (int j = 0; j < kPortableNr; ++j) acc[i][j] += ai * bp[j];
    }
  }
  for (int i = 0; i < kPortableMr; ++i)
    for (int j = 0; j < kPortableNr; ++j) c[i * ldc + j] = acc[i][j];
}

// 1 <= m < 4 rows of C, one 16-column panel of B at a time for all rows, with
// micro_portable's separate multiply and add so the bits match the tiled path.
void small_m_portable(const GemmArgs& g, const BPanels& bp) {
  const int64_t panels = (g.n + kPortableNr - 1) / kPortableNr;
  for (int64_t q = 0; q < panels; ++q) {
    const int64_t j0 = (g.reverse_columns ? panels - 1 - q : q) * kPortableNr;
    const int64_t cols = j0 + kPortableNr <= g.n ? kPortableNr : g.n - j0;
    const float* b = bp.base + (j0 / kPortableNr) * bp.panel_stride;
    float acc[kPortableMr - 1][kPortableNr] = {};
    for (int64_t p = 0; p < g.k; ++p) {
      const float* bp_row = b + p * bp.row_stride;
      for (int64_t i = 0; i < g.m; ++i) {
        const float ai = g.a[i * g.a_rs + p * g.a_cs];
        for (int64_t t = 0; t < cols; ++t) acc[i][t] += ai * bp_row[t];
      }
    }
    for (int64_t i = 0; i < g.m; ++i) std::memcpy(g.c + i * g.ldc + j0, acc[i], sizeof(float) * cols);
    epilogue(g, 0, j0, g.m, cols);
  }
}

struct Variant {
  GemmKernel fn;
  const char* name;
  int nr;  // the microkernel's panel width, which pre-packed B must match
};

ChosenVariant<Variant> g_variant;

const Variant kPortable{f32_gemm__portable_4x16, "f32_gemm__portable_4x16", kPortableNr};
#ifdef CUSTOMML_X86_KERNELS
const Variant kAvx2{f32_gemm__avx2_6x16, "f32_gemm__avx2_6x16", 16};
const Variant kAvx512{f32_gemm__avx512_12x32, "f32_gemm__avx512_12x32", 32};
#endif

const Variant& current() { return g_variant.get(); }

struct AlignedDeleter {
  void operator()(float* p) const { std::free(p); }
};

float* aligned_floats(int64_t n) {
  void* p = std::aligned_alloc(64, static_cast<size_t>(n) * sizeof(float));
  if (!p) throw std::bad_alloc();
  return static_cast<float*>(p);
}

// Packing buffers: one pair per thread, allocated on first use and reused by every
// later call, so no GEMM allocates on the hot path.
const GemmWorkspace& thread_workspace() {
  thread_local std::unique_ptr<float, AlignedDeleter> a(aligned_floats(kMc * kKc));
  thread_local std::unique_ptr<float, AlignedDeleter> b(aligned_floats(kKc * kNc));
  thread_local GemmWorkspace ws{a.get(), b.get()};
  return ws;
}

}  // namespace

void f32_gemm__portable_4x16(const GemmArgs& args, const GemmWorkspace& ws) {
  gemm_blocked<kPortableMr, kPortableNr>(args, ws, micro_portable, small_m_portable);
}

void select_gemm_f32(IsaLevel level) {
  const Variant* v = &kPortable;
#ifdef CUSTOMML_X86_KERNELS
  if (static_cast<int>(level) >= static_cast<int>(IsaLevel::avx512))
    v = &kAvx512;
  else if (level == IsaLevel::avx2)
    v = &kAvx2;
#endif
  g_variant.set(v);
}

// Below this many multiply-adds a GEMM runs on the calling thread alone: waking a worker
// costs tens of microseconds, more than a small product (a batch-1 layer) takes...
constexpr int64_t kParallelMinMacs = int64_t{1} << 20;
// ...unless B is this large (512 KiB of float32) and a worker is awake anyway: a few rows
// against a large B (batch-1 inference) are bound by reading B, and split by columns each
// thread reads half of it, from its own core's L2 when calls come back to back. A job's
// hand-over costs about a microsecond, what half of a smaller B takes to read.
constexpr int64_t kParallelMinBFloats = int64_t{1} << 17;

// Threads split C by columns, in whole NR-wide micro-panels (NR = 32 divides every
// variant's): every element is computed by one thread with the same sum order, so the
// result does not depend on the thread count.
void gemm_f32(const GemmArgs& args) {
  const Variant& v = current();
  ThreadPool& pool = ThreadPool::instance();
  constexpr int64_t kPanel = 32;
  const int64_t panels = (args.n + kPanel - 1) / kPanel;
  const int64_t macs = args.m * args.n * args.k;
  const int64_t threads = pool.num_threads();
  const bool small = macs < kParallelMinMacs;
  if (threads <= 1 || panels < 2 || (small && args.k * args.n < kParallelMinBFloats)) {
    v.fn(args, thread_workspace());
    return;
  }
  struct Split {
    const Variant& v;
    const GemmArgs& args;
    int64_t panels;
    int tasks;
  } split{v, args, panels, static_cast<int>(panels < threads ? panels : threads)};
  // One captured reference: std::function keeps it without allocating (inference path).
  const auto task = [&split](int t) {
    const GemmArgs& args = split.args;
    const int64_t panels = split.panels, tasks = split.tasks;
    const int64_t first = panels * t / tasks * kPanel, last = panels * (t + 1) / tasks * kPanel;
    GemmArgs part = args;
    part.n = (last < args.n ? last : args.n) - first;
    part.b = args.b + first * args.b_cs;
    part.c = args.c + first;
    // first is a multiple of every NR: whole panels, each k rows long.
    if (args.packed_b) part.packed_b = args.packed_b + first * args.k;
    if (args.bias) part.bias = args.bias + first;
    if (args.preact) part.preact = args.preact + first;
    split.v.fn(part, thread_workspace());
  };
  if (small)
    pool.parallel_for_if_awake(split.tasks, task);
  else
    pool.parallel_for(split.tasks, task);
}

const char* gemm_f32_variant() { return current().name; }

int64_t gemm_f32_packed_floats(int64_t k, int64_t n) {
  const int64_t nr = current().nr;
  return (n + nr - 1) / nr * nr * k;
}

// Panel q holds columns q NR .. q NR + NR - 1 for every row p at [q NR k + p NR], zero
// past n: the layout gemm_blocked's microkernels read a packed panel in.
int gemm_f32_pack_b(float* dst, const float* b, int64_t k, int64_t n) {
  const int nr = current().nr;
  for (int64_t j0 = 0; j0 < n; j0 += nr) {
    const int64_t cols = n - j0 < nr ? n - j0 : nr;
    for (int64_t p = 0; p < k; ++p) {
      float* d = dst + j0 * k + p * nr;
      for (int64_t j = 0; j < cols; ++j) d[j] = b[p * n + j0 + j];
      for (int64_t j = cols; j < nr; ++j) d[j] = 0.0f;
    }
  }
  return nr;
}

}  // namespace customml::cpu
