// bf16_gemm__amx_16x64: gemm_bf16_amx_kernel.h on the AMX-BF16 instructions, run only where
// cpuid reports AMX-BF16 and the kernel grants this process the tile state (cpu/isa.cpp).

#include "cpu/gemm_bf16_amx_kernel.h"

namespace customml::cpu {

void bf16_gemm__amx_16x64(const GemmBf16Args& args) {
  gemm_bf16_blocked<AmxBf16>(args);
  amx::tilerelease();
}

}  // namespace customml::cpu
