#pragma once
// Defines: every op, declared once. Each validates its arguments here (the only
// place that does), naming the op and the argument, then runs on the device of its
// tensors through backend_for(). Outputs first, then inputs, then configuration.

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "backend.h"
#include "packed_weights.h"
#include "private_api.h"
#include "tensor.h"

namespace customml::ops {

// x: (batch, in)  w: (in, out)  b: (out) -> y: (batch, out) = act(x w + b); z: (batch, out)
// receives the pre-activation when given. precision: of the products (the device must
// support it; see Precision).
CUSTOMML_PRIVATE_API void dense_forward(const Tensor& y, const Tensor* z, const Tensor& x, const Tensor& w,
                                        const Tensor& b, Activation act, Precision precision = Precision::fp32);

// dy, y: (batch, out)  x: (batch, in)  w: (in, out)  z: (batch, out), required for gelu
// -> dx: (batch, in) (optional), dw: (in, out), db: (out).
CUSTOMML_PRIVATE_API void dense_backward(const Tensor* dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                                         const Tensor& x, const Tensor& w, const Tensor& y, const Tensor* z,
                                         Activation act, Precision precision = Precision::fp32);

// logits: (batch, classes) f32  labels: (batch) i32  class_weights: (classes) f32
// (optional)  row_weights: (batch) f32 (optional) -> grad: (batch, classes) (optional);
// returns the weighted mean loss sum_i w_i l_i / sum_i w_i, w_i their product.
CUSTOMML_PRIVATE_API double softmax_cross_entropy(const Tensor* grad, const Tensor& logits, const Tensor& labels,
                                                  const Tensor* class_weights, float label_smoothing,
                                                  const Tensor* row_weights = nullptr);

// Soft labels. logits, targets: (batch, classes) f32  row_weights: (batch) f32
// (optional) -> grad: (batch, classes) (optional); returns sum_i w_i l_i / sum_i w_i with
// l_i = -sum_c targets_ic log softmax(logits_i)_c.
CUSTOMML_PRIVATE_API double softmax_cross_entropy_soft(const Tensor* grad, const Tensor& logits, const Tensor& targets,
                                                       const Tensor* row_weights = nullptr);

// student, teacher: (batch, classes) f32  labels: (batch) i32  row_weights: (batch) f32
// (optional) -> grad: (batch, classes) (optional); returns the weighted mean of alpha T^2
// KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) CE(softmax(student), labels).
CUSTOMML_PRIVATE_API double distillation_loss(const Tensor* grad, const Tensor& student, const Tensor& teacher,
                                              const Tensor& labels, float temperature, float alpha,
                                              const Tensor* row_weights = nullptr);

// logits, targets: same shape (rows, ...), f32  row_weights: (rows) f32 (optional)
// -> grad: same shape (optional); returns the mean loss over all elements, each row's
// weighted by row_weights[i] / mean(row_weights).
CUSTOMML_PRIVATE_API double binary_cross_entropy_with_logits(const Tensor* grad, const Tensor& logits,
                                                             const Tensor& targets,
                                                             const Tensor* row_weights = nullptr);

// pred, target: same shape (rows, ...), f32  row_weights: (rows) f32 (optional)
// -> grad (optional); returns the (row-weighted, as above) mean squared error.
CUSTOMML_PRIVATE_API double mse(const Tensor* grad, const Tensor& pred, const Tensor& target,
                                const Tensor* row_weights = nullptr);

// logits: (batch, classes)  labels: (batch) i32 -> number of rows predicted right.
CUSTOMML_PRIVATE_API int64_t count_correct(const Tensor& logits, const Tensor& labels);

// counts: (classes, classes) i64, updated in place  logits: (batch, k) f32  labels:
// (batch) i32, classes = k or 2 when k == 1 -> counts[label, prediction] += 1 per row
// (prediction: first maximal logit, or logit > 0 with one column; rows: true labels).
CUSTOMML_PRIVATE_API void confusion_matrix_update(const Tensor& counts, const Tensor& logits, const Tensor& labels);

// stats: (4, outputs) f64, updated in place  pred, target: (batch, outputs) f32
// shift: (outputs) f64 -> stats += per column [sum |pred - target|, sum (pred - target)^2,
// sum (target - shift), sum (target - shift)^2].
CUSTOMML_PRIVATE_API void regression_stats_update(const Tensor& stats, const Tensor& pred, const Tensor& target,
                                                  const Tensor& shift);

// x -> y, same shape: inverted dropout with a Philox(seed, stream, first + index) mask.
CUSTOMML_PRIVATE_API void dropout(const Tensor& y, const Tensor& x, float rate, uint64_t seed, uint64_t stream,
                                  uint64_t first = 0);

// param, grad, velocity: same shape, f32; param and velocity updated in place, velocity
// optional when momentum is 0. no_decay: sorted, disjoint [begin, end) ranges of the flat index.
CUSTOMML_PRIVATE_API void sgd_update(const Tensor& param, const Tensor& grad, const Tensor* velocity,
                                     const std::vector<Segment>& no_decay, const SgdConfig& config);

// param, grad, m, v (and vmax with amsgrad): same shape, f32; all but grad updated in place.
CUSTOMML_PRIVATE_API void adam_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                                      const Tensor* vmax, const std::vector<Segment>& no_decay,
                                      const AdamConfig& config);

// grad: any shape, f32, scaled in place; returns the norm before scaling.
CUSTOMML_PRIVATE_API double clip_by_global_norm(const Tensor& grad, float max_norm);

// param: any shape, f32 -> grad (same shape, optional) += l1 sign(param) + 2 l2 param, in
// place; returns the penalty l1 sum |param| + l2 sum param^2.
CUSTOMML_PRIVATE_API double l1_l2_penalty(const Tensor* grad, const Tensor& param, float l1, float l2);

// ---- int8 (see QuantAxis in backend.h for the encoding) ----

// x: (rows, cols) f32, finite  scale: f32, positive and finite  zero: i32 in the code range
// (optional: 0); scale and zero (1) for axis tensor, (rows) for row, (cols) for column
// -> q: (rows, cols) i8 (codes [-127, 127]) or u8 ([0, 255]) = clamp(rint(x / scale) + zero).
CUSTOMML_PRIVATE_API void quantize(const Tensor& q, const Tensor& x, const Tensor& scale, const Tensor* zero,
                                   QuantAxis axis);

// q: (rows, cols) i8 or u8  scale, zero: as quantize -> x: (rows, cols) f32 = scale (q - zero).
CUSTOMML_PRIVATE_API void dequantize(const Tensor& x, const Tensor& q, const Tensor& scale, const Tensor* zero,
                                     QuantAxis axis);

// x: (rows, cols) f32, finite, each row's range representable -> q: (rows, cols) u8,
// scale: (rows) f32, zero: (rows) i32, per row (Backend::quantize_rows_dynamic).
CUSTOMML_PRIVATE_API void quantize_rows_dynamic(const Tensor& q, const Tensor& scale, const Tensor& zero,
                                                const Tensor& x);

// w: (rows, cols) f32 -> scale: (cols) f32 for axis column, (1) for tensor = max |w| / 127
// (1 where that is 0; NaN left out): quantization-aware training's weight scales
// (Backend::symmetric_scales).
CUSTOMML_PRIVATE_API void symmetric_scales(const Tensor& scale, const Tensor& w, QuantAxis axis);

// x: (rows, cols) f32  range: (2) f64 (lo, hi), updated in place  momentum in [0, 1) ->
// scale: (1) f32, zero: (1) i32, the range's uint8 encoding (Backend::observe_range).
CUSTOMML_PRIVATE_API void observe_range(const Tensor& range, const Tensor& scale, const Tensor& zero, const Tensor& x,
                                        float momentum, bool first);

// w: (k, n) i8, codes in [-127, 127], 1 <= k <= kGemmS8MaxK -> w packed on w's device.
CUSTOMML_PRIVATE_API std::shared_ptr<PackedS8> gemm_s8_pack(const Tensor& w);

// a: (m, k) u8  w: packed (k, n)  a_zero: (1) or (m) i32 in [0, 255]  a_scale: f32 as a_zero
// w_scale: (1) or (n) f32  bias: (n) f32 -> y: (m, n), by its dtype: f32 act(r), u8 act(r)
// requantized with out_scale / out_zero, or i32 acc - a_zero colsum (then a_scale,
// w_scale, bias, the activation and out_scale / out_zero must not be given); see
// GemmS8Epilogue. Scales positive and finite, bias finite.
CUSTOMML_PRIVATE_API void gemm_s8(const Tensor& y, const Tensor& a, const PackedS8& w, const Tensor* a_scale,
                                  const Tensor& a_zero, const Tensor* w_scale, const Tensor* bias, Activation act,
                                  std::optional<float> out_scale, std::optional<int32_t> out_zero);
// x: (batch, in) f32  w: (in, out) bf16  b: (out) f32 or null -> y: (batch, out) f32 =
// act(bf16(x) . w + b), the arithmetic of cpu/gemm_bf16.h; on devices with a bf16 product.
CUSTOMML_PRIVATE_API void dense_forward_bf16(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor* b,
                                             Activation act);
// param: any shape, f32, updated in place  keep: same shape, u8 -> param[i] = 0 where
// keep[i] == 0 (a pruning mask).
CUSTOMML_PRIVATE_API void apply_mask(const Tensor& param, const Tensor& keep);

// x: (batch, in) f32  w: the CSR of W^T (in, out): offsets (out + 1) i32, index (nnz) i32,
// values (nnz) f32 (output j's inputs index[offsets[j] .. offsets[j + 1]), strictly
// ascending)  b: (out) f32 or null -> y: (batch, out) = act(x W + b).
CUSTOMML_PRIVATE_API void sparse_dense_forward(const Tensor& y, const Tensor& x, const Tensor& offsets,
                                               const Tensor& index, const Tensor& values, const Tensor* b,
                                               Activation act);

// offsets, index, values: the CSR of W^T as sparse_dense_forward takes it, in the number
// of inputs (>= 1) -> the weight prepared on their device.
CUSTOMML_PRIVATE_API std::shared_ptr<PackedCsr> sparse_pack(const Tensor& offsets, const Tensor& index,
                                                            const Tensor& values, int64_t in);
// x: (batch, w.in) f32  w: prepared on x's device  b: (out) f32 or null -> y: (batch, w.out)
// = act(x W + b), the structure not checked again.
CUSTOMML_PRIVATE_API void sparse_dense_forward(const Tensor& y, const Tensor& x, const PackedCsr& w, const Tensor* b,
                                               Activation act);

// x: (batch, in) f32  w: N:M (in, out): values (groups n, out) f32 and index (groups n,
// out) u8, groups = ceil(in / m), each index below its group's size  b: (out) f32 or
// null -> y: (batch, out) = act(x W + b).
CUSTOMML_PRIVATE_API void nm_dense_forward(const Tensor& y, const Tensor& x, const Tensor& values, const Tensor& index,
                                           const Tensor* b, Activation act, int n, int m);
// x: (rows, cols) f32, cols >= 1 -> y: (rows, cols) = softmax of each row; y may be x itself.
CUSTOMML_PRIVATE_API void softmax(const Tensor& y, const Tensor& x);
// x: any shape, f32 -> y: same shape = 1 / (1 + e^-x); y may be x itself.
CUSTOMML_PRIVATE_API void sigmoid(const Tensor& y, const Tensor& x);

// x: (rows, cols) f32  scale, shift: (cols) f32 -> y: (rows, cols) = x * scale + shift.
CUSTOMML_PRIVATE_API void feature_affine(const Tensor& y, const Tensor& x, const Tensor& scale, const Tensor& shift);

// Checks shared with the network executor, which validates whole batches once.
void check_segments(const char* op, const std::vector<Segment>& segments, int64_t n);
void check_sgd_config(const char* op, const SgdConfig& c);
void check_adam_config(const char* op, const AdamConfig& c);

}  // namespace customml::ops
