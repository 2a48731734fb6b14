"""The floor of every benchmarked case: the least bytes it must move and the FLOPs it
must do, as functions of the shape, and the two machine limits they are divided by:
this machine's single-thread memory bandwidth at the same working-set size, measured
with NumPy on the case's access pattern, and the single-core float32 FMA peak.

    floor time = max(bytes / bandwidth(pattern, bytes), flops / peak)
    achieved/limit = floor / median

Bytes count each input read once and each output written once (float32 = 4 bytes,
int32 labels = 4 bytes). The bandwidth is measured with the simplest NumPy operation of
the same access pattern, its bytes counted the same way:

    copy     outputs are separate buffers      np.copyto(dst, src)          2 x 4 B/element
    inplace  outputs overwrite inputs          np.add(a, b, out=a)          3 x 4 B/element
    read     nothing written                   np.max(a) or np.dot(a, a)    1 x 4 B/element

The patterns differ because a store to a line the kernel has not read first costs the
hardware a read as well (write-allocate): a copy moves 3 bytes for every 2 counted, an
in-place update 2 for every 2. Measured with copy bandwidth alone, the floor of an
in-place optimizer would be about 2x too high on this machine. Copy bandwidth is still
measured at every size, for reference.

FLOPs count the arithmetic in the maths (an add, a multiply, a compare, a division, a
square root or a transcendental each count 1; an FMA counts 2). For the elementwise
kernels they never bind, and transcendentals are cheap in this count (a vectorized exp
costs 10-20 operations), which docs/performance.md says per kernel.

Run as a script it measures bandwidth and peak and prints the floors table:
    python bench/floors.py

CUDA_CASES are the cases only bench/bench_cuda.py runs (tensor-core GEMMs, the int8 and
sparse families, the metric and preprocessing kernels), counted the same way; on a GPU
their floor divides by the device's copy bandwidth and by the compute peak their ``peak``
field names (fp32, tf32, bf16, fp16 or int8), all measured there.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

import timing

F32 = 4
I32 = 4
F64 = 8
I64 = 8
U8 = 1

# Quoted, not measured here: "two-core FMA peak 426 GFLOP/s measured earlier on a machine
# of this kind (213 GFLOP/s per core: 2 FMA units x 16 lanes x 2 flops x ~3.3 GHz)".
# bench/fma_peak.py measures the single-core peak on the machine the suite runs on; the
# quoted figure is used only when that measurement is unavailable.
QUOTED_PEAK_FLOPS_1CORE = 213e9


# --- bytes and FLOPs per op, as functions of the shape ---------------------------------


def dense_forward(batch: int, inp: int, out: int) -> tuple[int, int]:
    """Read x (batch, in), W (in, out), b (out); write y (batch, out). 2*b*in*out FLOPs
    for the GEMM, plus the bias add (b*out); relu's max is not counted."""
    nbytes = F32 * (batch * inp + inp * out + out + batch * out)
    flops = 2 * batch * inp * out + batch * out
    return nbytes, flops


def dense_backward(batch: int, inp: int, out: int) -> tuple[int, int]:
    """relu, with dx. Read dy and y (batch, out) (relu's mask comes from y), x (batch, in),
    W (in, out); write dx (batch, in), dW (in, out), db (out). Two GEMMs (dW = x^T dz,
    dx = dz W^T): 4*b*in*out FLOPs, plus db's sum (b*out)."""
    nbytes = F32 * (2 * batch * out + batch * inp + inp * out + batch * inp + inp * out + out)
    flops = 4 * batch * inp * out + batch * out
    return nbytes, flops


def softmax_cross_entropy(n: int, c: int) -> tuple[int, int]:
    """Loss and gradient: read logits once, write grad once, read labels (n).
    Per element: max, subtract, exp, sum; then subtract, exp, scale, subtract-target,
    scale: 9 operations."""
    return 2 * F32 * n * c + I32 * n, 9 * n * c


def binary_cross_entropy_with_logits(n: int) -> tuple[int, int]:
    """Read logits and targets, write grad. Per element: |z|, exp, log1p, max, z*t, two
    adds for the loss (and its sum); sigmoid (reusing exp(-|z|): add, divide), subtract t,
    scale for the grad: 12 operations."""
    return 3 * F32 * n, 12 * n


def mse(n: int) -> tuple[int, int]:
    """Read pred and target, write grad: subtract, square-accumulate (FMA), scale."""
    return 3 * F32 * n, 4 * n


def dropout(n: int) -> tuple[int, int]:
    """Read x, write y: compare and multiply per element. The Philox draw (ten rounds of
    two 32x32->64-bit multiplies per four elements) is integer work, not counted."""
    return 2 * F32 * n, 2 * n


def sgd_momentum(n: int) -> tuple[int, int]:
    """Read p, g, v; write p, v (20 bytes/param): v = mu v + g; p -= lr v."""
    return 5 * F32 * n, 4 * n


def adam(n: int) -> tuple[int, int]:
    """Read p, g, m, v; write p, m, v (28 bytes/param). m: 3, v: 4, sqrt, /bias2,
    +eps, m/(.), *step, p-(.): 13 operations."""
    return 7 * F32 * n, 13 * n


def clip_by_global_norm(n: int, clips: bool) -> tuple[int, int]:
    """Read g once for the norm (square-accumulate). When it clips, the scale is known only
    after the whole reduction, so g is read and written again: 12 bytes/element."""
    if clips:
        return 3 * F32 * n, 3 * n
    return F32 * n, 2 * n


def count_correct(n: int, c: int) -> tuple[int, int]:
    """Read logits once and labels: one compare per element."""
    return F32 * n * c + I32 * n, n * c


def gemm_s8(m: int, k: int, n: int, out_bytes: int) -> tuple[int, int]:
    """Read a (m, k) uint8 and the packed int8 weight (k, n) once, the per-column float32
    bias, weight scale and int32 column sums (12 bytes per column); write out (m, n) of
    out_bytes per element (4 float32 or int32, 1 uint8). 2*m*k*n integer operations (a
    multiply-add counts 2, as for the float GEMMs); the epilogue is not counted."""
    return U8 * m * k + U8 * k * n + 12 * n + out_bytes * m * n, 2 * m * k * n


def quantize(rows: int, cols: int, params: int, zero: bool) -> tuple[int, int]:
    """Read x (float32), write the codes (1 byte); read params scales (and int32 zero
    points when ``zero``) of the chosen axis. Per element: divide, round, clip (two
    compares), plus the zero point's add: 4 or 5 operations."""
    nbytes = (F32 + U8) * rows * cols + (F32 + (I32 if zero else 0)) * params
    return nbytes, (5 if zero else 4) * rows * cols


def dequantize(rows: int, cols: int, params: int) -> tuple[int, int]:
    """Read the codes (1 byte) and params float32 scales and int32 zero points; write
    float32: subtract the zero point, multiply by the scale."""
    return (U8 + F32) * rows * cols + (F32 + I32) * params, 2 * rows * cols


def quantize_rows_dynamic(rows: int, cols: int) -> tuple[int, int]:
    """Read x once (the kernel may read a row twice, from L2), write the uint8 codes and a
    float32 scale and int32 zero point per row. Per element: min, max, then divide,
    round, add the zero point, clip (two compares): 7 operations."""
    return (F32 + U8) * rows * cols + (F32 + I32) * rows, 7 * rows * cols


def sparse_dense_forward(batch: int, inp: int, out: int, nnz: int) -> tuple[int, int]:
    """The CSR of W^T read once (float32 value and int32 index per nonzero, int32
    offsets), x, bias, and y written: 2 FLOPs per stored weight per row (the bias add and
    relu not counted), as bench/bench_sparse.py counts them."""
    return F32 * (batch * inp + batch * out + out) + 8 * nnz + I32 * (out + 1), 2 * batch * nnz


def nm_dense_forward(batch: int, inp: int, out: int, slots: int) -> tuple[int, int]:
    """An N:M weight: a float32 value and a uint8 index per slot, read once; x, bias, y
    as sparse_dense_forward; 2 FLOPs per slot per row."""
    return F32 * (batch * inp + batch * out + out) + (F32 + U8) * slots, 2 * batch * slots


def apply_mask(n: int) -> tuple[int, int]:
    """Read param and the uint8 mask, write param in place: 9 bytes, one select each."""
    return (2 * F32 + U8) * n, n


def l1_l2_penalty(n: int) -> tuple[int, int]:
    """With the gradient: read param and grad, write grad. The penalty |w| and w^2
    accumulated (abs, add, FMA: 4); the gradient l1 sign(w) + 2 l2 w added (sign,
    multiply, FMA, add: 5)."""
    return 3 * F32 * n, 9 * n


def feature_affine(rows: int, cols: int) -> tuple[int, int]:
    """Read x, write y, read the per-column scale and shift: one FMA per element."""
    return 2 * F32 * rows * cols + 2 * F32 * cols, 2 * rows * cols


def confusion_matrix_update(n: int, k: int) -> tuple[int, int]:
    """Read logits (n, k) and labels once; read and write the int64 counts (k, k): one
    compare per logit (the argmax), the count increments not counted."""
    return F32 * n * k + I32 * n + 2 * I64 * k * k, n * k


def regression_stats_update(n: int, outputs: int) -> tuple[int, int]:
    """Read pred and target (n, outputs) and the float64 shift; read and write the float64
    stats (4, outputs). Per element: e = p - t, |e| added, e^2 (FMA), d = t - shift, d
    added, d^2 (FMA): 9 operations."""
    return 2 * F32 * n * outputs + F64 * outputs + 2 * 4 * F64 * outputs, 9 * n * outputs


# --- the benchmarked cases ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str  # the pytest-benchmark group, unique
    op: str  # the customml.ops function
    params: dict = field(default_factory=dict, hash=False, compare=False)
    nbytes: int = 0
    flops: int = 0
    pattern: str = "copy"  # "copy", "inplace" or "read": which bandwidth bounds it
    # On a GPU, the compute peak its FLOPs divide by (bench/bench_cuda.py measures each):
    # "fp32" (the FMA units), "tf32", "bf16" or "fp16" (tensor cores), "int8" (integer ones).
    peak: str = "fp32"


def _dense_cases() -> list[Case]:
    cases = []
    for inp, out in ((784, 256), (256, 256)):
        for batch in (128, 1024):
            for act in ("identity", "relu"):
                b, f = dense_forward(batch, inp, out)
                cases.append(
                    Case(
                        f"dense_forward {act} {batch}x{inp}->{out}",
                        "dense_forward",
                        dict(batch=batch, inp=inp, out=out, activation=act),
                        b,
                        f,
                    )
                )
    b, f = dense_forward(1024, 1024, 1024)
    cases.append(
        Case(
            "dense_forward gemm 1024x1024x1024 (zero bias)",
            "dense_forward",
            dict(batch=1024, inp=1024, out=1024, activation="identity", zero_bias=True),
            b,
            f,
        )
    )
    return cases


def _make_cases() -> list[Case]:
    cases = _dense_cases()
    b, f = dense_backward(128, 784, 256)
    cases.append(
        Case(
            "dense_backward relu 128x784->256",
            "dense_backward",
            dict(batch=128, inp=784, out=256, activation="relu"),
            b,
            f,
        )
    )
    b, f = softmax_cross_entropy(4096, 1000)
    cases.append(Case("softmax_cross_entropy fwd+grad 4096x1000", "softmax_cross_entropy", dict(n=4096, c=1000), b, f))
    b, f = binary_cross_entropy_with_logits(10**6)
    cases.append(
        Case("binary_cross_entropy_with_logits fwd+grad 1e6", "binary_cross_entropy_with_logits", dict(n=10**6), b, f)
    )
    b, f = mse(10**6)
    cases.append(Case("mse fwd+grad 1e6", "mse", dict(n=10**6), b, f))
    b, f = dropout(10**7)
    cases.append(Case("dropout rate 0.1 1e7", "dropout", dict(n=10**7, rate=0.1), b, f))
    b, f = sgd_momentum(10**7)
    cases.append(Case("sgd_update momentum 0.9 1e7", "sgd_update", dict(n=10**7, momentum=0.9), b, f, "inplace"))
    b, f = adam(10**7)
    cases.append(Case("adam_update 1e7", "adam_update", dict(n=10**7), b, f, "inplace"))
    b, f = clip_by_global_norm(10**7, clips=False)
    cases.append(
        Case("clip_by_global_norm 1e7 (no clip)", "clip_by_global_norm", dict(n=10**7, clips=False), b, f, "read")
    )
    b, f = clip_by_global_norm(10**7, clips=True)
    cases.append(
        Case("clip_by_global_norm 1e7 (clips)", "clip_by_global_norm", dict(n=10**7, clips=True), b, f, "inplace")
    )
    b, f = count_correct(4096, 1000)
    cases.append(Case("count_correct 4096x1000", "count_correct", dict(n=4096, c=1000), b, f, "read"))
    return cases


# Sparse weights keep exactly one input in ten per output (SPARSE_KEEP of each column's
# rows, chosen at random), so that the floors know nnz before any weight is drawn.
SPARSE_KEEP = 10
TENSOR_CORE_PRECISIONS = ("tf32", "bf16", "fp16")


def sparse_nnz(inp: int, out: int) -> int:
    return (inp // SPARSE_KEEP) * out


def nm_slots(inp: int, out: int, n: int = 2, m: int = 4) -> int:
    return -(-inp // m) * n * out


def _make_cuda_cases() -> list[Case]:
    """The cases of bench/bench_cuda.py beyond CASES. Sizes: the model layers (784 -> 256
    at batch 1, 128 and 1024) and, for each kernel, one size large enough that the GPU,
    not the launch, sets the time (tens of microseconds or more on an H100)."""
    cases = []
    for prec in TENSOR_CORE_PRECISIONS:
        b, f = dense_forward(1024, 784, 256)
        cases.append(
            Case(
                f"dense_forward {prec} relu 1024x784->256",
                "dense_forward",
                dict(batch=1024, inp=784, out=256, activation="relu", precision=prec),
                b,
                f,
                peak=prec,
            )
        )
        for s in (1024, 4096):
            b, f = dense_forward(s, s, s)
            cases.append(
                Case(
                    f"dense_forward {prec} gemm {s}x{s}x{s} (zero bias)",
                    "dense_forward",
                    dict(batch=s, inp=s, out=s, activation="identity", zero_bias=True, precision=prec),
                    b,
                    f,
                    peak=prec,
                )
            )
        for batch, inp, out in ((1024, 784, 256), (4096, 4096, 4096)):
            b, f = dense_backward(batch, inp, out)
            cases.append(
                Case(
                    f"dense_backward {prec} relu {batch}x{inp}->{out}",
                    "dense_backward",
                    dict(batch=batch, inp=inp, out=out, activation="relu", precision=prec),
                    b,
                    f,
                    peak=prec,
                )
            )
    for m, k, n, out_dtype in (
        (1, 784, 256, "float32"),
        (1024, 784, 256, "float32"),
        (1024, 784, 256, "uint8"),
        (4096, 4096, 4096, "int32"),
    ):
        b, f = gemm_s8(m, k, n, 1 if out_dtype == "uint8" else 4)
        cases.append(
            Case(
                f"gemm_s8 {out_dtype} {m}x{k}x{n}",
                "gemm_s8",
                dict(m=m, k=k, n=n, out_dtype=out_dtype),
                b,
                f,
                peak="int8",
            )
        )
    b, f = quantize(4096, 4096, 4096, zero=False)
    cases.append(
        Case(
            "quantize int8 per column 4096x4096",
            "quantize",
            dict(rows=4096, cols=4096, dtype="int8", axis="column"),
            b,
            f,
        )
    )
    b, f = dequantize(4096, 4096, 4096)
    cases.append(Case("dequantize uint8 per row 4096x4096", "dequantize", dict(rows=4096, cols=4096, axis="row"), b, f))
    b, f = quantize_rows_dynamic(4096, 4096)
    cases.append(Case("quantize_rows_dynamic 4096x4096", "quantize_rows_dynamic", dict(rows=4096, cols=4096), b, f))
    for batch, inp, out in ((1, 784, 256), (128, 784, 256), (1024, 4096, 4096)):
        b, f = sparse_dense_forward(batch, inp, out, sparse_nnz(inp, out))
        cases.append(
            Case(
                f"sparse_dense_forward 90% relu {batch}x{inp}->{out}",
                "sparse_dense_forward",
                dict(batch=batch, inp=inp, out=out),
                b,
                f,
            )
        )
        b, f = nm_dense_forward(batch, inp, out, nm_slots(inp, out))
        cases.append(
            Case(
                f"nm_dense_forward 2:4 relu {batch}x{inp}->{out}",
                "nm_dense_forward",
                dict(batch=batch, inp=inp, out=out),
                b,
                f,
            )
        )
    b, f = apply_mask(10**7)
    cases.append(Case("apply_mask 1e7", "apply_mask", dict(n=10**7), b, f, "inplace"))
    b, f = l1_l2_penalty(10**7)
    cases.append(Case("l1_l2_penalty with grad 1e7", "l1_l2_penalty", dict(n=10**7), b, f, "inplace"))
    b, f = feature_affine(16384, 784)
    cases.append(Case("feature_affine 16384x784", "feature_affine", dict(rows=16384, cols=784), b, f))
    b, f = confusion_matrix_update(1 << 20, 10)
    cases.append(
        Case("confusion_matrix_update 1048576x10", "confusion_matrix_update", dict(n=1 << 20, k=10), b, f, "read")
    )
    b, f = regression_stats_update(1 << 20, 8)
    cases.append(
        Case("regression_stats_update 1048576x8", "regression_stats_update", dict(n=1 << 20, outputs=8), b, f, "read")
    )
    return cases


CASES: list[Case] = _make_cases()
CASE_ORDER = {c.key: i for i, c in enumerate(CASES)}
CUDA_CASES: list[Case] = _make_cuda_cases()


def cases_for(op: str) -> list[Case]:
    return [c for c in CASES if c.op == op]


def cuda_cases_for(op: str) -> list[Case]:
    return [c for c in CUDA_CASES if c.op == op]


# --- machine limits ------------------------------------------------------------------------

PATTERNS = ("copy", "inplace", "read")

# Bandwidth measured so far in this process: (pattern, bytes) -> bytes/s.
BANDWIDTHS: dict[tuple[str, int], float] = {}


def bandwidth(pattern: str, nbytes: int, min_time: float = 0.25, min_samples: int = 7) -> float:
    """Bytes/s of the pattern's NumPy operation over a working set of nbytes, one thread:
    the median over samples, each sample timing enough back-to-back calls to last >= 1 ms.
    Measured once per (pattern, size) per process."""
    key = (pattern, nbytes)
    if key not in BANDWIDTHS:
        if pattern == "copy":
            n = max(nbytes // (2 * F32), 256)
            src, dst = np.ones(n, np.float32), np.zeros(n, np.float32)
            BANDWIDTHS[key] = 2 * n * F32 / _median_time(lambda: np.copyto(dst, src), min_time, min_samples)
        elif pattern == "inplace":
            n = max(nbytes // (3 * F32), 256)
            a, b = np.ones(n, np.float32), np.zeros(n, np.float32)  # adding zeros: a stays 1
            BANDWIDTHS[key] = 3 * n * F32 / _median_time(lambda: np.add(a, b, out=a), min_time, min_samples)
        elif pattern == "read":
            # Two reductions, the faster taken: NumPy's SIMD max, and BLAS sdot (which the
            # OpenBLAS kernel choice can slow); neither alone is reliably memory-bound.
            n = max(nbytes // F32, 256)
            a = np.ones(n, np.float32)
            t = min(
                _median_time(lambda: np.max(a), min_time, min_samples),
                _median_time(lambda: np.dot(a, a), min_time, min_samples),
            )
            BANDWIDTHS[key] = n * F32 / t
        else:
            raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    return BANDWIDTHS[key]


def _median_time(op, min_time: float, min_samples: int) -> float:
    """Median seconds a call over samples of about 1 ms of back-to-back calls each: at
    least min_samples, more while under min_time seconds (200 at most)."""
    inner = timing.calls_in(1e-3, op)  # its untimed first call takes the page faults
    samples = []
    start = timing.clock()
    while len(samples) < min_samples or ((timing.clock() - start) / 1e9 < min_time and len(samples) < 200):
        samples.append(timing.per_call_s(op, inner))
    return statistics.median(samples)


def floor_seconds(nbytes: int, flops: int, bandwidth: float, peak: float) -> tuple[float, str]:
    """The floor and what sets it ("memory" or "compute")."""
    t_mem = nbytes / bandwidth
    t_flop = flops / peak
    return (t_mem, "memory") if t_mem >= t_flop else (t_flop, "compute")


def fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_count(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f}"


def floors_table(bandwidths: dict, peak: float, peak_source: str) -> str:
    """Markdown: per case, bytes, FLOPs, the bandwidth of its pattern at its size (and copy
    bandwidth for reference), the time at each limit, the floor and what sets it.
    bandwidths: (pattern, bytes) -> bytes/s; cases with no measurement are left out."""
    rows = [
        "| case | bytes | FLOPs | pattern | BW at size | copy BW at size | bytes / BW | "
        f"FLOPs / peak ({peak / 1e9:.0f} GFLOP/s, {peak_source}) | "
        f"FLOPs / quoted peak ({QUOTED_PEAK_FLOPS_1CORE / 1e9:.0f} GFLOP/s) | floor | bound |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in CASES:
        bw = bandwidths.get((c.pattern, c.nbytes))
        if bw is None:
            continue
        copy = bandwidths.get(("copy", c.nbytes))
        floor, bound = floor_seconds(c.nbytes, c.flops, bw, peak)
        rows.append(
            f"| {c.key} | {fmt_count(c.nbytes)}B | {fmt_count(c.flops)} | {c.pattern} | "
            f"{bw / 1e9:.1f} GB/s | {'-' if copy is None else f'{copy / 1e9:.1f} GB/s'} | "
            f"{fmt_time(c.nbytes / bw)} | {fmt_time(c.flops / peak)} | "
            f"{fmt_time(c.flops / QUOTED_PEAK_FLOPS_1CORE)} | {fmt_time(floor)} | {bound} |"
        )
    return "\n".join(rows)


def measure_case(case: Case) -> float:
    """Measures the case's pattern bandwidth (and copy's, for reference) at its size;
    returns the pattern's."""
    bandwidth("copy", case.nbytes)
    return bandwidth(case.pattern, case.nbytes)


def main() -> None:
    import threadpoolctl

    import fma_peak

    with threadpoolctl.threadpool_limits(limits=1):
        peak, source = fma_peak.peak_flops_1core()
        for c in CASES:
            measure_case(c)
    print(floors_table(BANDWIDTHS, peak, source))


if __name__ == "__main__":
    main()
