#pragma once
// Defines: the losses against a target distribution rather than a label, written once
// over the Vf of cpu/simd.h and collected into elementwise_table() by
// cpu/elementwise_kernels.h (which includes this file for each ISA level):
// ew_softmax_cross_entropy_soft (soft labels) and ew_distillation_loss (Hinton et al.'s
// soft-target loss). Loss and gradient in one call per row, no probabilities stored.
// Internal linkage only (see simd.h). The portable instantiation is the specification.

#include <cmath>
#include <cstdint>

#include "cpu/simd.h"
#include "cpu/vmath.h"

namespace customml::cpu {
namespace {

// A row's maximum; a NaN anywhere in the row may or may not win, but it reaches every
// exp below through its own term, so the loss and gradient are NaN either way.
inline float soft_row_max(const float* row, int64_t n) {
  const int64_t full = n - n % kLanes;
  Vf m = set1(row[0]);
  for (int64_t c = 0; c < full; c += kLanes) m = max(load(row + c), m);
  if (full < n) m = max(load_partial(row + full, n - full, row[0]), m);
  return max_lanes(m);
}

// Sums of a row in float64 lanes (each lane adds the elements at its offset in order,
// then lanes in order): the result depends on the ISA level alone.
struct RowSum {
  Vd lo = zero_d(), hi = zero_d();
  void add(Vf v) {
    Vd a, b;
    widen(v, a, b);
    lo = lo + a;
    hi = hi + b;
  }
  double total() const { return sum_lanes(lo + hi); }
};

// logits, targets: (batch, classes)  row_weights: (batch) or null -> grad: (batch,
// classes) or null, scaled by w_i inv_total; returns sum_i w_i l_i with
// l_i = -sum_c q_c log softmax(z)_c = Q log S - sum_{q_c != 0} q_c d_c, d = z - max,
// S = sum_c e^{d_c}, Q = sum_c q_c (not assumed to be 1, as PyTorch's probability
// targets); a class with q_c = 0 adds nothing, even at d_c = -inf (0 log 0 = 0), and
// grad = w_i / W (Q softmax(z) - q).
double ew_softmax_cross_entropy_soft(float* grad, const float* logits, const float* targets, const float* row_weights,
                                     int64_t batch, int64_t classes, double inv_total) {
  const int64_t full = classes - classes % kLanes, tail = classes - full;
  const Vf zero = set1(0.0f);
  double loss = 0.0;
  for (int64_t i = 0; i < batch; ++i) {
    const float* z = logits + i * classes;
    const float* q = targets + i * classes;
    const float mx = soft_row_max(z, classes);
    const Vf m = set1(mx);
    RowSum s, qs, qd;
    auto visit = [&](Vf d, Vf qv) {
      s.add(vexp_nonpositive(d));
      qs.add(qv);
      qd.add(select(qv == zero, zero, qv * d));
    };
    for (int64_t c = 0; c < full; c += kLanes) visit(load(z + c) - m, load(q + c));
    if (tail) visit(load_partial(z + full, tail, -kInf) - m, load_partial(q + full, tail, 0.0f));  // padding: e, q = 0
    const double sum = s.total(), qsum = qs.total();
    const double w = row_weights ? static_cast<double>(row_weights[i]) : 1.0;
    loss += w * (qsum * std::log(sum) - qd.total());
    if (!grad) continue;
    float* g = grad + i * classes;
    // grad_c = fl32(w / W) (fl32(Q / S) e_c - q_c)
    const Vf scale = set1(static_cast<float>(w * inv_total)), qp = set1(static_cast<float>(qsum / sum));
    for (int64_t c = 0; c < full; c += kLanes)
      store(g + c, scale * (qp * vexp_nonpositive(load(z + c) - m) - load(q + c)));
    if (tail)
      store_partial(
          g + full, tail,
          scale * (qp * vexp_nonpositive(load_partial(z + full, tail, mx) - m) - load_partial(q + full, tail, 0.0f)));
  }
  return loss;
}

// student, teacher: (batch, classes)  labels: (batch)  row_weights: (batch) or null ->
// grad: (batch, classes) or null, scaled by w_i inv_total; returns sum_i w_i l_i with
//   l_i = alpha T^2 KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) CE(softmax(s), y).
// With a_c = (s_c - max s) / T, b_c = (t_c - max t) / T, d_c = s_c - max s and their exp
// sums A, B, D: KL = sum_c e^{b_c} (b_c - a_c) / B - log B + log A (a term with
// e^{b_c} = 0 adds nothing: 0 log 0 = 0), CE = log D - d_y, and
//   grad = w_i / W [alpha T (e^a / A - e^b / B) + (1 - alpha) (e^d / D - onehot(y))].
// Three reads of each row (the maxima, the sums, the gradient) recomputing the
// exponentials rather than storing them: a row is a few cache lines (classes is the
// model's output width), so the re-reads hit L1 and the exps are the cost either way.
// With alpha == 1 the labels are not read and D is not formed.
double ew_distillation_loss(float* grad, const float* student, const float* teacher, const int32_t* labels,
                            const float* row_weights, int64_t batch, int64_t classes, float temperature, float alpha,
                            double inv_total) {
  const int64_t full = classes - classes % kLanes, tail = classes - full;
  const bool hard = alpha != 1.0f;
  const float inv_t = 1.0f / temperature;
  const Vf vinv_t = set1(inv_t), zero = set1(0.0f);
  double loss = 0.0;
  for (int64_t i = 0; i < batch; ++i) {
    const float* s = student + i * classes;
    const float* t = teacher + i * classes;
    const float ms = soft_row_max(s, classes), mt = soft_row_max(t, classes);
    const Vf vms = set1(ms), vmt = set1(mt);
    RowSum sa, sb, sd, cross;
    auto visit = [&](Vf sv, Vf tv) {
      const Vf d = sv - vms, a = d * vinv_t, b = (tv - vmt) * vinv_t;
      const Vf eb = vexp_nonpositive(b);
      sa.add(vexp_nonpositive(a));
      sb.add(eb);
      if (hard) sd.add(vexp_nonpositive(d));
      cross.add(select(eb == zero, zero, eb * (b - a)));
    };
    for (int64_t c = 0; c < full; c += kLanes) visit(load(s + c), load(t + c));
    if (tail) visit(load_partial(s + full, tail, -kInf), load_partial(t + full, tail, -kInf));  // padding: e = 0
    const double A = sa.total(), B = sb.total();
    const double kl = cross.total() / B - std::log(B) + std::log(A);
    const double T = static_cast<double>(temperature);
    double row_loss = static_cast<double>(alpha) * T * T * kl;
    const int32_t y = hard ? labels[i] : 0;
    double D = 1.0;
    if (hard) {
      D = sd.total();
      row_loss += (1.0 - static_cast<double>(alpha)) * (std::log(D) - (static_cast<double>(s[y]) - ms));
    }
    const double w = row_weights ? static_cast<double>(row_weights[i]) : 1.0;
    loss += w * row_loss;
    if (!grad) continue;
    float* g = grad + i * classes;
    const double scale = w * inv_total;
    // soft: fl32(scale alpha T) (e^a fl32(1 / A) - e^b fl32(1 / B)); hard: fl32(scale (1 -
    // alpha)) e^d fl32(1 / D), its label term subtracted after the loop.
    const Vf k_soft = set1(static_cast<float>(scale * alpha * T)), ia = set1(static_cast<float>(1.0 / A)),
             ib = set1(static_cast<float>(1.0 / B));
    const float hard_scale = static_cast<float>(scale * (1.0 - static_cast<double>(alpha)));
    const Vf k_hard = set1(hard_scale), id = set1(static_cast<float>(1.0 / D));
    auto grad_of = [&](Vf sv, Vf tv) {
      const Vf d = sv - vms;
      Vf r = k_soft * (vexp_nonpositive(d * vinv_t) * ia - vexp_nonpositive((tv - vmt) * vinv_t) * ib);
      if (hard) r = r + k_hard * (vexp_nonpositive(d) * id);
      return r;
    };
    for (int64_t c = 0; c < full; c += kLanes) store(g + c, grad_of(load(s + c), load(t + c)));
    if (tail)
      store_partial(g + full, tail, grad_of(load_partial(s + full, tail, ms), load_partial(t + full, tail, mt)));
    if (hard) g[y] -= hard_scale;
  }
  return loss;
}

}  // namespace
}  // namespace customml::cpu
