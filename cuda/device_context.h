#pragma once
// Defines: DeviceContext (a CUDA-model device's stream and reusable scratch) and the
// helpers the launchers share (the weighted-loss total, the no-decay table upload). Compiled by nvcc (namespace cuda)
// and, for the emulated device, by the host compiler (namespace cuda_emulated).

#include <cstdint>
#include <mutex>
#include <vector>

#include "backend.h"
#include "cuda/launch.h"

namespace customml::CUSTOMML_CUDA_NS {

struct DeviceContext {
  explicit DeviceContext(Backend* device)
      : memory(device),
        partials(device),
        counts(device),
        segments(device),
        gemm_partials(device),
        gemm_counters(device),
        ticket(device) {}
  Backend* memory;  // allocation and host <-> device copies
  // Compute capability 9.0 (Hopper): gemm() may take the sm_90a kernel (cuda/gemm_wgmma.cuh)
  // for products of at least wgmma_min_tiles of its 128 x 256 tiles (one wave of an H100
  // SXM's 132 SMs). cuda-emulated's test hook (emulated_cuda_set_sm90) sets both, so that
  // the path a Hopper takes runs end to end at shapes the emulator finishes in seconds.
  bool sm90 = false;
  int64_t wgmma_min_tiles = 132;
  // Every launch goes to stream, which a thread recording an inference graph redirects
  // to its capture stream for the duration (StreamRedirect): other threads' work on the
  // device keeps going to the main stream and is never swept into the graph.
  struct StreamSlot {
    Stream main = nullptr;
    StreamSlot& operator=(Stream s) {
      main = s;
      return *this;
    }
    operator Stream() const { return redirect ? redirect : main; }
    static inline thread_local Stream redirect = nullptr;
  } stream;
  // Scratch of the reductions and the optimizers' segment table, reused by every call;
  // the mutex serializes the ops that use it.
  std::mutex scratch_mutex;
  Buffer<double> partials;
  Buffer<int64_t> counts;
  Buffer<Segment> segments;
  std::vector<Segment> uploaded_segments;  // what `segments` holds on the device (device_segments)
  // The split-K GEMMs' workspace (cuda/dense.cu): allocated once, never moved, as recorded
  // graphs keep its address; launches on the one stream use it in turn.
  Buffer<float> gemm_partials;
  Buffer<unsigned> gemm_counters;
  // The block counter of the one-launch reductions (cuda/loss_epilogue.cuh): zeroed once,
  // and every launch that uses it leaves it at zero.
  Buffer<unsigned> ticket;
  unsigned* grid_ticket() {
    if (!ticket.data()) memory->fill_zero(ticket.reserve(1), sizeof(unsigned));
    return ticket.data();
  }
};

// Sends this thread's launches through ctx.stream to s until destroyed.
class StreamRedirect {
 public:
  explicit StreamRedirect(Stream s) { DeviceContext::StreamSlot::redirect = s; }
  ~StreamRedirect() { DeviceContext::StreamSlot::redirect = nullptr; }
  StreamRedirect(const StreamRedirect&) = delete;
  StreamRedirect& operator=(const StreamRedirect&) = delete;
};

// The weighted losses (cuda/loss_weights.cu). total (1) = sum_i class_weights[labels_i]
// row_weights[i] (a null factor is 1), launched on ctx.stream; callers hold scratch_mutex.
void loss_weight_total(DeviceContext& ctx, double* total, const int32_t* labels, const float* class_weights,
                       const float* row_weights, int64_t batch);
// What a sum of partials becomes.
enum class Finish {
  mean,    // sum / total[0], 0 when that is not positive: a weighted mean loss
  divide,  // sum / divisor: an unweighted mean loss
};

struct PartialsSum {
  const double* partials = nullptr;  // the terms [first, first + count)
  int64_t first = 0, count = 0;
  Finish finish = Finish::divide;
  const double* total = nullptr;  // Finish::mean
  double divisor = 1.0;           // Finish::divide
};

// Launches a kernel on ctx.stream that sets out (1), on the device, to p's sum finished
// (cuda/partials.cu).
void finish_partials(DeviceContext& ctx, double* out, const PartialsSum& p);
// counts (n) on the device -> out (1) += their sum, on ctx.stream (cuda/partials.cu).
void sum_counts(DeviceContext& ctx, int64_t* out, const int64_t* counts, int64_t n);
// Copies the no-decay table to the device; returns its device address.
const Segment* device_segments(DeviceContext& ctx, const Segment* no_decay, int64_t n_no_decay);

}  // namespace customml::CUSTOMML_CUDA_NS
