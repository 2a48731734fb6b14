// The int8 Tensor-level ops: quantize, dequantize, the dynamic row quantization and gemm_s8.

#include "ops.h"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "ops_checks.h"

namespace customml::ops {

using namespace detail;

namespace {

// Calls f(p) with a host pointer to a tensor's elements: in place on host-addressable
// devices (a quantized input is scanned without a copy), else to a host copy.
template <class T, class F>
void with_host_values(const Tensor& t, F&& f) {
  if (backend_for(t.device()).host_addressable()) {
    f(t.ptr<const T>());
  } else {
    const std::vector<T> v = host_values<T>(t);
    f(v.data());
  }
}

// Runs f(index, value) over a tensor's elements.
template <class T, class F>
void scan_values(const Tensor& t, F&& f) {
  with_host_values<T>(t, [&](const T* p) {
    for (int64_t i = 0, n = t.numel(); i < n; ++i) f(i, p[i]);
  });
}

// "x[2, 3]" for flat index i of a (rows, cols) tensor, "x[5]" for a vector.
std::string element_name(const char* name, const Tensor& t, int64_t i) {
  if (t.ndim() == 2)
    return std::string(name) + "[" + std::to_string(i / t.dim(1)) + ", " + std::to_string(i % t.dim(1)) + "]";
  return std::string(name) + "[" + std::to_string(i) + "]";
}

std::string float_str(float v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// Whether every element of p (n) stays finite when multiplied by factor: a branch-free sum
// of (x * factor) * 0, NaN exactly when some product is not finite, so the pass vectorizes.
bool all_finite_scaled(const float* p, int64_t n, float factor) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += (p[i + l] * factor) * 0.0f;
  for (int64_t l = 0; i + l < n; ++l) acc[l] += (p[i + l] * factor) * 0.0f;
  float all = 0.0f;
  for (float a : acc) all += a;
  return all == 0.0f;
}

// Fails naming the first element of t (f32, on the host at p) that is NaN or inf.
void fail_on_non_finite(const char* op, const char* name, const Tensor& t, const float* p) {
  for (int64_t i = 0, n = t.numel(); i < n; ++i)
    if (!std::isfinite(p[i])) fail(op, element_name(name, t, i) + " is " + float_str(p[i]) + "; it must be finite");
}

void check_all_finite(const char* op, const char* name, const Tensor& t) {
  with_host_values<float>(t, [&](const float* p) {
    if (!all_finite_scaled(p, t.numel(), 1.0f)) fail_on_non_finite(op, name, t, p);
  });
}

void check_scales(const char* op, const char* name, const Tensor& t) {
  scan_values<float>(t, [&](int64_t i, float v) {
    if (!(std::isfinite(v) && v > 0.0f))
      fail(op, element_name(name, t, i) + " is " + float_str(v) + "; scales must be positive and finite");
  });
}

void check_codes(const char* op, const char* name, const Tensor& t, int32_t lo, int32_t hi) {
  scan_values<int32_t>(t, [&](int64_t i, int32_t v) {
    if (v < lo || v > hi)
      fail(op, element_name(name, t, i) + " = " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "]");
  });
}

void check_qtype(const char* op, const char* name, const Tensor& t) {
  if (t.dtype() != DType::i8 && t.dtype() != DType::u8)
    throw TypeError(std::string("[") + op + "] " + name + " must be int8 or uint8, got " + dtype_name(t.dtype()));
}

const char* axis_name(QuantAxis axis) {
  switch (axis) {
    case QuantAxis::tensor: return "tensor";
    case QuantAxis::row: return "row";
    case QuantAxis::column: return "column";
  }
  return "?";
}

// scale and zero of a (rows, cols) tensor quantized along axis; q names the code tensor.
void check_quant_params(const char* op, const Tensor& scale, const Tensor* zero, const Tensor& q, const Tensor& ref,
                        QuantAxis axis) {
  const int64_t len = axis == QuantAxis::tensor ? 1 : axis == QuantAxis::row ? ref.dim(0) : ref.dim(1);
  check(op, "scale", scale, DType::f32, 1);
  if (scale.dim(0) != len)
    fail(op, "scale has shape " + scale.shape_str() + ", expected (" + std::to_string(len) + ",) for axis '" +
                 axis_name(axis) + "' of a " + ref.shape_str() + " tensor");
  check_device(op, "scale", scale, ref);
  check_scales(op, "scale", scale);
  if (zero) {
    check(op, "zero", *zero, DType::i32, 1);
    check_same_shape(op, "zero", *zero, "scale", scale);
    check_device(op, "zero", *zero, ref);
    if (q.dtype() == DType::i8)
      check_codes(op, "zero", *zero, -127, 127);
    else
      check_codes(op, "zero", *zero, 0, 255);
  }
}

}  // namespace

void quantize(const Tensor& q, const Tensor& x, const Tensor& scale, const Tensor* zero, QuantAxis axis) {
  const char* op = "quantize";
  check(op, "x", x, DType::f32, 2);
  check_qtype(op, "out", q);
  check(op, "out", q, q.dtype(), 2);
  check_same_shape(op, "out", q, "x", x);
  check_device(op, "out", q, x);
  check_no_overlap(op, "out", q, "x", x);
  check_quant_params(op, scale, zero, q, x, axis);
  check_no_overlap(op, "out", q, "scale", scale);
  if (zero) check_no_overlap(op, "out", q, "zero", *zero);
  check_all_finite(op, "x", x);
  backend_for(x.device())
      .quantize(q.data(), q.dtype(), f32(x), f32(scale), zero ? zero->ptr<int32_t>() : nullptr, x.dim(0), x.dim(1),
                axis);
}

void dequantize(const Tensor& x, const Tensor& q, const Tensor& scale, const Tensor* zero, QuantAxis axis) {
  const char* op = "dequantize";
  check_qtype(op, "q", q);
  check(op, "q", q, q.dtype(), 2);
  check(op, "out", x, DType::f32, 2);
  check_same_shape(op, "out", x, "q", q);
  check_device(op, "out", x, q);
  check_no_overlap(op, "out", x, "q", q);
  check_quant_params(op, scale, zero, q, q, axis);
  check_no_overlap(op, "out", x, "scale", scale);
  if (zero) check_no_overlap(op, "out", x, "zero", *zero);
  backend_for(q.device())
      .dequantize(f32(x), q.data(), q.dtype(), f32(scale), zero ? zero->ptr<int32_t>() : nullptr, q.dim(0), q.dim(1),
                  axis);
}

void quantize_rows_dynamic(const Tensor& q, const Tensor& scale, const Tensor& zero, const Tensor& x) {
  const char* op = "quantize_rows_dynamic";
  check(op, "x", x, DType::f32, 2);
  check(op, "out", q, DType::u8, 2);
  check(op, "scale_out", scale, DType::f32, 1);
  check(op, "zero_out", zero, DType::i32, 1);
  check_same_shape(op, "out", q, "x", x);
  check_shape(op, "scale_out", scale, {x.dim(0)});
  check_shape(op, "zero_out", zero, {x.dim(0)});
  const std::pair<const char*, const Tensor*> all[] = {
      {"x", &x}, {"out", &q}, {"scale_out", &scale}, {"zero_out", &zero}};
  for (size_t a = 1; a < 4; ++a) check_device(op, all[a].first, *all[a].second, x);
  for (size_t a = 0; a < 4; ++a)
    for (size_t c = a + 1; c < 4; ++c) check_no_overlap(op, all[c].first, *all[c].second, all[a].first, *all[a].second);
  // x finite, and (hi - lo) / 255 finite: a row holding both ~3e38 and ~-3e38 has no scale.
  // Only an element beyond half the float32 maximum can make that happen, so one pass that
  // doubles every element finds both problems, and rows are ranged only after it fails.
  const int64_t rows = x.dim(0), cols = x.dim(1);
  with_host_values<float>(x, [&](const float* p) {
    if (all_finite_scaled(p, x.numel(), 2.0f)) return;
    fail_on_non_finite(op, "x", x, p);
    for (int64_t r = 0; r < rows; ++r) {
      float lo = 0.0f, hi = 0.0f;
      for (const float* v = p + r * cols; v < p + (r + 1) * cols; ++v) {
        lo = *v < lo ? *v : lo;
        hi = *v > hi ? *v : hi;
      }
      if (!std::isfinite(hi - lo))
        fail(op, "row " + std::to_string(r) + " of x spans [" + float_str(lo) + ", " + float_str(hi) +
                     "], wider than the float32 range");
    }
  });
  backend_for(x.device())
      .quantize_rows_dynamic(q.ptr<uint8_t>(), f32(scale), zero.ptr<int32_t>(), f32(x), x.dim(0), x.dim(1));
}

void symmetric_scales(const Tensor& scale, const Tensor& w, QuantAxis axis) {
  const char* op = "symmetric_scales";
  check(op, "w", w, DType::f32, 2);
  if (axis == QuantAxis::row) fail(op, "axis must be 'column' or 'tensor', got 'row'");
  check(op, "out", scale, DType::f32, 1);
  check_shape(op, "out", scale, {axis == QuantAxis::column ? w.dim(1) : 1});
  check_device(op, "out", scale, w);
  check_no_overlap(op, "out", scale, "w", w);
  backend_for(w.device()).symmetric_scales(f32(scale), f32(w), w.dim(0), w.dim(1), axis);
}

void observe_range(const Tensor& range, const Tensor& scale, const Tensor& zero, const Tensor& x, float momentum,
                   bool first) {
  const char* op = "observe_range";
  check(op, "x", x, DType::f32, 2);
  check(op, "range", range, DType::f64, 1);
  check(op, "scale_out", scale, DType::f32, 1);
  check(op, "zero_out", zero, DType::i32, 1);
  check_shape(op, "range", range, {2});
  check_shape(op, "scale_out", scale, {1});
  check_shape(op, "zero_out", zero, {1});
  if (!(momentum >= 0.0f && momentum < 1.0f)) fail(op, "momentum must be in [0, 1), got " + std::to_string(momentum));
  const std::pair<const char*, const Tensor*> all[] = {
      {"x", &x}, {"range", &range}, {"scale_out", &scale}, {"zero_out", &zero}};
  for (size_t a = 1; a < 4; ++a) check_device(op, all[a].first, *all[a].second, x);
  for (size_t a = 0; a < 4; ++a)
    for (size_t c = a + 1; c < 4; ++c) check_no_overlap(op, all[c].first, *all[c].second, all[a].first, *all[a].second);
  backend_for(x.device())
      .observe_range(range.ptr<double>(), f32(scale), zero.ptr<int32_t>(), f32(x), x.numel(), momentum, first);
}

std::shared_ptr<PackedS8> gemm_s8_pack(const Tensor& w) {
  const char* op = "gemm_s8_pack";
  check(op, "weight", w, DType::i8, 2);
  if (w.dim(0) < 1 || w.dim(1) < 1) fail(op, "weight has shape " + w.shape_str() + "; both sizes must be >= 1");
  if (w.dim(0) > kGemmS8MaxK)
    fail(op, "weight has " + std::to_string(w.dim(0)) + " rows, more than " + std::to_string(kGemmS8MaxK) +
                 " (beyond that an int32 accumulator can overflow)");
  scan_values<int8_t>(w, [&](int64_t i, int8_t v) {
    if (v == -128) fail(op, element_name("weight", w, i) + " = -128 is outside [-127, 127] (symmetric int8 codes)");
  });
  Backend& be = backend_for(w.device());
  auto packed = std::make_shared<PackedS8>(be, w.dim(0), w.dim(1));
  be.gemm_s8_pack(packed->data(), w.ptr<int8_t>(), w.dim(0), w.dim(1));
  return packed;
}

void gemm_s8(const Tensor& y, const Tensor& a, const PackedS8& w, const Tensor* a_scale, const Tensor& a_zero,
             const Tensor* w_scale, const Tensor* bias, Activation act, std::optional<float> out_scale,
             std::optional<int32_t> out_zero) {
  const char* op = "gemm_s8";
  check(op, "a", a, DType::u8, 2);
  if (!(w.device() == a.device()))
    fail(op, "weight is packed for " + w.device().name() + " but a is on " + a.device().name());
  if (a.dim(1) != w.k())
    fail(op, "a has " + std::to_string(a.dim(1)) + " columns but weight has " + std::to_string(w.k()) + " rows");
  const DType out = y.dtype();
  if (out != DType::f32 && out != DType::u8 && out != DType::i32)
    throw TypeError(std::string("[") + op + "] out must be float32, uint8 or int32, got " + dtype_name(out));
  check(op, "out", y, out, 2);
  check_shape(op, "out", y, {a.dim(0), w.n()});
  check_device(op, "out", y, a);
  check_no_overlap(op, "out", y, "a", a);
  check(op, "a_zero", a_zero, DType::i32, 1);
  if (a_zero.dim(0) != 1 && a_zero.dim(0) != a.dim(0))
    fail(op, "a_zero has shape " + a_zero.shape_str() + ", expected (1,) or (" + std::to_string(a.dim(0)) + ",)");
  check_device(op, "a_zero", a_zero, a);
  check_no_overlap(op, "out", y, "a_zero", a_zero);
  check_codes(op, "a_zero", a_zero, 0, 255);
  GemmS8Epilogue e;
  e.a_zero = a_zero.ptr<int32_t>();
  e.a_per_row = a_zero.dim(0) != 1;
  e.act = act;
  if (out == DType::i32) {
    const std::pair<const char*, bool> unused[] = {{"a_scale", a_scale != nullptr},
                                                   {"w_scale", w_scale != nullptr},
                                                   {"bias", bias != nullptr},
                                                   {"out_scale", out_scale.has_value()},
                                                   {"out_zero", out_zero.has_value()}};
    for (const auto& [name, given] : unused)
      if (given) fail(op, std::string(name) + " was given but an int32 out receives the unscaled sums");
    if (act != Activation::identity)
      fail(op, std::string("activation '") + activation_name(act) +
                   "' was given but an int32 out receives the unscaled sums");
  } else {
    if (!a_scale) fail(op, "a_scale is required for a float32 or uint8 out");
    if (!w_scale) fail(op, "w_scale is required for a float32 or uint8 out");
    check(op, "a_scale", *a_scale, DType::f32, 1);
    check_same_shape(op, "a_scale", *a_scale, "a_zero", a_zero);
    check(op, "w_scale", *w_scale, DType::f32, 1);
    if (w_scale->dim(0) != 1 && w_scale->dim(0) != w.n())
      fail(op, "w_scale has shape " + w_scale->shape_str() + ", expected (1,) or (" + std::to_string(w.n()) + ",)");
    for (const auto& [n, t] : {std::pair{"a_scale", a_scale}, {"w_scale", w_scale}}) {
      check_device(op, n, *t, a);
      check_no_overlap(op, "out", y, n, *t);
      check_scales(op, n, *t);
    }
    if (bias) {
      check(op, "bias", *bias, DType::f32, 1);
      check_shape(op, "bias", *bias, {w.n()});
      check_device(op, "bias", *bias, a);
      check_no_overlap(op, "out", y, "bias", *bias);
      check_all_finite(op, "bias", *bias);
    }
    if (out == DType::u8) {
      if (!out_scale || !out_zero) fail(op, "out_scale and out_zero are required for a uint8 out");
      if (!(std::isfinite(*out_scale) && *out_scale > 0.0f))
        fail(op, "out_scale is " + float_str(*out_scale) + "; scales must be positive and finite");
      if (*out_zero < 0 || *out_zero > 255)
        fail(op, "out_zero = " + std::to_string(*out_zero) + " is outside [0, 255]");
      e.out_scale = *out_scale;
      e.out_zero = *out_zero;
    } else if (out_scale || out_zero) {
      fail(op, "out_scale and out_zero apply to a uint8 out only");
    }
    e.a_scale = f32(a_scale);
    e.w_scale = f32(w_scale);
    e.w_per_channel = w_scale->dim(0) != 1;
    e.bias = f32(bias);
  }
  backend_for(a.device())
      .gemm_s8(out == DType::f32 ? y.ptr<float>() : nullptr, out == DType::u8 ? y.ptr<uint8_t>() : nullptr,
               out == DType::i32 ? y.ptr<int32_t>() : nullptr, a.ptr<uint8_t>(), w.data(), {a.dim(0), a.dim(1), w.n()},
               e);
}

}  // namespace customml::ops
