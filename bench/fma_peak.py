"""Single-core float32 FMA peak of this machine, measured: a 12-chain FMA loop in C
(12 independent accumulators hide the FMA latency at two issues per cycle), compiled
with the system C compiler into a temporary directory and called through ctypes; the
best of several samples (noise only ever slows a sample down), for each vector width
the CPU supports, and the larger of the two.

When no C compiler is available, or the CPU has neither AVX2+FMA nor AVX-512, the
quoted figure (floors.QUOTED_PEAK_FLOPS_1CORE, 213 GFLOP/s) is returned instead, with
its source saying so.

    python bench/fma_peak.py
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile

import timing
from floors import QUOTED_PEAK_FLOPS_1CORE

_CHAINS = 12

_SOURCE = r"""
#include <immintrin.h>
#include <stdint.h>

#define CHAINS 12

#ifdef WITH_AVX512
double fma_loop_512(int64_t iters, float seed) {
  __m512 acc[CHAINS];
  const __m512 x = _mm512_set1_ps(seed), y = _mm512_set1_ps(0.999999f);
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_set1_ps(seed + (float)i);
  for (int64_t k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_fmadd_ps(acc[i], y, x);
  }
  __m512 s = acc[0];
  for (int i = 1; i < CHAINS; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}
#endif

double fma_loop_256(int64_t iters, float seed) {
  __m256 acc[CHAINS];
  const __m256 x = _mm256_set1_ps(seed), y = _mm256_set1_ps(0.999999f);
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_set1_ps(seed + (float)i);
  for (int64_t k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_fmadd_ps(acc[i], y, x);
  }
  __m256 s = acc[0];
  for (int i = 1; i < CHAINS; ++i) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
"""


def _cpu_flags() -> set[str]:
    try:
        import customml

        return set(customml._core.build_info()["cpu_features"])
    except Exception:  # measuring the peak must not depend on customml importing
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx2", "fma", "avx512f"} & flags
    except OSError:
        pass
    return set()


def _compile(with_avx512: bool) -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler found")
    tmp = tempfile.mkdtemp(prefix="customml_fma_peak_")
    src = os.path.join(tmp, "fma.c")
    lib = os.path.join(tmp, "libfma.so")
    with open(src, "w") as f:
        f.write(_SOURCE)
    flags = ["-O2", "-shared", "-fPIC", "-mavx2", "-mfma"]
    if with_avx512:
        flags += ["-mavx512f", "-DWITH_AVX512"]
    subprocess.run([cc, *flags, src, "-o", lib], check=True, capture_output=True)
    return ctypes.CDLL(lib)


def _best_rate(fn, lanes: int, samples: int = 7, sample_time: float = 0.05) -> float:
    fn.restype = ctypes.c_double
    fn.argtypes = [ctypes.c_int64, ctypes.c_float]
    iters = 100_000
    _, dt = timing.once(lambda: fn(iters, 1.0))
    iters = max(iters, int(iters * sample_time / max(dt, 1e-6)))
    fastest = timing.call_ns(lambda: fn(iters, 1.0), samples).min() / 1e9
    return iters * _CHAINS * lanes * 2 / fastest


@functools.cache
def measure() -> dict:
    """{"avx2": flops/s, "avx512": flops/s} for the widths this CPU runs; empty when none
    could be measured (the reason under "error")."""
    flags = _cpu_flags()
    if not {"avx2", "fma"} <= flags:
        return {"error": "CPU lacks AVX2+FMA"}
    has512 = "avx512f" in flags
    try:
        lib = _compile(has512)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        return {"error": f"could not build the FMA loop: {e}"}
    out = {"avx2": _best_rate(lib.fma_loop_256, 8)}
    if has512:
        out["avx512"] = _best_rate(lib.fma_loop_512, 16)
    return out


def peak_flops_1core() -> tuple[float, str]:
    """(flops/s, "measured" or "quoted"): the measured single-core peak, or the quoted one
    when it could not be measured (measure() says why)."""
    m = measure()
    rates = [v for k, v in m.items() if k != "error"]
    if rates:
        return max(rates), "measured"
    return QUOTED_PEAK_FLOPS_1CORE, "quoted"


if __name__ == "__main__":
    peak, source = peak_flops_1core()
    detail = ", ".join(f"{k}: {v / 1e9:.1f} GFLOP/s" if k != "error" else v for k, v in measure().items())
    print(f"single-core float32 FMA peak: {peak / 1e9:.1f} GFLOP/s ({source}; {detail})")
