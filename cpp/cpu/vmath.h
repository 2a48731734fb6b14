#pragma once
// Defines: vexp, vexp_nonpositive, vlog, vlog1p, vlog1p_unit, vtanh, vsigmoid, vgelu (float32 transcendentals over the
// Vf of cpu/simd.h) and vmath_map (one of them over an array), one source for AVX-512, AVX2 + FMA and portable (each
// ISA file includes this under its own flags; internal linkage, see simd.h).
//
// Cephes-style range reduction and minimax polynomials (Moshier's expf, logf,
// tanhf coefficients), branch-free, with the special values handled by selects.
// Maximum error against float64, in ulps of the float32 result, measured over every
// 64th float32 bit pattern (67 M inputs) by bench/vmath_error.py, the largest of the
// three ISA levels (they differ in the second digit at most); tests/test_vmath.py checks
// these bounds on every level on a sparser grid:
//   vexp     1.27 ulp -> bound 1.5    (subnormal results: rounded once, see below)
//   vexp_nonpositive 0.89 ulp with FMA, 1.18 portable -> bound 1.25 (x <= 0; measured
//            over every float32 in [-104, 0], subnormal results included)
//   vlog     0.81 ulp -> bound 1      (all positive x, subnormals included)
//   vlog1p   2.41 ulp -> bound 2.5    (x > -1)
//   vlog1p_unit 1.003 ulp -> bound 1.5 (e in [0, 1]: every float32 in [0.3, 1],
//                                     every 16th below)
//   vtanh    1.33 ulp -> bound 1.5
//   vsigmoid 2.60 ulp -> bound 3      (subnormal results included)
//   vgelu    0.34 -> bound 0.5 ulp + 2^-22 |z| (its tanh's absolute error times 0.5 |z|,
//            which dominates where 1 + tanh cancels, z < -1)
// Specials: exp(-inf) = +0, exp(x > 88.73) = inf, exp(NaN) = NaN (vexp_nonpositive too); log(+-0) = -inf,
// log(x < 0) = NaN, log(inf) = inf; log1p(-1) = -inf, log1p(+-0) = +-0; tanh(+-0) = +-0,
// tanh saturates to exactly +-1 (|x| > 9.01), sigmoid(-inf) = 0, sigmoid(inf) = 1.

#include <limits>

#include "activation.h"
#include "cpu/simd.h"

namespace customml::cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

// The reduction both exps share: e^x = 2^n e^r, n = round(x / ln 2) (set here),
// r = x - n ln 2 in [-ln2/2, ln2/2] (returned); ln 2 split in two so that n * kLn2Hi is
// exact (9 significant bits times n's at most 8).
inline Vf exp_reduce(Vf xc, Vf& n) {
  n = round_nearest(xc * set1(1.44269504088896341f));
  const Vf r = fmadd(n, set1(-0.693359375f), xc);
  return fmadd(n, set1(2.12194440e-4f), r);
}

// x must lie in [-104, 89], so that n stays in [-150, 128], and must not be NaN (the
// portable pow2 converts n to an integer).
inline Vf exp_clamped(Vf xc) {
  Vf n;
  const Vf r = exp_reduce(xc, n);
  Vf p = set1(1.9875691500e-4f);
  p = fmadd(p, r, set1(1.3981999507e-3f));
  p = fmadd(p, r, set1(8.3334519073e-3f));
  p = fmadd(p, r, set1(4.1665795894e-2f));
  p = fmadd(p, r, set1(1.6666665459e-1f));
  p = fmadd(p, r, set1(5.0000001201e-1f));
  const Vf y = fmadd(p, r * r, r + set1(1.0f));
  // Rounded once, so subnormal results are correctly rounded from y, and 2^128 y
  // overflows to inf.
  return ldexp(y, n);
}

inline Vf vexp(Vf x) {
  // Outside [-104, 89] the result is 0 or inf anyway.
  // (max/min return their second operand for NaN: the final select restores it.)
  const Vf xc = min(max(x, set1(-104.0f)), set1(89.0f));
  return select(is_nan(x), x, exp_clamped(xc));
}

// e^x for x <= 0 or NaN (softmax's shifted logits), cheaper than vexp: nothing can
// overflow, so no upper clamp; max(-104, x) returns a NaN x, which then propagates
// through the arithmetic (scalef and the portable pow2 keep it), so no select; and
// e^r = 1 + r (1 + r (c2 + ... + c6 r^4)) in Horner form, a degree-6 minimax for the
// relative error on [-ln2/2, ln2/2] with c1 = 1 and float32 coefficients (0.05 ulp before
// rounding; the Cephes polynomial of vexp is degree 7 and rounds 1 + r separately).
// 12 vector operations against vexp's 16.
inline Vf vexp_nonpositive(Vf x) {
  Vf n;
  const Vf r = exp_reduce(max(set1(-104.0f), x), n);
  Vf p = set1(1.3838902814e-3f);
  p = fmadd(p, r, set1(8.3691924810e-3f));
  p = fmadd(p, r, set1(4.1668102145e-2f));
  p = fmadd(p, r, set1(1.6666516662e-1f));
  p = fmadd(p, r, set1(4.9999994040e-1f));
  p = fmadd(p, r, set1(1.0f));
  return ldexp(fmadd(p, r, set1(1.0f)), n);
}

// log(1 + f) + k ln 2 for f in [sqrt(1/2) - 1, sqrt(2) - 1] and integral k:
// f - f^2/2 + f^3 P(f), with ln 2 split so that k kLn2Hi is exact.
inline Vf log_core(Vf f, Vf k) {
  const Vf z = f * f;
  Vf p = set1(7.0376836292e-2f);
  p = fmadd(p, f, set1(-1.1514610310e-1f));
  p = fmadd(p, f, set1(1.1676998740e-1f));
  p = fmadd(p, f, set1(-1.2420140846e-1f));
  p = fmadd(p, f, set1(1.4249322787e-1f));
  p = fmadd(p, f, set1(-1.6668057665e-1f));
  p = fmadd(p, f, set1(2.0000714765e-1f));
  p = fmadd(p, f, set1(-2.4999993993e-1f));
  p = fmadd(p, f, set1(3.3333331174e-1f));
  Vf y = p * f * z;
  y = fmadd(k, set1(-2.12194440e-4f), y);
  y = fmadd(z, set1(-0.5f), y);
  return fmadd(k, set1(0.693359375f), f + y);
}

// log x = e ln 2 + log m, m in [sqrt(1/2), sqrt(2)).
inline Vf vlog(Vf x) {
  // Subnormals scaled by 2^23 into the normal range first.
  const Mask sub = x < set1(1.17549435e-38f);
  const Vf xs = select(sub, x * set1(8388608.0f), x);
  Vf e = exponent(xs) - select(sub, set1(23.0f), set1(0.0f));
  Vf m = mantissa(xs);
  const Mask big = m > set1(1.41421356f);
  m = select(big, m * set1(0.5f), m);
  e = select(big, e + set1(1.0f), e);
  Vf r = log_core(m - set1(1.0f), e);  // m - 1 is exact (Sterbenz)
  r = select(x == set1(0.0f), set1(-kInf), r);
  r = select(x < set1(0.0f), set1(kNan), r);
  r = select(x == set1(kInf), x, r);
  return select(is_nan(x), x, r);
}

// log1p x = log(u) x / (u - 1), u = fl(1 + x) (Goldberg, "What every computer
// scientist should know...", theorem 4): the quotient cancels u's rounding error.
inline Vf vlog1p(Vf x) {
  const Vf u = x + set1(1.0f);
  const Vf d = u - set1(1.0f);
  // x / d first: log(u) x would overflow for x near the float32 maximum.
  Vf r = vlog(u) * (x / d);
  r = select(d == set1(0.0f), x, r);  // |x| < 2^-25 (and +-0): log1p x = x
  r = select(x == set1(kInf), x, r);
  return select(is_nan(x), x, r);
}

// log1p e for e in [0, 1] only (binary cross-entropy's exp(-|z|)): 1 + e is in [1, 2],
// so the exponent is 0 or 1, no special value occurs, and no quotient is needed to
// cancel the rounding of 1 + e, as in vlog1p.
inline Vf vlog1p_unit(Vf e) {
  // Above sqrt(2) - 1: 1 + e = 2 (1 + f), f = (e - 1) / 2. Below 1/2, e - 1 is not a
  // float: s = fl(e - 1) and its exact error err = e - (s + 1) (Fast2Sum, |-1| >= e);
  // log(1 + f + err / 2) = log(1 + f) + (err / 2) / (1 + f), and err / 2 <= 2^-26 is
  // small enough for 1 / (1 + f) ~ 1 - f.
  const Mask big = e > set1(0.41421356f);
  const Vf s = e - set1(1.0f);
  const Vf c = (e - (s + set1(1.0f))) * set1(0.5f);
  const Vf f = select(big, s * set1(0.5f), e);
  const Vf r = log_core(f, select(big, set1(1.0f), set1(0.0f)));
  return select(big, fmadd(c, set1(1.0f) - f, r), r);
}

// tanh: an odd polynomial below 0.625, else 1 - 2 / (e^{2|x|} + 1) with x's sign.
inline Vf vtanh(Vf x) {
  const Vf a = abs(x);
  const Vf z = x * x;
  Vf p = set1(-5.70498872745e-3f);
  p = fmadd(p, z, set1(2.06390887954e-2f));
  p = fmadd(p, z, set1(-5.37397155531e-2f));
  p = fmadd(p, z, set1(1.33314422036e-1f));
  p = fmadd(p, z, set1(-3.33332819422e-1f));
  const Vf small = copysign(fmadd(p * z, x, x), x);  // tanh(-0) = -0
  // e = inf for large |x| (and NaN stays NaN): 2 / inf = 0, so the result is exactly 1.
  const Vf e = vexp(a + a);
  const Vf large = copysign(set1(1.0f) - set1(2.0f) / (e + set1(1.0f)), x);
  return select(a < set1(0.625f), small, large);
}

// sigmoid z = 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) below: only e^{-|z|} is
// computed, which never overflows, and small results keep their relative accuracy.
inline Vf vsigmoid(Vf z) {
  const Vf e = vexp(set1(0.0f) - abs(z));
  return select(z < set1(0.0f), e, set1(1.0f)) / (set1(1.0f) + e);
}

// GELU, tanh form: 0.5 z (1 + tanh(c (z + a z^3))), c = sqrt(2 / pi), a = 0.044715
// (act::gelu_grad in activation.h is its derivative).
inline Vf vgelu(Vf z) {
  const Vf u = set1(act::kGeluC) * (z + set1(act::kGeluA) * z * z * z);
  return set1(0.5f) * z * (set1(1.0f) + vtanh(u));
}

// y (n) = F(x (n)); y may be x.
template <Vf (*F)(Vf)>
void vmath_map(float* y, const float* x, int64_t n) {
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) store(y + i, F(load(x + i)));
  if (full < n) store_partial(y + full, n - full, F(load_partial(x + full, n - full, 0.0f)));
}

}  // namespace
}  // namespace customml::cpu
