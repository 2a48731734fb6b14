#pragma once
// Defines: Network, the executor of a compiled layer plan over flat parameter,
// gradient and optimizer-state buffers. One call runs a whole training step or a
// whole inference; every buffer is reused across calls.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"

namespace customml {

struct LayerSpec {
  // affine: y = x * scale + shift per feature (the preprocessing layers Normalization and
  // Rescaling); only at the start of the model, before any dense or dropout layer.
  enum class Kind { dense, dropout, affine };
  Kind kind = Kind::dense;
  int64_t units = 0;  // dense: output width
  Activation activation = Activation::identity;
  float rate = 0.0f;  // dropout
  // dense: L1 / L2 penalty on the kernel (Keras' l1_l2): the loss gains
  // l1 sum |w| + l2 sum w^2 and the kernel gradient l1 sign(w) + 2 l2 w; biases none.
  float l1 = 0.0f, l2 = 0.0f;
  // dense: false freezes the layer (Keras' trainable): its parameters are never updated
  // and its weight gradients never computed.
  bool trainable = true;
  std::vector<float> scale, shift;  // affine: (input_dim) each
};

enum class LossKind { softmax_cross_entropy, binary_cross_entropy, mse };
LossKind parse_loss(const std::string& name);
const char* loss_name(LossKind k);

struct LossConfig {
  LossKind kind = LossKind::softmax_cross_entropy;
  float label_smoothing = 0.0f;
  std::vector<float> class_weights;  // empty: unweighted
};

struct OptimizerConfig {
  enum class Kind { sgd, adam };
  Kind kind = Kind::adam;
  SgdConfig sgd;
  AdamConfig adam;  // adam.step is the executor's, not the caller's
  float clip_norm = 0.0f;  // global-norm clipping of the gradients; 0: off
};

// Sums over the batches since the last reset_metrics().
struct MetricCounters {
  double loss_sum = 0.0;  // sum over batches of (mean batch loss x rows)
  int64_t correct = 0;
  int64_t count = 0;
};

// Which sufficient statistics the executor accumulates per batch, beyond the loss and
// the correct count, for the metrics Python derives from them at epoch end; only what
// the compiled metrics need, so the others cost nothing.
struct MetricStats {
  bool confusion = false;   // classification: a (classes, classes) int64 confusion matrix
  bool regression = false;  // mse: per output sums of |e|, e^2, y, y^2 (float64)
  bool scores = false;      // classification: every row's score(s) and label, for ROC AUC
};

// A reader-writer lock that lets a waiting writer go first: the writer holds gate_
// while it waits, so readers arriving after it queue behind it instead of starving it
// (glibc's rwlock prefers readers, and a busy predict loop would hold off fit forever).
// Readers pass the gate only while a writer is waiting or writing (writers_ counts
// them), so an uncontended predict pays for rw_ alone; a reader that reads 0 just
// before a writer arrives goes first, as it would have passed an open gate.
class WriterPreferringLock {
 public:
  void lock_shared() {
    if (writers_.load() != 0) {
      std::lock_guard<std::mutex> pass(gate_);
    }
    rw_.lock_shared();
  }
  void unlock_shared() { rw_.unlock_shared(); }
  void lock() {
    writers_.fetch_add(1);
    gate_.lock();
    rw_.lock();
  }
  void unlock() {
    rw_.unlock();
    gate_.unlock();
    writers_.fetch_sub(1);
  }

 private:
  std::atomic<int> writers_{0};
  std::mutex gate_;
  std::shared_mutex rw_;
};

enum class SparseFormat { dense, csr, nm };
const char* sparse_format_name(SparseFormat f);
SparseFormat parse_sparse_format(const std::string& name);

// What set_quantization stored for a layer, on the host (the file's copy).
struct QuantizedLayer {
  std::vector<int8_t> w_q;     // (in, out)
  std::vector<float> w_scale;  // (out) or (1)
  bool per_channel = true;
  float in_scale = 0.0f;       // <= 0: dynamic, per row
  int32_t in_zero = 0;
  bool is_static() const { return in_scale > 0.0f; }
};

class Network {
 public:
  Network(int64_t input_dim, std::vector<LayerSpec> layers, const Device& device);
  ~Network();

  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return widths_.back(); }
  int64_t num_params() const { return num_params_; }
  const Device& device() const { return device_; }
  // Per layer: offset of its weight (in, out) and bias (out) in the flat buffer; -1 for
  // layers without parameters.
  const std::vector<int64_t>& weight_offsets() const { return weight_offsets_; }
  const std::vector<int64_t>& bias_offsets() const { return bias_offsets_; }

  // Copies between the caller's memory and [offset, offset + n) of the flat parameters;
  // writes take exclusive access and count as a weight change.
  void read_params(float* dst, int64_t offset, int64_t n) const;
  void write_params(const float* src, int64_t offset, int64_t n);

  // Freezes (false) or unfreezes a dense layer from the next step on; exclusive access.
  // A frozen layer's gradients read as zero, its optimizer state stays as it was.
  void set_trainable(int64_t layer, bool trainable);
  bool trainable(int64_t layer) const;
  // Replaces an affine layer's scale and shift ((input_dim) each, finite), e.g. after
  // Normalization.adapt; exclusive access.
  void set_affine(int64_t layer, const float* scale, const float* shift);

  // Sets the loss, the optimizer and the precision of the dense GEMMs (which the device
  // must support), and clears the optimizer state, the step count and the loss scale.
  void compile(const LossConfig& loss, const OptimizerConfig& opt, Precision precision = Precision::fp32);
  Precision precision() const { return precision_; }
  // fp16 training scales the loss by this before the backward pass so small gradients
  // survive fp16's range; a step whose gradients overflow is skipped and halves it, and
  // 2000 good steps in a row double it (torch.cuda.amp.GradScaler's defaults).
  double loss_scale() const { return loss_scale_; }
  int64_t loss_scale_good_steps() const { return good_steps_; }
  void set_loss_scale(double scale, int64_t good_steps);
  bool compiled() const { return compiled_; }
  int64_t step() const { return step_; }
  void set_seed(uint64_t seed) { seed_ = seed; }
  // The learning rate of the next update, for schedules: exclusive access, so it never
  // changes inside a step; applied to both optimizer configurations (the one compile
  // set and the other, so a later compile with the other kind is not affected).
  void set_learning_rate(float lr);
  float learning_rate() const;

  // Optimizer state for saving and resuming training. Slots, each num_params() floats
  // laid out as the parameters: adam m, v (and vmax with amsgrad); sgd with momentum,
  // the velocity; none before compile. Copies between the caller's memory and
  // [offset, offset + n) of one slot, locked as read_params / write_params.
  int state_slots() const;
  void read_state(float* dst, int slot, int64_t offset, int64_t n) const;
  void write_state(const float* src, int slot, int64_t offset, int64_t n);
  // The number of updates taken: the next one is step + 1 (Adam's bias correction,
  // the dropout streams). compile resets it to 0; set_step resumes a saved count.
  void set_step(int64_t step);

  // x: (n, input_dim); y: labels (n) int32 for softmax_cross_entropy and
  // binary_cross_entropy (0/1), or targets (n, output_dim) float32 for mse;
  // sample_weight: (n) finite >= 0, or null; index: (b) rows of x and y that form the
  // batch. Forward, loss, backward, clipping, update and metric counters, exclusive
  // access. Returns the batch's mean loss, weighted by sample_weight times the class
  // weights: sum_i w_i l_i / sum_i w_i.
  double train_batch(const float* x, const void* y, const float* sample_weight, int64_t n, const int64_t* index,
                     int64_t b);
  // The same forward and loss without dropout or update, over all n rows in batches.
  void evaluate(const float* x, const void* y, int64_t n, int64_t batch_size);
  // x: (n, input_dim) -> out: (n, output_dim), in batches; safe to call concurrently.
  void predict(float* out, const float* x, int64_t n, int64_t batch_size) const;

  // ---- Pruning and the inference plan (DESIGN decision 10) ----
  // keep: (in, out) of Dense layer `layer`, 1 where a weight stays; the pruned weights are
  // zeroed now and after every optimizer update, so they stay exactly zero.
  void set_mask(int64_t layer, const uint8_t* keep);
  void clear_mask(int64_t layer);
  bool masked(int64_t layer) const;
  // How inference runs Dense layer `layer` for batches of min_batch to max_batch rows
  // (others run dense): a sparse format from its nonzero weights. Python chooses it, from a
  // measurement stored in the model file, so the choice is reproducible. min_batch exists
  // because a sparse kernel can lose to the dense GEMV at batch 1 and still win several
  // times over at batch 128. N:M takes n and m (2:4 by default).
  void set_sparse_format(int64_t layer, SparseFormat format, int64_t max_batch, int n = 2, int m = 4,
                         int64_t min_batch = 1);
  SparseFormat sparse_format(int64_t layer) const;
  int64_t sparse_max_batch(int64_t layer) const;
  int64_t sparse_min_batch(int64_t layer) const;
  // Int8 inference of Dense layer `layer`: the layer's float weights are replaced by
  // scale * w_q (so training-mode code and the file agree with the plan). w_q: (in, out)
  // in [-127, 127]; w_scale: (out) when per_channel, else (1). Static inputs use
  // in_scale / in_zero (uint8, per tensor); dynamic ones (in_scale <= 0) are quantized per
  // row at run time.
  void set_quantization(int64_t layer, const int8_t* w_q, const float* w_scale, bool per_channel, float in_scale,
                        int32_t in_zero);
  void clear_quantization(int64_t layer);
  const QuantizedLayer* quantization(int64_t layer) const;
  // Quantization-aware training of Dense layer `layer` (cpp/network_qat.cpp): from the
  // next train_batch on, its forward pass multiplies by dequantize(quantize(W)) (int8,
  // symmetric, per output channel or per tensor, scales from the current weights) and,
  // with inputs, by its input fake-quantized to uint8 over a moving average (momentum) of
  // the batches' [min(0, min x), max(0, max x)]. The backward pass uses the same fake
  // operands, and the gradients reach the float weights unchanged (the straight-through
  // estimator). Inference and evaluate are unaffected.
  void set_fake_quantization(int64_t layer, bool per_channel, bool inputs, float momentum);
  void clear_fake_quantization(int64_t layer);
  // The moving-average input range (lo, hi) of a fake-quantized layer; (0, 0) before
  // its first batch or without input fake quantization.
  std::pair<double, double> fake_input_range(int64_t layer) const;
  // (in, out) of Dense layer `layer`; throws for other layers.
  std::pair<int64_t, int64_t> dense_shape(int64_t layer) const;
  // Builds the inference plan now instead of at the first predict.
  void prepare() const;

  // Validates a caller's x (n, input_dim) float32 and, when given, y (labels (n)
  // int32, or targets (n, output_dim) float32 for mse) and sample_weight ((n) float32;
  // its values are checked per batch) before the calls above; op names the caller
  // (fit, evaluate, predict) in messages.
  void check_inputs(const char* op, const Tensor& x, const Tensor* y, const Tensor* sample_weight = nullptr) const;

  const MetricCounters& metrics() const { return metrics_; }
  void reset_metrics();

  // Chooses the statistics accumulated from the next batch on (after compile, which
  // clears the choice) and zeroes them. confusion needs a classification loss,
  // regression mse, scores a binary classifier (one logit, or two classes).
  void set_metric_stats(const MetricStats& stats);
  const MetricStats& metric_stats() const { return stats_; }
  // The accumulated statistics: counts (classes, classes) row-major (classes = 2 for one
  // logit) and stats (4, output_dim) row-major (sums of |e|, e^2, y - s, (y - s)^2 with s
  // the first target row since the reset); empty when not accumulated.
  std::vector<int64_t> confusion_matrix() const;
  std::vector<double> regression_stats() const;
  // The exact area under the ROC curve of the scores since the last reset (ties count
  // one half, as sklearn.metrics.roc_auc_score); NaN when only one class was seen or a
  // score is NaN. With more than two classes, the macro average of the one-vs-rest
  // areas of the softmax probabilities (sklearn's multi_class="ovr"); NaN unless every
  // class was seen.
  double roc_auc();

 private:
  struct Workspace;
  void check_targets(const void* y, const int64_t* index, int64_t b) const;
  // Gathers rows index (or start, start + 1, ...) of x, y and sample_weight (each may be
  // null but x) into ws's device buffers.
  void stage_batch(Workspace& ws, const float* x, const void* y, const float* sample_weight, const int64_t* index,
                   int64_t start, int64_t b) const;
  // Runs the layers on input (b, input_dim); training applies dropout and keeps what
  // the backward pass needs. Returns the output (b, output_dim), inside ws or out.
  const float* forward(Workspace& ws, const float* input, int64_t b, bool training, float* out) const;
  // row_weights: ws.row_weights when the batch has sample weights, else null.
  double loss_and_count(Workspace& ws, const float* logits, const float* row_weights, int64_t b, bool with_grad);
  // The layers' L1/L2 kernel penalties at the current weights; with_grad also adds
  // their gradients to grads_. Callers hold mutex_ exclusively.
  double kernel_penalty(bool with_grad);
  bool regularized_ = false;
  // The parameters the optimizer updates: maximal runs of trainable layers' [kernel,
  // bias] ranges, each with its no-decay segments relative to its start; and the lowest
  // trainable dense layer (layers_.size() when none), below which backward stops.
  struct UpdateRange {
    int64_t begin = 0, end = 0;
    std::vector<Segment> no_decay;
  };
  std::vector<UpdateRange> update_ranges_;
  size_t lowest_trainable_ = 0;
  // Recomputes the two above from layers_ and zeroes frozen layers' gradients, so the
  // global norm (clipping, the fp16 overflow check) sees only trainable ones.
  void plan_updates();
  void run_optimizer();
  // Validates an affine layer's (scale, shift) and copies them to affine_.
  void check_affine(size_t layer, const float* scale, size_t n_scale, const float* shift, size_t n_shift) const;
  void upload_affine(size_t layer, const float* scale, const float* shift);
  const Buffer<float>& state_buffer(int slot, int64_t offset, int64_t n) const;
  std::unique_ptr<Workspace> acquire_workspace() const;
  void release_workspace(std::unique_ptr<Workspace> ws) const;

  Device device_;
  Backend* backend_;
  int64_t input_dim_;
  std::vector<LayerSpec> layers_;
  std::vector<int64_t> widths_;  // widths_[l] = output width of layer l
  std::vector<int64_t> weight_offsets_, bias_offsets_;
  int64_t num_params_ = 0;
  int64_t max_width_ = 0;

  Buffer<float> params_, grads_, state_a_, state_b_, state_c_;  // state: m, v, vmax or velocity
  Buffer<float> class_weights_;  // the loss's class weights, on the device
  // The affine layers' scale and shift, back to back (2 input_dim floats each, at
  // affine_offsets_[l]; -1 for other layers), on the device; not trained.
  Buffer<float> affine_;
  std::vector<int64_t> affine_offsets_;
  Precision precision_ = Precision::fp32;
  double loss_scale_ = kInitialLossScale;
  int64_t good_steps_ = 0;
  static constexpr double kInitialLossScale = 65536.0;
  static constexpr int64_t kLossScaleGrowthInterval = 2000;
  LossConfig loss_;
  OptimizerConfig opt_;
  bool compiled_ = false;
  int64_t step_ = 0;
  uint64_t seed_ = 0;
  MetricCounters metrics_;
  MetricStats stats_;
  int64_t metric_classes_ = 0;     // rows and columns of the confusion matrix
  Buffer<int64_t> confusion_;      // (classes, classes), on the device
  Buffer<double> regression_;      // (4, output_dim), on the device
  // (output_dim): the first target row since the last reset, subtracted from the targets
  // before their moments are summed (see regression_stats_update); set once per reset.
  Buffer<double> regression_shift_;
  bool shift_set_ = false;
  // (score, label) of every row since the last reset, on the host: the score is the
  // logit, or logit_1 - logit_0 for two classes (monotone in P(class 1)).
  std::vector<std::pair<double, int32_t>> scores_;
  // More than two classes: each row's softmax probabilities (rows, classes) and label,
  // for one-vs-rest ROC AUC.
  std::vector<double> class_probs_;
  std::vector<int32_t> class_labels_;
  std::vector<float> host_logits_;  // staging of a batch's logits on non-host devices
  void record_metric_stats(Workspace& ws, const float* logits, int64_t b);

  std::unique_ptr<Workspace> train_ws_;
  // Per layer (empty entries for dropout): masks, formats, quantization and their
  // prepared device data. The plan is rebuilt lazily after any weight change.
  struct LayerPlan;
  std::vector<std::unique_ptr<LayerPlan>> plans_;
  mutable std::mutex plan_mutex_;        // serializes builders (they hold mutex_ shared)
  mutable std::atomic<bool> plan_ready_{false};
  bool packs_dense_ = false;
  mutable std::atomic<uint64_t> plan_generation_{1};  // counts plan builds: graphs record one
  mutable std::atomic<bool> graphs_usable_{true};     // false once the device declined a capture
  // Inference of b rows staged in ws.input, replaying a recorded device graph where the
  // device has them; returns the output (b, output_dim) in ws.
  const float* forward_replayed(Workspace& ws, int64_t b) const;  // the device has a packed GEMM layout for inference weights
  void invalidate_plan() { plan_ready_.store(false, std::memory_order_release); }
  void ensure_plan() const;
  void reserve_quantized(Workspace& ws, int64_t rows) const;              // callers hold mutex_ (shared or exclusive)
  void build_plan() const;
  bool fold_preprocessing(LayerPlan& p, size_t layer) const;               // callers hold plan_mutex_
  void apply_masks();                    // callers hold mutex_ exclusively
  LayerPlan& dense_plan(const char* op, int64_t layer) const;
  bool planned_forward_needed() const;
  // Quantization-aware training: the fake-quantized kernel of Dense layer l, and its input
  // (b, in) fake-quantized when the layer asks for it (else `input` itself).
  const float* fake_weights(size_t l) const;
  const float* fake_input(size_t l, const float* input, int64_t b) const;
  // The inference forward through the plan (int8 chains, sparse layers).
  const float* forward_planned(Workspace& ws, const float* input, int64_t b, float* out) const;
  mutable WriterPreferringLock mutex_;  // predict, read_params: shared; the rest: exclusive
  // Idle inference workspaces: one in spare_, taken and returned with one atomic
  // exchange (a predict loop on one thread never touches pool_mutex_), the rest in pool_.
  mutable std::atomic<Workspace*> spare_{nullptr};
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<Workspace>> pool_;
};

}  // namespace customml
