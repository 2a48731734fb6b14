#pragma once
// Defines: StepGraph, what Trainer keeps to run its training step as one recorded device
// graph (Trainer::set_cuda_graph, cpp/trainer_graph.cpp): two pinned host slots the
// batches are gathered into alternately, an event per slot, the graph recorded with each
// slot's buffers, and the conditions it was recorded under.

#include <cstdint>
#include <vector>

#include "backend.h"

namespace customml {

// Page-locked host memory from a Backend, grown on demand (contents not kept).
template <class T>
class PinnedBuffer {
 public:
  explicit PinnedBuffer(Backend* backend) : backend_(backend) {}
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (data_) backend_->deallocate_host(data_);
  }
  T* reserve(size_t n) {
    if (n > size_) {
      if (data_) backend_->deallocate_host(data_);
      data_ = nullptr;
      size_ = 0;
      data_ = static_cast<T*>(backend_->allocate_host(n * sizeof(T)));
      size_ = n;
    }
    return data_;
  }
  T* data() const { return data_; }

 private:
  Backend* backend_;
  T* data_ = nullptr;
  size_t size_ = 0;
};

// What a recorded step depends on beyond the values in its buffers: a step recorded under
// one key is replayed only under the same key.
struct StepGraphKey {
  int64_t rows = 0;
  bool row_weights = false, soft = false;  // soft: teacher logits or probability targets staged
  uint64_t config = 0;                     // Trainer's configuration count (compile, freezing, QAT, metrics)
  uint64_t memory = 0;                     // Backend::memory_epoch: no buffer given back since
  std::vector<const void*> masks;          // each masked layer's keep mask (apply_masks launches per mask)
  bool first_targets = false;              // MetricAccumulator::needs_first_targets
  bool operator==(const StepGraphKey& o) const {
    return rows == o.rows && row_weights == o.row_weights && soft == o.soft && config == o.config &&
           memory == o.memory && masks == o.masks && first_targets == o.first_targets;
  }
};

struct StepGraph {
  explicit StepGraph(Backend* be) : backend(be), gates(be), lr(be), slots{Slot(be), Slot(be)} {
    gates.reserve(2);
    lr.reserve(1);
  }
  ~StepGraph() {
    for (Slot& s : slots) {
      if (s.done) {
        backend->wait_event(s.done);  // no copy may still read the pinned memory freed below
        backend->destroy_event(s.done);
      }
      if (s.graph) backend->destroy_graph(s.graph);
    }
  }
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  struct Slot {
    explicit Slot(Backend* be) : input(be), row_weights(be), targets(be), labels(be), input16(be), gates(be), lr(be) {}
    PinnedBuffer<float> input, row_weights, targets;
    PinnedBuffer<int32_t> labels;
    PinnedBuffer<uint16_t> input16;  // the input instead, rounded (Trainer::half_input)
    PinnedBuffer<StepState> gates;   // (2): what StepGraph::gates receives
    PinnedBuffer<float> lr;          // (1): what StepGraph::lr receives
    void* done = nullptr;            // recorded after the step that read this slot
    void* graph = nullptr;           // the step recorded with this slot's buffers, under key
    StepGraphKey key;
  };
  Backend* backend;
  // On the device, outside fp16 (whose StepState serves): [0] the step count before this
  // step (the dropout streams), [1] after it (Adam's bias correction), copied from the
  // slot at the start of each step, so a replay reads the host's count of that step.
  Buffer<StepState> gates;
  // The step's learning rate, copied from the slot likewise: a schedule replays the graph
  // it recorded once instead of recording one per rate.
  Buffer<float> lr;
  Slot slots[2];
  int next = 0;       // the slot of the next step
  StepGraphKey last;  // the previous step's key
  bool has_last = false;
  int64_t replays = 0;     // steps replayed from a recorded graph
  int64_t recordings = 0;  // steps recorded
};

}  // namespace customml
