"""Per-call time of the int8 and sparse ops on cpu and on the emulated CUDA device, side by
side in one run (median of 7 calls after one warm-up): what a test example costs there.
Run: python bench/emulated_cost.py"""
import statistics, time
import numpy as np
from customml import ops

def median_ms(f, reps=7):
    f()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)
    return statistics.median(t) * 1e3

rng = np.random.default_rng(0)
rows = []
for m, k, n in [(1, 784, 256), (31, 256, 256), (32, 256, 256), (128, 256, 256)]:
    a = rng.integers(0, 256, (m, k)).astype(np.uint8); w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    az = np.full(1, 128, np.int32); s = np.full(1, 0.01, np.float32); ws = np.full(n, 0.01, np.float32)
    r = {}
    for d in ("cpu", "cuda-emulated"):
        p = ops.gemm_s8_pack(w, device=d); out = np.empty((m, n), np.float32)
        r[d] = median_ms(lambda: ops.gemm_s8(a, p, s, az, ws, out=out, device=d))
    path = "wmma" if m >= 32 and n >= 32 else "dp4a"
    rows.append((f"gemm_s8 {m}x{k}x{n} ({path})", r))
for batch in (1, 4, 5, 64):
    wd = rng.standard_normal((784, 256)).astype(np.float32); wd[rng.random(wd.shape) < 0.9] = 0
    off, idx, val = ops.csr_from_dense(wd); x = rng.standard_normal((batch, 784)).astype(np.float32)
    vals, nidx = ops.nm_from_dense(wd)
    r, r2 = {}, {}
    for d in ("cpu", "cuda-emulated"):
        r[d] = median_ms(lambda: ops.sparse_dense_forward(x, off, idx, val, device=d))
        r2[d] = median_ms(lambda: ops.nm_dense_forward(x, vals, nidx, device=d))
    rows.append((f"sparse_dense_forward {batch}x784x256, 90% zeros", r))
    rows.append((f"nm_dense_forward {batch}x784x256, 2:4", r2))
x = rng.standard_normal((256, 784)).astype(np.float32)
r = {d: median_ms(lambda: ops.quantize_rows_dynamic(x, device=d)) for d in ("cpu", "cuda-emulated")}
rows.append(("quantize_rows_dynamic 256x784", r))
print(f"| op, shape | cpu ms | cuda-emulated ms | emulated / cpu |")
print("|---|---:|---:|---:|")
for name, r in rows:
    print(f"| {name} | {r['cpu']:.3f} | {r['cuda-emulated']:.2f} | {r['cuda-emulated'] / r['cpu']:.0f}x |")
