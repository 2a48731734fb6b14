// quantize, dequantize and quantize_rows_dynamic on the CPU: plain loops the compiler
// vectorizes with the baseline ISA (division, min / max, round_half_even's two adds and
// the conversions are all SSE2), and SSE2 intrinsics for the row range. Dequantizing is a
// pass over memory that the bandwidth bounds; quantizing is bound by its division, four
// lanes at a time there, so its row kernel has an AVX-512 variant (cpu/quantize.h).

#include <cmath>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "cpu/cpu_backend.h"
#include "cpu/quantize.h"
#include "cpu/quantize_math.h"
#include "cpu/thread_pool.h"
#include "moving_range.h"

namespace customml::cpu {
namespace {

struct CodeRange {
  int32_t lo, hi;
};

CodeRange code_range(DType qtype) { return qtype == DType::i8 ? CodeRange{-127, 127} : CodeRange{0, 255}; }

// x: (n) -> q: (n) codes with one scale and zero point, or (per column) scale[j], zero[j].
template <class Q>
void quantize_row(Q* q, const float* x, int64_t n, const float* scale, const int32_t* zero, bool per_column,
                  CodeRange r) {
  if (per_column) {
    for (int64_t j = 0; j < n; ++j) q[j] = static_cast<Q>(to_code(x[j] / scale[j], zero ? zero[j] : 0, r.lo, r.hi));
  } else {
    const float s = scale[0];
    const int32_t z = zero ? zero[0] : 0;
    for (int64_t j = 0; j < n; ++j) q[j] = static_cast<Q>(to_code(x[j] / s, z, r.lo, r.hi));
  }
}

template <class Q>
void dequantize_row(float* x, const Q* q, int64_t n, const float* scale, const int32_t* zero, bool per_column) {
  if (per_column) {
    for (int64_t j = 0; j < n; ++j)
      x[j] = scale[j] * static_cast<float>(static_cast<int32_t>(q[j]) - (zero ? zero[j] : 0));
  } else {
    const float s = scale[0];
    const int32_t z = zero ? zero[0] : 0;
    for (int64_t j = 0; j < n; ++j) x[j] = s * static_cast<float>(static_cast<int32_t>(q[j]) - z);
  }
}

// lo = min(lo, min x), hi = max(hi, max x) over x (n). The scalar loop is a serial chain
// that GCC does not vectorize (a float `a < b ? a : b` is not minps to it without
// -ffinite-math-only), so SSE2, the x86-64 baseline, is used directly where present.
void row_range(float* lo, float* hi, const float* x, int64_t n) {
  int64_t j = 0;
#ifdef __SSE2__
  __m128 l0 = _mm_set1_ps(*lo), l1 = l0, h0 = _mm_set1_ps(*hi), h1 = h0;
  for (; j + 8 <= n; j += 8) {
    const __m128 a = _mm_loadu_ps(x + j), b = _mm_loadu_ps(x + j + 4);
    l0 = _mm_min_ps(a, l0);
    l1 = _mm_min_ps(b, l1);
    h0 = _mm_max_ps(a, h0);
    h1 = _mm_max_ps(b, h1);
  }
  alignas(16) float lv[4], hv[4];
  _mm_store_ps(lv, _mm_min_ps(l0, l1));
  _mm_store_ps(hv, _mm_max_ps(h0, h1));
  for (int t = 0; t < 4; ++t) {
    *lo = lv[t] < *lo ? lv[t] : *lo;
    *hi = hv[t] > *hi ? hv[t] : *hi;
  }
#endif
  for (; j < n; ++j) {
    *lo = x[j] < *lo ? x[j] : *lo;
    *hi = x[j] > *hi ? x[j] : *hi;
  }
}

// Runs row_fn(i) over rows [0, rows), in parallel chunks of whole rows when the tensor is large.
template <class F>
void for_rows(int64_t rows, int64_t cols, F&& row_fn) {
  const int64_t chunks = parallel_chunk_count(rows * cols);
  const int64_t tasks = chunks < rows ? chunks : rows;
  if (tasks <= 1) {
    for (int64_t i = 0; i < rows; ++i) row_fn(i);
    return;
  }
  ThreadPool::instance().parallel_for(static_cast<int>(tasks), [&](int t) {
    for (int64_t i = rows * t / tasks; i < rows * (t + 1) / tasks; ++i) row_fn(i);
  });
}

struct Variant {
  QuantizeRowFn fn;
  const char* name;
};

const Variant kPortable{f32_quantize__portable, "f32_quantize__portable"};
#ifdef CUSTOMML_X86_KERNELS
const Variant kAvx512{f32_quantize__avx512, "f32_quantize__avx512"};
#endif

ChosenVariant<Variant> g_variant;

const Variant& current() { return g_variant.get(); }

}  // namespace

void f32_quantize__portable(void* q, bool i8, const float* x, int64_t n, const float* scale, const int32_t* zero,
                            bool per_column, int32_t lo, int32_t hi) {
  if (i8)
    quantize_row(static_cast<int8_t*>(q), x, n, scale, zero, per_column, CodeRange{lo, hi});
  else
    quantize_row(static_cast<uint8_t*>(q), x, n, scale, zero, per_column, CodeRange{lo, hi});
}

// The division bounds the portable loop (four lanes at a time with the baseline ISA), so
// the AVX-512 variant, sixteen at a time, pays; AVX2 machines keep the portable loop.
void select_quantize(IsaLevel level) {
  const Variant* v = &kPortable;
#ifdef CUSTOMML_X86_KERNELS
  if (static_cast<int>(level) >= static_cast<int>(IsaLevel::avx512)) v = &kAvx512;
#endif
  g_variant.set(v);
}

const char* quantize_variant() { return current().name; }
QuantizeRowFn quantize_row_kernel() { return current().fn; }

// x: (rows, cols) f32 -> q: (rows, cols) i8 / u8
void CpuBackend::quantize(void* q, DType qtype, const float* x, const float* scale, const int32_t* zero, int64_t rows,
                          int64_t cols, QuantAxis axis) {
  const CodeRange r = code_range(qtype);
  const bool per_row = axis == QuantAxis::row, per_column = axis == QuantAxis::column;
  const QuantizeRowFn row = quantize_row_kernel();
  const bool i8 = qtype == DType::i8;
  for_rows(rows, cols, [&](int64_t i) {
    const float* s = per_row ? scale + i : scale;
    const int32_t* z = zero && per_row ? zero + i : zero;
    row(static_cast<int8_t*>(q) + i * cols, i8, x + i * cols, cols, s, z, per_column, r.lo, r.hi);
  });
}

// q: (rows, cols) i8 / u8 -> x: (rows, cols) f32
void CpuBackend::dequantize(float* x, const void* q, DType qtype, const float* scale, const int32_t* zero, int64_t rows,
                            int64_t cols, QuantAxis axis) {
  const bool per_row = axis == QuantAxis::row, per_column = axis == QuantAxis::column;
  for_rows(rows, cols, [&](int64_t i) {
    const float* s = per_row ? scale + i : scale;
    const int32_t* z = zero && per_row ? zero + i : zero;
    if (qtype == DType::i8)
      dequantize_row(x + i * cols, static_cast<const int8_t*>(q) + i * cols, cols, s, z, per_column);
    else
      dequantize_row(x + i * cols, static_cast<const uint8_t*>(q) + i * cols, cols, s, z, per_column);
  });
}

// x: (rows, cols) -> scale, zero: (rows), q: (rows, cols) u8; two passes over each row
// (range, then codes), the row still in cache for the second.
void CpuBackend::quantize_rows_dynamic(uint8_t* q, float* scale, int32_t* zero, const float* x, int64_t rows,
                                       int64_t cols) {
  const QuantizeRowFn row = quantize_row_kernel();
  for_rows(rows, cols, [&](int64_t i) {
    const float* xi = x + i * cols;
    // The range includes 0 so that 0 (padding, ReLU outputs) is exactly representable.
    float lo = 0.0f, hi = 0.0f;
    row_range(&lo, &hi, xi, cols);
    // A range too small for (hi - lo) / 255 to be a positive float32 (all zeros, or a few
    // subnormals) takes scale 1: every code is then the zero point or next to it.
    float s = (hi - lo) / 255.0f;
    if (s == 0.0f) s = 1.0f;
    const int32_t z = to_code(-lo / s, 0, 0, 255);
    scale[i] = s;
    zero[i] = z;
    row(q + i * cols, false, xi, cols, &s, &z, false, 0, 255);
  });
}

void CpuBackend::symmetric_scales(float* scale, const float* w, int64_t rows, int64_t cols, QuantAxis axis) {
  const int64_t n_scales = axis == QuantAxis::column ? cols : 1;
  for (int64_t j = 0; j < n_scales; ++j) scale[j] = 0.0f;
  for (int64_t i = 0; i < rows; ++i) {
    const float* wi = w + i * cols;
    if (axis == QuantAxis::column) {
      // `a > m ? a : m` keeps m when a is NaN (maxps' operand order).
      for (int64_t j = 0; j < cols; ++j) {
        const float a = std::fabs(wi[j]);
        scale[j] = a > scale[j] ? a : scale[j];
      }
    } else {
      // max |w| = max(hi, -lo) over the row's range with 0, exactly.
      float lo = 0.0f, hi = 0.0f;
      row_range(&lo, &hi, wi, cols);
      const float a = hi > -lo ? hi : -lo;
      scale[0] = a > scale[0] ? a : scale[0];
    }
  }
  for (int64_t j = 0; j < n_scales; ++j) scale[j] = scale[j] > 0.0f ? scale[j] / 127.0f : 1.0f;
}

void CpuBackend::observe_range(double* range, float* scale, int32_t* zero, const float* x, int64_t n, float momentum,
                               bool first) {
  float lo = 0.0f, hi = 0.0f;
  row_range(&lo, &hi, x, n);
  const RangeEncoding e = update_moving_range(range, lo, hi, momentum, first);
  *scale = e.scale;
  *zero = e.zero;
}

}  // namespace customml::cpu
