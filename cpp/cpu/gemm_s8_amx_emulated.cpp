// s8_gemm__amxemu_16x64: gemm_s8_amx_kernel.h on the host model of the tile instructions
// (cpu/amx_tiles.h), chosen by _core._set_amx_emulation / CUSTOMML_AMX_EMULATION=1 on any CPU.

#define CUSTOMML_AMX_EMULATED 1
#include "cpu/gemm_s8_amx_kernel.h"

namespace customml::cpu {

void s8_gemm__amxemu_16x64(const GemmS8Args& args) {
  gemm_s8_blocked<AmxS8>(args);
  amx::tilerelease();
}

}  // namespace customml::cpu
