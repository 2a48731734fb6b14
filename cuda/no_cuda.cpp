// The CUDA backend of a build without CUDA: every entry point says so.

#include <stdexcept>
#include <string>

#include "backend.h"

namespace customml {

bool cuda_compiled() { return false; }
bool cuda_available() { return false; }

std::string cuda_unavailable_reason() {
  return "customml was built without CUDA support (nvcc was not found at build time, or CUSTOMML_CUDA=OFF)";
}

Backend& cuda_backend(int) {
  throw std::invalid_argument("device 'cuda' is not available: " + cuda_unavailable_reason());
}

}  // namespace customml
