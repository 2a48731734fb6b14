// bf16_gemm__amxemu_16x64: gemm_bf16_amx_kernel.h on the host model of the tile instructions
// (cpu/amx_tiles.h), chosen by _core._set_amx_emulation / CUSTOMML_AMX_EMULATION=1 on any CPU.

#define CUSTOMML_AMX_EMULATED 1
#include "cpu/gemm_bf16_amx_kernel.h"

namespace customml::cpu {

void bf16_gemm__amxemu_16x64(const GemmBf16Args& args) {
  gemm_bf16_blocked<AmxBf16>(args);
  amx::tilerelease();
}

}  // namespace customml::cpu
