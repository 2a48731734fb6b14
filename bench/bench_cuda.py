"""Every op of customml.ops on device "cuda" against a CuPy implementation of the same
maths (cupy.matmul / cuBLAS for the GEMMs, cupyx.scipy.sparse for CSR, CuPy elementwise
and reduction expressions for the rest), on the cases of bench/floors.py (CASES, which
the CPU suite shares, and CUDA_CASES). Each result is compared with CuPy's once before
timing; each timed call ends with a device synchronization. Skipped, with the reason,
where there is no usable GPU or no CuPy.

    python -m pytest bench/bench_cuda.py -s --benchmark-json=/tmp/bench-cuda.json

The achieved rate of each case (bytes / median or FLOPs / median, the case's own counts
for both implementations, so the rates compare as times) is printed against limits
measured on the device when the module loads: copy bandwidth (a 1 GiB device copy), the
FP32 peak (a kernel of independent FMA chains), and the tensor-core peaks the case's
``peak`` names (cuBLAS GEMMs of 8192^3 in tf32, bf16, fp16 and int8). A limit that
cannot be measured is left out with the reason, and the floor is then the bytes' alone.

The tensor-core and int8 references call cuBLAS (cublasGemmEx through cupy.cuda.cublas)
rather than cupy.matmul: CuPy has no bfloat16 dtype, its float16 matmul rounds the output
to float16, and TF32 for float32 is a process-wide switch (CUPY_TF32, read once) that
would change every float32 reference here. gemmEx takes the operand and output types and
the compute type per call: the same maths as our kernels (operands in the precision,
float32 output and accumulation; int8 operands, int32 sums).
"""

from __future__ import annotations

import numpy as np
import pytest

import customml
import floors
from customml import ops

try:
    import cupy
    import cupyx.scipy.sparse
except ImportError:
    cupy = None

pytestmark = [
    pytest.mark.skipif(
        not customml.cuda.is_available(),
        reason=f"no usable GPU: {customml.cuda.unavailable_reason() or 'CUDA unavailable'}",
    ),
    pytest.mark.skipif(cupy is None, reason="CuPy is not installed (pip install cupy-cuda12x)"),
]

IMPLS = ["customml", "cupy"]
LR = 1e-3
ADAM_STEP = 10

# cudaDataType_t (library_types.h) and cublasComputeType_t / cublasOperation_t
# (cublas_api.h) values: a fixed ABI, and not all of them exported by name by CuPy.
CUDA_R_32F, CUDA_R_16F, CUDA_R_8I, CUDA_R_32I, CUDA_R_16BF = 0, 2, 3, 10, 14
CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32I, CUBLAS_COMPUTE_32F_FAST_TF32 = 68, 72, 77
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUBLAS_GEMM_DEFAULT = -1
# The operand type and compute type of each tensor-core precision.
TENSOR_CORE_TYPES = {
    "tf32": (CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32),
    "bf16": (CUDA_R_16BF, CUBLAS_COMPUTE_32F),
    "fp16": (CUDA_R_16F, CUBLAS_COMPUTE_32F),
}
# alpha = 1, beta = 0 in host memory (host pointer mode), of the compute type's scalar type.
_SCALARS = {
    CUBLAS_COMPUTE_32F: (np.ones(1, np.float32), np.zeros(1, np.float32)),
    CUBLAS_COMPUTE_32F_FAST_TF32: (np.ones(1, np.float32), np.zeros(1, np.float32)),
    CUBLAS_COMPUTE_32I: (np.ones(1, np.int32), np.zeros(1, np.int32)),
}

# Independent FMA chains per thread, and blocks of 256 threads, 8 per SM (2048 threads,
# the most an SM holds): each of an SM's 4 schedulers has 16 warps x 8 chains = 128
# independent FMA instructions to issue, where its FMA latency (about 4 cycles) at one
# warp instruction a cycle needs 4. The loop, unrolled 16 times, spends about 3
# instructions of every 131 on itself.
FMA_CHAINS, FMA_ITERS, FMA_BLOCKS_PER_SM, FMA_THREADS = 8, 1 << 14, 8, 256
_FMA_SOURCE = r"""
extern "C" __global__ void fma_peak_kernel(float* out, float a, float b, int iters) {
  float x0 = threadIdx.x, x1 = x0 + 1.f, x2 = x0 + 2.f, x3 = x0 + 3.f;
  float x4 = x0 + 4.f, x5 = x0 + 5.f, x6 = x0 + 6.f, x7 = x0 + 7.f;
#pragma unroll 16
  for (int i = 0; i < iters; ++i) {
    x0 = fmaf(x0, a, b); x1 = fmaf(x1, a, b); x2 = fmaf(x2, a, b); x3 = fmaf(x3, a, b);
    x4 = fmaf(x4, a, b); x5 = fmaf(x5, a, b); x6 = fmaf(x6, a, b); x7 = fmaf(x7, a, b);
  }
  // the sums are stored so that no chain is dead code
  out[blockIdx.x * blockDim.x + threadIdx.x] = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
}
"""
PEAK_GEMM_SIZE = 8192  # 1.1 TFLOP per GEMM: milliseconds even at the int8 peak


def _ptr(a) -> int:
    return a.data.ptr


def _gemm_ex(out, a, b, operand_type, out_type, compute, trans_a=False, trans_b=False):
    """out (m, n) = op(a) @ op(b) by cublasGemmEx, every array a row-major (C-contiguous)
    CuPy array, op(x) = x.T where trans_x. cuBLAS is column-major: it sees each row-major
    matrix as its transpose, so it is asked for out^T = op(b)^T op(a)^T."""
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    from cupy.cuda import cublas  # CuPy's thin wrapper of the library

    handle = cupy.cuda.device.get_cublas_handle()
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    one, zero = _SCALARS[compute]
    cublas.gemmEx(
        handle,
        CUBLAS_OP_T if trans_b else CUBLAS_OP_N,
        CUBLAS_OP_T if trans_a else CUBLAS_OP_N,
        n,
        m,
        k,
        one.ctypes.data,
        _ptr(b),
        operand_type,
        b.shape[1],
        _ptr(a),
        operand_type,
        a.shape[1],
        zero.ctypes.data,
        _ptr(out),
        out_type,
        n,
        compute,
        CUBLAS_GEMM_DEFAULT,
    )
    return out


def _operand(a, precision: str):
    """float32 a stored as cuBLAS reads the precision: float16 (rounded to nearest even,
    as our kernel's __float2half), bfloat16 as uint16 bits (CuPy has no bfloat16 dtype;
    rounded to nearest even, as __float2bfloat16), tf32 as the float32 itself (cuBLAS
    converts it)."""
    if precision == "fp16":
        return a.astype(cupy.float16)
    if precision == "bf16":
        u = a.view(cupy.uint32)
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(cupy.uint16)
    return a


def _best_seconds(fn, repeats: int = 5) -> float:
    """The fastest of repeats calls after a warm-up, each timed with CUDA events."""
    fn()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    best = float("inf")
    for _ in range(repeats):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


def _peak_gemm(precision: str) -> float:
    """FLOP/s (int8: integer operations/s) of a cuBLAS GEMM of PEAK_GEMM_SIZE^3 in the
    precision; int8 in the TN layout (both operands k-contiguous), its tensor-core path."""
    s = PEAK_GEMM_SIZE
    # Random operands, like the cases': a GPU's clock under load depends on its power, which
    # depends on how many bits toggle, so constant operands would overstate the rate.
    rng = cupy.random.default_rng(1)
    if precision == "int8":
        a = rng.integers(-127, 128, (s, s)).astype(cupy.int8)
        out = cupy.empty((s, s), cupy.int32)
        fn = lambda: _gemm_ex(out, a, a, CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I, trans_b=True)
    else:
        operand_type, compute = TENSOR_CORE_TYPES[precision]
        a = _operand(rng.standard_normal((s, s), dtype=cupy.float32), precision)
        out = cupy.empty((s, s), cupy.float32)
        fn = lambda: _gemm_ex(out, a, a, operand_type, CUDA_R_32F, compute)
    return 2 * s**3 / _best_seconds(fn, repeats=3)


def _device_limits() -> tuple[dict, dict]:
    """({limit: bytes/s or FLOP/s}, {limit: why it was not measured}). "copy" is the copy
    bandwidth, "fp32" the FMA peak, "tf32" / "bf16" / "fp16" / "int8" cuBLAS's GEMM rate
    at 8192^3 (what the tensor cores deliver to a well-tuned kernel, below the datasheet
    peak); "fp32_clock" the FP32 peak from the properties (SMs x 128 lanes x 2 x clock),
    for reference only."""
    limits, missing = {}, {}
    a = cupy.ones(1 << 28, dtype=cupy.float32)
    b = cupy.empty_like(a)
    limits["copy"] = 2 * a.nbytes / _best_seconds(lambda: cupy.copyto(b, a))  # noqa: F821 (called before the del)
    del a, b
    props = cupy.cuda.runtime.getDeviceProperties(0)
    sms = props["multiProcessorCount"]
    if props.get("clockRate"):  # dropped from cudaDeviceProp in CUDA 13
        limits["fp32_clock"] = sms * 128 * 2 * props["clockRate"] * 1e3
    blocks = FMA_BLOCKS_PER_SM * sms
    sums = cupy.empty(blocks * FMA_THREADS, dtype=cupy.float32)
    kernel = cupy.RawKernel(_FMA_SOURCE, "fma_peak_kernel")
    args = (sums, np.float32(0.999), np.float32(1e-3), np.int32(FMA_ITERS))
    seconds = _best_seconds(lambda: kernel((blocks,), (FMA_THREADS,), args))
    limits["fp32"] = blocks * FMA_THREADS * FMA_CHAINS * 2 * FMA_ITERS / seconds
    for precision in ("tf32", "bf16", "fp16", "int8"):
        try:
            limits[precision] = _peak_gemm(precision)
        except Exception as e:  # noqa: BLE001 -- an unsupported type or GPU: say which, time the rest
            missing[precision] = f"cuBLAS {precision} GEMM failed: {type(e).__name__}: {e}"
    return limits, missing


def _timed(benchmark, fn, case):
    def call():
        out = fn()
        cupy.cuda.Device().synchronize()
        return out

    call()  # warm-up: the caching allocator, module loading
    benchmark.group = f"cuda {case.key}"
    benchmark(call)
    if getattr(benchmark, "disabled", False):  # --benchmark-disable: one call, no statistics
        return
    median = benchmark.stats.stats.median
    bandwidth, peak = _LIMITS["copy"], _LIMITS.get(case.peak)
    limit = max(case.nbytes / bandwidth, case.flops / peak if peak else 0.0)
    benchmark.extra_info.update(
        achieved_gbs=case.nbytes / median / 1e9,
        achieved_gflops=case.flops / median / 1e9,
        floor_s=limit,
        achieved_over_limit=limit / median,
        peak=case.peak,
        limits=_LIMITS,
        limits_missing=_MISSING,
    )
    why = (
        f"{case.peak} peak {peak / 1e12:.1f} T/s"
        if peak
        else f"{case.peak} peak not measured ({_MISSING.get(case.peak)}): memory floor only"
    )
    print(
        f"\n{benchmark.name}: {case.nbytes / median / 1e9:.1f} GB/s, {case.flops / median / 1e9:.1f} GFLOP/s, "
        f"{100 * limit / median:.0f}% of the floor ({limit * 1e6:.1f} us; copy {bandwidth / 1e9:.0f} GB/s, {why})"
    )


_LIMITS, _MISSING = _device_limits() if (cupy is not None and customml.cuda.is_available()) else ({"copy": 1.0}, {})


def _agree(ours, ref, rel=1e-3):
    a, e = cupy.asnumpy(cupy.asarray(ours)).astype(np.float64), cupy.asnumpy(cupy.asarray(ref)).astype(np.float64)
    assert a.shape == e.shape
    scale = float(np.abs(e).max()) if e.size else 0.0
    assert float(np.abs(a - e).max()) <= rel * scale + 1e-30


def _agree_within(ours, ref, tol, what: str):
    """|ours - ref| <= tol elementwise (tol broadcasts), on the device."""
    a = cupy.asarray(ours).astype(cupy.float64)
    assert a.shape == ref.shape, what
    err = cupy.abs(a - cupy.asarray(ref).astype(cupy.float64))
    worst = float((err / cupy.maximum(tol, 1e-300)).max()) if a.size else 0.0
    assert worst <= 1.0, f"{what}: an error reaches {worst:.2f}x its bound"


def _act(z, name):
    return cupy.maximum(z, 0) if name == "relu" else z


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("dense_forward"), ids=lambda c: c.key)
def bench_dense_forward(benchmark, case, impl):
    p = case.params
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((p["batch"], p["inp"]), dtype=cupy.float32)
    w = rng.standard_normal((p["inp"], p["out"]), dtype=cupy.float32)
    b = (
        cupy.zeros(p["out"], dtype=cupy.float32)
        if p.get("zero_bias")
        else rng.standard_normal(p["out"], dtype=cupy.float32)
    )
    out = cupy.empty((p["batch"], p["out"]), dtype=cupy.float32)
    act = p.get("activation", "identity")
    ref = _act(x @ w + b, act)
    if impl == "customml":
        _agree(ops.dense_forward(x, w, b, activation=act, out=out, device="cuda"), ref)
        _timed(benchmark, lambda: ops.dense_forward(x, w, b, activation=act, out=out, device="cuda"), case)
    else:
        _timed(benchmark, lambda: _act(cupy.add(cupy.matmul(x, w, out=out), b, out=out), act), case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("softmax_cross_entropy"), ids=lambda c: c.key)
def bench_softmax_cross_entropy(benchmark, case, impl):
    p = case.params
    rng = cupy.random.default_rng(0)
    batch, classes = p["n"], p["c"]
    logits = rng.standard_normal((batch, classes), dtype=cupy.float32)
    labels = rng.integers(0, classes, batch).astype(cupy.int32)
    grad = cupy.empty_like(logits)

    def reference():
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = cupy.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        loss = float((cupy.log(s[:, 0]) - shifted[cupy.arange(batch), labels]).mean())
        g = e / s
        g[cupy.arange(batch), labels] -= 1
        return loss, g / batch

    if impl == "customml":
        loss, g = ops.softmax_cross_entropy(logits, labels, grad_out=grad, device="cuda")
        ref_loss, ref_g = reference()
        assert loss == pytest.approx(ref_loss, rel=1e-4)
        _agree(g, ref_g)
        _timed(benchmark, lambda: ops.softmax_cross_entropy(logits, labels, grad_out=grad, device="cuda"), case)
    else:
        _timed(benchmark, reference, case)


def _flat(case):
    rng = cupy.random.default_rng(0)
    n = case.params["n"]
    return n, rng


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("adam_update"), ids=lambda c: c.key)
def bench_adam_update(benchmark, case, impl):
    n, rng = _flat(case)
    p0 = rng.standard_normal(n, dtype=cupy.float32)
    g = rng.standard_normal(n, dtype=cupy.float32)
    m0 = rng.standard_normal(n, dtype=cupy.float32) * 0.1
    v0 = rng.random(n, dtype=cupy.float32) * 0.1
    b1, b2, eps = 0.9, 0.999, 1e-8
    step_size = LR / (1 - b1**ADAM_STEP)
    bias2_sqrt = (1 - b2**ADAM_STEP) ** 0.5
    p, m, v = p0.copy(), m0.copy(), v0.copy()

    def reference():
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * g * g
        p[...] -= step_size * m / (cupy.sqrt(v) / bias2_sqrt + eps)

    if impl == "customml":
        ours = [p0.copy(), m0.copy(), v0.copy()]
        ops.adam_update(ours[0], g, ours[1], ours[2], lr=LR, step=ADAM_STEP, device="cuda")
        reference()
        _agree(ours[0] - p0, p - p0)
        _timed(
            benchmark, lambda: ops.adam_update(ours[0], g, ours[1], ours[2], lr=LR, step=ADAM_STEP, device="cuda"), case
        )
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("sgd_update"), ids=lambda c: c.key)
def bench_sgd_update(benchmark, case, impl):
    n, rng = _flat(case)
    p = rng.standard_normal(n, dtype=cupy.float32)
    g = rng.standard_normal(n, dtype=cupy.float32)
    vel = cupy.zeros(n, dtype=cupy.float32)

    def reference():
        vel[...] = 0.9 * vel + g
        p[...] -= LR * vel

    if impl == "customml":
        _timed(benchmark, lambda: ops.sgd_update(p, g, vel, lr=LR, momentum=0.9, device="cuda"), case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("clip_by_global_norm"), ids=lambda c: c.key)
def bench_clip_by_global_norm(benchmark, case, impl):
    n, rng = _flat(case)
    g = rng.standard_normal(n, dtype=cupy.float32)
    max_norm = 1.0 if case.params["clips"] else 1e30
    if impl == "customml":
        want = float(cupy.sqrt((g.astype(cupy.float64) ** 2).sum()))
        assert ops.clip_by_global_norm(g.copy(), 1e30, device="cuda") == pytest.approx(want, rel=1e-6)
        _timed(benchmark, lambda: ops.clip_by_global_norm(g, max_norm, device="cuda"), case)
    else:

        def reference():
            norm = cupy.sqrt((g * g).sum())
            coef = max_norm / (float(norm) + 1e-6)
            if coef < 1:
                g[...] *= coef

        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("dense_backward"), ids=lambda c: c.key)
def bench_dense_backward(benchmark, case, impl):
    p = case.params
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((p["batch"], p["inp"]), dtype=cupy.float32)
    w = rng.standard_normal((p["inp"], p["out"]), dtype=cupy.float32)
    y = cupy.maximum(x @ w, 0)
    dy = rng.standard_normal(y.shape, dtype=cupy.float32)

    def reference():
        dz = dy * (y > 0)
        return dz @ w.T, x.T @ dz, dz.sum(axis=0)

    if impl == "customml":
        got = ops.dense_backward(dy, x, w, y, activation="relu", device="cuda")
        for a, e in zip(got, reference()):
            _agree(a, e)
        _timed(benchmark, lambda: ops.dense_backward(dy, x, w, y, activation="relu", device="cuda"), case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "case", floors.cases_for("mse") + floors.cases_for("binary_cross_entropy_with_logits"), ids=lambda c: c.key
)
def bench_pointwise_losses(benchmark, case, impl):
    n, rng = _flat(case)
    a = rng.standard_normal(n, dtype=cupy.float32)
    t = rng.random(n, dtype=cupy.float32)
    grad = cupy.empty_like(a)
    bce = case.op == "binary_cross_entropy_with_logits"

    def reference():
        if bce:
            loss = (cupy.maximum(a, 0) - a * t + cupy.log1p(cupy.exp(-cupy.abs(a)))).mean()
            return float(loss), (1 / (1 + cupy.exp(-a)) - t) / n
        d = a - t
        return float((d * d).mean()), 2 * d / n

    fn = ops.binary_cross_entropy_with_logits if bce else ops.mse
    if impl == "customml":
        loss, g = fn(a, t, grad_out=grad, device="cuda")
        ref_loss, ref_g = reference()
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        _agree(g, ref_g)
        _timed(benchmark, lambda: fn(a, t, grad_out=grad, device="cuda"), case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("dropout"), ids=lambda c: c.key)
def bench_dropout(benchmark, case, impl):
    n, rng = _flat(case)
    rate = case.params["rate"]
    x = rng.standard_normal(n, dtype=cupy.float32)
    out = cupy.empty_like(x)
    if impl == "customml":
        got = ops.dropout(x, rate=rate, seed=1, stream=0, out=out, device="cuda")
        kept = got != 0
        assert abs(float(kept.mean()) - (1 - rate)) < 1e-3  # 1e7 draws: 30 standard deviations
        _timed(benchmark, lambda: ops.dropout(x, rate=rate, seed=1, stream=0, out=out, device="cuda"), case)
    else:
        # CuPy's own generator and a select: the same bytes moved, a different stream
        _timed(
            benchmark, lambda: cupy.multiply(x, (rng.random(n, dtype=cupy.float32) >= rate) / (1 - rate), out=out), case
        )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("count_correct"), ids=lambda c: c.key)
def bench_count_correct(benchmark, case, impl):
    p = case.params
    rng = cupy.random.default_rng(0)
    logits = rng.standard_normal((p["n"], p["c"]), dtype=cupy.float32)
    labels = rng.integers(0, p["c"], p["n"]).astype(cupy.int32)
    if impl == "customml":
        assert ops.count_correct(logits, labels, device="cuda") == int((logits.argmax(axis=1) == labels).sum())
        _timed(benchmark, lambda: ops.count_correct(logits, labels, device="cuda"), case)
    else:
        _timed(benchmark, lambda: int((logits.argmax(axis=1) == labels).sum()), case)


# --- tensor-core GEMMs ---------------------------------------------------------------------

U32 = 2.0**-24  # float32 unit roundoff
# Unit roundoff of each format's round-to-nearest operands (10 explicit mantissa bits for
# tf32 and fp16, 7 for bf16).
TENSOR_CORE_U = {"tf32": 2.0**-11, "bf16": 2.0**-8, "fp16": 2.0**-11}


def _tensor_core_bound(precision: str, k: int) -> float:
    """How far our product and cuBLAS's may lie apart, relative to sum_k |a_ik| |b_kj|.
    fp16 and bf16: both multiply the same rounded operands (ours rounds to nearest even
    while staging, _operand rounds the reference's the same way), so only the float32
    summations differ: each is within (k + 2) u32 of the sum of |terms| in any order;
    doubled, since tensor cores align the addends of a group by truncation (Fasi et al.,
    "Numerical behavior of NVIDIA tensor cores", 2021). tf32: cuBLAS converts the float32
    operands itself, by rounding or by dropping the low 13 bits (relative error 2u), ours
    rounds to nearest (u), so each product is off by up to (2u + u^2) on our side and
    (4u + 4u^2) on cuBLAS's."""
    accumulate = 2 * 2 * (k + 2) * U32
    if precision != "tf32":
        return accumulate
    u = TENSOR_CORE_U[precision]
    return accumulate + (2 * u + u * u) + (4 * u + 4 * u * u)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("dense_forward"), ids=lambda c: c.key)
def bench_dense_forward_tensor_core(benchmark, case, impl):
    """Our wmma GEMM with precision= against cuBLAS on operands stored in that precision
    (converted once, outside the timing: what a framework holding bf16 weights does; ours
    converts float32 operands while staging them), float32 output, then bias and relu."""
    p = case.params
    prec = p["precision"]
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((p["batch"], p["inp"]), dtype=cupy.float32)
    w = rng.standard_normal((p["inp"], p["out"]), dtype=cupy.float32)
    b = (
        cupy.zeros(p["out"], dtype=cupy.float32)
        if p.get("zero_bias")
        else rng.standard_normal(p["out"], dtype=cupy.float32)
    )
    act = p["activation"]
    operand_type, compute = TENSOR_CORE_TYPES[prec]
    xr, wr = _operand(x, prec), _operand(w, prec)
    ref = cupy.empty((p["batch"], p["out"]), dtype=cupy.float32)

    def reference():
        _gemm_ex(ref, xr, wr, operand_type, CUDA_R_32F, compute)
        cupy.add(ref, b, out=ref)
        return cupy.maximum(ref, 0, out=ref) if act == "relu" else ref

    if impl == "customml":
        out = cupy.empty_like(ref)
        fn = lambda: ops.dense_forward(x, w, b, activation=act, out=out, device="cuda", precision=prec)
        # relu is 1-Lipschitz, and the bias add rounds once more (within the (k + 2) u32)
        tol = _tensor_core_bound(prec, p["inp"]) * (cupy.abs(x) @ cupy.abs(w) + cupy.abs(b))
        _agree_within(fn(), reference(), tol, f"dense_forward {prec}")
        _timed(benchmark, fn, case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("dense_backward"), ids=lambda c: c.key)
def bench_dense_backward_tensor_core(benchmark, case, impl):
    """dx = dz W^T and dW = x^T dz in the precision (dz = dy * relu'(y), float32 column sum
    for db) against cuBLAS on operands in that precision: x and W converted once outside
    the timing, dz, which each call computes, inside."""
    p = case.params
    prec = p["precision"]
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((p["batch"], p["inp"]), dtype=cupy.float32)
    w = rng.standard_normal((p["inp"], p["out"]), dtype=cupy.float32)
    y = cupy.maximum(x @ w, 0)
    dy = rng.standard_normal(y.shape, dtype=cupy.float32)
    operand_type, compute = TENSOR_CORE_TYPES[prec]
    xr, wr = _operand(x, prec), _operand(w, prec)
    dx, dw = cupy.empty_like(x), cupy.empty_like(w)

    def reference():
        dz = dy * (y > 0)
        dzr = _operand(dz, prec)
        _gemm_ex(dx, dzr, wr, operand_type, CUDA_R_32F, compute, trans_b=True)
        _gemm_ex(dw, xr, dzr, operand_type, CUDA_R_32F, compute, trans_a=True)
        return dx, dw, dz.sum(axis=0)

    fn = lambda: ops.dense_backward(dy, x, w, y, activation="relu", device="cuda", precision=prec)
    if impl == "customml":
        got_dx, got_dw, got_db = fn()
        ref_dx, ref_dw, ref_db = reference()
        dz = cupy.abs(dy * (y > 0))
        _agree_within(got_dx, ref_dx, _tensor_core_bound(prec, p["out"]) * (dz @ cupy.abs(w).T), f"dx {prec}")
        _agree_within(got_dw, ref_dw, _tensor_core_bound(prec, p["batch"]) * (cupy.abs(x).T @ dz), f"dweight {prec}")
        # float32 column sums in every precision, in different orders: (batch + 1) u32 of sum |dz|
        _agree_within(got_db, ref_db, 2 * (p["batch"] + 1) * U32 * dz.sum(axis=0), "dbias")
        _timed(benchmark, fn, case)
    else:
        _timed(benchmark, reference, case)


# --- int8 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("gemm_s8"), ids=lambda c: c.key)
def bench_gemm_s8(benchmark, case, impl):
    """gemm_s8 on pre-packed weights against cuBLAS's int8 GEMM (TN: the weight transposed
    once, as our packing does) and the same epilogue in CuPy expressions. a_zero = 128 for
    the whole tensor, so that cuBLAS's signed sums of a - 128 are exactly our corrected
    sums acc - a_zero colsum(W); per-column weight scales and bias."""
    p = case.params
    m, k, n, out_dtype = p["m"], p["k"], p["n"], p["out_dtype"]
    host = np.random.default_rng(0)
    a = cupy.asarray(host.integers(0, 256, (m, k)).astype(np.uint8))
    w = cupy.asarray(host.integers(-127, 128, (k, n)).astype(np.int8))
    a_zero = cupy.asarray(np.array([128], np.int32))
    a_scale = cupy.asarray(np.array([0.02], np.float32))
    w_scale = cupy.asarray((0.01 * (1 + host.random(n))).astype(np.float32))
    bias = cupy.asarray(host.standard_normal(n).astype(np.float32))
    out_scale, out_zero = 0.5, 0
    dtype = {"float32": cupy.float32, "uint8": cupy.uint8, "int32": cupy.int32}[out_dtype]
    out = cupy.empty((m, n), dtype)
    a_s8 = (a.astype(cupy.int16) - 128).astype(cupy.int8)
    wt = cupy.ascontiguousarray(w.T)
    acc = cupy.empty((m, n), cupy.int32)

    def epilogue(sums):
        y = cupy.maximum(a_scale * w_scale * sums.astype(cupy.float32) + bias, 0)
        if out_dtype == "uint8":
            return cupy.clip(cupy.rint(y / out_scale) + out_zero, 0, 255).astype(cupy.uint8)
        return y

    def reference():
        _gemm_ex(acc, a_s8, wt, CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I, trans_b=True)
        return acc if out_dtype == "int32" else epilogue(acc)

    if impl == "customml":
        packed = ops.gemm_s8_pack(w, device="cuda")
        ours_acc = ops.gemm_s8(a, packed, None, a_zero, None, out=cupy.empty((m, n), cupy.int32), device="cuda")
        # exact: integer sums below 2^53 in float64
        exact = (a_s8.astype(cupy.float64) @ w.astype(cupy.float64)).astype(cupy.int32)
        assert bool(cupy.array_equal(cupy.asarray(ours_acc), exact)), "gemm_s8 int32 sums"
        if out_dtype == "int32":
            fn = lambda: ops.gemm_s8(a, packed, None, a_zero, None, out=out, device="cuda")
        else:
            requant = dict(out_scale=out_scale, out_zero=out_zero) if out_dtype == "uint8" else {}
            fn = lambda: ops.gemm_s8(
                a, packed, a_scale, a_zero, w_scale, bias=bias, activation="relu", out=out, device="cuda", **requant
            )
            got, want = cupy.asarray(fn()), epilogue(exact)
            if out_dtype == "float32":
                _agree(got, want, rel=1e-5)  # a few float32 roundings of the epilogue
            else:  # the float32 value may round to either side of a code boundary
                assert int(cupy.abs(got.astype(cupy.int16) - want.astype(cupy.int16)).max()) <= 1, "gemm_s8 uint8"
        _timed(benchmark, fn, case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("quantize"), ids=lambda c: c.key)
def bench_quantize(benchmark, case, impl):
    """Symmetric int8 codes per column (as weights are quantized per output channel)."""
    p = case.params
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((p["rows"], p["cols"]), dtype=cupy.float32)
    scale = (cupy.abs(x).max(axis=0) / 127).astype(cupy.float32)
    out = cupy.empty(x.shape, cupy.int8)
    # half to even on the correctly rounded float32 quotient, as ONNX QuantizeLinear: exact
    reference = lambda: cupy.clip(cupy.rint(x / scale), -127, 127).astype(cupy.int8)
    if impl == "customml":
        fn = lambda: ops.quantize(x, scale, dtype=p["dtype"], axis=p["axis"], out=out, device="cuda")
        assert bool(cupy.array_equal(cupy.asarray(fn()), reference())), "quantize codes"
        _timed(benchmark, fn, case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("dequantize"), ids=lambda c: c.key)
def bench_dequantize(benchmark, case, impl):
    p = case.params
    host = np.random.default_rng(0)
    q = cupy.asarray(host.integers(0, 256, (p["rows"], p["cols"])).astype(np.uint8))
    scale = cupy.asarray((10.0 ** host.uniform(-3, 0, p["rows"])).astype(np.float32))
    zero = cupy.asarray(host.integers(0, 256, p["rows"]).astype(np.int32))
    out = cupy.empty(q.shape, cupy.float32)
    ref_out = cupy.empty_like(out)
    # q - zero is exact in float32, so the product rounds once, as the op's does: exact
    reference = lambda: cupy.multiply(
        q.astype(cupy.float32) - zero.astype(cupy.float32)[:, None], scale[:, None], out=ref_out
    )
    if impl == "customml":
        fn = lambda: ops.dequantize(q, scale, zero, axis=p["axis"], out=out, device="cuda")
        assert bool(cupy.array_equal(cupy.asarray(fn()), reference())), "dequantize values"
        _timed(benchmark, fn, case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("quantize_rows_dynamic"), ids=lambda c: c.key)
def bench_quantize_rows_dynamic(benchmark, case, impl):
    p = case.params
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((p["rows"], p["cols"]), dtype=cupy.float32)

    def reference():
        """tests/reference.py's definition, in float32 as the op computes it."""
        lo = cupy.minimum(x.min(axis=1), 0)
        hi = cupy.maximum(x.max(axis=1), 0)
        scale = (hi - lo) / cupy.float32(255)
        scale = cupy.where(scale == 0, cupy.float32(1), scale)
        zero = cupy.clip(cupy.rint(-lo / scale), 0, 255).astype(cupy.int32)
        q = cupy.clip(cupy.rint(x / scale[:, None]) + zero[:, None], 0, 255).astype(cupy.uint8)
        return q, scale, zero

    if impl == "customml":
        q, scale, zero = (
            cupy.empty(x.shape, cupy.uint8),
            cupy.empty(p["rows"], cupy.float32),
            cupy.empty(p["rows"], cupy.int32),
        )
        fn = lambda: ops.quantize_rows_dynamic(x, out=q, scale_out=scale, zero_out=zero, device="cuda")
        for got, want, name in zip(fn(), reference(), ("codes", "scale", "zero")):
            assert bool(cupy.array_equal(cupy.asarray(got), want)), f"quantize_rows_dynamic {name}"
        _timed(benchmark, fn, case)
    else:
        _timed(benchmark, reference, case)


# --- sparse ----------------------------------------------------------------------------------


def _pruned(inp: int, out: int, seed: int = 0):
    """A dense kernel (in, out) keeping floors.SPARSE_KEEP-th of each column's rows (at
    random), so the CSR's nnz is what floors counted; x and bias of the layer."""
    host = np.random.default_rng(seed)
    w = (host.standard_normal((inp, out)) / np.sqrt(inp)).astype(np.float32)
    rank = np.argsort(host.random((inp, out)), axis=0)
    w[rank >= inp // floors.SPARSE_KEEP] = 0.0
    return w, host


@pytest.mark.parametrize("impl", ["customml", "customml_raw", "cupy"])
@pytest.mark.parametrize("case", floors.cuda_cases_for("sparse_dense_forward"), ids=lambda c: c.key)
def bench_sparse_dense_forward(benchmark, case, impl):
    """relu(x W + b) for a 90%-sparse W: ours on sparse_pack's prepared weight (checked once,
    as a model runs it) and on the raw CSR arrays (checked on every call), against
    cupyx.scipy.sparse (W^T as CSR) @ x^T, which yields y^T, cuSPARSE's natural layout."""
    p = case.params
    w, host = _pruned(p["inp"], p["out"])
    offsets, index, values = ops.csr_from_dense(w)
    assert index.size == floors.sparse_nnz(p["inp"], p["out"])
    offsets, index, values = cupy.asarray(offsets), cupy.asarray(index), cupy.asarray(values)
    x = cupy.asarray(host.uniform(-1.0, 1.0, (p["batch"], p["inp"])).astype(np.float32))
    b = cupy.asarray((0.1 * host.standard_normal(p["out"])).astype(np.float32))
    wt = cupyx.scipy.sparse.csr_matrix((values, index, offsets), shape=(p["out"], p["inp"]))
    xt, bt = x.T, b[:, None]

    def reference():
        r = wt @ xt
        r += bt
        return cupy.maximum(r, 0, out=r)

    if impl == "cupy":
        _timed(benchmark, reference, case)
        return
    out = cupy.empty((p["batch"], p["out"]), cupy.float32)
    if impl == "customml":
        packed = ops.sparse_pack(offsets, index, values, p["inp"], device="cuda")
        fn = lambda: ops.sparse_dense_forward(x, packed, bias=b, activation="relu", out=out, device="cuda")
    else:
        fn = lambda: ops.sparse_dense_forward(x, offsets, index, values, b, activation="relu", out=out, device="cuda")
    _agree(fn(), reference().T, rel=1e-4)  # summation orders differ (tests/test_sparse.py)
    _timed(benchmark, fn, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("nm_dense_forward"), ids=lambda c: c.key)
def bench_nm_dense_forward(benchmark, case, impl):
    """relu(x W + b) for a 2:4 W (two of every four rows of a column zero, at random):
    nm_dense_forward on its N:M form against cupy.matmul on W itself, zeros included."""
    p = case.params
    inp, n_out = p["inp"], p["out"]
    host = np.random.default_rng(0)
    w = (host.standard_normal((inp, n_out)) / np.sqrt(inp)).astype(np.float32)
    r = host.random((inp // 4, 4, n_out))
    w = (w.reshape(inp // 4, 4, n_out) * (r >= np.sort(r, axis=1)[:, 2:3, :])).reshape(inp, n_out)
    values, index = ops.nm_from_dense(w)  # keeps exactly W's nonzeros: two per group
    assert values.size == floors.nm_slots(inp, n_out)
    values, index, w = cupy.asarray(values), cupy.asarray(index), cupy.asarray(w)
    x = cupy.asarray(host.uniform(-1.0, 1.0, (p["batch"], inp)).astype(np.float32))
    b = cupy.asarray((0.1 * host.standard_normal(n_out)).astype(np.float32))
    out = cupy.empty((p["batch"], n_out), cupy.float32)
    ref = cupy.empty_like(out)

    def reference():
        cupy.matmul(x, w, out=ref)
        cupy.add(ref, b, out=ref)
        return cupy.maximum(ref, 0, out=ref)

    if impl == "customml":
        fn = lambda: ops.nm_dense_forward(x, values, index, b, activation="relu", out=out, device="cuda")
        _agree(fn(), reference(), rel=1e-4)  # summation orders differ
        _timed(benchmark, fn, case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("apply_mask"), ids=lambda c: c.key)
def bench_apply_mask(benchmark, case, impl):
    n, rng = _flat(case)
    p0 = rng.standard_normal(n, dtype=cupy.float32)
    keep = (rng.random(n, dtype=cupy.float32) < 0.1).astype(cupy.uint8)  # 90% pruned
    p = p0.copy()
    reference = lambda: cupy.multiply(p, keep, out=p)
    if impl == "customml":
        ours = p0.copy()
        ops.apply_mask(ours, keep, device="cuda")
        assert bool(cupy.array_equal(ours, reference())), "apply_mask"
        _timed(benchmark, lambda: ops.apply_mask(ours, keep, device="cuda"), case)
    else:
        _timed(benchmark, reference, case)


# --- regularizer, preprocessing, metrics ---------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("l1_l2_penalty"), ids=lambda c: c.key)
def bench_l1_l2_penalty(benchmark, case, impl):
    n, rng = _flat(case)
    param = rng.standard_normal(n, dtype=cupy.float32)
    g0 = rng.standard_normal(n, dtype=cupy.float32)
    l1, l2 = 1e-4, 1e-3
    g = g0.copy()

    def reference():
        penalty = float(l1 * cupy.abs(param).sum() + l2 * (param * param).sum())
        g[...] += l1 * cupy.sign(param) + 2 * l2 * param
        return penalty

    if impl == "customml":
        ours = g0.copy()
        penalty = ops.l1_l2_penalty(param, l1=l1, l2=l2, grad=ours, device="cuda")
        assert penalty == pytest.approx(reference(), rel=1e-5)  # float32 sums of 1e7 terms, orders differ
        _agree(ours - g0, g - g0)  # the increment, as the optimizers' steps are compared
        _timed(benchmark, lambda: ops.l1_l2_penalty(param, l1=l1, l2=l2, grad=ours, device="cuda"), case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("feature_affine"), ids=lambda c: c.key)
def bench_feature_affine(benchmark, case, impl):
    p = case.params
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((p["rows"], p["cols"]), dtype=cupy.float32)
    scale = rng.random(p["cols"], dtype=cupy.float32) + 0.5
    shift = rng.standard_normal(p["cols"], dtype=cupy.float32)
    out, ref = cupy.empty_like(x), cupy.empty_like(x)
    reference = lambda: cupy.add(cupy.multiply(x, scale, out=ref), shift, out=ref)
    if impl == "customml":
        fn = lambda: ops.feature_affine(x, scale, shift, out=out, device="cuda")
        _agree(fn(), reference(), rel=1e-6)  # one FMA or a multiply and an add: two roundings at most
        _timed(benchmark, fn, case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("confusion_matrix_update"), ids=lambda c: c.key)
def bench_confusion_matrix_update(benchmark, case, impl):
    p = case.params
    k = p["k"]
    rng = cupy.random.default_rng(0)
    logits = rng.standard_normal((p["n"], k), dtype=cupy.float32)
    labels = rng.integers(0, k, p["n"]).astype(cupy.int32)
    counts = cupy.zeros((k, k), cupy.int64)

    def reference():
        cell = labels.astype(cupy.int64) * k + logits.argmax(axis=1)
        counts[...] += cupy.bincount(cell, minlength=k * k).reshape(k, k)
        return counts

    if impl == "customml":
        ours = cupy.zeros((k, k), cupy.int64)
        ops.confusion_matrix_update(ours, logits, labels, device="cuda")
        assert bool(cupy.array_equal(ours, reference())), "confusion counts"  # integers: exact
        _timed(benchmark, lambda: ops.confusion_matrix_update(ours, logits, labels, device="cuda"), case)
    else:
        _timed(benchmark, reference, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cuda_cases_for("regression_stats_update"), ids=lambda c: c.key)
def bench_regression_stats_update(benchmark, case, impl):
    p = case.params
    rng = cupy.random.default_rng(0)
    pred = rng.standard_normal((p["n"], p["outputs"]), dtype=cupy.float32)
    target = rng.standard_normal((p["n"], p["outputs"]), dtype=cupy.float32) + 3
    shift = cupy.full(p["outputs"], 3.0, cupy.float64)
    stats = cupy.zeros((4, p["outputs"]), cupy.float64)

    def reference():
        """tests/reference.py's definition: float64 throughout."""
        y = target.astype(cupy.float64)
        e = pred.astype(cupy.float64) - y
        d = y - shift
        stats[...] += cupy.stack([cupy.abs(e).sum(axis=0), (e * e).sum(axis=0), d.sum(axis=0), (d * d).sum(axis=0)])
        return stats

    if impl == "customml":
        ours = cupy.zeros_like(stats)
        ops.regression_stats_update(ours, pred, target, shift, device="cuda")
        want = reference()
        for row in range(4):  # each statistic against its own scale: they differ by orders of magnitude
            _agree(ours[row], want[row], rel=1e-6)
        _timed(benchmark, lambda: ops.regression_stats_update(ours, pred, target, shift, device="cuda"), case)
    else:
        _timed(benchmark, reference, case)
