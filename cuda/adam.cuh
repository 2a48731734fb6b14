#pragma once
// Defines: adam_update_kernel, one pass reading each parameter, gradient and moment
// once, in float4s, with the no-decay table.

#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/update_scalars.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// Per-step scalars computed once on the host (adam_bias): lr / (1 - beta1^t) and
// sqrt(1 - beta2^t); on the device instead when a gate (its step count) or a learning rate
// in device memory is given.
struct AdamStep {
  float step_size;
  float bias2_sqrt;
};

// One element's update (the new parameter; m, v and, with amsgrad, vmax in place): the
// one expression both parts of the kernel use, so a float4 lane rounds as a scalar
// element does. wd is the element's decay (0 inside a no-decay segment).
__device__ __forceinline__ float adam_element(float p0, float grad, float& m, float& v, float& vmax, bool amsgrad,
                                              float wd, const AdamConfig& c, const AdamStep& s) {
  const float l2 = c.decoupled ? 0.0f : wd;
  const float shrink = c.decoupled ? 1.0f - c.lr * wd : 1.0f;  // decoupled decay (AdamW), not L2 on the loss
  const float p = p0 * shrink;
  const float g = grad + l2 * p;
  const float mi = c.beta1 * m + (1.0f - c.beta1) * g;
  const float vi = c.beta2 * v + (1.0f - c.beta2) * g * g;
  m = mi;
  v = vi;
  float vhat = vi;
  if (amsgrad) {
    vhat = vmax > vi ? vmax : vi;
    vmax = vhat;
  }
  return p - s.step_size * mi / (sqrtf(vhat) / s.bias2_sqrt + c.eps);
}

// param, grad, m, v, vmax (null without amsgrad) (n): as cpu/adam.cpp, the learning rate
// and the gradient's scaling read as u says (UpdateScalars). split
// (vec4_split over the five arrays): its float4s one per thread, one 16-byte load and
// store of each array, then its head and tail elements one per thread; with arrays of
// different alignments everything is scalar, the loop the kernel was before.
__global__ void adam_update_kernel(float* param, const float* grad, float* m, float* v, float* vmax, int64_t n,
                                   Vec4Split split, const Segment* no_decay, int64_t n_no_decay, AdamConfig c,
                                   AdamStep s, const StepState* gate, UpdateScalars u) {
  if (gate && gate->skip != 0.0) return;  // fp16: this step's gradients overflowed
  if (u.lr) c.lr = *u.lr;
  if (gate || u.lr) {
    const AdamBias b = adam_bias(c.lr, c.beta1, c.beta2, gate ? gate->step : static_cast<double>(c.step));
    s = {b.step_size, b.bias2_sqrt};
  }
  const GradientScaling scaled(u, clip_norm(u));  // every thread: the norm slots take the block
  const HalfTwin twin(u);
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const bool amsgrad = vmax != nullptr;
  for (int64_t u = first; u < split.vecs; u += stride) {
    const int64_t i0 = split.head + 4 * u;
    float p[4], g[4], mi[4], vi[4], vmaxi[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    bool decay[4];
    load4(p, param + i0);
    load4(g, grad + i0);
    load4(mi, m + i0);
    load4(vi, v + i0);
    if (amsgrad) load4(vmaxi, vmax + i0);
    takes_decay4(decay, no_decay, n_no_decay, i0);
    CUSTOMML_UNROLL
    for (int j = 0; j < 4; ++j)
      p[j] = adam_element(p[j], scaled(g[j]), mi[j], vi[j], vmaxi[j], amsgrad, decay[j] ? c.weight_decay : 0.0f, c, s);
    store4(param + i0, p);
    twin.store4(i0, p);
    store4(m + i0, mi);
    store4(v + i0, vi);
    if (amsgrad) store4(vmax + i0, vmaxi);
  }
  for (int64_t k = first; k < n - 4 * split.vecs; k += stride) {
    const int64_t i = vec4_scalar_index(split, k);
    float mi = m[i], vi = v[i], vmaxi = amsgrad ? vmax[i] : 0.0f;
    const float wd = takes_decay(no_decay, n_no_decay, i) ? c.weight_decay : 0.0f;
    param[i] = adam_element(param[i], scaled(grad[i]), mi, vi, vmaxi, amsgrad, wd, c, s);
    twin.store(i, param[i]);
    m[i] = mi;
    v[i] = vi;
    if (amsgrad) vmax[i] = vmaxi;
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
