"""Single-core int8 multiply-accumulate peak of this machine, measured as bench/fma_peak.py
measures the float32 FMA peak: a loop of independent chains of the instruction the int8
GEMM kernel issues (24 for vpdpbusd, 7 for vpmaddwd + vpaddd), in inline assembly compiled
with the system C compiler and called through ctypes, best of several samples. Counted in int8 ops/s (a multiply-add is 2 ops, as FLOP/s count an FMA):
- avx512_vnni: vpdpbusd zmm, 16 lanes x 4 u8*s8 products = 128 ops per instruction;
- avx2: vpmaddwd + vpaddd ymm (the exact int16 path of s8_gemm__avx2), 8 lanes x 2
  products = 32 ops per pair.

    python bench/int8_peak.py
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile

from fma_peak import _best_rate, _cpu_flags

_SOURCE = r"""
#include <stdint.h>

/* The loops are written in assembly: from intrinsics GCC 12 copies every vpdpbusd
   accumulator to another register each iteration (half the rate on Zen 5), and it hoists
   the loop-invariant vpmaddwd out of the AVX2 loop (only the adds remained). */
#define VNNI(i) "vpdpbusd %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define MADD(i, t) "vpmaddwd %%ymm14, %%ymm15, %%ymm" #t "\n\tvpaddd %%ymm" #t ", %%ymm" #i ", %%ymm" #i "\n\t"

#ifdef WITH_VNNI
/* 24 independent vpdpbusd chains: enough for a latency of up to 12 cycles at 2 a cycle. */
double vnni_loop(int64_t iters, float seed) {
  (void)seed;
  __asm__ volatile(
      "vpternlogd $0xff, %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31\n\t"
      "1:\n\t" VNNI(0) VNNI(1) VNNI(2) VNNI(3) VNNI(4) VNNI(5) VNNI(6) VNNI(7) VNNI(8) VNNI(9) VNNI(10) VNNI(11)
      VNNI(12) VNNI(13) VNNI(14) VNNI(15) VNNI(16) VNNI(17) VNNI(18) VNNI(19) VNNI(20) VNNI(21) VNNI(22) VNNI(23)
      "dec %0\n\tjnz 1b\n\tvzeroupper"
      : "+r"(iters)
      :
      : "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23",
        "xmm30", "xmm31");
  return 0.0;
}
#endif

/* 7 chains of vpmaddwd into a temporary, then vpaddd into the accumulator. */
double madd_loop(int64_t iters, float seed) {
  (void)seed;
  __asm__ volatile(
      "vpcmpeqd %%ymm14, %%ymm14, %%ymm14\n\tvpxor %%ymm15, %%ymm15, %%ymm15\n\t"
      "1:\n\t" MADD(0, 7) MADD(1, 8) MADD(2, 9) MADD(3, 10) MADD(4, 11) MADD(5, 12) MADD(6, 13)
      "dec %0\n\tjnz 1b\n\tvzeroupper"
      : "+r"(iters)
      :
      : "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm12", "xmm13", "xmm14", "xmm15");
  return 0.0;
}
"""


@functools.cache
def measure() -> dict:
    """{"avx2": ops/s, "avx512_vnni": ops/s} for what this CPU runs (the reason under
    "error" when nothing could be measured)."""
    flags = _cpu_flags()
    if "avx2" not in flags:
        return {"error": "CPU lacks AVX2"}
    vnni = "avx512_vnni" in flags
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return {"error": "no C compiler found"}
    tmp = tempfile.mkdtemp(prefix="customml_int8_peak_")
    src, lib = os.path.join(tmp, "int8.c"), os.path.join(tmp, "libint8.so")
    with open(src, "w") as f:
        f.write(_SOURCE)
    flags_cc = ["-O2", "-shared", "-fPIC", "-mavx2"] + (["-mavx512f", "-mavx512vnni", "-DWITH_VNNI"] if vnni else [])
    try:
        subprocess.run([cc, *flags_cc, src, "-o", lib], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return {"error": f"could not build the int8 loops: {e}"}
    dll = ctypes.CDLL(lib)
    # _best_rate counts iters * 12 chains * lanes * 2, so lanes is scaled to this loop's
    # chains: multiply-adds per instruction (pair) times chains / 12.
    out = {"avx2": _best_rate(dll.madd_loop, 16 * 7 / 12)}
    if vnni:
        out["avx512_vnni"] = _best_rate(dll.vnni_loop, 64 * 24 / 12)
    return out


if __name__ == "__main__":
    for name, rate in measure().items():
        print(f"{name}: {rate / 1e9:.1f} Gop/s" if name != "error" else f"error: {rate}")
