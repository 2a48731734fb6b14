#pragma once
// Defines: IsaLevel, CPU feature detection and the run-time ISA ceiling (CUSTOMML_ISA).

#include <atomic>
#include <string>
#include <vector>

#include "private_api.h"

namespace customml::cpu {

// Ordered: each level implies the ones below it.
enum class IsaLevel { portable = 0, avx2 = 1, avx512 = 2, avx512_vnni = 3, amx = 4 };

CUSTOMML_PRIVATE_API const char* isa_name(IsaLevel level);
CUSTOMML_PRIVATE_API IsaLevel parse_isa(const std::string& name);  // throws std::invalid_argument

// What the CPU and the OS support (cpuid + xgetbv), independent of any ceiling.
CUSTOMML_PRIVATE_API IsaLevel detected_isa();
CUSTOMML_PRIVATE_API std::vector<std::string> cpu_features();
// AVX512-BF16 (vdpbf16ps) usable: the bf16 GEMM runs it at the avx512_vnni level and above.
bool has_avx512_bf16();
// Whether the kernel lets this process use the AMX tile data (Linux: arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, asked once); false without AMX.
bool amx_permitted();
// AMX-BF16 (tdpbf16ps) usable at the amx level.
bool has_amx_bf16();
// The AMX kernels on the host model of the tile instructions instead of the ISA level's own
// (cpu/amx_tiles.h): a switch of its own, since CUSTOMML_ISA never runs a level the CPU lacks.
// Starts as CUSTOMML_AMX_EMULATION=1 from the environment; setting it re-selects the kernels.
CUSTOMML_PRIVATE_API bool amx_emulation();
CUSTOMML_PRIVATE_API void set_amx_emulation(bool on);

// The level kernels are chosen for: min(detected, ceiling). The ceiling starts as
// CUSTOMML_ISA from the environment (unset: no ceiling); a level the CPU lacks is
// never selected, whatever the ceiling says.
CUSTOMML_PRIVATE_API IsaLevel active_isa();
// Sets a new ceiling and re-selects every kernel family; returns the active level.
CUSTOMML_PRIVATE_API IsaLevel set_isa_ceiling(IsaLevel ceiling);

// A kernel family's chosen variant V (its function pointers and name): set by the family's
// select_* when the active level changes, read lock-free by every call; a read before the
// first selection makes it.
template <class V>
class ChosenVariant {
 public:
  void set(const V* v) { v_.store(v, std::memory_order_release); }
  const V& get() const {
    const V* v = v_.load(std::memory_order_acquire);
    if (!v) {
      active_isa();  // the first call selects every family
      v = v_.load(std::memory_order_acquire);
    }
    return *v;
  }

 private:
  std::atomic<const V*> v_{nullptr};
};

}  // namespace customml::cpu
