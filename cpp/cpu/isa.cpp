#include "cpu/isa.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cpu/elementwise.h"
#include "cpu/gemm.h"
#include "cpu/gemm_bf16.h"
#include "cpu/gemm_s8.h"
#include "cpu/quantize.h"
#include "cpu/sparse.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#define CUSTOMML_X86_HOST 1
#if defined(_MSC_VER)
#include <immintrin.h>
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace customml::cpu {
namespace {

struct Features {
  bool avx2 = false, fma = false, avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false,
       avx512_vnni = false, avx512_bf16 = false, amx_tile = false, amx_int8 = false, amx_bf16 = false;
};

#ifdef CUSTOMML_X86_HOST
void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
#if defined(_MSC_VER)
  int regs[4];
  __cpuidex(regs, static_cast<int>(leaf), static_cast<int>(sub));
  for (int i = 0; i < 4; ++i) r[i] = static_cast<uint32_t>(regs[i]);
#else
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#endif
}

uint64_t xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
#endif
}
#endif

Features detect() {
  Features f;
#ifdef CUSTOMML_X86_HOST
  uint32_t r[4];
  cpuid(0, 0, r);
  const uint32_t max_leaf = r[0];
  if (max_leaf < 7) return f;
  cpuid(1, 0, r);
  const bool osxsave = (r[2] >> 27) & 1;
  const bool fma = (r[2] >> 12) & 1;
  if (!osxsave) return f;
  // The OS must save the vector state we use, or the instructions fault.
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_os = (xcr0 & 0x6) == 0x6;
  const bool zmm_os = (xcr0 & 0xE6) == 0xE6;
  const bool amx_os = (xcr0 & 0x60000) == 0x60000;
  cpuid(7, 0, r);
  const uint32_t ebx = r[1], ecx = r[2], edx = r[3];
  f.avx2 = ymm_os && ((ebx >> 5) & 1);
  f.fma = ymm_os && fma;
  f.avx512f = zmm_os && ((ebx >> 16) & 1);
  f.avx512dq = zmm_os && ((ebx >> 17) & 1);
  f.avx512bw = zmm_os && ((ebx >> 30) & 1);
  f.avx512vl = zmm_os && ((ebx >> 31) & 1);
  f.avx512_vnni = zmm_os && ((ecx >> 11) & 1);
  f.amx_bf16 = amx_os && ((edx >> 22) & 1);
  f.amx_tile = amx_os && ((edx >> 24) & 1);
  f.amx_int8 = amx_os && ((edx >> 25) & 1);
  cpuid(7, 1, r);
  f.avx512_bf16 = zmm_os && ((r[0] >> 5) & 1);
#endif
  return f;
}

const Features& features() {
  static const Features f = detect();
  return f;
}

IsaLevel level_of(const Features& f) {
  if (!(f.avx2 && f.fma)) return IsaLevel::portable;
  if (!(f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl)) return IsaLevel::avx2;
  if (!f.avx512_vnni) return IsaLevel::avx512;
  if (!(f.amx_tile && f.amx_int8)) return IsaLevel::avx512_vnni;
  return IsaLevel::amx;
}

IsaLevel env_ceiling() {
  const char* s = std::getenv("CUSTOMML_ISA");
  if (!s || !*s) return IsaLevel::amx;
  return parse_isa(s);
}

std::atomic<int>& ceiling_storage() {
  static std::atomic<int> c{static_cast<int>(env_ceiling())};
  return c;
}

IsaLevel select_all() {
  const IsaLevel detected = level_of(features());
  const IsaLevel ceiling = static_cast<IsaLevel>(ceiling_storage().load());
  const IsaLevel level = static_cast<int>(ceiling) < static_cast<int>(detected) ? ceiling : detected;
  select_gemm_f32(level);
  select_gemm_s8(level);
  select_gemm_bf16(level);
  select_quantize(level);
  select_elementwise(level);
  select_sparse(level);
  return level;
}

}  // namespace

const char* isa_name(IsaLevel level) {
  switch (level) {
    case IsaLevel::portable: return "portable";
    case IsaLevel::avx2: return "avx2";
    case IsaLevel::avx512: return "avx512";
    case IsaLevel::avx512_vnni: return "avx512_vnni";
    case IsaLevel::amx: return "amx";
  }
  return "?";
}

IsaLevel parse_isa(const std::string& name) {
  for (IsaLevel l : {IsaLevel::portable, IsaLevel::avx2, IsaLevel::avx512, IsaLevel::avx512_vnni, IsaLevel::amx})
    if (name == isa_name(l)) return l;
  throw std::invalid_argument("CUSTOMML_ISA must be one of portable, avx2, avx512, avx512_vnni, amx; got '" + name +
                              "'");
}

IsaLevel detected_isa() { return level_of(features()); }

bool amx_permitted() {
#if defined(CUSTOMML_X86_HOST) && defined(__linux__)
  static const bool granted = [] {
    if (!(features().amx_tile && features().amx_int8)) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
#else
  return false;
#endif
}

namespace {
std::atomic<bool>& amx_emulation_storage() {
  static std::atomic<bool> on{[] {
    const char* s = std::getenv("CUSTOMML_AMX_EMULATION");
    return s && std::string(s) == "1";
  }()};
  return on;
}
}  // namespace

bool has_amx_bf16() { return features().amx_bf16 && level_of(features()) == IsaLevel::amx; }

bool amx_emulation() { return amx_emulation_storage().load(); }

void set_amx_emulation(bool on) {
  active_isa();  // the first selection first, so that it cannot overwrite this one
  amx_emulation_storage().store(on);
  select_all();
}

bool has_avx512_bf16() { return features().avx512_bf16 && level_of(features()) >= IsaLevel::avx512; }

std::vector<std::string> cpu_features() {
  const Features& f = features();
  std::vector<std::string> out;
  const std::pair<bool, const char*> all[] = {{f.avx2, "avx2"},
                                              {f.fma, "fma"},
                                              {f.avx512f, "avx512f"},
                                              {f.avx512bw, "avx512bw"},
                                              {f.avx512dq, "avx512dq"},
                                              {f.avx512vl, "avx512vl"},
                                              {f.avx512_vnni, "avx512_vnni"},
                                              {f.avx512_bf16, "avx512_bf16"},
                                              {f.amx_tile, "amx_tile"},
                                              {f.amx_int8, "amx_int8"},
                                              {f.amx_bf16, "amx_bf16"}};
  for (const auto& [has, name] : all)
    if (has) out.emplace_back(name);
  return out;
}

IsaLevel active_isa() {
  // Selected once, on first use, from the environment's ceiling.
  static const IsaLevel first = select_all();
  (void)first;
  const IsaLevel detected = detected_isa();
  const IsaLevel ceiling = static_cast<IsaLevel>(ceiling_storage().load());
  return static_cast<int>(ceiling) < static_cast<int>(detected) ? ceiling : detected;
}

IsaLevel set_isa_ceiling(IsaLevel ceiling) {
  active_isa();  // make sure the first selection has happened, so it cannot overwrite ours
  ceiling_storage().store(static_cast<int>(ceiling));
  return select_all();
}

}  // namespace customml::cpu
