// The int8 GEMM on the CPU: the weight packing, the portable variant (the specification
// the SIMD variants are tested against), the run-time dispatch between variants and the
// CpuBackend ops.

#include "cpu/gemm_s8.h"

#include <cstring>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/gemm_s8_driver.h"
#include "cpu/thread_pool.h"

namespace customml::cpu {
namespace {

// Plain integer loops over a 4 x 16 tile read from the codes in place, sums in the
// layout's group order; int32 is exact for k <= kGemmS8MaxK, so every variant's result is
// bit-identical to this one.
struct PortableS8 {
  static constexpr int kMr = 4;
  static constexpr int kMaxPanels = 1;
  static constexpr bool kPacksA = false;
  using AType = uint8_t;
  template <int R, int NP>
  static void micro(int64_t groups, const uint8_t* a, int64_t lda, const int8_t* b, int64_t stride, int32_t* tile) {
    int32_t acc[R][kS8PanelCols] = {};
    for (int64_t g = 0; g < groups; ++g) {
      const int8_t* bg = b + g * 4 * kS8PanelCols;
      for (int r = 0; r < R; ++r) {
        const uint8_t* ar = a + r * lda + g * 4;
        for (int j = 0; j < kS8PanelCols; ++j)
          for (int t = 0; t < 4; ++t) acc[r][j] += static_cast<int32_t>(ar[t]) * static_cast<int32_t>(bg[4 * j + t]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < kS8PanelCols; ++j) tile[r * kS8PanelCols + j] = acc[r][j];
  }
};

struct Variant {
  GemmS8Kernel fn;
  const char* name;
};

ChosenVariant<Variant> g_variant;

const Variant kPortable{s8_gemm__portable_4x16, "s8_gemm__portable_4x16"};
const Variant kAmxEmulated{s8_gemm__amxemu_16x64, "s8_gemm__amxemu_16x64"};
#ifdef CUSTOMML_X86_KERNELS
const Variant kAmx{s8_gemm__amx_16x64, "s8_gemm__amx_16x64"};
const Variant kAvx2{s8_gemm__avx2_6x16, "s8_gemm__avx2_6x16"};
const Variant kAvx512Vnni{s8_gemm__avx512vnni_6x64, "s8_gemm__avx512vnni_6x64"};
#endif

const Variant& current() { return g_variant.get(); }

// The staged or packed A rows of this thread, grown to the largest chunk seen and then
// reused, so a steady stream of calls allocates nothing.
void* thread_a_work(int64_t k) {
  thread_local std::vector<int16_t> work;
  const size_t need = (s8_a_work_bytes(k) + 1) / 2;
  if (work.size() < need) work.resize(need);
  return work.data();
}

// Below this many multiply-adds a call runs on the calling thread alone: waking a worker
// costs microseconds, more than a batch-1 layer's product takes.
constexpr int64_t kS8ParallelMinMacs = int64_t{1} << 21;
// Threads split C by columns in units of this many panels (64 columns, the widest tile):
// each element is computed by one thread, so the result does not depend on the count.
constexpr int64_t kS8ThreadPanels = 4;

}  // namespace

size_t gemm_s8_packed_bytes(int64_t k, int64_t n) {
  return static_cast<size_t>(s8_panels(n) * (s8_panel_bytes(k) + kS8PanelCols * int64_t{sizeof(int32_t)}));
}

// w: (k, n) i8 -> packed panels, then colsum (n rounded up to 16) int32
void gemm_s8_pack(void* packed, const int8_t* w, int64_t k, int64_t n) {
  const int64_t groups = s8_groups(k), panels = s8_panels(n), stride = s8_panel_bytes(k);
  int8_t* dst = static_cast<int8_t*>(packed);
  int32_t* colsum = reinterpret_cast<int32_t*>(dst + panels * stride);
  for (int64_t p = 0; p < panels; ++p) {
    int8_t* panel = dst + p * stride;
    for (int64_t j = 0; j < kS8PanelCols; ++j) {
      const int64_t col = p * kS8PanelCols + j;
      int32_t sum = 0;
      for (int64_t gi = 0; gi < groups; ++gi)
        for (int64_t t = 0; t < 4; ++t) {
          const int64_t row = gi * 4 + t;
          const int8_t v = row < k && col < n ? w[row * n + col] : int8_t{0};
          panel[gi * 4 * kS8PanelCols + 4 * j + t] = v;
          sum += v;
        }
      colsum[col] = sum;
    }
  }
}

void s8_gemm__portable_4x16(const GemmS8Args& args) { gemm_s8_blocked<PortableS8>(args); }

void select_gemm_s8(IsaLevel level) {
  const Variant* v = &kPortable;
  if (amx_emulation()) {
    g_variant.set(&kAmxEmulated);
    return;
  }
#ifdef CUSTOMML_X86_KERNELS
  if (level == IsaLevel::amx && amx_permitted())
    v = &kAmx;
  else if (static_cast<int>(level) >= static_cast<int>(IsaLevel::avx512_vnni))
    v = &kAvx512Vnni;
  else if (static_cast<int>(level) >= static_cast<int>(IsaLevel::avx2))
    v = &kAvx2;
#endif
  g_variant.set(v);
}

const char* gemm_s8_variant() { return current().name; }

void gemm_s8(float* y_f32, uint8_t* y_u8, int32_t* y_i32, const uint8_t* a, const void* packed, GemmS8Shape s,
             const GemmS8Epilogue& e) {
  const Variant& v = current();
  const int64_t panels = s8_panels(s.n), stride = s8_panel_bytes(s.k);
  GemmS8Args args;
  args.m = s.m;
  args.k = s.k;
  args.n = s.n;
  args.ldy = s.n;
  args.a = a;
  args.panels = static_cast<const int8_t*>(packed);
  args.colsum = reinterpret_cast<const int32_t*>(args.panels + panels * stride);
  args.y_f32 = y_f32;
  args.y_u8 = y_u8;
  args.y_i32 = y_i32;
  args.e = e;
  ThreadPool& pool = ThreadPool::instance();
  const int64_t units = (panels + kS8ThreadPanels - 1) / kS8ThreadPanels;
  const int64_t threads = pool.num_threads();
  if (threads <= 1 || units < 2 || s.m * s.n * s.k < kS8ParallelMinMacs) {
    args.a_work = thread_a_work(s.k);
    v.fn(args);
    return;
  }
  const int tasks = static_cast<int>(units < threads ? units : threads);
  pool.parallel_for(tasks, [&](int t) {
    const int64_t first = units * t / tasks * kS8ThreadPanels, last = units * (t + 1) / tasks * kS8ThreadPanels;
    const int64_t c0 = first * kS8PanelCols, c1 = s8_min(last * kS8PanelCols, s.n);
    GemmS8Args part = args;
    part.n = c1 - c0;
    part.panels = args.panels + first * stride;
    part.colsum = args.colsum + c0;
    if (y_f32) part.y_f32 = y_f32 + c0;
    if (y_u8) part.y_u8 = y_u8 + c0;
    if (y_i32) part.y_i32 = y_i32 + c0;
    if (e.w_per_channel) part.e.w_scale = e.w_scale + c0;
    if (e.bias) part.e.bias = e.bias + c0;
    part.a_work = thread_a_work(s.k);
    v.fn(part);
  });
}

size_t CpuBackend::gemm_s8_packed_bytes(int64_t k, int64_t n) { return cpu::gemm_s8_packed_bytes(k, n); }

void CpuBackend::gemm_s8_pack(void* packed, const int8_t* w, int64_t k, int64_t n) {
  cpu::gemm_s8_pack(packed, w, k, n);
}

// a: (m, k) u8  packed w: (k, n) -> y (m, n)
void CpuBackend::gemm_s8(float* y_f32, uint8_t* y_u8, int32_t* y_i32, const uint8_t* a, const void* packed,
                         GemmS8Shape s, const GemmS8Epilogue& e) {
  cpu::gemm_s8(y_f32, y_u8, y_i32, a, packed, s, e);
}

}  // namespace customml::cpu
