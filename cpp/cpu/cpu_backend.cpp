#include "cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "cpu/isa.h"

namespace customml::cpu {

CpuBackend::CpuBackend() { active_isa(); }

CpuBackend& CpuBackend::instance() {
  static CpuBackend backend;
  return backend;
}

void* CpuBackend::allocate(size_t bytes) {
  // 64 bytes: one cache line, one AVX-512 vector.
  void* p = std::aligned_alloc(64, ((bytes + 63) / 64) * 64 + (bytes == 0 ? 64 : 0));
  if (!p) throw std::bad_alloc();
  return p;
}

void CpuBackend::deallocate(void* p) { std::free(p); }

void CpuBackend::copy_to_device(void* dst, const void* host_src, size_t bytes) {
  if (bytes) std::memcpy(dst, host_src, bytes);
}

void CpuBackend::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(host_dst, src, bytes);
}

void CpuBackend::copy_on_device(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

void CpuBackend::fill_zero(void* dst, size_t bytes) {
  if (bytes) std::memset(dst, 0, bytes);
}

}  // namespace customml::cpu
