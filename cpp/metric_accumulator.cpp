#include "metric_accumulator.h"

#include <algorithm>
#include <cmath>

namespace customml {

MetricAccumulator::MetricAccumulator(Backend* backend)
    : backend_(backend), confusion_(backend), regression_(backend), regression_shift_(backend) {}

void MetricAccumulator::clear_choice() {
  counters_ = MetricCounters{};
  stats_ = MetricStats{};
  scores_.clear();
  class_probs_.clear();
  class_labels_.clear();
}

void MetricAccumulator::choose(const MetricStats& stats, int64_t outputs) {
  stats_ = stats;
  outputs_ = outputs;
  classes_ = outputs == 1 ? 2 : outputs;
  if (stats_.confusion) confusion_.reserve(static_cast<size_t>(classes_ * classes_));
  if (stats_.regression) {
    regression_.reserve(static_cast<size_t>(4 * outputs));
    regression_shift_.reserve(static_cast<size_t>(outputs));
  }
  reset();
}

void MetricAccumulator::reset() {
  counters_ = MetricCounters{};
  if (stats_.confusion) backend_->fill_zero(confusion_.data(), sizeof(int64_t) * static_cast<size_t>(classes_ * classes_));
  if (stats_.regression) backend_->fill_zero(regression_.data(), sizeof(double) * static_cast<size_t>(4 * outputs_));
  scores_.clear();  // keeps its capacity: the next epoch appends without allocating
  class_probs_.clear();
  class_labels_.clear();
  shift_set_ = false;
}

std::vector<int64_t> MetricAccumulator::confusion_matrix() const {
  if (!stats_.confusion) return {};
  std::vector<int64_t> counts(static_cast<size_t>(classes_ * classes_));
  backend_->copy_to_host(counts.data(), confusion_.data(), sizeof(int64_t) * counts.size());
  return counts;
}

std::vector<double> MetricAccumulator::regression_stats() const {
  if (!stats_.regression) return {};
  std::vector<double> stats(static_cast<size_t>(4 * outputs_));
  backend_->copy_to_host(stats.data(), regression_.data(), sizeof(double) * stats.size());
  return stats;
}

namespace {
// The exact area under the ROC curve of (score, label != 0) pairs (sorted in place), as
// sklearn.metrics.roc_auc_score; NaN for one class only or a NaN score.
double binary_roc_auc(std::vector<std::pair<double, int32_t>>& scores) {
  for (const auto& p : scores)
    if (std::isnan(p.first)) return NAN;  // no order to rank by (sklearn refuses NaN too)
  // Sorting reorders the pairs only; the area does not depend on their order, so later
  // batches keep appending.
  std::sort(scores.begin(), scores.end(),
            [](const std::pair<double, int32_t>& a, const std::pair<double, int32_t>& b) { return a.first < b.first; });
  // Mann-Whitney: each positive scores 1 per negative ranked below it and 1/2 per negative
  // tied with it; integer counts (exact), one division at the end.
  int64_t neg_below = 0, pos = 0, neg = 0;
  double wins2 = 0.0;  // twice the sum, in float64: exact below 2^53
  for (size_t i = 0; i < scores.size();) {
    size_t j = i;
    int64_t p = 0, n = 0;
    for (; j < scores.size() && scores[j].first == scores[i].first; ++j) (scores[j].second ? p : n) += 1;
    wins2 += static_cast<double>(p) * static_cast<double>(2 * neg_below + n);
    neg_below += n;
    pos += p;
    neg += n;
    i = j;
  }
  if (pos == 0 || neg == 0) return NAN;
  return wins2 / 2.0 / (static_cast<double>(pos) * static_cast<double>(neg));
}
}  // namespace

double MetricAccumulator::roc_auc() {
  if (!stats_.scores) return NAN;
  const int64_t out = outputs_;
  if (out <= 2) return binary_roc_auc(scores_);
  // One-vs-rest, macro average (sklearn's multi_class="ovr", average="macro"): each
  // class's probabilities against "is this class", then the unweighted mean. sklearn
  // needs every class in the labels; a missing one gives NaN here, as one class does.
  std::vector<std::pair<double, int32_t>> pairs(class_labels_.size());
  double total = 0.0;
  for (int64_t c = 0; c < out; ++c) {
    for (size_t i = 0; i < class_labels_.size(); ++i)
      pairs[i] = {class_probs_[i * static_cast<size_t>(out) + static_cast<size_t>(c)], class_labels_[i] == c};
    total += binary_roc_auc(pairs);
  }
  return total / static_cast<double>(out);
}

void MetricAccumulator::record(const float* logits, const BatchTargets& t, int64_t b) {
  const int64_t out = outputs_;
  if (stats_.confusion) backend_->confusion_matrix_update(confusion_.data(), logits, t.labels, b, out);
  if (stats_.regression) {
    if (!shift_set_) {
      // Any typical target serves; the first row of the first batch costs nothing to find.
      const float* host = backend_->host_addressable() ? t.targets : t.host_targets;
      std::vector<double> shift(host, host + out);
      backend_->copy_to_device(regression_shift_.data(), shift.data(), sizeof(double) * shift.size());
      shift_set_ = true;
    }
    backend_->regression_stats_update(regression_.data(), logits, t.targets, regression_shift_.data(), b, out);
  }
  if (stats_.scores) {
    const bool direct = backend_->host_addressable();
    const float* host = logits;
    if (!direct) {
      host_logits_.resize(static_cast<size_t>(b * out));
      backend_->copy_to_host(host_logits_.data(), logits, sizeof(float) * host_logits_.size());
      host = host_logits_.data();
    }
    const int32_t* labels = direct ? t.labels : t.host_labels;
    if (out > 2) {
      // One-vs-rest needs each class's probability: the ranks of P(c | x) across rows are
      // not those of logit c, since every row has its own normalizer.
      for (int64_t i = 0; i < b; ++i) {
        const float* row = host + i * out;
        const float mx = *std::max_element(row, row + out);
        double sum = 0.0;
        const size_t first = class_probs_.size();
        for (int64_t c = 0; c < out; ++c) {
          class_probs_.push_back(std::exp(static_cast<double>(row[c]) - static_cast<double>(mx)));
          sum += class_probs_.back();
        }
        for (size_t k = first; k < class_probs_.size(); ++k) class_probs_[k] /= sum;
        class_labels_.push_back(labels[i]);
      }
      return;
    }
    for (int64_t i = 0; i < b; ++i) {
      const double score = out == 1 ? static_cast<double>(host[i])
                                    : static_cast<double>(host[2 * i + 1]) - static_cast<double>(host[2 * i]);
      scores_.emplace_back(score, labels[i]);
    }
  }
}

}  // namespace customml
