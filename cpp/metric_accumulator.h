#pragma once
// Defines: MetricCounters, MetricStats and MetricAccumulator, the per-batch statistics the
// executor sums for the metrics (loss, correct count, confusion matrix, regression sums,
// ROC scores) between resets; the confusion matrix and regression sums stay on the device.

#include <cstdint>
#include <utility>
#include <vector>

#include "backend.h"

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

// One batch's targets as the accumulator reads them: on the device, and where the host
// cannot address device memory, the host staging they were copied from.
struct BatchTargets {
  const int32_t* labels = nullptr;       // (b), classification
  const float* targets = nullptr;        // (b, outputs), mse
  const int32_t* host_labels = nullptr;  // host copies, for non-host-addressable devices
  const float* host_targets = nullptr;
};

class MetricAccumulator {
 public:
  explicit MetricAccumulator(Backend* backend);

  // Forgets the choice of statistics and zeroes the counters (compile does).
  void clear_choice();
  // Chooses the statistics of a model with `outputs` outputs and zeroes them.
  void choose(const MetricStats& stats, int64_t outputs);
  const MetricStats& stats() const { return stats_; }
  void reset();

  // A batch of b rows whose mean loss was `loss`: loss_sum += loss b, count += b.
  void add_loss(double loss, int64_t b) {
    counters_.loss_sum += loss * static_cast<double>(b);
    counters_.count += b;
  }
  // The kernel penalty, which belongs to every row's loss.
  void add_penalty(double penalty, int64_t rows) { counters_.loss_sum += penalty * static_cast<double>(rows); }
  void add_correct(int64_t correct) { counters_.correct += correct; }
  // logits: (b, outputs) on the device -> the chosen statistics.
  void record(const float* logits, const BatchTargets& t, int64_t b);

  const MetricCounters& counters() const { return counters_; }
  // counts (classes, classes) row-major (classes = 2 for one logit); empty when not chosen.
  std::vector<int64_t> confusion_matrix() const;
  // (4, outputs) row-major: sums of |e|, e^2, y - s, (y - s)^2 with s the first target row
  // since the reset; empty when not chosen.
  std::vector<double> regression_stats() const;
  // The exact area under the ROC curve of the scores since the reset (ties count one
  // half, as sklearn.metrics.roc_auc_score); NaN when only one class was seen or a score
  // is NaN. More than two classes: the macro average of the one-vs-rest areas of the
  // softmax probabilities (sklearn's multi_class="ovr"); NaN unless every class was seen.
  double roc_auc();

 private:
  Backend* backend_;
  MetricCounters counters_;
  MetricStats stats_;
  int64_t outputs_ = 0;
  int64_t classes_ = 0;        // rows and columns of the confusion matrix
  Buffer<int64_t> confusion_;  // (classes, classes), on the device
  Buffer<double> regression_;  // (4, outputs), on the device
  // (outputs): the first target row since the last reset, subtracted from the targets
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
};

}  // namespace customml
