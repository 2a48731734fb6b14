"""Single-core int8 multiply-accumulate peak of this machine, measured as bench/fma_peak.py
measures the float32 FMA peak: a 12-chain loop of the instruction the int8 GEMM kernel
issues, compiled with the system C compiler and called through ctypes, best of several
samples. Counted in int8 ops/s (a multiply-add is 2 ops, as FLOP/s count an FMA):
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
#include <immintrin.h>
#include <stdint.h>

#define CHAINS 12

#ifdef WITH_VNNI
double vnni_loop(int64_t iters, float seed) {
  __m512i acc[CHAINS];
  const __m512i a = _mm512_set1_epi32((int)seed), b = _mm512_set1_epi8(1);
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_set1_epi32(i);
  for (int64_t k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  }
  int64_t s = 0;
  for (int i = 0; i < CHAINS; ++i) s += _mm512_reduce_add_epi32(acc[i]);
  return (double)s;
}
#endif

double madd_loop(int64_t iters, float seed) {
  __m256i acc[CHAINS];
  const __m256i a = _mm256_set1_epi16((short)seed), b = _mm256_set1_epi16(1);
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_set1_epi32(i);
  for (int64_t k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(a, b));
  }
  int32_t out[8];
  __m256i s = acc[0];
  for (int i = 1; i < CHAINS; ++i) s = _mm256_add_epi32(s, acc[i]);
  _mm256_storeu_si256((__m256i*)out, s);
  return (double)out[0];
}
"""


@functools.lru_cache(maxsize=None)
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
    # _best_rate counts iters * 12 chains * lanes * 2: lanes = multiply-adds per instruction (pair)
    out = {"avx2": _best_rate(dll.madd_loop, 16)}
    if vnni:
        out["avx512_vnni"] = _best_rate(dll.vnni_loop, 64)
    return out


if __name__ == "__main__":
    for name, rate in measure().items():
        print(f"{name}: {rate / 1e9:.1f} Gop/s" if name != "error" else f"error: {rate}")
