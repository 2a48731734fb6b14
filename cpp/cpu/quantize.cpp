// quantize, dequantize and quantize_rows_dynamic on the CPU: plain loops the compiler
// vectorizes with the baseline ISA (division, min / max, round_half_even's two adds and
// the conversions are all SSE2); each is a pass over memory that the bandwidth, not the
// arithmetic, bounds.

#include <cmath>

#include "cpu/cpu_backend.h"
#include "cpu/quantize_math.h"
#include "cpu/thread_pool.h"

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
    for (int64_t j = 0; j < n; ++j)
      q[j] = static_cast<Q>(to_code(x[j] / scale[j], zero ? zero[j] : 0, r.lo, r.hi));
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

}  // namespace

// x: (rows, cols) f32 -> q: (rows, cols) i8 / u8
void CpuBackend::quantize(void* q, DType qtype, const float* x, const float* scale, const int32_t* zero,
                          int64_t rows, int64_t cols, QuantAxis axis) {
  const CodeRange r = code_range(qtype);
  const bool per_row = axis == QuantAxis::row, per_column = axis == QuantAxis::column;
  for_rows(rows, cols, [&](int64_t i) {
    const float* s = per_row ? scale + i : scale;
    const int32_t* z = zero && per_row ? zero + i : zero;
    if (qtype == DType::i8)
      quantize_row(static_cast<int8_t*>(q) + i * cols, x + i * cols, cols, s, z, per_column, r);
    else
      quantize_row(static_cast<uint8_t*>(q) + i * cols, x + i * cols, cols, s, z, per_column, r);
  });
}

// q: (rows, cols) i8 / u8 -> x: (rows, cols) f32
void CpuBackend::dequantize(float* x, const void* q, DType qtype, const float* scale, const int32_t* zero,
                            int64_t rows, int64_t cols, QuantAxis axis) {
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
  for_rows(rows, cols, [&](int64_t i) {
    const float* xi = x + i * cols;
    // The range includes 0 so that 0 (padding, ReLU outputs) is exactly representable.
    float lo = 0.0f, hi = 0.0f;
    for (int64_t j = 0; j < cols; ++j) {
      lo = xi[j] < lo ? xi[j] : lo;
      hi = xi[j] > hi ? xi[j] : hi;
    }
    // A range too small for (hi - lo) / 255 to be a positive float32 (all zeros, or a few
    // subnormals) takes scale 1: every code is then the zero point or next to it.
    float s = (hi - lo) / 255.0f;
    if (s == 0.0f) s = 1.0f;
    const int32_t z = to_code(-lo / s, 0, 0, 255);
    scale[i] = s;
    zero[i] = z;
    quantize_row(q + i * cols, xi, cols, &s, &z, false, CodeRange{0, 255});
  });
}

}  // namespace customml::cpu
