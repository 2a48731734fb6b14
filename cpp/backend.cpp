#include "backend.h"

#include <stdexcept>

#include "cpu/cpu_backend.h"

namespace customml {

Backend& backend_for(const Device& device) {
  switch (device.kind) {
    case DeviceKind::cpu: return cpu::CpuBackend::instance();
    case DeviceKind::cuda: return cuda_backend(device.index);
    case DeviceKind::cuda_emulated: return emulated_cuda_backend();
  }
  throw std::invalid_argument("unknown device");
}

#ifdef CUSTOMML_SIMT_EMULATION
bool simt_emulation_compiled() { return true; }
#else
bool simt_emulation_compiled() { return false; }

Backend& emulated_cuda_backend() {
  throw std::invalid_argument(
      "device 'cuda-emulated' is not available: customml was built with CUSTOMML_SIMT_EMULATION=OFF");
}
#endif

}  // namespace customml
