#pragma once
// Defines: Activation, its names, and the scalar activation functions and derivatives:
// the specification of each activation, used by the CUDA kernels and the CPU backward
// pass (the CPU forward pass applies the same formulas vectorized, cpu/vmath.h).

#include <math.h>

#include <stdexcept>
#include <string>

#include "host_device.h"

namespace customml {

enum class Activation { identity = 0, relu = 1, sigmoid = 2, tanh = 3, gelu = 4 };

inline const char* activation_name(Activation a) {
  switch (a) {
    case Activation::identity: return "identity";
    case Activation::relu: return "relu";
    case Activation::sigmoid: return "sigmoid";
    case Activation::tanh: return "tanh";
    case Activation::gelu: return "gelu";
  }
  return "?";
}

inline Activation parse_activation(const std::string& s) {
  for (Activation a : {Activation::identity, Activation::relu, Activation::sigmoid, Activation::tanh, Activation::gelu})
    if (s == activation_name(a)) return a;
  if (s == "linear" || s.empty()) return Activation::identity;
  throw std::invalid_argument("unknown activation '" + s +
                              "'; expected one of identity (or linear), relu, sigmoid, tanh, gelu");
}

// The derivative of relu, sigmoid and tanh is a function of the output y, so the
// backward pass needs no stored pre-activation for them; gelu's needs z.
inline bool activation_needs_preact(Activation a) { return a == Activation::gelu; }

// Internal linkage on purpose: ISA-specific files include this header with their own
// compiler flags, and an external inline copy built with AVX-512 could be the one the
// linker keeps for the portable path too.
namespace act {
namespace {

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

// Written so that no intermediate overflows: exp of a non-positive number only.
CUSTOMML_HD inline float sigmoid(float z) {
  if (z >= 0.0f) return 1.0f / (1.0f + expf(-z));
  const float e = expf(z);
  return e / (1.0f + e);
}

// GELU, tanh form: 0.5 z (1 + tanh(c (z + a z^3))).
CUSTOMML_HD inline float gelu(float z) {
  const float u = kGeluC * (z + kGeluA * z * z * z);
  return 0.5f * z * (1.0f + tanhf(u));
}

// d gelu / dz = 0.5 (1 + t) + 0.5 z (1 - t^2) c (1 + 3 a z^2), t = tanh(u).
// Where t saturates, (1 - t^2) is exactly 0 and the second term must be 0, not 0 * inf.
CUSTOMML_HD inline float gelu_grad(float z) {
  const float u = kGeluC * (z + kGeluA * z * z * z);
  const float t = tanhf(u);
  const float s = 1.0f - t * t;
  const float second = s == 0.0f ? 0.0f : 0.5f * z * s * kGeluC * (1.0f + 3.0f * kGeluA * z * z);
  return 0.5f * (1.0f + t) + second;
}

// max(z, 0) that propagates NaN, as PyTorch and ONNX Runtime do (a NaN feature must not
// turn into a confident answer), and gives +0 for -0. Not fmaxf(z, 0): it drops the NaN.
CUSTOMML_HD inline float relu(float z) { return z <= 0.0f ? 0.0f : z; }

CUSTOMML_HD inline float apply(Activation a, float z) {
  switch (a) {
    case Activation::identity: return z;
    case Activation::relu: return relu(z);
    case Activation::sigmoid: return sigmoid(z);
    case Activation::tanh: return tanhf(z);
    case Activation::gelu: return gelu(z);
  }
  return z;
}

// dL/dz from dL/dy, given the forward output y (and z for gelu).
CUSTOMML_HD inline float backward(Activation a, float dy, float y, float z) {
  switch (a) {
    case Activation::identity: return dy;
    // A NaN output passes dy on (PyTorch's threshold_backward: 0 only where y <= 0).
    case Activation::relu: return y <= 0.0f ? 0.0f : dy;
    case Activation::sigmoid: return dy * y * (1.0f - y);
    case Activation::tanh: return dy * (1.0f - y * y);
    case Activation::gelu: return dy * gelu_grad(z);
  }
  return dy;
}

}  // namespace
}  // namespace act
}  // namespace customml
