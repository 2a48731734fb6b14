#pragma once
// Defines: the loss and optimizer configurations and Trainer, what trains a Model: the
// gradients and optimizer state, the step count and fp16 loss scale, quantization-aware
// training, and the whole training step (forward, loss, backward, clipping, update, metric
// statistics) as one call. No locking: the Network that owns it gives it exclusive access.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "inference_plan.h"
#include "metric_accumulator.h"
#include "model.h"
#include "private_api.h"

namespace customml {

struct StepGraph;  // trainer_graph.h

enum class LossKind { softmax_cross_entropy, binary_cross_entropy, mse, distillation };
CUSTOMML_PRIVATE_API LossKind parse_loss(const std::string& name);
CUSTOMML_PRIVATE_API const char* loss_name(LossKind k);

struct LossConfig {
  LossKind kind = LossKind::softmax_cross_entropy;
  float label_smoothing = 0.0f;
  std::vector<float> class_weights;  // empty: unweighted
  // distillation (ops::distillation_loss): trained on a teacher's logits given to each
  // train_batch with the labels; evaluate, which has no teacher, reports the labels'
  // softmax cross-entropy.
  float temperature = 4.0f;
  float alpha = 0.9f;
};

struct OptimizerConfig {
  enum class Kind { sgd, adam };
  Kind kind = Kind::adam;
  SgdConfig sgd;
  AdamConfig adam;         // adam.step is the trainer's, not the caller's
  float clip_norm = 0.0f;  // global-norm clipping of the gradients; 0: off
};

// A data-parallel rank's part of a global batch (python/customml/distributed.py). Each rank
// computes the gradient of its rows weighted by its share of the global batch's row
// weights, the ranks sum the gradient buffers (one all-reduce), and every rank applies the
// sum: the mean loss's gradient over the global batch, as one process would compute it.
struct BatchShare {
  double weight = 1.0;      // this rank's sum of row weights over the global batch's
  int64_t global_rows = 0;  // rows in the global batch (the loss metric counts weight x these); 0: b
  int64_t first_row = 0;    // the global batch's row of this rank's first row (the dropout masks)
  // QAT's static input ranges: this rank's batch range (lo, hi) of a layer's input -> the
  // global batch's (the min and max over the ranks), called for each fake-quantized input
  // in layer order, also on a rank whose share is empty (with (0, 0)); null: one process.
  std::function<std::pair<float, float>(float, float)> combine_range;
};

class Trainer {
 public:
  explicit Trainer(Model& model);
  ~Trainer();

  // Sets the loss, the optimizer and the precision of the dense GEMMs (which the device
  // must support), and clears the optimizer state, the step count, the loss scale and the
  // choice of metric statistics.
  void compile(const LossConfig& loss, const OptimizerConfig& opt, Precision precision);
  bool compiled() const { return compiled_; }
  Precision precision() const { return precision_; }
  // The optimizer steps applied. In fp16 the device counts them (a step whose gradients
  // overflow is skipped there), so this and the loss scale's getters read the device.
  CUSTOMML_PRIVATE_API int64_t step() const;
  void set_step(int64_t step);
  void set_seed(uint64_t seed) { seed_ = seed; }
  // Applied to both optimizer configurations (the one compile set and the other, so a
  // later compile with the other kind is not affected).
  void set_learning_rate(float lr);
  float learning_rate() const;
  // fp16 training scales the loss by this before the backward pass so small gradients
  // survive fp16's range; a step whose gradients overflow is skipped and halves it, and
  // 2000 good steps in a row double it (torch.cuda.amp.GradScaler's defaults).
  CUSTOMML_PRIVATE_API double loss_scale() const;
  CUSTOMML_PRIVATE_API int64_t loss_scale_good_steps() const;
  void set_loss_scale(double scale, int64_t good_steps);

  // Optimizer state slots, each num_params floats laid out as the parameters: adam m, v
  // (and vmax with amsgrad); sgd with momentum, the velocity; none before compile.
  int state_slots() const;
  void read_state(float* dst, int slot, int64_t offset, int64_t n) const;
  void write_state(const float* src, int slot, int64_t offset, int64_t n);

  // Recomputes which parameter ranges the optimizer updates after a layer was frozen or
  // unfrozen, and zeroes frozen layers' gradients.
  void plan_updates();

  // See Network::check_inputs.
  void check_inputs(const char* op, const Tensor& x, const Tensor* y, const Tensor* sample_weight) const;
  // See Network::train_batch.
  // soft_targets (n, outputs): the distillation loss's teacher logits, or softmax
  // cross-entropy's probability targets (then y holds their argmax, for the metrics);
  // null otherwise.
  void train_batch(const float* x, const void* y, const float* sample_weight, int64_t n, const int64_t* index,
                   int64_t b, const float* soft_targets = nullptr);
  // train_batch in two halves, for data parallelism (see BatchShare): compute_gradients
  // runs forward, loss and backward of a share into gradients() (b = 0: zeros, no
  // metrics), then the caller sums gradients() over the ranks and apply_gradients(b)
  // unscales (fp16), adds the penalty, clips, updates and masks.
  void compute_gradients(const float* x, const void* y, const float* sample_weight, int64_t n, const int64_t* index,
                         int64_t b, const BatchShare& share, const float* soft_targets = nullptr);
  void apply_gradients(int64_t b);
  float* gradients() { return grads_.data(); }
  const float* gradients() const { return grads_.data(); }
  // The last train_batch's norm slots (norm_from_slots), top layer's first; 0 of them where
  // its step took a global_norm pass.
  const double* norm_slots() const { return norm_slots_.data(); }
  int64_t norm_slot_count() const { return norm_slot_count_; }
  // The forward pass of `plan` and the loss over all n rows in batches, into the metrics;
  // soft_targets (n, outputs): softmax cross-entropy's probability targets, or null.
  void evaluate(const InferencePlan& plan, const float* x, const void* y, int64_t n, int64_t batch_size,
                const float* soft_targets = nullptr);

  // Chooses the metric statistics accumulated from the next batch on (after compile, which
  // clears the choice) and zeroes them. confusion needs a classification loss, regression
  // mse, scores a binary classifier (one logit, or two classes).
  void choose_metrics(const MetricStats& stats);
  MetricAccumulator& metrics() { return metrics_; }
  const MetricAccumulator& metrics() const { return metrics_; }

  // The training step (train_batch) as one device graph (trainer_graph.cpp): batches are
  // gathered into pinned host memory, two buffers used alternately with an event each,
  // and the whole step, their copies included, is recorded once and replayed while its
  // shape and configuration stay (docs/decisions.md). Devices without graphs refuse it;
  // an operation in the step that a graph cannot hold fails when it is recorded.
  void set_cuda_graph(bool on);
  bool cuda_graph() const { return graph_ != nullptr; }
  // Steps replayed from a recorded graph since set_cuda_graph(true).
  int64_t cuda_graph_replays() const;
  int64_t cuda_graph_recordings() const;  // steps recorded as a graph since set_cuda_graph(true)

  // Quantization-aware training of Dense layer `layer` (trainer_qat.cpp); see
  // Network::set_fake_quantization.
  void set_fake_quantization(int64_t layer, bool per_channel, bool inputs, float momentum);
  void clear_fake_quantization(int64_t layer);
  std::pair<double, double> fake_input_range(int64_t layer) const;

 private:
  struct Workspace;
  // Quantization-aware training of one Dense layer: what the training forward pass
  // multiplies by instead of the float weights and inputs.
  struct FakeQuant {
    explicit FakeQuant(Backend* be)
        : w(be),
          w_codes(be),
          w_scale(be),
          x(be),
          x_codes(be),
          x_scale(be),
          x_zero(be),
          range(be),
          batch_range(be),
          batch_ends(be) {}
    bool per_channel = true;
    bool inputs = true;       // fake-quantize the layer's input too (static uint8)
    float momentum = 0.9f;    // of the moving averages of the input range
    bool range_set = false;   // range holds at least a first batch's range
    Buffer<float> w;          // (in, out): dequantize(quantize(weights))
    Buffer<int8_t> w_codes;   // (in, out): fake_quantize's codes (the CUDA devices write none)
    Buffer<float> w_scale;    // (out) or (1)
    Buffer<float> x;          // (rows, in): dequantize(quantize(input))
    Buffer<uint8_t> x_codes;  // (rows, in)
    Buffer<float> x_scale;    // (1)
    Buffer<int32_t> x_zero;   // (1)
    Buffer<double> range;     // (2): the moving input range (lo, hi)
    // Data parallelism (BatchShare::combine_range): this rank's batch range, and the
    // global batch's as two floats.
    Buffer<double> batch_range;  // (2)
    Buffer<float> batch_ends;    // (2)
  };
  void check_targets(const void* y, const int64_t* index, int64_t b) const;
  // Which targets the loss reads, checked against the loss before a batch runs.
  void check_soft_targets(const char* op, const float* soft_targets) const;
  // compute_gradients' checks of a batch share.
  void check_batch(const void* y, const float* sample_weight, int64_t n, const int64_t* index, int64_t b,
                   const float* soft_targets) const;
  // Host memory a batch is gathered into before it is copied to the device.
  struct HostBatch {
    float* input;
    float* row_weights;
    float* targets;
    int32_t* labels;
    // the input rounded to 16 bits instead (input unwritten), where the step reads only that
    // (half_input)
    uint16_t* input16 = nullptr;
  };
  void gather_batch(const HostBatch& h, const float* x, const void* y, const float* sample_weight, const int64_t* index,
                    int64_t start, int64_t b) const;
  // Copies a gathered batch into the workspace's device buffers; soft: h.targets holds the
  // batch's teacher logits or probability targets (b, outputs).
  void upload_batch(const HostBatch& h, int64_t b, bool row_weights, bool targets, bool soft = false);
  // Grows the workspace to b rows.
  void reserve_batch(int64_t b, bool row_weights);
  // The device work of compute_gradients on the staged batch: forward, loss, backward; soft:
  // the softmax cross-entropy reads probability targets.
  void run_gradients(int64_t b, const BatchShare& share, bool row_weights, bool soft);
  // train_batch through the step graph (trainer_graph.cpp).
  void train_batch_graphed(const float* x, const void* y, const float* sample_weight, int64_t n, const int64_t* index,
                           int64_t b, const float* soft_targets);
  // Gathers rows index (or start, start + 1, ...) of x, y and sample_weight (each may be
  // null but x) into the workspace's device buffers; half_x: x rounded to 16 bits into
  // the input's 16-bit buffer instead of the float one (half_input).
  void stage_batch(const float* x, const void* y, const float* sample_weight, const int64_t* index, int64_t start,
                   int64_t b, bool half_x = false);
  // Gathers rows index (or start, start + 1, ...) of src (n, cols), host memory, into dst
  // (b, cols) on the device.
  void stage_rows(float* dst, const float* src, const int64_t* index, int64_t start, int64_t b, int64_t cols);
  // The training forward pass (dropout, fake quantization) of the staged batch, keeping
  // what backward needs; returns the output (b, output_dim).
  const float* forward(int64_t b, const BatchShare& share);
  // Dropout layer l's mask over n elements starting at element `first` of the global
  // batch's mask (forward, and again in backward).
  void dropout(float* y, const float* x, int64_t n, float rate, size_t l, uint64_t first);
  // That mask as a dense layer's epilogue applies it (DenseShape::dropout), writing out.
  DropoutMask dropout_mask(float* out, float rate, size_t l, uint64_t first) const;
  // Whether layer l is a Dropout (rate > 0) whose mask the Dense layer below (forward:
  // its output masked as it is written) or above (backward: its dx) applies, on a device
  // that fuses it: no dropout launch that way.
  bool dropout_fused_below(size_t l) const;
  bool dropout_fused_above(size_t l) const;
  // Whether Dense layer l's output is the next Dense layer's input (through Dropouts of
  // rate 0): its 16-bit copy is read only then.
  bool dense_reads_output(size_t l) const;
  // Which 16-bit copies Dense layer l's launches read in a training step, forward or
  // backward (Backend::dense_half_reads: x, its input's; dy, dz's where it has one): a
  // copy is written only where it is read.
  HalfReads half_reads(size_t l, bool backward) const;
  // Whether Dense layer l's output's 16-bit copy is read (by the next Dense layer).
  bool half_output_read(size_t l) const;
  // Whether a training step's only reader of the staged batch is the first Dense layer's
  // GEMMs (rate-0 Dropouts aside; not under QAT) and they read it only through its 16-bit
  // copy (the device says so, for the workspace's copies of x and of the dz its backward
  // reads; after reserve_batch): then only that copy is staged (docs/decisions.md, "CUDA").
  bool half_input(const BatchShare& share) const;
  // The Dense layer whose dz Dense layer l's dx store writes (DerivativeBelow): the one
  // below it through Dropouts that pass dx on (rate 0) or are fused into that store, where
  // the device fuses derivatives; else layers().size().
  size_t derivative_fused_below(size_t l) const;
  // Whether the training step's loss writes the top Dense layer's dz (LossMetrics::top):
  // the device fuses derivatives, the top layer is Dense, and nothing changes the gradient
  // between the loss and that layer's backward (a data-parallel share is scaled there).
  bool loss_applies_derivative(const BatchShare& share) const;
  // Where it does, sets m.top from the top layer's output y, pre-activation z and dz's
  // 16-bit copy dz16 (the step's buffers; z and dz16 read only where needed).
  void loss_derivative(LossMetrics& m, const BatchShare& share, const float* y, const float* z, uint16_t* dz16) const;
  // fp16's step count and loss scale on the device, read or written whole (not in a step).
  StepState read_step_state() const;
  void write_step_state(const StepState& s);
  // The batch's loss (and its gradient, with_grad), correct count and metric statistics,
  // all left on the device. row_weights: the staged sample weights, or null; soft: the
  // softmax cross-entropy's probability targets are staged in the targets buffer. In fp16
  // the gradient carries the device's loss scale (its StepState).
  void loss_and_count(const float* logits, const float* row_weights, int64_t b, bool with_grad, bool soft,
                      const BatchShare& share = {});
  // The sum of the layers' L1/L2 kernel penalties at the current weights, added to the
  // loss of `rows` rows in the metrics unless gate skips the step; with_grad also adds
  // their gradients to grads_ (one launch on CUDA).
  void add_kernel_penalty(bool with_grad, int64_t rows, const StepState* gate);
  // penalty_terms_ = the layers' penalty terms (their gradients in grads_ when with_grad).
  void gather_penalty_terms(bool with_grad);
  // Whether train_batch's step folds the penalties into the loss launch (their sum) and
  // dW's stores (their gradients, DenseShape::penalty): a device that can, outside fp16
  // (whose gradients are loss-scaled until its unscale pass; docs/decisions.md, "CUDA").
  bool penalties_foldable() const;
  // Whether train_batch's step takes the clipping norm from the dense backward's sums of
  // squares (DenseShape::norm_slots) instead of a global_norm pass: a device that leaves
  // them, clipping, and every gradient as the dense backward stored it (a penalty's
  // gradient only where dW's store adds it, no fp16 unscaling; docs/decisions.md, "CUDA").
  bool norm_from_slots() const;
  // The norm slots dense layer l's backward fills at batch b (0: none, or not trainable).
  int64_t norm_slots_of(size_t l, int64_t b) const;
  // norm_slot_count_ = the slots a batch of b rows fills (none without slot_norm_), and
  // their buffer reserved (reserve_batch: before a step graph records).
  void reserve_norm_slots(int64_t b);
  // gate: fp16's device state (the update is skipped on its say), else null; scalars: what
  // the update reads from the device (trainer_step.cpp).
  void run_optimizer(const StepState* gate, const UpdateScalars& scalars);
  const Buffer<float>& state_buffer(int slot, int64_t offset, int64_t n) const;
  // The fake-quantized kernel of Dense layer l, and its input (b, in) fake-quantized when
  // the layer asks for it (else `input` itself).
  const float* fake_weights(size_t l);
  const float* fake_input(size_t l, const float* input, int64_t b, const BatchShare& share);
  // Moves the batch range of input (n values) into layer f's moving range and encoding,
  // the global batch's under data parallelism.
  void observe_input_range(FakeQuant& f, const float* input, int64_t n, const BatchShare& share);

  Model& model_;
  Backend* backend_;
  Buffer<float> grads_, state_a_, state_b_, state_c_;  // state: m, v, vmax or velocity
  Buffer<float> class_weights_;                        // the loss's class weights, on the device
  Precision precision_ = Precision::fp32;
  // The loss scale outside fp16 (where nothing uses it); in fp16, step_state_ holds it.
  double loss_scale_ = kInitialLossScale;
  int64_t good_steps_ = 0;
  Buffer<StepState> step_state_;  // fp16: the step count and loss scale, on the device
  static constexpr double kInitialLossScale = 65536.0;
  static constexpr int64_t kLossScaleGrowthInterval = 2000;
  LossConfig loss_;
  OptimizerConfig opt_;
  bool compiled_ = false;
  int64_t step_ = 0;  // outside fp16 (in fp16, step_state_ counts)
  uint64_t seed_ = 0;
  MetricAccumulator metrics_;
  // A step's scalars on the device: the gradients' global norm and the kernel penalty.
  static constexpr size_t kNorm = 0, kPenalty = 1;
  static constexpr int64_t kMaxNormSlots = 512;  // reserve_norm_slots: where the slots pay
  Buffer<double> scalars_;
  std::vector<PenaltyTerm> penalty_terms_;  // add_kernel_penalty's, reused
  // The parameters the optimizer updates: maximal runs of trainable layers' [kernel,
  // bias] ranges, each with its no-decay segments relative to its start; and the lowest
  // trainable dense layer (layers.size() when none), below which backward stops.
  struct UpdateRange {
    int64_t begin = 0, end = 0;
    std::vector<Segment> no_decay;
  };
  std::vector<UpdateRange> update_ranges_;
  bool fold_penalties_ = false;  // during a train_batch whose step folds them
  bool slot_norm_ = false;       // during a train_batch whose step clips by norm_slots_
  Buffer<double> norm_slots_;    // the backward's sums of squares, top layer's first
  int64_t norm_slot_count_ = 0;  // how many this step's backward fills
  size_t lowest_trainable_ = 0;
  std::unique_ptr<Workspace> ws_;
  std::unique_ptr<InferenceWorkspace> eval_ws_;
  std::vector<std::unique_ptr<FakeQuant>> fake_;  // per layer; set under QAT
  // The step graph's state while set_cuda_graph is on; during a graphed step outside fp16,
  // its device step counts, which the dropout and update kernels read (null otherwise:
  // they take the host's count).
  std::unique_ptr<StepGraph> graph_;
  const StepState* step_gates_ = nullptr;
  const float* step_lr_ = nullptr;  // during a graphed step: its learning rate on the device
  uint64_t config_count_ = 0;       // bumped by whatever changes the step's launches (StepGraphKey)
};

}  // namespace customml
