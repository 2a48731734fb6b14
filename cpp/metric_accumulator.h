#pragma once
// Defines: MetricCounters, MetricStats and MetricAccumulator, the per-batch statistics the
// executor sums for the metrics (loss, correct count, confusion matrix, regression sums,
// ROC scores) between resets. All of them stay on the device until they are read (once an
// epoch), so a training step never waits for the device.

#include <cstdint>
#include <utility>
#include <vector>

#include "backend.h"
#include "private_api.h"

namespace customml {

// Sums over the batches since the last reset.
struct MetricCounters {
  double loss_sum = 0.0;  // sum over batches of (mean batch loss x rows)
  int64_t correct = 0;
  int64_t count = 0;
};

// Which sufficient statistics are accumulated per batch, beyond the loss and the correct
// count, for the metrics Python derives from them at epoch end; only what the compiled
// metrics need, so the others cost nothing.
struct MetricStats {
  bool confusion = false;   // classification: a (classes, classes) int64 confusion matrix
  bool regression = false;  // mse: per output sums of |e|, e^2, y, y^2 (float64)
  bool scores = false;      // classification: every row's score(s) and label, for ROC AUC
};

// One batch's targets as the accumulator reads them: on the device, and the targets' host
// staging where the host cannot address device memory.
struct BatchTargets {
  const int32_t* labels = nullptr;  // (b), classification
  const float* targets = nullptr;   // (b, outputs), mse
  const float* host_targets = nullptr;
};

class MetricAccumulator {
 public:
  explicit MetricAccumulator(Backend* backend);

  // Forgets the choice of statistics and zeroes the sums (compile does).
  void clear_choice();
  // Chooses the statistics of a model with `outputs` outputs and zeroes them.
  void choose(const MetricStats& stats, int64_t outputs);
  const MetricStats& stats() const { return stats_; }
  void reset();

  // Where a loss op writes a batch's mean loss (1 double on the device).
  double* batch_loss() { return sums_.data() + kBatchLoss; }
  // Where a loss op adds the batch's mean loss (x loss_rows: b, or a data-parallel share's
  // rows, see BatchShare), correct count, confusion matrix and regression sums itself, in
  // its own launch (Backend::softmax_cross_entropy_metrics); counts the batch's b rows. The
  // first batch after a reset sets the regression shift from t's first row.
  LossMetrics loss_metrics(int64_t b, double loss_rows, const BatchTargets& t);
  // Counts b more rows: the host's share of loss_metrics, for a replayed step graph whose
  // device work already added the loss.
  void count_rows(int64_t b) { count_ += b; }
  // Whether the next loss_metrics takes its first targets (the regression shift): host work a
  // replayed step graph would skip.
  bool needs_first_targets() const { return stats_.regression && !shift_set_; }
  // The epoch's loss sum (1 double on the device), where a kernel penalty, which belongs
  // to each row's loss, is added for the batch's rows (Backend::kernel_penalties).
  double* loss_sum() { return sums_.data() + kLossSum; }
  // logits (b, outputs), labels (b) on the device -> kept for ROC AUC when chosen (the
  // other statistics come from the loss op, through loss_metrics).
  void record_scores(const float* logits, const int32_t* labels, int64_t b);

  // The sums since the reset, read from the device.
  MetricCounters counters() const;
  // counts (classes, classes) row-major (classes = 2 for one logit); empty when not chosen.
  std::vector<int64_t> confusion_matrix() const;
  // (4, outputs) row-major: sums of |e|, e^2, y - s, (y - s)^2 with s the first target row
  // since the reset; empty when not chosen.
  std::vector<double> regression_stats() const;
  // (outputs): the shift s of those moments (zeros before the first batch); empty when not
  // chosen. Data-parallel training moves each rank's moments to one shift before summing.
  std::vector<double> regression_shift() const;
  // The exact area under the ROC curve of the scores since the reset (ties count one
  // half, as sklearn.metrics.roc_auc_score); NaN when only one class was seen or a score
  // is NaN. More than two classes: the macro average of the one-vs-rest areas of the
  // softmax probabilities (sklearn's multi_class="ovr"); NaN unless every class was seen.
  double roc_auc();
  // The rows roc_auc ranks, read from the device: logits (rows, outputs) and labels (rows).
  void read_scores(std::vector<float>* logits, std::vector<int32_t>* labels) const;

 private:
  Backend* backend_;
  static constexpr size_t kLossSum = 0, kBatchLoss = 1;
  Buffer<double> sums_;      // (2) on the device: loss_sum, the last batch's mean loss
  Buffer<int64_t> correct_;  // (1) on the device
  int64_t count_ = 0;        // rows since the reset, known on the host
  MetricStats stats_;
  int64_t outputs_ = 0;
  int64_t classes_ = 0;        // rows and columns of the confusion matrix
  Buffer<int64_t> confusion_;  // (classes, classes), on the device
  Buffer<double> regression_;  // (4, outputs), on the device
  // (outputs): the first target row since the last reset, subtracted from the targets
  // before their moments are summed (see regression_stats_update); set once per reset.
  Buffer<double> regression_shift_;
  bool shift_set_ = false;
  // ROC AUC: the logits (rows, outputs) and labels (rows) of every row since the last
  // reset, on the device, growing to an epoch's rows once; the scores are made on the host
  // when the area is asked for.
  Buffer<float> score_logits_;
  Buffer<int32_t> score_labels_;
  int64_t score_rows_ = 0;
};

// MetricAccumulator::roc_auc's area of rows in host memory: logits (rows, outputs),
// labels (rows). Data-parallel training gathers the ranks' rows and ranks them here.
CUSTOMML_PRIVATE_API double roc_auc(const float* logits, const int32_t* labels, size_t rows, int64_t outputs);

}  // namespace customml
