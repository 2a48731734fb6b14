// Trainer's step graph (Trainer::set_cuda_graph): the training step recorded once as a
// device graph and replayed, its batch staged through pinned, double-buffered host
// memory.

#include <cstring>
#include <stdexcept>
#include <string>

#include "trainer.h"
#include "trainer_graph.h"

namespace customml {

void Trainer::set_cuda_graph(bool on) {
  if (!on) {
    graph_.reset();
    step_gates_ = nullptr;
    return;
  }
  if (!backend_->records_graphs())
    throw std::invalid_argument(
        "[compile] cuda_graph needs a device that records graphs ('cuda', 'cuda-emulated'), "
        "not '" +
        backend_->name() + "'");
  if (!graph_) graph_ = std::make_unique<StepGraph>(backend_);
  for (StepGraph::Slot& s : graph_->slots)
    if (!s.done) s.done = backend_->create_event();
}

int64_t Trainer::cuda_graph_replays() const { return graph_ ? graph_->replays : 0; }

int64_t Trainer::cuda_graph_recordings() const { return graph_ ? graph_->recordings : 0; }

void Trainer::train_batch_graphed(const float* x, const void* y, const float* sample_weight, int64_t n,
                                  const int64_t* index, int64_t b, const float* soft_targets) {
  check_batch(y, sample_weight, n, index, b, soft_targets);
  if (metrics_.stats().scores)
    throw std::invalid_argument(
        "[fit] the roc_auc metric keeps every row's scores, which a recorded step cannot: compile with "
        "cuda_graph=False");
  StepGraph& g = *graph_;
  const bool fp16 = precision_ == Precision::fp16;
  const int64_t out = model_.output_dim(), input_dim = model_.input_dim();
  const size_t rows = static_cast<size_t>(b);
  reserve_batch(b, sample_weight != nullptr);

  // The slot's previous reader, two steps back, must be done before its memory is reused
  // (no wait in practice: the device is at most one step behind).
  StepGraph::Slot& slot = g.slots[g.next];
  g.next ^= 1;
  backend_->wait_event(slot.done);
  // the input in 16 bits only, where that is all the step reads (half_input)
  const bool half_x = half_input(BatchShare{});
  const size_t values = rows * static_cast<size_t>(input_dim);
  const HostBatch h{half_x ? nullptr : slot.input.reserve(values), slot.row_weights.reserve(rows),
                    slot.targets.reserve(rows * static_cast<size_t>(out)), slot.labels.reserve(rows),
                    half_x ? slot.input16.reserve(rows * static_cast<size_t>(half_ld(input_dim))) : nullptr};
  float* lr = slot.lr.reserve(1);
  *lr = learning_rate();
  gather_batch(h, x, y, sample_weight, index, 0, b);
  if (soft_targets)
    for (int64_t i = 0; i < b; ++i)
      std::memcpy(h.targets + i * out, soft_targets + index[i] * out, sizeof(float) * static_cast<size_t>(out));
  StepState* gates = slot.gates.reserve(2);
  gates[0] = {static_cast<double>(step_), 1.0, 0.0, 0.0, 1.0};
  gates[1] = {static_cast<double>(step_ + 1), 1.0, 0.0, 0.0, 1.0};
  // The dropout and update kernels of this step (alone: compute_gradients and
  // apply_gradients called directly take the host's count) read the device's count.
  struct Gates {
    const StepState*& gates;
    const float*& lr;
    ~Gates() {
      gates = nullptr;
      lr = nullptr;
    }
  } reset{step_gates_, step_lr_};
  step_gates_ = fp16 ? nullptr : g.gates.data();
  step_lr_ = g.lr.data();

  // Everything the device does in the step, copies from the slot first.
  auto body = [&] {
    upload_batch(h, b, sample_weight != nullptr, y != nullptr, soft_targets != nullptr);
    if (!fp16) backend_->copy_to_device(g.gates.data(), gates, 2 * sizeof(StepState));
    backend_->copy_to_device(g.lr.data(), lr, sizeof(float));
    run_gradients(b, BatchShare{}, sample_weight != nullptr, soft_targets != nullptr);
    apply_gradients(b);
  };

  StepGraphKey key;
  key.rows = b;
  key.row_weights = sample_weight != nullptr;
  key.soft = soft_targets != nullptr;
  key.config = config_count_;
  key.memory = backend_->memory_epoch();
  key.first_targets = metrics_.needs_first_targets();
  for (size_t l = 0; l < model_.layers().size(); ++l)
    if (const DenseLayerState* d = model_.dense_state(l); d && d->masked) key.masks.push_back(d->keep.data());

  if (slot.graph && slot.key == key) {
    backend_->replay_graph(slot.graph);
    ++g.replays;
    // What the body does on the host besides launching: count the rows and the step.
    metrics_.count_rows(b);
    if (!fp16) ++step_;
  } else if (g.has_last && g.last == key) {
    // Recorded on the second step with an unchanged key: by then the first has grown every
    // buffer (an allocation cannot be recorded) and settled the one-time work (QAT's first
    // input range, the regression metrics' shift).
    if (slot.graph) backend_->destroy_graph(slot.graph);
    slot.graph = nullptr;
    slot.graph = backend_->record_graph(body);
    slot.key = key;
    ++g.recordings;
    backend_->replay_graph(slot.graph);
    ++g.replays;
  } else {
    body();  // a step with a new key runs directly (its copies still read the slot)
  }
  backend_->record_event(slot.done);
  g.last = std::move(key);
  g.has_last = true;
}

}  // namespace customml
