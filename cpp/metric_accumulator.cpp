#include "metric_accumulator.h"

#include <algorithm>
#include <cmath>

namespace customml {

MetricAccumulator::MetricAccumulator(Backend* backend)
    : backend_(backend),
      sums_(backend),
      correct_(backend),
      confusion_(backend),
      regression_(backend),
      regression_shift_(backend),
      score_logits_(backend),
      score_labels_(backend) {
  sums_.reserve(2);
  correct_.reserve(1);
  reset();
}

void MetricAccumulator::clear_choice() {
  stats_ = MetricStats{};
  reset();
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
  backend_->fill_zero(sums_.data(), sizeof(double) * 2);
  backend_->fill_zero(correct_.data(), sizeof(int64_t));
  count_ = 0;
  if (stats_.confusion)
    backend_->fill_zero(confusion_.data(), sizeof(int64_t) * static_cast<size_t>(classes_ * classes_));
  if (stats_.regression) backend_->fill_zero(regression_.data(), sizeof(double) * static_cast<size_t>(4 * outputs_));
  score_rows_ = 0;  // the buffers keep their capacity: the next epoch appends without allocating
  shift_set_ = false;
}

LossMetrics MetricAccumulator::loss_metrics(int64_t b, double loss_rows, const BatchTargets& t) {
  count_ += b;
  LossMetrics m;
  m.loss_sum = sums_.data() + kLossSum;
  m.loss_rows = loss_rows;
  m.correct = correct_.data();
  if (stats_.confusion) m.confusion = confusion_.data();
  if (stats_.regression) {
    if (!shift_set_) {
      // Any typical target serves; the first row of the first batch costs nothing to find.
      const float* host = backend_->host_addressable() ? t.targets : t.host_targets;
      std::vector<double> shift(host, host + outputs_);
      backend_->copy_to_device(regression_shift_.data(), shift.data(), sizeof(double) * shift.size());
      shift_set_ = true;
    }
    m.regression = regression_.data();
    m.regression_shift = regression_shift_.data();
  }
  return m;
}

MetricCounters MetricAccumulator::counters() const {
  MetricCounters c;
  backend_->copy_to_host(&c.loss_sum, sums_.data() + kLossSum, sizeof(double));
  backend_->copy_to_host(&c.correct, correct_.data(), sizeof(int64_t));
  c.count = count_;
  return c;
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

std::vector<double> MetricAccumulator::regression_shift() const {
  if (!stats_.regression) return {};
  std::vector<double> shift(static_cast<size_t>(outputs_), 0.0);
  if (shift_set_) backend_->copy_to_host(shift.data(), regression_shift_.data(), sizeof(double) * shift.size());
  return shift;
}

namespace {
// The exact area under the ROC curve of (score, label != 0) pairs (sorted in place), as
// sklearn.metrics.roc_auc_score; NaN for one class only or a NaN score.
double binary_roc_auc(std::vector<std::pair<double, int32_t>>& scores) {
  for (const auto& p : scores)
    if (std::isnan(p.first)) return NAN;  // no order to rank by (sklearn refuses NaN too)
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

void MetricAccumulator::read_scores(std::vector<float>* logits, std::vector<int32_t>* labels) const {
  const size_t rows = stats_.scores ? static_cast<size_t>(score_rows_) : 0;
  logits->resize(rows * static_cast<size_t>(outputs_));
  labels->resize(rows);
  if (rows == 0) return;
  backend_->copy_to_host(logits->data(), score_logits_.data(), sizeof(float) * logits->size());
  backend_->copy_to_host(labels->data(), score_labels_.data(), sizeof(int32_t) * labels->size());
}

double MetricAccumulator::roc_auc() {
  if (!stats_.scores) return NAN;
  std::vector<float> logits;
  std::vector<int32_t> labels;
  read_scores(&logits, &labels);
  return customml::roc_auc(logits.data(), labels.data(), labels.size(), outputs_);
}

double roc_auc(const float* logits, const int32_t* labels, size_t rows, int64_t out) {
  if (out <= 2) {
    // The score is the logit, or logit_1 - logit_0 for two classes (monotone in P(class 1)).
    std::vector<std::pair<double, int32_t>> scores(rows);
    for (size_t i = 0; i < rows; ++i)
      scores[i] = {out == 1 ? static_cast<double>(logits[i])
                            : static_cast<double>(logits[2 * i + 1]) - static_cast<double>(logits[2 * i]),
                   labels[i]};
    return binary_roc_auc(scores);
  }
  // One-vs-rest, macro average (sklearn's multi_class="ovr", average="macro"): each
  // class's probabilities against "is this class", then the unweighted mean. The ranks of
  // P(c | x) across rows are not those of logit c, since every row has its own normalizer.
  // sklearn needs every class in the labels; a missing one gives NaN here, as one class does.
  std::vector<double> probs(rows * static_cast<size_t>(out));
  for (size_t i = 0; i < rows; ++i) {
    const float* row = logits + i * static_cast<size_t>(out);
    double* p = probs.data() + i * static_cast<size_t>(out);
    const float mx = *std::max_element(row, row + out);
    double sum = 0.0;
    for (int64_t c = 0; c < out; ++c) {
      p[c] = std::exp(static_cast<double>(row[c]) - static_cast<double>(mx));
      sum += p[c];
    }
    for (int64_t c = 0; c < out; ++c) p[c] /= sum;
  }
  std::vector<std::pair<double, int32_t>> pairs(rows);
  double total = 0.0;
  for (int64_t c = 0; c < out; ++c) {
    for (size_t i = 0; i < rows; ++i)
      pairs[i] = {probs[i * static_cast<size_t>(out) + static_cast<size_t>(c)], labels[i] == c};
    total += binary_roc_auc(pairs);
  }
  return total / static_cast<double>(out);
}

void MetricAccumulator::record_scores(const float* logits, const int32_t* labels, int64_t b) {
  if (!stats_.scores) return;
  const size_t rows = static_cast<size_t>(score_rows_), w = static_cast<size_t>(outputs_);
  score_logits_.grow((rows + static_cast<size_t>(b)) * w, rows * w);
  score_labels_.grow(rows + static_cast<size_t>(b), rows);
  backend_->copy_on_device(score_logits_.data() + rows * w, logits, sizeof(float) * static_cast<size_t>(b) * w);
  backend_->copy_on_device(score_labels_.data() + rows, labels, sizeof(int32_t) * static_cast<size_t>(b));
  score_rows_ += b;
}

}  // namespace customml
