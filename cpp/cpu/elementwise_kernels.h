#pragma once
// Defines: the elementwise and reduction kernels written once over the Vf of
// cpu/simd.h, and elementwise_table() that collects them for the ISA of the including
// file (elementwise.cpp: portable, elementwise_avx2.cpp, elementwise_avx512.cpp).
// The portable instantiation (one lane, plain C++) is the specification.
//
// Reductions use a fixed number of float64 accumulators, each lane summing the
// elements at its offset in every block of kLanes (tails padded with the neutral
// value), combined in lane order; softmax's exp sum first adds float32 lanes over
// fixed blocks of vectors. The result depends on the ISA level alone, never on the
// data's alignment. Internal linkage only (see simd.h).

#include "cpu/elementwise.h"
#include "cpu/soft_target_kernels.h"
#include "cpu/vmath.h"
#include "half_round.h"

namespace customml::cpu {
namespace {

// ---------------------------------------------------------------- losses and metrics

// The maximum of a row of `classes` logits: four running maxima, so the max chains overlap.
inline float row_max(const float* row, int64_t classes) {
  const int64_t full = classes - classes % kLanes;
  Vf m0 = set1(row[0]), m1 = m0, m2 = m0, m3 = m0;
  int64_t c = 0;
  for (; c + 4 * kLanes <= full; c += 4 * kLanes) {
    m0 = max(load(row + c), m0);
    m1 = max(load(row + c + kLanes), m1);
    m2 = max(load(row + c + 2 * kLanes), m2);
    m3 = max(load(row + c + 3 * kLanes), m3);
  }
  for (; c < full; c += kLanes) m0 = max(load(row + c), m0);
  if (full < classes) m0 = max(load_partial(row + full, classes - full, row[0]), m0);
  return max_lanes(max(max(m0, m1), max(m2, m3)));
}

// logits: (batch, classes)  labels: (batch)  class_weights: (classes) or null
// row_weights: (batch) or null -> grad: (batch, classes) or null; as
// CpuBackend::softmax_cross_entropy. Per row:
// the max, then e_c = exp(d_c), d_c = z_c - max (written into grad and summed: float32
// partial sums of at most kBlock terms per lane, added in float64), then grad scaled in
// place: one exp per element. sum_c d_c (float64) only with label smoothing (kSmoothing),
// the one case whose loss uses it. The gradient is scaled by w_i inv_total; returns
// sum_i w_i l_i over the rows given. The next row's max is taken inside this row's exp
// loop, so that no row waits for its own max pass and its reduction (measured on Zen 5:
// that wait was a third of the kernel at 1000 classes).
template <bool kSmoothing>
double softmax_cross_entropy_rows(float* grad, const float* logits, const int32_t* labels, const float* class_weights,
                                  const float* row_weights, int64_t batch, int64_t classes, float label_smoothing,
                                  double inv_total) {
  const float off = label_smoothing / static_cast<float>(classes);
  const float on = 1.0f - label_smoothing + off;
  const int64_t full = classes - classes % kLanes;
  const int64_t tail = classes - full;
  constexpr int64_t kAheadLogits = 3072, kAheadGrad = 1024, kLine = 16;  // floats
  double loss = 0.0;
  if (batch == 0) return loss;
  // The rows the exp loop's prefetches (below) reach only from earlier rows: a call is often
  // one 65-row piece of a batch split over the pool, so this is 5% of its rows at 1000
  // classes (-3% for 4096 x 1000 in such pieces).
  const int64_t total = batch * classes;
  for (int64_t c = 0; c < total && c < kAheadLogits; c += kLine) __builtin_prefetch(logits + c, 0);
  for (int64_t c = 0; grad && c < total && c < kAheadGrad; c += kLine) __builtin_prefetch(grad + c, 1);
  // Shifting by the row maximum keeps exp() in (0, 1]: stable for logits of +-1e4.
  float next_mx = row_max(logits, classes);
  double pending_w = 0.0, pending_sum = 1.0;  // adds 0 log 1 = 0 before the first row
  for (int64_t i = 0; i < batch; ++i) {
    const float* row = logits + i * classes;
    const int32_t y = labels[i];
    float* g = grad ? grad + i * classes : nullptr;
    const float mx = next_mx;
    const Vf m = set1(mx);
    // The next row (this one again after the last: its max is then unused).
    const float* next = i + 1 < batch ? row + classes : row;
    Vf n0 = set1(next[0]);
    // sum_c e_c: float32 lanes over blocks of kBlock vectors (e_c <= 1, no overflow),
    // each block then added in float64, a widening per block rather than per vector. A
    // full block's terms are added as a tree: a serial chain through one accumulator
    // cost 13% of the kernel (Zen 5, cache-resident rows).
    // sum_c d_c stays float64 per vector: float32 sums of d_c = -3e38 would overflow.
    constexpr int kBlock = 8;
    Vd sum = zero_d(), sum_hi = zero_d(), shifted = zero_d(), shifted_hi = zero_d();
    auto add_block = [&](Vf block_e) {
      Vd lo, hi;
      widen(block_e, lo, hi);
      sum = sum + lo;
      sum_hi = sum_hi + hi;
    };
    auto add_shifted = [&](Vf d) {
      if (kSmoothing) {
        Vd lo, hi;
        widen(d, lo, hi);
        shifted = shifted + lo;
        shifted_hi = shifted_hi + hi;
      }
    };
    // Software prefetches, one per 64-byte line, of the logits 12 KB ahead and of the
    // gradient 4 KB ahead (no further than the last row): without them the exp loop's
    // work hardly overlapped the memory traffic (see docs/performance.md). The gradient's
    // asks for write intent, a plain prefetcht0 without -mprfchw (prefetchw measured the same).
    const int64_t left = (batch - 1 - i) * classes;
    const float* row_ahead = row + (left < kAheadLogits ? left : kAheadLogits);
    float* g_ahead = g ? g + (left < kAheadGrad ? left : kAheadGrad) : nullptr;
    // e_c for the vector at c, written to grad, with the next row's running max.
    auto exp_at = [&](int64_t c) {
      if (kLanes >= kLine || c % kLine == 0) {
        __builtin_prefetch(row_ahead + c, 0);
        if (g) __builtin_prefetch(g_ahead + c, 1);
      }
      const Vf d = load(row + c) - m;
      const Vf e = vexp_nonpositive(d);
      if (g) store(g + c, e);
      add_shifted(d);
      n0 = max(load(next + c), n0);
      return e;
    };
    int64_t c = 0;
    for (; c + kBlock * kLanes <= full; c += kBlock * kLanes) {
      const Vf e0 = exp_at(c), e1 = exp_at(c + kLanes), e2 = exp_at(c + 2 * kLanes), e3 = exp_at(c + 3 * kLanes);
      const Vf e4 = exp_at(c + 4 * kLanes), e5 = exp_at(c + 5 * kLanes), e6 = exp_at(c + 6 * kLanes);
      const Vf e7 = exp_at(c + 7 * kLanes);
      add_block(((e0 + e1) + (e2 + e3)) + ((e4 + e5) + (e6 + e7)));
    }
    // The last kBlock - 1 vectors at most, and the tail: one more block.
    Vf rest = set1(0.0f);
    for (; c < full; c += kLanes) rest = rest + exp_at(c);
    if (tail) {
      const Vf d = load_partial(row + full, tail, mx) - m;                       // 0 in the padding
      const Vf e = vexp_nonpositive(load_partial(row + full, tail, -kInf) - m);  // 0 in the padding
      if (g) store_partial(g + full, tail, e);
      add_shifted(d);
      rest = rest + e;
      n0 = max(load_partial(next + full, tail, next[0]), n0);
    }
    add_block(rest);
    next_mx = max_lanes(n0);
    const double s = sum_lanes(sum + sum_hi);
    // w_i in float64: the product of two float32 factors is exact there.
    const double w = (class_weights ? static_cast<double>(class_weights[y]) : 1.0) *
                     (row_weights ? static_cast<double>(row_weights[i]) : 1.0);
    // -sum_c q_c (d_c - log_sum) = log_sum - (1 - eps) d_y - (eps / C) sum_c d_c; the
    // previous row's w log_sum is added here, so that the logarithm's latency overlaps
    // this row's exp loop instead of holding up the retirement of the next one's.
    loss += pending_w * std::log(pending_sum);
    pending_w = w;
    pending_sum = s;
    double row_loss = -(1.0 - label_smoothing) * (row[y] - mx);
    if (kSmoothing) row_loss -= static_cast<double>(off) * sum_lanes(shifted + shifted_hi);
    loss += w * row_loss;
    if (g) {
      // dL/dlogit_c = w_i / W * (softmax_c - q_c), softmax_c = e_c fl32(1 / sum)
      const float scale = static_cast<float>(w * inv_total);
      const float inv_sum = static_cast<float>(1.0 / s);
      const float e_y = g[y];
      if (kSmoothing) {
        const Vf vs = set1(scale), vi = set1(inv_sum), voff = set1(off);
        for (int64_t c = 0; c < full; c += kLanes) store(g + c, vs * (load(g + c) * vi - voff));
        if (tail) store_partial(g + full, tail, vs * (load_partial(g + full, tail, 0.0f) * vi - voff));
      } else {
        // q_c = 0 off the label: one multiply by fl32(scale / sum), still two roundings
        const Vf vsi = set1(scale * inv_sum);
        for (int64_t c = 0; c < full; c += kLanes) store(g + c, load(g + c) * vsi);
        if (tail) store_partial(g + full, tail, load_partial(g + full, tail, 0.0f) * vsi);
      }
      g[y] = scale * (e_y * inv_sum - on);
    }
  }
  return loss + pending_w * std::log(pending_sum);
}

// As softmax_cross_entropy_rows, the smoothing case chosen once per call.
double ew_softmax_cross_entropy(float* grad, const float* logits, const int32_t* labels, const float* class_weights,
                                const float* row_weights, int64_t batch, int64_t classes, float label_smoothing,
                                double inv_total) {
  return label_smoothing != 0.0f ? softmax_cross_entropy_rows<true>(grad, logits, labels, class_weights, row_weights,
                                                                    batch, classes, label_smoothing, inv_total)
                                 : softmax_cross_entropy_rows<false>(grad, logits, labels, class_weights, row_weights,
                                                                     batch, classes, label_smoothing, inv_total);
}

// logits: (batch, classes)  labels: (batch) -> count of rows whose first maximum (as
// numpy.argmax) is the label. One pass: each lane of each accumulator keeps its running
// maximum and the column where it first reached it (a strict >, so ties keep the earlier
// column); then the lowest column among the lanes holding the row maximum. Columns are carried as
// floats, exact below 2^24, so very wide rows are taken in chunks of 2^24 columns.
int64_t ew_count_correct(const float* logits, const int32_t* labels, int64_t batch, int64_t classes) {
  constexpr int64_t kChunk = int64_t{1} << 24;
  int64_t correct = 0;
  for (int64_t i = 0; i < batch; ++i) {
    const float* row = logits + i * classes;
    if (classes == 1) {
      correct += (row[0] > 0.0f) == (labels[i] != 0);
      continue;
    }
    // A NaN never compares greater, so it is never the maximum unless it is row[0], as
    // in the scalar rule `row[c] > row[best]` starting from best = 0.
    float best_value = row[0];
    int64_t best = 0;
    for (int64_t c0 = 0; c0 < classes; c0 += kChunk) {
      const float* chunk = row + c0;
      const int64_t cols = classes - c0 < kChunk ? classes - c0 : kChunk;
      const int64_t full = cols - cols % kLanes;
      // Four (max, column) accumulators, each over every fourth vector, so the
      // compare-and-select chains overlap; -1: not above best_value in this chunk.
      constexpr int kAcc = 4;
      Vf vmx[kAcc], col[kAcc];
      for (int a = 0; a < kAcc; ++a) {
        vmx[a] = set1(best_value);
        col[a] = set1(-1.0f);
      }
      const Vf lanes = lane_index();
      auto visit = [&](int a, Vf x, int64_t c) {
        const Mask gt = x > vmx[a];
        vmx[a] = select(gt, x, vmx[a]);
        col[a] = select(gt, lanes + set1(static_cast<float>(c)), col[a]);
      };
      int64_t c = 0;
      for (; c + kAcc * kLanes <= full; c += kAcc * kLanes)
        for (int a = 0; a < kAcc; ++a) visit(a, load(chunk + c + a * kLanes), c + a * kLanes);
      for (; c < full; c += kLanes) visit(0, load(chunk + c), c);
      if (full < cols) visit(0, load_partial(chunk + full, cols - full, best_value), full);  // padding never wins
      // The first maximum is the lowest column among the lanes holding the maximum (they
      // all moved above best_value, so their columns are set).
      Vf top = vmx[0];
      for (int a = 1; a < kAcc; ++a) top = max(vmx[a], top);
      const float m = max_lanes(top);
      if (!(m > best_value)) continue;  // nothing in this chunk beats the earlier maximum
      const Vf vm = set1(m), none = set1(static_cast<float>(kChunk));
      Vf first = none;
      for (int a = 0; a < kAcc; ++a) first = min(select(vmx[a] == vm, col[a], none), first);
      best_value = m;
      best = c0 + static_cast<int64_t>(min_lanes(first));
    }
    correct += best == labels[i];
  }
  return correct;
}

// The sum of the row weights in float64, in order (every ISA level alike).
double row_weight_total(const float* row_weights, int64_t rows) {
  double total = 0.0;
  for (int64_t i = 0; i < rows; ++i) total += row_weights[i];
  return total;
}

// Runs pass(first element, count, gradient scale, element weights or null) -> sum of the
// (element-weighted) loss terms, whose gradients it multiplies by scale (times the
// element's weight), and returns the (weighted) mean over the (rows, cols) array:
// - unweighted, one pass with scale fl32(coef / n), as before weights existed, so those
//   results keep their bits;
// - one column (binary cross-entropy's shape in a model), one vectorized pass with the
//   weights as element weights and scale fl32(coef / W) (the gradient scale fl32(fl32(coef
//   / W) w_i): one rounding more than per row);
// - else row by row, with row i's scale fl32(coef w_i / (cols W)) and its sum times w_i.
// Every weight zero: loss 0, gradient 0.
template <class Pass>
double row_weighted_mean(const float* row_weights, int64_t rows, int64_t cols, float coef, Pass pass) {
  const int64_t n = rows * cols;
  if (!row_weights) return pass(0, n, set1(coef / static_cast<float>(n)), nullptr) / static_cast<double>(n);
  const double total = row_weight_total(row_weights, rows) * static_cast<double>(cols);
  const double inv = total > 0.0 ? 1.0 / total : 0.0;
  if (cols == 1) return pass(0, rows, set1(static_cast<float>(coef * inv)), row_weights) * inv;
  double loss = 0.0;
  for (int64_t i = 0; i < rows; ++i) {
    const double w = row_weights[i];
    loss += w * pass(i * cols, cols, set1(static_cast<float>(coef * w * inv)), nullptr);
  }
  return loss * inv;
}

// Element weights (weights + i, count lanes; 0 in the padding), or 1 without weights.
inline Vf element_weights(const float* weights, int64_t i, int64_t count) {
  if (!weights) return set1(1.0f);
  return count < kLanes ? load_partial(weights + i, count, 0.0f) : load(weights + i);
}

// logits, targets: (rows, cols)  row_weights: (rows) or null -> grad: (rows, cols) or
// null; as CpuBackend::binary_cross_entropy_with_logits. One e = exp(-|z|) serves the
// loss, max(z, 0) - z t + log1p(e) (the first two terms in float64, where z t is exact),
// and the gradient scale (sigmoid(z) - t) with sigmoid(z) = (z < 0 ? e : 1) / (1 + e).
double ew_binary_cross_entropy_with_logits(float* grad, const float* logits, const float* targets,
                                           const float* row_weights, int64_t rows, int64_t cols) {
  auto pass = [&](int64_t first, int64_t n, Vf scale, const float* weights) {
    const float* z0 = logits + first;
    const float* t0 = targets + first;
    float* g0 = grad ? grad + first : nullptr;
    Vd acc = zero_d(), acc_hi = zero_d();
    // Without weights w = 1 and both products below are exact: the unweighted bits.
    auto step = [&](Vf z, Vf t, Vf w) -> Vf {
      const Vf e = vexp(set1(0.0f) - abs(z));
      Vd zl, zh, tl, th, ll, lh, wl, wh;
      widen(z, zl, zh);
      widen(t, tl, th);
      widen(vlog1p_unit(e), ll, lh);
      widen(w, wl, wh);
      acc = acc + (max(zl, set1(0.0)) - zl * tl + ll) * wl;
      acc_hi = acc_hi + (max(zh, set1(0.0)) - zh * th + lh) * wh;
      const Vf sig = select(z < set1(0.0f), e, set1(1.0f)) / (set1(1.0f) + e);
      return (sig - t) * (scale * w);
    };
    const int64_t full = n - n % kLanes;
    for (int64_t i = 0; i < full; i += kLanes) {
      const Vf gi = step(load(z0 + i), load(t0 + i), element_weights(weights, i, kLanes));
      if (g0) store(g0 + i, gi);
    }
    if (full < n) {
      // Padding: z = +inf, t = 1 gives the term inf - inf: use a huge finite z instead,
      // whose term max(z, 0) - z + log1p(0) is exactly 0.
      const Vf gi = step(load_partial(z0 + full, n - full, 1e30f), load_partial(t0 + full, n - full, 1.0f),
                         element_weights(weights, full, n - full));
      if (g0) store_partial(g0 + full, n - full, gi);
    }
    return sum_lanes(acc + acc_hi);
  };
  return row_weighted_mean(row_weights, rows, cols, 1.0f, pass);
}

// pred, target: (rows, cols)  row_weights: (rows) or null -> grad: (rows, cols) or null;
// as CpuBackend::mse: d = pred - target, sums of d^2 in float64 (each d^2 exact),
// grad = scale d with the scale fl32(2 / n) (unweighted) or as row_weighted_mean says.
double ew_mse(float* grad, const float* pred, const float* target, const float* row_weights, int64_t rows,
              int64_t cols) {
  auto pass = [&](int64_t first, int64_t n, Vf scale, const float* weights) {
    const float* p0 = pred + first;
    const float* t0 = target + first;
    float* g0 = grad ? grad + first : nullptr;
    Vd acc = zero_d(), acc_hi = zero_d();
    auto step = [&](Vf d, int64_t i, int64_t count) {
      Vd lo, hi;
      widen(d, lo, hi);
      if (weights) {  // element weights (one column): w d^2, each d^2 exact, then one rounding
        const Vf w = element_weights(weights, i, count);
        Vd wl, wh;
        widen(w, wl, wh);
        acc = fmadd(lo * lo, wl, acc);
        acc_hi = fmadd(hi * hi, wh, acc_hi);
        return (scale * w) * d;
      }
      acc = fmadd(lo, lo, acc);
      acc_hi = fmadd(hi, hi, acc_hi);
      return scale * d;
    };
    const int64_t full = n - n % kLanes;
    for (int64_t i = 0; i < full; i += kLanes) {
      const Vf gi = step(load(p0 + i) - load(t0 + i), i, kLanes);
      if (g0) store(g0 + i, gi);
    }
    if (full < n) {
      const Vf gi =
          step(load_partial(p0 + full, n - full, 0.0f) - load_partial(t0 + full, n - full, 0.0f), full, n - full);
      if (g0) store_partial(g0 + full, n - full, gi);
    }
    return sum_lanes(acc + acc_hi);
  };
  return row_weighted_mean(row_weights, rows, cols, 2.0f, pass);
}

// ------------------------------------------------------------------ optimizer updates

// As CpuBackend::sgd_update over one decay range; separate multiplies and adds (no
// fmadd), so every ISA level rounds as the portable loop does. The momentum and Nesterov
// cases are separate instantiations: with no branch in the loop, the one-lane
// (portable) loop is auto-vectorized too.
template <bool kMomentum, bool kNesterov>
void sgd_range(float* param, const float* grad, float* velocity, int64_t n, const SgdStep& s) {
  const Vf lr = set1(s.lr), mu = set1(s.momentum), wd = set1(s.weight_decay);
  auto step = [&](int64_t i, int64_t count) {
    const bool part = count < kLanes;
    auto ld = [&](const float* a) { return part ? load_partial(a + i, count, 0.0f) : load(a + i); };
    auto st = [&](float* a, Vf x) { part ? store_partial(a + i, count, x) : store(a + i, x); };
    const Vf p = ld(param);
    const Vf g = ld(grad) + wd * p;
    Vf upd = g;
    if (kMomentum) {
      const Vf v = mu * ld(velocity) + g;
      st(velocity, v);
      upd = kNesterov ? g + mu * v : v;
    }
    st(param, p - lr * upd);
  };
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) step(i, kLanes);
  if (full < n) step(full, n - full);
}

void ew_sgd_update(float* param, const float* grad, float* velocity, int64_t n, const SgdStep& s) {
  if (!velocity)
    sgd_range<false, false>(param, grad, velocity, n, s);
  else if (s.nesterov)
    sgd_range<true, true>(param, grad, velocity, n, s);
  else
    sgd_range<true, false>(param, grad, velocity, n, s);
}

// As CpuBackend::adam_update over one decay range, with the exact sqrt and divide;
// amsgrad is a separate instantiation (no branch in the loop, as for SGD).
template <bool kAmsgrad>
void adam_range(float* param, const float* grad, float* m, float* v, float* vmax, int64_t n, const AdamStep& s) {
  const Vf shrink = set1(s.shrink), l2 = set1(s.l2), b1 = set1(s.beta1), b2 = set1(s.beta2),
           one_b1 = set1(1.0f - s.beta1), one_b2 = set1(1.0f - s.beta2), step_size = set1(s.step_size),
           bias2_sqrt = set1(s.bias2_sqrt), eps = set1(s.eps);
  auto step = [&](int64_t i, int64_t count) {
    const bool part = count < kLanes;
    auto ld = [&](const float* a) { return part ? load_partial(a + i, count, 0.0f) : load(a + i); };
    auto st = [&](float* a, Vf x) { part ? store_partial(a + i, count, x) : store(a + i, x); };
    const Vf p = ld(param) * shrink;
    const Vf g = ld(grad) + l2 * p;
    const Vf mi = b1 * ld(m) + one_b1 * g;
    const Vf vi = b2 * ld(v) + one_b2 * g * g;
    st(m, mi);
    st(v, vi);
    Vf vhat = vi;
    if (kAmsgrad) {
      const Vf old = ld(vmax);
      vhat = select(old > vi, old, vi);
      st(vmax, vhat);
    }
    st(param, p - step_size * mi / (sqrt(vhat) / bias2_sqrt + eps));
  };
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) step(i, kLanes);
  if (full < n) step(full, n - full);
}

void ew_adam_update(float* param, const float* grad, float* m, float* v, float* vmax, int64_t n, const AdamStep& s) {
  if (vmax)
    adam_range<true>(param, grad, m, v, vmax, n, s);
  else
    adam_range<false>(param, grad, m, v, vmax, n, s);
}

// x: (n) -> sum x_i^2 in float64: four accumulators (two vectors of float64 lanes per
// block, two blocks per step) so the adds do not wait on each other.
double ew_sum_squares(const float* x, int64_t n) {
  Vd a0 = zero_d(), a1 = zero_d(), a2 = zero_d(), a3 = zero_d();
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    Vd lo, hi;
    widen(load(x + i), lo, hi);
    a0 = fmadd(lo, lo, a0);
    a1 = fmadd(hi, hi, a1);
    widen(load(x + i + kLanes), lo, hi);
    a2 = fmadd(lo, lo, a2);
    a3 = fmadd(hi, hi, a3);
  }
  for (; i < n; i += kLanes) {
    Vd lo, hi;
    widen(load_partial(x + i, n - i < kLanes ? n - i : kLanes, 0.0f), lo, hi);
    a0 = fmadd(lo, lo, a0);
    a1 = fmadd(hi, hi, a1);
  }
  return sum_lanes((a0 + a1) + (a2 + a3));
}

// x: (n), in place: x_i = fl32(x_i coef) with the product in float64 (coef may be
// below float32's normal range while the products are not).
void ew_scale(float* x, int64_t n, double coef) {
  const Vd c = set1(coef);
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t count = n - i < kLanes ? n - i : kLanes;
    Vd lo, hi;
    widen(count < kLanes ? load_partial(x + i, count, 0.0f) : load(x + i), lo, hi);
    const Vf r = narrow(lo * c, hi * c);
    count < kLanes ? store_partial(x + i, count, r) : store(x + i, r);
  }
}

// ------------------------------------------------------------------ pruning masks

// param, keep: (n) -> param[i] = 0 where keep[i] == 0; a plain loop the compiler
// vectorizes (a byte compare widened to a blend) at each file's ISA.
void ew_apply_mask(float* param, const uint8_t* keep, int64_t n) {
  for (int64_t i = 0; i < n; ++i) param[i] = keep[i] ? param[i] : 0.0f;
}

// ------------------------------------------------------------------ input checks

// x: (n) -> the index of the first NaN or +-inf, or -1. A float32 is not finite when its
// exponent field is all ones; adding one to the field then carries into the top bit, so
// (bits & exponent) + exponent's lowest bit, ORed over a block, has its top bit set when
// the block holds a non-finite element. Integer operations only (no floating-point flags,
// no subnormal assists); a plain loop of and, add and or, which the portable one-lane
// instantiation leaves to the compiler's vectorizer (SSE2 or NEON have all three). Only a
// block (4 KB) whose flag is set is searched element by element, so a clean array costs
// one read.
int64_t ew_first_nonfinite(const float* x, int64_t n) {
  constexpr int64_t kBlock = 1024;
  constexpr uint32_t kExponent = 0x7f800000u, kExponentOne = 0x00800000u;
  const Vu exponent = set1_u(kExponent), exponent_one = set1_u(kExponentOne);
  auto flag_of = [&](Vf v) { return (bits(v) & exponent) + exponent_one; };
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t end = n - begin < kBlock ? n : begin + kBlock;
    Vu flag = set1_u(0);
    int64_t i = begin;
    // Four vectors ORed as a tree, then into the block's flag: one dependent OR per four loads.
    for (; i + 4 * kLanes <= end; i += 4 * kLanes)
      flag = flag | ((flag_of(load(x + i)) | flag_of(load(x + i + kLanes))) |
                     (flag_of(load(x + i + 2 * kLanes)) | flag_of(load(x + i + 3 * kLanes))));
    for (; i + kLanes <= end; i += kLanes) flag = flag | flag_of(load(x + i));
    if (i < end) flag = flag | flag_of(load_partial(x + i, end - i, 0.0f));
    if (!any_top_bit(flag)) continue;
    for (int64_t j = begin; j < end; ++j) {
      uint32_t b;
      std::memcpy(&b, x + j, sizeof b);
      if ((b & kExponent) == kExponent) return j;
    }
  }
  return -1;
}

// The table of this file's ISA (kIsaSuffix comes from cpu/simd.h); dropout is passed
// in, since its portable form is the scalar Philox of random.h.
// The staged batch's rounding (half_round.h's scalar loop, which the compiler vectorizes
// at each file's ISA: the same bits at every level).
void ew_round_to_half(uint16_t* dst, const float* src, int64_t n, bool bf16) { round_to_half_host(dst, src, n, bf16); }

constexpr ElementwiseKernels elementwise_table(DropoutFn dropout) {
  return {kIsaSuffix,
          ew_softmax_cross_entropy,
          ew_softmax_cross_entropy_soft,
          ew_distillation_loss,
          ew_count_correct,
          ew_binary_cross_entropy_with_logits,
          ew_mse,
          dropout,
          ew_sgd_update,
          ew_adam_update,
          ew_sum_squares,
          ew_scale,
          ew_apply_mask,
          ew_first_nonfinite,
          ew_round_to_half,
          vmath_map<vexp>,
          vmath_map<vexp_nonpositive>,
          vmath_map<vlog>,
          vmath_map<vlog1p>,
          vmath_map<vlog1p_unit>,
          vmath_map<vtanh>,
          vmath_map<vsigmoid>,
          vmath_map<vgelu>};
}

}  // namespace
}  // namespace customml::cpu
