// The bf16 GEMM on the CPU: the weight packing, the portable variant (the specification the
// SIMD variants are tested against), the run-time dispatch between variants and the
// CpuBackend ops of bf16 Dense layers.

#include "cpu/gemm_bf16.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/gemm_bf16_driver.h"
#include "cpu/thread_pool.h"

namespace customml::cpu {
namespace {

// Plain loops over a 4 x 16 tile in the order and rounding of gemm_bf16.h: std::fma (one
// rounding, as the instruction's fused add of an exact product) and the flush to zero.
struct PortableBf16 {
  static constexpr int kMr = 4;
  static constexpr int kMaxPanels = 1;
  static constexpr int kAPerPair = 2;
  using AType = float;
  template <int R, int NP>
  static void micro(int64_t pairs, const float* a, int64_t lda, const uint32_t* b, int64_t stride, float* tile) {
    float acc[R][kBf16PanelCols] = {};
    for (int64_t p = 0; p < pairs; ++p) {
      const uint32_t* bp = b + p * kBf16PanelCols;
      for (int r = 0; r < R; ++r) {
        const float even = a[r * lda + 2 * p], odd = a[r * lda + 2 * p + 1];
        for (int j = 0; j < kBf16PanelCols; ++j) {
          const float w_even = bf16_to_float(static_cast<uint16_t>(bp[j] & 0xFFFFu));
          const float w_odd = bf16_to_float(static_cast<uint16_t>(bp[j] >> 16));
          acc[r][j] = bf16_ftz(std::fma(odd, w_odd, acc[r][j]));
          acc[r][j] = bf16_ftz(std::fma(even, w_even, acc[r][j]));
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < kBf16PanelCols; ++j) tile[r * kBf16PanelCols + j] = acc[r][j];
  }
};

struct Variant {
  GemmBf16Kernel fn;
  const char* name;
};

ChosenVariant<Variant> g_variant;

const Variant kPortable{bf16_gemm__portable_4x16, "bf16_gemm__portable_4x16"};
const Variant kAmxEmulated{bf16_gemm__amxemu_16x64, "bf16_gemm__amxemu_16x64"};
#ifdef CUSTOMML_X86_KERNELS
const Variant kAmx{bf16_gemm__amx_16x64, "bf16_gemm__amx_16x64"};
const Variant kAvx2{bf16_gemm__avx2_4x16, "bf16_gemm__avx2_4x16"};
const Variant kAvx512{bf16_gemm__avx512_4x64, "bf16_gemm__avx512_4x64"};
const Variant kAvx512Bf16{bf16_gemm__avx512bf16_6x64, "bf16_gemm__avx512bf16_6x64"};
#endif

const Variant& current() { return g_variant.get(); }

// The converted x rows of this thread, grown to the largest chunk seen and then reused, so a
// steady stream of calls allocates nothing.
void* thread_a_work(int64_t k) {
  thread_local std::vector<uint64_t> work;
  const size_t need = (bf16_a_work_bytes(k) + 7) / 8;
  if (work.size() < need) work.resize(need);
  return work.data();
}

// Below this many multiply-adds a call runs on the calling thread alone: waking a worker
// costs microseconds, more than a batch-1 layer's product takes (as gemm_s8).
constexpr int64_t kBf16ParallelMinMacs = int64_t{1} << 21;
// Threads split C by columns in units of this many panels (64 columns, the widest tile):
// each element is computed by one thread, so the result does not depend on the count.
constexpr int64_t kBf16ThreadPanels = 4;

}  // namespace

size_t gemm_bf16_packed_bytes(int64_t k, int64_t n) {
  return static_cast<size_t>(bf16_panels(n) * bf16_panel_dwords(k)) * sizeof(uint32_t);
}

// w: (k, n) bf16 -> panels of [padded pairs][16] dwords
void gemm_bf16_pack(void* packed, const uint16_t* w, int64_t k, int64_t n) {
  const int64_t panels = bf16_panels(n), pairs = bf16_padded_pairs(k), stride = bf16_panel_dwords(k);
  uint32_t* dst = static_cast<uint32_t*>(packed);
  for (int64_t q = 0; q < panels; ++q)
    for (int64_t p = 0; p < pairs; ++p)
      for (int64_t j = 0; j < kBf16PanelCols; ++j) {
        const int64_t col = q * kBf16PanelCols + j, r0 = 2 * p, r1 = 2 * p + 1;
        const uint32_t lo = col < n && r0 < k ? bf16_daz(w[r0 * n + col]) : 0u;
        const uint32_t hi = col < n && r1 < k ? bf16_daz(w[r1 * n + col]) : 0u;
        dst[q * stride + p * kBf16PanelCols + j] = lo | (hi << 16);
      }
}

void bf16_gemm__portable_4x16(const GemmBf16Args& args) { gemm_bf16_blocked<PortableBf16>(args); }

void select_gemm_bf16(IsaLevel level) {
  const Variant* v = &kPortable;
  if (amx_emulation()) {
    g_variant.set(&kAmxEmulated);
    return;
  }
#ifdef CUSTOMML_X86_KERNELS
  if (level == IsaLevel::amx && has_amx_bf16() && amx_permitted()) v = &kAmx;
  // AVX512-BF16 comes with VNNI on every CPU that has it (Cooper Lake, Sapphire Rapids,
  // Zen 4): the avx512_vnni level runs it where cpuid says so.
  else if (static_cast<int>(level) >= static_cast<int>(IsaLevel::avx512_vnni) && has_avx512_bf16())
    v = &kAvx512Bf16;
  else if (static_cast<int>(level) >= static_cast<int>(IsaLevel::avx512))
    v = &kAvx512;
  else if (static_cast<int>(level) >= static_cast<int>(IsaLevel::avx2))
    v = &kAvx2;
#endif
  g_variant.set(v);
}

const char* gemm_bf16_variant() { return current().name; }

void gemm_bf16(float* y, const float* x, const void* packed, const float* bias, int64_t m, int64_t k, int64_t n,
               Activation act) {
  const Variant& v = current();
  const int64_t panels = bf16_panels(n), stride = bf16_panel_dwords(k);
  GemmBf16Args args;
  args.m = m;
  args.k = k;
  args.n = n;
  args.ldy = n;
  args.x = x;
  args.panels = static_cast<const uint32_t*>(packed);
  args.bias = bias;
  args.act = act;
  args.y = y;
  ThreadPool& pool = ThreadPool::instance();
  const int64_t units = (panels + kBf16ThreadPanels - 1) / kBf16ThreadPanels;
  const int64_t threads = pool.num_threads();
  if (threads <= 1 || units < 2 || m * n * k < kBf16ParallelMinMacs) {
    args.a_work = thread_a_work(k);
    v.fn(args);
    return;
  }
  const int tasks = static_cast<int>(units < threads ? units : threads);
  pool.parallel_for(tasks, [&](int t) {
    const int64_t first = units * t / tasks * kBf16ThreadPanels, last = units * (t + 1) / tasks * kBf16ThreadPanels;
    const int64_t c0 = first * kBf16PanelCols, c1 = bf16_min(last * kBf16PanelCols, n);
    GemmBf16Args part = args;
    part.n = c1 - c0;
    part.panels = args.panels + first * stride;
    part.y = y + c0;
    if (bias) part.bias = bias + c0;
    part.a_work = thread_a_work(k);
    v.fn(part);
  });
}

size_t CpuBackend::dense_bf16_packed_bytes(int64_t in, int64_t out) { return cpu::gemm_bf16_packed_bytes(in, out); }

void CpuBackend::dense_bf16_pack(void* packed, const uint16_t* w, int64_t in, int64_t out) {
  cpu::gemm_bf16_pack(packed, w, in, out);
}

// x: (batch, in) f32  packed: w (in, out) bf16  b: (out) -> y (batch, out)
void CpuBackend::dense_forward_bf16(float* y, const float* x, const void* packed, const float* b, DenseShape s,
                                    Activation act) {
  cpu::gemm_bf16(y, x, packed, b, s.batch, s.in, s.out, act);
}

}  // namespace customml::cpu
