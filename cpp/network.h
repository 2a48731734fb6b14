#pragma once
// Defines: Network, the executor Python and the C runtime drive: a Model, its Trainer (with
// the metric accumulator) and the current InferencePlan, with the locking that makes their
// calls safe from any number of threads (DESIGN decisions 10 and 12). One call runs a whole
// training step or a whole inference; every buffer is reused across calls.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "inference_plan.h"
#include "metric_accumulator.h"
#include "model.h"
#include "private_api.h"
#include "published.h"
#include "trainer.h"

namespace customml {

class CUSTOMML_PRIVATE_API Network {
 public:
  Network(int64_t input_dim, std::vector<LayerSpec> layers, const Device& device);
  ~Network();

  int64_t input_dim() const { return model_.input_dim(); }
  int64_t output_dim() const { return model_.output_dim(); }
  int64_t num_params() const { return model_.num_params(); }
  const Device& device() const { return device_; }
  // Per layer: offset of its weight (in, out) and bias (out) in the flat buffer; -1 for
  // layers without parameters.
  const std::vector<int64_t>& weight_offsets() const { return model_.weight_offsets(); }
  const std::vector<int64_t>& bias_offsets() const { return model_.bias_offsets(); }

  // Copies between the caller's memory and [offset, offset + n) of the flat parameters;
  // writes take exclusive access and count as a weight change.
  void read_params(float* dst, int64_t offset, int64_t n) const;
  void write_params(const float* src, int64_t offset, int64_t n);

  // A weight change made of several calls (set_weights over the layers, load_weights,
  // pruning, quantization) as one transaction: from begin_update to the matching
  // end_update (they nest), predict keeps running the plan of the weights before it (or,
  // when none was built yet, waits for the end), so a prediction sees the whole old set
  // or the whole new one. Callers serialize transactions and take care that every
  // begin_update is ended (Python: Sequential's _transaction).
  void begin_update();
  void end_update();

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
  Precision precision() const { return trainer_.precision(); }
  // fp16 training scales the loss by this before the backward pass so small gradients
  // survive fp16's range; a step whose gradients overflow is skipped and halves it, and
  // 2000 good steps in a row double it (torch.cuda.amp.GradScaler's defaults).
  double loss_scale() const { return trainer_.loss_scale(); }
  int64_t loss_scale_good_steps() const { return trainer_.loss_scale_good_steps(); }
  void set_loss_scale(double scale, int64_t good_steps);
  bool compiled() const { return trainer_.compiled(); }
  int64_t step() const { return trainer_.step(); }
  void set_seed(uint64_t seed) { trainer_.set_seed(seed); }
  // The learning rate of the next update, for schedules: exclusive access, so it never
  // changes inside a step; applied to both optimizer configurations (the one compile
  // set and the other, so a later compile with the other kind is not affected).
  void set_learning_rate(float lr);
  // See Trainer::set_cuda_graph.
  void set_cuda_graph(bool on);
  bool cuda_graph() const;
  int64_t cuda_graph_replays() const;
  int64_t cuda_graph_recordings() const;
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
  // access. The batch's loss (its mean weighted by sample_weight times the class weights,
  // sum_i w_i l_i / sum_i w_i) goes into the metrics on the device: a step never waits
  // for the device (but in fp16, for the overflow check).
  // soft_targets (n, outputs): the distillation loss's teacher logits, or softmax
  // cross-entropy's probability targets (y then holds their argmax, for the metrics);
  // null otherwise.
  void train_batch(const float* x, const void* y, const float* sample_weight, int64_t n, const int64_t* index,
                   int64_t b, const float* soft_targets = nullptr);
  // train_batch in two halves for data-parallel training (Trainer::compute_gradients and
  // apply_gradients, see BatchShare); between them the caller sums gradients() over the
  // ranks. Each takes exclusive access.
  void compute_gradients(const float* x, const void* y, const float* sample_weight, int64_t n, const int64_t* index,
                         int64_t b, const BatchShare& share);
  void apply_gradients(int64_t b);
  // The flat gradient buffer (num_params floats, laid out as the parameters) on the
  // device: what compute_gradients writes and apply_gradients reads.
  float* gradients() { return trainer_.gradients(); }
  // Copies of the whole gradient buffer to and from the host, for devices whose memory
  // the host cannot address (an all-reduce through host memory).
  void read_gradients(float* dst) const;
  void write_gradients(const float* src);
  // The last training step's sums of squares of its gradients' tiles (Trainer::norm_slots),
  // copied to the host; for tests.
  std::vector<double> read_norm_slots() const;
  // The same forward and loss without dropout or update, over all n rows in batches
  // (soft_targets: softmax cross-entropy's probability targets, as train_batch).
  void evaluate(const float* x, const void* y, int64_t n, int64_t batch_size, const float* soft_targets = nullptr);
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
  // bf16 weights for Dense layer `layer` (Model::set_bf16).
  void set_bf16(int64_t layer, bool on);
  bool bf16(int64_t layer) const;
  const QuantizedLayer* quantization(int64_t layer) const;
  // Quantization-aware training of Dense layer `layer` (cpp/trainer_qat.cpp): from the
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
  // The inference plan's memory (its copy of the weights and the packed, int8, sparse and
  // bf16 layouts), built first if stale: the serving side's memory gauge.
  int64_t inference_bytes() const;

  // Validates a caller's x (n, input_dim) float32 and, when given, y (labels (n)
  // int32, or targets (n, output_dim) float32 for mse) and sample_weight ((n) float32;
  // its values are checked per batch) before the calls above; op names the caller
  // (fit, evaluate, predict) in messages.
  void check_inputs(const char* op, const Tensor& x, const Tensor* y, const Tensor* sample_weight = nullptr) const;

  // The sums since the last reset_metrics(), read from the device.
  MetricCounters metrics() const;
  void reset_metrics();

  // Chooses the statistics accumulated from the next batch on (after compile, which
  // clears the choice) and zeroes them. confusion needs a classification loss,
  // regression mse, scores a binary classifier (one logit, or two classes).
  void set_metric_stats(const MetricStats& stats);
  const MetricStats& metric_stats() const { return trainer_.metrics().stats(); }
  // The accumulated statistics: counts (classes, classes) row-major (classes = 2 for one
  // logit) and stats (4, output_dim) row-major (sums of |e|, e^2, y - s, (y - s)^2 with s
  // the first target row since the reset); empty when not accumulated.
  std::vector<int64_t> confusion_matrix() const;
  std::vector<double> regression_stats() const;
  // (output_dim): the shift s of regression_stats' moments (zeros before the first batch).
  std::vector<double> regression_shift() const;
  // The exact area under the ROC curve of the scores since the last reset (ties count
  // one half, as sklearn.metrics.roc_auc_score); NaN when only one class was seen or a
  // score is NaN. With more than two classes, the macro average of the one-vs-rest
  // areas of the softmax probabilities (sklearn's multi_class="ovr"); NaN unless every
  // class was seen.
  double roc_auc();
  // The rows roc_auc ranks: logits (rows, output_dim) and labels (rows); empty when not
  // accumulated (data-parallel training gathers them from the ranks).
  void roc_scores(std::vector<float>* logits, std::vector<int32_t>* labels) const;

 private:
  // Builds the plan from the model if a weight change made it stale; callers hold no lock.
  void ensure_plan() const;
  void build_plan() const;  // callers hold mutex_ (shared or exclusive) and, if shared, plan_mutex_
  // The published plan, held until the Reader goes; builds it first if it is stale.
  Published<InferencePlan>::Reader read_plan() const;
  void invalidate_plan() { plan_stale_.store(true, std::memory_order_release); }
  // Inference of b rows staged in ws.input, replaying a recorded device graph where the
  // device has them; returns the output (b, output_dim) in ws.
  const float* forward_replayed(const InferencePlan& plan, InferenceWorkspace& ws, int64_t b) const;
  std::unique_ptr<InferenceWorkspace> acquire_workspace() const;
  void release_workspace(std::unique_ptr<InferenceWorkspace> ws) const;

  Device device_;
  Backend* backend_;
  Model model_;
  Trainer trainer_;
  // Writers (every change to the model or the trainer) take it exclusively; readers of
  // the model (parameter copies, plan builders) shared. predict takes none: it runs the
  // published plan, which no writer touches.
  mutable std::shared_mutex mutex_;
  mutable Published<InferencePlan> plan_;
  mutable std::atomic<bool> plan_stale_{true};
  // Builders hold mutex_ and, when shared, plan_mutex_ too.
  mutable std::mutex plan_mutex_;
  mutable uint64_t plan_generation_ = 0;  // numbers the builds (graphs record one); builders only
  // Open transactions (begin_update minus end_update), under plan_mutex_; their end is
  // signalled on updated_.
  int64_t updates_ = 0;
  mutable std::condition_variable updated_;

  mutable std::atomic<bool> graphs_usable_{true};  // false once the device declined a capture
  // Idle inference workspaces: one in spare_, taken and returned with one atomic
  // exchange (a predict loop on one thread never touches pool_mutex_), the rest in pool_.
  mutable std::atomic<InferenceWorkspace*> spare_{nullptr};
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<InferenceWorkspace>> pool_;
};

}  // namespace customml
