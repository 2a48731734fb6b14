#pragma once
// Defines: Backend (memory plus one method per op of backend_ops.def, on raw pointers of
// valid input), the op configuration structs, and backend_for(device).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "activation.h"
#include "host_device.h"
#include "private_api.h"
#include "step_state.h"
#include "tensor.h"

namespace customml {

// A half-open range [begin, end) of a flat parameter buffer that takes no weight
// decay (biases, by default). Segments are sorted and disjoint (ops.cpp checks).
struct Segment {
  int64_t begin = 0;
  int64_t end = 0;
};

// The row stride of every 16-bit copy of a (rows, cols) matrix that the tensor-core GEMMs
// read (HalfOperands, the weights' twin, dz's copy): cols rounded up to a multiple of 8
// elements, so that each row starts 16-byte aligned and cp.async / the TMA move it in
// 16-byte runs (a 10-wide top layer's twin and dz rows 16 apart); equal to cols where cols
// is a multiple of 8. A pad is never read: the GEMMs copy no element past a row's cols.
CUSTOMML_HD inline int64_t half_ld(int64_t cols) { return (cols + 7) / 8 * 8; }

// A padded or moved Dense kernel's place in the parameters' 16-bit twin (Model::half_params):
// the parameters [begin, end), rows of cols, go to rows ld = half_ld(cols) apart from twin
// index dst (a multiple of 8) on, the pads zero (a kernel whose cols and offset are multiples
// of 8 has no entry: its twin index is its parameter index).
struct HalfRows {
  int64_t begin = 0, end = 0, cols = 0, ld = 0, dst = 0;
};

struct SgdConfig {
  float lr = 0.01f;
  float momentum = 0.0f;
  bool nesterov = false;
  float weight_decay = 0.0f;  // L2 added to the gradient, as torch.optim.SGD
};

struct AdamConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled = false;  // AdamW: p -= lr * wd * p, instead of L2 on the gradient
  bool amsgrad = false;
  int64_t step = 1;  // 1-based count of updates including this one (bias correction)
};

// What an optimizer update reads from device memory instead of its arguments, so that a
// training step decides it there without the host waiting, and a recorded step graph
// reads each step's value at replay (each null when unused; the Python ops pass none).
struct UpdateScalars {
  const float* lr = nullptr;        // the learning rate instead of the config's (a step graph's schedule)
  const double* unscale = nullptr;  // each gradient *= *unscale first, as scale_by (fp16's StepState::unscale)
  const double* norm = nullptr;     // then *= max_norm / (*norm + 1e-6) where that is below 1, as clip_by_global_norm
  float max_norm = 0.0f;
  // or, where norm_slots is given, by the square root of their sum in slot order instead of
  // *norm (norm_slot_count of DenseShape::norm_slots: each block of the update adds them)
  const double* norm_slots = nullptr;
  int64_t norm_slot_count = 0;
  // The parameters' 16-bit twin (Model::half_params): each updated parameter i (of this
  // update's n, the model's parameter half_first + i) is written there too, rounded to bf16
  // (half_bf16) or fp16, at its twin index (HalfRows: a padded kernel's rows, half_rows of
  // them, in device memory; the others at their parameter index); null: none.
  uint16_t* half = nullptr;
  bool half_bf16 = false;
  int64_t half_first = 0;
  const HalfRows* half_rows = nullptr;
  int64_t half_row_count = 0;
};

// One Dense kernel's L1/L2 penalty (Backend::kernel_penalties).
struct PenaltyTerm {
  float* grad = nullptr;         // (n) += the penalty's gradient, or null (a frozen layer, evaluation)
  const float* param = nullptr;  // (n)
  int64_t n = 0;
  float l1 = 0.0f, l2 = 0.0f;
};

// The number format a dense layer's GEMM products use: fp32 everywhere; tf32, bf16 and
// fp16 on tensor cores (operands rounded to the format, accumulation in float32, weights
// kept in float32) where a backend supports them.
enum class Precision { fp32, tf32, bf16, fp16 };

inline const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
    case Precision::fp16: return "fp16";
  }
  return "?";
}

inline Precision parse_precision(const std::string& s) {
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16, Precision::fp16})
    if (s == precision_name(p)) return p;
  throw std::invalid_argument("precision must be fp32, tf32, bf16 or fp16, got '" + s + "'");
}

// 16-bit copies of a dense layer's operands for its bf16 / fp16 GEMMs: the precision's
// format as bits, in the float arrays' layouts but for their rows, half_ld(cols) apart;
// null where the caller keeps none (the GEMM then rounds the float array as it stages it).
// Ignored at fp32 and tf32.
struct HalfOperands {
  const uint16_t* w = nullptr;  // (in, out): the kernel's twin (Model::half_params)
  const uint16_t* x = nullptr;  // (batch, in): the input, as the layer below wrote it (y)
  uint16_t* y = nullptr;        // (batch, out), written with y: the next layer's x
  // dense_backward: dy's copy (batch, out), the dz that the layer above's dx store wrote
  // (DenseShape::below), read where dy is dz (act identity)
  const uint16_t* dy = nullptr;
};

// Inverted dropout applied by a dense layer's epilogue (Backend::fuses_dropout), with the
// mask of Backend::dropout (its seed, stream, gate, per_step and first): out null, none.
// dense_forward writes y and also out = y masked (the Dropout layer after it: its output);
// dense_backward masks dx itself (out is dx: the Dropout layer below passes the gradient
// through its mask), so a Dense -> Dropout -> Dense step runs no dropout launch.
struct DropoutMask {
  float* out = nullptr;
  float rate = 0.0f;
  uint64_t seed = 0, stream = 0, first = 0;
  const StepState* gate = nullptr;
  uint64_t per_step = 0;
};

// The Dense layer below's activation derivative, applied by dense_backward's dx store
// where Backend::fuses_derivative (after a fused Dropout's mask): dx is written as that
// layer's dz = act'(dx; y, z) (y, z: its output and pre-activation, z for gelu only), and
// at bf16 / fp16 also rounded to dz16 (rows half_ld apart; null: not written), that layer's
// HalfOperands::dy.
// The layer below then passes act identity: its dy is dz. The same float expression as
// the derivative applied where dy is read, so no bit changes.
struct DerivativeBelow {
  Activation act = Activation::identity;
  const float* y = nullptr;
  const float* z = nullptr;
  uint16_t* dz16 = nullptr;
};

// A Dense kernel's L1/L2 penalty in a training step, whose gradient l1 sign(w) + 2 l2 w at
// the weights w (the parameters, not a fake-quantized copy) dense_backward's dW store adds
// to what it stores (kernel_penalties' expression), before its square goes to the norm
// slots; w null: none. Only where Backend::folded_penalties() is not 0.
struct DensePenalty {
  const float* w = nullptr;
  float l1 = 0.0f, l2 = 0.0f;
};

struct DenseShape {
  int64_t batch = 0, in = 0, out = 0;
  Precision precision = Precision::fp32;  // of the GEMM products
  HalfOperands half = {};
  DropoutMask dropout = {};    // only where fuses_dropout() says so
  DerivativeBelow below = {};  // only where fuses_derivative() says so
  // dense_backward: dw's and db's sums of squares, one double per slot (dense_norm_slots
  // of them, each the sum of one tile's or GEMV warp's elements, written by one block),
  // for the gradients' global norm without a pass of its own; null: none.
  double* norm_slots = nullptr;
  DensePenalty penalty = {};  // dense_backward: the kernel's, which dW's store adds
};

// Backend::dense_half_reads: whether a dense layer's launches read its input's 16-bit copy
// (HalfOperands::x) and dz's (HalfOperands::dy).
struct HalfReads {
  bool x = false, dy = false;
};

// Whether a precision's GEMM operands are 16-bit values (the tensor cores' bf16 / fp16).
inline bool half_operands(Precision p) { return p == Precision::bf16 || p == Precision::fp16; }

// ---- int8 ----
// A code q stands for the real scale * (q - zero). Weights: int8, symmetric (zero 0),
// codes in [-127, 127] so that -w is representable; activations: uint8 with a zero
// point (docs/decisions.md: vpdpbusd multiplies u8 by s8, and ReLU outputs use all 8
// bits). Rounding is half to even, as ONNX QuantizeLinear.
enum class QuantAxis {
  tensor,  // one scale and zero point: scale (1), zero (1)
  row,     // one per row: scale (rows), zero (rows); dynamic activations
  column,  // one per column: scale (cols), zero (cols); per output channel of a (in, out) kernel
};

// The arguments of gemm_s8 that are not its operands: how the int32 accumulators become
// the output. acc[i, j] = sum_p a[i, p] w[p, j], exact in int32; then
// r = a_scale[i] * w_scale[j] * (acc[i, j] - a_zero[i] * colsum_w[j]) + bias[j] with the
// activation applied; a_scale / a_zero / w_scale index 0 when not per row / per channel.
struct GemmS8Epilogue {
  const float* a_scale = nullptr;
  const int32_t* a_zero = nullptr;
  bool a_per_row = false;
  const float* w_scale = nullptr;
  bool w_per_channel = true;
  const float* bias = nullptr;  // (n), or null
  Activation act = Activation::identity;
  // y_u8 only: the requantization of act(r) for the next layer's input.
  float out_scale = 1.0f;
  int32_t out_zero = 0;
};

struct GemmS8Shape {
  int64_t m = 0, k = 0, n = 0;
};
// 255 * 127 * k < 2^31: every accumulator and zero-point-corrected sum fits in int32.
constexpr int64_t kGemmS8MaxK = 66000;

// W (in, out) with most entries zero, stored by output unit (CSR of W^T): the nonzeros of
// output j are rows index[offsets[j] .. offsets[j + 1]) of W, ascending, with values[...].
struct CsrMatrix {
  const int32_t* offsets = nullptr;  // (out + 1)
  const int32_t* index = nullptr;    // (nnz)
  const float* values = nullptr;     // (nnz)
  int64_t in = 0, out = 0, nnz = 0;
};

// W (in, out) with at most n nonzeros in each group of m consecutive rows (inputs
// m g .. m g + m - 1, the last group possibly short) of each column: 2:4 sparsity.
// values (groups * n, out) row-major; index (groups * n, out): each value's row within
// its group (0 .. m - 1); unused slots hold value 0 (any index).
struct NmMatrix {
  const float* values = nullptr;
  const uint8_t* index = nullptr;
  int64_t in = 0, out = 0;
  int n = 2, m = 4;
};

// What a training step's loss also adds to the epoch's metrics (MetricAccumulator), so that
// a device can finish the loss, its gradient and the statistics in one launch (issue 22).
struct LossMetrics {
  double* loss_sum = nullptr;  // (1) += the batch's mean loss x loss_rows, when not null
  double loss_rows = 0.0;
  int64_t* correct = nullptr;  // (1) += the rows count_correct counts, when not null
  // (1): the gradient written times it, each product in double then rounded, as scale_by
  // would scale it afterwards (fp16's loss scale); null: unscaled
  const double* grad_scale = nullptr;
  // classification: (k, k) += 1 at [label, prediction] of each row, as
  // confusion_matrix_update counts (k = classes, 2 for one column); null: not counted
  int64_t* confusion = nullptr;
  // mse: (4, cols) += the batch's sums as regression_stats_update adds them, around
  // regression_shift (cols); null: not summed
  double* regression = nullptr;
  const double* regression_shift = nullptr;
  // The kernel penalties' sum after the loss, as kernel_penalties(penalty, loss_sum,
  // penalties, penalty_count, penalty_weight) adds it, the terms' grad null (dW's stores add
  // the gradients: DenseShape::penalty); 0 terms: none
  const PenaltyTerm* penalties = nullptr;
  int64_t penalty_count = 0;
  double* penalty = nullptr;  // (1)
  double penalty_weight = 0.0;
  // The top Dense layer's activation derivative, applied to the gradient written (after
  // grad_scale) where Backend::fuses_derivative: grad is that layer's dz = act'(grad; y, z),
  // rounded to top.dz16 at bf16 / fp16 (top_bf16: bf16, else fp16) when not null, as a
  // Dense layer's dx store writes the layer below's (DerivativeBelow). Identity: none.
  DerivativeBelow top = {};
  bool top_bf16 = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual bool supports(Precision p) const { return p == Precision::fp32; }
  // dst = src (n: rows of cols) rounded to nearest even to bf16 or fp16 (format), as bits,
  // its rows ld apart (ld >= cols; the pads left as they are): the 16-bit copies a device's
  // tensor-core GEMMs read (HalfOperands, ld half_ld(cols)); where supports(format).
  virtual void round_to_half(uint16_t* dst, const float* src, int64_t n, int64_t cols, int64_t ld, Precision format) {
    throw std::logic_error(std::string("round_to_half: device '") + name() + "' has no " + precision_name(format));
  }

  // Memory. Where it is host-addressable (cpu, cuda-emulated) the executor reads and
  // writes device buffers directly; elsewhere it stages through copies.
  virtual bool host_addressable() const { return true; }
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  virtual void copy_to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  // Device memory to device memory, ordered with the device's ops (the inference plan's
  // own copy of the weights).
  virtual void copy_on_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;

  // Ordering with other libraries' GPU work (DLPack and __cuda_array_interface__ streams,
  // numbered as there: 1 the legacy default stream, 2 the per-thread default stream,
  // else a cudaStream_t). Devices that run each op to completion before returning
  // (cpu, cuda-emulated) need none of it.
  // The queue this device's ops go to (a cudaStream_t as an integer; 0: none).
  virtual uintptr_t stream_handle() { return 0; }
  // Makes this device's queue wait for the work queued on `stream` so far (a producer's).
  virtual void wait_for_stream(uintptr_t stream) {}
  // Makes `stream` (a consumer's) wait for the work queued on this device so far.
  virtual void make_stream_wait(uintptr_t stream) {}
  // Blocks until the work queued on this device so far has finished.
  virtual void synchronize() {}

  // Inference graphs (CUDA graphs): records the device work that body enqueues and
  // returns a handle that replay_graph re-enqueues with the same arguments, cutting the
  // per-kernel launch cost from a fixed-shape inference. A device without graphs (or a
  // body that cannot be captured) runs body right away and returns null; with a graph,
  // nothing has run until the first replay.
  void* capture_graph(const std::function<void()>& body) {
    if (records_graphs()) {
      try {
        return record_graph(body);
      } catch (const std::runtime_error&) {
        // what a graph cannot hold (record_graph names it) runs directly below
      }
    }
    body();
    return nullptr;
  }
  virtual void replay_graph(void* graph) {}
  virtual void destroy_graph(void* graph) {}
  // Training-step graphs (Trainer's cuda_graph): as capture_graph, but a body that cannot
  // be captured (a host wait, an allocation, a copy from pageable memory) throws, naming
  // the operation, instead of running; devices without graphs refuse.
  virtual bool records_graphs() const { return false; }
  virtual void* record_graph(const std::function<void()>& body) {
    throw std::invalid_argument("device '" + name() + "' has no graphs to record a training step in");
  }
  // Counts the device buffers given back so far: a graph holds the addresses it was
  // recorded with, so one recorded before a deallocation may point at freed memory.
  virtual uint64_t memory_epoch() const { return 0; }

  // Page-locked host memory (cudaHostAlloc on "cuda"): the host memory a copy inside a
  // graph may read, since the copy runs whenever the graph does.
  virtual void* allocate_host(size_t bytes) { return ::operator new(bytes == 0 ? 1 : bytes); }
  virtual void deallocate_host(void* p) { ::operator delete(p); }
  // Events: a point in this device's queue the host can wait for, so that it reuses a
  // pinned buffer only once the copy that reads it has run. Null, and no waiting, on
  // devices whose ops finish before they return.
  virtual void* create_event() { return nullptr; }
  virtual void destroy_event(void* event) {}
  virtual void record_event(void* event) {}
  // Blocks until the work queued before the last record_event(event) has finished.
  virtual void wait_event(void* event) {}

  // The ops, one pure virtual method each, from their one list (backend_ops.def).
#define CUSTOMML_OP(ret, name, params) virtual ret name params = 0;
#include "backend_ops.def"
#undef CUSTOMML_OP

  // softmax_cross_entropy, then the gradient scaled as scale_by scales it and m's sums as
  // accumulate and count_correct add them: the ops by default, one launch on the CUDA
  // devices (cuda/loss_epilogue.cuh).
  // m.correct and m.confusion are not read by mse_metrics, m.regression only by it.
  virtual void softmax_cross_entropy_metrics(float* grad, double* loss, const float* logits, const int32_t* labels,
                                             const float* class_weights, const float* row_weights, int64_t batch,
                                             int64_t classes, float label_smoothing, const LossMetrics& m) {
    softmax_cross_entropy(grad, loss, logits, labels, class_weights, row_weights, batch, classes, label_smoothing);
    if (grad && m.grad_scale) scale_by(grad, batch * classes, m.grad_scale);
    if (m.loss_sum) accumulate(m.loss_sum, loss, m.loss_rows, nullptr);
    if (m.correct) count_correct(m.correct, logits, labels, batch, classes);
    if (m.confusion) confusion_matrix_update(m.confusion, logits, labels, batch, classes);
    add_penalties(m);
  }
  // binary_cross_entropy_with_logits and mse the same way (labels: count_correct's).
  virtual void binary_cross_entropy_with_logits_metrics(float* grad, double* loss, const float* logits,
                                                        const float* targets, const int32_t* labels,
                                                        const float* row_weights, int64_t rows, int64_t cols,
                                                        const LossMetrics& m) {
    binary_cross_entropy_with_logits(grad, loss, logits, targets, row_weights, rows, cols);
    if (grad && m.grad_scale) scale_by(grad, rows * cols, m.grad_scale);
    if (m.loss_sum) accumulate(m.loss_sum, loss, m.loss_rows, nullptr);
    if (m.correct) count_correct(m.correct, logits, labels, rows, cols);
    if (m.confusion) confusion_matrix_update(m.confusion, logits, labels, rows, cols);
    add_penalties(m);
  }
  virtual void mse_metrics(float* grad, double* loss, const float* pred, const float* target, const float* row_weights,
                           int64_t rows, int64_t cols, const LossMetrics& m) {
    mse(grad, loss, pred, target, row_weights, rows, cols);
    if (grad && m.grad_scale) scale_by(grad, rows * cols, m.grad_scale);
    if (m.loss_sum) accumulate(m.loss_sum, loss, m.loss_rows, nullptr);
    if (m.regression) regression_stats_update(m.regression, pred, target, m.regression_shift, rows, cols);
    add_penalties(m);
  }
  // softmax_cross_entropy_soft likewise (labels: the targets' argmax, count_correct's).
  virtual void softmax_cross_entropy_soft_metrics(float* grad, double* loss, const float* logits, const float* targets,
                                                  const int32_t* labels, const float* row_weights, int64_t batch,
                                                  int64_t classes, const LossMetrics& m) {
    softmax_cross_entropy_soft(grad, loss, logits, targets, row_weights, batch, classes);
    if (grad && m.grad_scale) scale_by(grad, batch * classes, m.grad_scale);
    if (m.loss_sum) accumulate(m.loss_sum, loss, m.loss_rows, nullptr);
    if (m.correct) count_correct(m.correct, logits, labels, batch, classes);
    if (m.confusion) confusion_matrix_update(m.confusion, logits, labels, batch, classes);
    add_penalties(m);
  }
  // distillation_loss likewise (student: the logits count_correct reads).
  virtual void distillation_loss_metrics(float* grad, double* loss, const float* student, const float* teacher,
                                         const int32_t* labels, const float* row_weights, int64_t batch,
                                         int64_t classes, float temperature, float alpha, const LossMetrics& m) {
    distillation_loss(grad, loss, student, teacher, labels, row_weights, batch, classes, temperature, alpha);
    if (grad && m.grad_scale) scale_by(grad, batch * classes, m.grad_scale);
    if (m.loss_sum) accumulate(m.loss_sum, loss, m.loss_rows, nullptr);
    if (m.correct) count_correct(m.correct, student, labels, batch, classes);
    if (m.confusion) confusion_matrix_update(m.confusion, student, labels, batch, classes);
    add_penalties(m);
  }

  // QAT's fake quantization: y = dequantize(quantize(x)) through codes (rows, cols) of
  // qtype, the ops' bits; the CUDA devices compute it in one pass and leave codes unwritten.
  virtual void fake_quantize(float* y, void* codes, DType qtype, const float* x, const float* scale,
                             const int32_t* zero, int64_t rows, int64_t cols, QuantAxis axis) {
    quantize(codes, qtype, x, scale, zero, rows, cols, axis);
    dequantize(y, codes, qtype, scale, zero, rows, cols, axis);
  }

  // The penalties a loss op sums (LossMetrics::penalties), the ops' way.
  void add_penalties(const LossMetrics& m) {
    if (m.penalty_count > 0)
      kernel_penalties(m.penalty, m.loss_sum, m.penalties, m.penalty_count, m.penalty_weight, nullptr);
  }

  // Optional capabilities, with the defaults of a device that has none.
  // How many kernel penalties a loss launch sums and an update adds the gradients of
  // (LossMetrics::penalties, UpdateScalars::penalties), saving kernel_penalties' launch; 0:
  // the executor runs kernel_penalties.
  virtual int64_t folded_penalties() const { return 0; }
  // Whether dense_forward and dense_backward apply DenseShape::dropout; false: the
  // executor runs dropout and leaves it empty.
  virtual bool fuses_dropout() const { return false; }
  // Whether dense_backward applies DenseShape::below; false: it leaves it empty.
  virtual bool fuses_derivative() const { return false; }
  // How many slots dense_backward fills at DenseShape::norm_slots for a layer of shape s
  // (with dx or without); 0: this device fills none (the executor runs global_norm).
  virtual int64_t dense_norm_slots(const DenseShape& s, bool dx) const { return 0; }
  // Which of the 16-bit copies given in s.half (x, w; dy for the backward) dense_forward
  // (backward false) or dense_backward (with dw, dx or both) of shape s reads: a copy read
  // is what the products take instead of rounding the float operand (x: the float x is then
  // not read), one not read need not be written.
  virtual HalfReads dense_half_reads(const DenseShape& s, bool backward, bool dw, bool dx) const { return {}; }
  // Inference weights packed once in this device's GEMM layout (DESIGN decision 5): the
  // bytes it takes for w (in, out), 0 where the device reads w as it is; then
  // dense_forward reading the packed copy (w stays valid: a device may fall back to it,
  // e.g. when the kernel variant changed since packing). reverse_columns is a hint that
  // changes no value: compute the output columns last to first, which the executor
  // alternates between calls so that weights too large for the cache together are read
  // most-recently-used first.
  virtual size_t dense_packed_bytes(int64_t in, int64_t out) { return 0; }
  virtual void dense_pack(void* packed, const float* w, int64_t in, int64_t out) {}
  virtual void dense_forward_packed(float* y, const float* x, const float* w, const void* packed, const float* b,
                                    DenseShape s, Activation act, bool reverse_columns) {
    dense_forward(y, nullptr, x, w, b, s, act);
  }
  // A sparse weight in this device's own product layout, built once per model (DESIGN
  // decision 5) from its CSR (in host memory, structurally valid): the bytes it takes, 0
  // where the device has none. Then the product from the packed copy, for the batches the
  // device serves from it: returns false, having written nothing, for the others (and when
  // the kernel variant changed since packing), and the caller runs the format's own kernel.
  virtual size_t sparse_packed_bytes(const CsrMatrix& w) { return 0; }
  virtual void sparse_pack(void* packed, const CsrMatrix& w) {}
  virtual bool sparse_dense_forward_packed(float* y, const float* x, const void* packed, const float* b, int64_t batch,
                                           Activation act) {
    return false;
  }
  // bf16 weights (customml.quantize.bf16): w (in, out) as bf16 bits packed once in this
  // device's layout, of dense_bf16_packed_bytes(in, out) bytes, 0 where the device has no
  // bf16 product (the ops and the executor refuse bf16 layers there); then x: (batch, in)
  // f32  b: (out) or null -> y: (batch, out) = act(bf16(x) . w + b), accumulated in float32.
  virtual size_t dense_bf16_packed_bytes(int64_t in, int64_t out) { return 0; }
  virtual void dense_bf16_pack(void* packed, const uint16_t* w, int64_t in, int64_t out) {}
  virtual void dense_forward_bf16(float* y, const float* x, const void* packed, const float* b, DenseShape s,
                                  Activation act) {}
};

// Device memory of float32 (or int32) elements that grows on demand and is reused:
// the executor's activations, gradients and staging buffers.
template <class T>
class Buffer {
 public:
  explicit Buffer(Backend* backend = nullptr) : backend_(backend) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : backend_(o.backend_), data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  ~Buffer() {
    if (data_) backend_->deallocate(data_);
  }
  // Capacity for at least n elements; contents are not preserved when it grows.
  T* reserve(size_t n) {
    if (n > size_) {
      if (data_) backend_->deallocate(data_);
      data_ = nullptr;
      size_ = 0;
      data_ = static_cast<T*>(backend_->allocate(n * sizeof(T)));
      size_ = n;
    }
    return data_;
  }
  // Capacity for at least n elements, keeping the first `used` (a device-side copy): for
  // buffers that collect rows across calls. Grows geometrically, so appends cost amortized
  // nothing and stop allocating once the largest use has been seen.
  T* grow(size_t n, size_t used) {
    if (n <= size_) return data_;
    const size_t capacity = n > 2 * size_ ? n : 2 * size_;
    T* bigger = static_cast<T*>(backend_->allocate(capacity * sizeof(T)));
    if (used) backend_->copy_on_device(bigger, data_, used * sizeof(T));
    if (data_) backend_->deallocate(data_);
    data_ = bigger;
    size_ = capacity;
    return data_;
  }
  T* data() const { return data_; }
  size_t size() const { return size_; }
  // Frees the memory (a buffer that only some configurations keep).
  void release() {
    if (data_) backend_->deallocate(data_);
    data_ = nullptr;
    size_ = 0;
  }

 private:
  Backend* backend_;
  T* data_ = nullptr;
  size_t size_ = 0;
};

// The backend of a device: "cpu" always; "cuda" only in a CUDA build with a usable GPU.
CUSTOMML_PRIVATE_API Backend& backend_for(const Device& device);

// The "cuda-emulated" device (cuda/emulated_backend.cpp); throws when the build has no
// SIMT emulation.
Backend& emulated_cuda_backend();
CUSTOMML_PRIVATE_API bool simt_emulation_compiled();
// How many device allocations "cuda-emulated" has made so far (what would be a cudaMalloc
// or a caching-allocator call on "cuda"), so tests can check that steady-state training and
// inference allocate nothing; defined only in builds with the SIMT emulation.
CUSTOMML_PRIVATE_API int64_t emulated_cuda_allocations();
// How many times cuda-emulated has made the host wait for the device so far: copies to the
// host and synchronize() (what stalls a training step on "cuda"), so tests can check that
// a steady-state training step makes none.
CUSTOMML_PRIVATE_API int64_t emulated_cuda_host_waits();
// The bytes copied host -> device by cuda-emulated so far (copy_to_device, and its copies
// in replayed graphs as they run): what would cross PCIe on "cuda". For tests.
CUSTOMML_PRIVATE_API int64_t emulated_cuda_bytes_to_device();
// How many graphs cuda-emulated has replayed so far (each a cudaGraphLaunch on "cuda").
CUSTOMML_PRIVATE_API int64_t emulated_cuda_graph_replays();
// Makes cuda-emulated's gemm() choose as on a Hopper with sm_90a code (the TMA + wgmma
// kernel, cuda/gemm_wgmma.cuh) or not, from wgmma_min_tiles 128 x 256 tiles (a GPU's is an
// H100's 132 SMs); returns the setting before. For tests.
CUSTOMML_PRIVATE_API std::pair<bool, int64_t> emulated_cuda_set_sm90(bool on, int64_t wgmma_min_tiles);

// Whether the CUDA backend is built and usable, and why not; from cuda/.
CUSTOMML_PRIVATE_API bool cuda_compiled();
CUSTOMML_PRIVATE_API bool cuda_available();
CUSTOMML_PRIVATE_API std::string cuda_unavailable_reason();
Backend& cuda_backend(int index);

}  // namespace customml
