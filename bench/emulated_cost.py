"""Per-call time of the int8 and sparse ops on cpu and on the emulated CUDA device, side by
side in one run (median of 7 calls after one warm-up): what one test example costs on the
emulated device, which runs every CUDA thread as a fiber on one host core. Not a measure of
the kernels' speed on a GPU.

Run: python bench/emulated_cost.py
"""

from __future__ import annotations

import os
import sys

import numpy as np

from customml import ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402

DEVICES = ("cpu", "cuda-emulated")


def median_ms(f, reps: int = 7) -> float:
    return float(np.median(timing.call_ns(f, reps, warmup=1))) / 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in [(1, 784, 256), (5, 784, 256), (31, 256, 256), (32, 256, 256), (128, 256, 256)]:
        a = rng.integers(0, 256, (m, k)).astype(np.uint8)
        w = rng.integers(-127, 128, (k, n)).astype(np.int8)
        a_zero, a_scale = np.full(1, 128, np.int32), np.full(1, 0.01, np.float32)
        w_scale = np.full(n, 0.01, np.float32)
        times = {}
        for d in DEVICES:
            packed, out = ops.gemm_s8_pack(w, device=d), np.empty((m, n), np.float32)
            times[d] = median_ms(lambda: ops.gemm_s8(a, packed, a_scale, a_zero, w_scale, out=out, device=d))
        kernel = "wmma" if m >= 32 and n >= 32 else ("warp per column" if m <= 4 else "dp4a")  # cuda/gemm_s8.cu
        rows.append((f"gemm_s8 {m}x{k}x{n} ({kernel})", times))
    w = rng.standard_normal((784, 256)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0
    offsets, index, values = ops.csr_from_dense(w)
    nm_values, nm_index = ops.nm_from_dense(w)
    for batch in (1, 4, 5, 64):
        x = rng.standard_normal((batch, 784)).astype(np.float32)
        csr = {d: median_ms(lambda: ops.sparse_dense_forward(x, offsets, index, values, device=d)) for d in DEVICES}
        nm = {d: median_ms(lambda: ops.nm_dense_forward(x, nm_values, nm_index, device=d)) for d in DEVICES}
        rows.append((f"sparse_dense_forward {batch}x784x256, 90% zeros", csr))
        rows.append((f"nm_dense_forward {batch}x784x256, 2:4", nm))
    x = rng.standard_normal((256, 784)).astype(np.float32)
    rows.append(
        (
            "quantize_rows_dynamic 256x784",
            {d: median_ms(lambda: ops.quantize_rows_dynamic(x, device=d)) for d in DEVICES},
        )
    )
    print("| op, shape | cpu ms | cuda-emulated ms | emulated / cpu |")
    print("|---|---:|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t['cpu']:.3f} | {t['cuda-emulated']:.2f} | {t['cuda-emulated'] / t['cpu']:.0f}x |")


if __name__ == "__main__":
    main()
