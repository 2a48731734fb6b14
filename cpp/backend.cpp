#include "backend.h"

#include <stdexcept>

#include "cpu/cpu_backend.h"

namespace customml {

Backend& backend_for(const Device& device) {
  switch (device.kind) {
    case DeviceKind::cpu:
      return cpu::CpuBackend::instance();
    case DeviceKind::cuda:
      return cuda_backend();
    case DeviceKind::cuda_emulated:
      throw std::invalid_argument(
          "device 'cuda-emulated' is not available in this version of customml (the host SIMT "
          "emulation of the CUDA kernels has not landed yet)");
  }
  throw std::invalid_argument("unknown device");
}

}  // namespace customml
