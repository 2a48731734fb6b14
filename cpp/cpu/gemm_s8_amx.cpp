// s8_gemm__amx_16x64: gemm_s8_amx_kernel.h on the AMX-INT8 instructions, run only where cpuid
// reports AMX and the kernel grants this process the tile state (cpu/isa.cpp).

#include "cpu/gemm_s8_amx_kernel.h"

namespace customml::cpu {

void s8_gemm__amx_16x64(const GemmS8Args& args) {
  gemm_s8_blocked<AmxS8>(args);
  amx::tilerelease();
}

}  // namespace customml::cpu
