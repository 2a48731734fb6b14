"""Every op of customml.ops on device "cuda" against a CuPy implementation of the same
maths (cupy.matmul for the GEMMs, CuPy elementwise and reduction expressions for the
rest), on the cases of bench/floors.py. Each result is compared with CuPy's once before
timing; each timed call ends with a device synchronization. Skipped, with the reason,
where there is no usable GPU or no CuPy.

    python -m pytest bench/bench_cuda.py --benchmark-json=/tmp/bench-cuda.json

The achieved rate of each case (bytes / median or FLOPs / median) is printed against the
device's measured copy bandwidth and its FP32 peak (SMs x 128 lanes x 2 x clock).
"""

from __future__ import annotations

import numpy as np
import pytest

import customml
import floors
from customml import ops

try:
    import cupy
except ImportError:
    cupy = None

pytestmark = [
    pytest.mark.skipif(not customml.cuda.is_available(),
                       reason=f"no usable GPU: {customml.cuda.unavailable_reason() or 'CUDA unavailable'}"),
    pytest.mark.skipif(cupy is None, reason="CuPy is not installed (pip install cupy-cuda12x)"),
]

IMPLS = ["customml", "cupy"]
LR = 1e-3
ADAM_STEP = 10


def _device_limits():
    """(copy bandwidth in bytes/s measured with a 1 GiB device copy, FP32 peak in FLOP/s)."""
    n = 1 << 28
    a = cupy.ones(n, dtype=cupy.float32)
    b = cupy.empty_like(a)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    best = float("inf")
    for _ in range(5):
        start.record()
        cupy.copyto(b, a)
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    props = cupy.cuda.runtime.getDeviceProperties(0)
    peak = props["multiProcessorCount"] * 128 * 2 * props["clockRate"] * 1e3
    return 2 * a.nbytes / best, peak


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
    bandwidth, peak = _LIMITS
    median = benchmark.stats.stats.median
    limit = max(case.nbytes / bandwidth, case.flops / peak)
    benchmark.extra_info.update(achieved_gbs=case.nbytes / median / 1e9, achieved_gflops=case.flops / median / 1e9,
                                floor_s=limit, achieved_over_limit=limit / median)
    print(f"\n{case.key}: {case.nbytes / median / 1e9:.1f} GB/s, {case.flops / median / 1e9:.1f} GFLOP/s, "
          f"{100 * limit / median:.0f}% of the floor ({limit * 1e6:.1f} us)")


_LIMITS = _device_limits() if (cupy is not None and customml.cuda.is_available()) else (1.0, 1.0)


def _agree(ours, ref, rel=1e-3):
    a, e = cupy.asnumpy(cupy.asarray(ours)).astype(np.float64), cupy.asnumpy(cupy.asarray(ref)).astype(np.float64)
    assert a.shape == e.shape
    scale = float(np.abs(e).max()) if e.size else 0.0
    assert float(np.abs(a - e).max()) <= rel * scale + 1e-30


def _act(z, name):
    return cupy.maximum(z, 0) if name == "relu" else z


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("dense_forward"), ids=lambda c: c.key)
def bench_dense_forward(benchmark, case, impl):
    p = case.params
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((p["batch"], p["inp"]), dtype=cupy.float32)
    w = rng.standard_normal((p["inp"], p["out"]), dtype=cupy.float32)
    b = cupy.zeros(p["out"], dtype=cupy.float32) if p.get("zero_bias") else rng.standard_normal(p["out"], dtype=cupy.float32)
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
        _timed(benchmark, lambda: ops.adam_update(ours[0], g, ours[1], ours[2], lr=LR, step=ADAM_STEP, device="cuda"),
               case)
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
@pytest.mark.parametrize("case", floors.cases_for("mse") + floors.cases_for("binary_cross_entropy_with_logits"),
                         ids=lambda c: c.key)
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
        _timed(benchmark, lambda: cupy.multiply(x, (rng.random(n, dtype=cupy.float32) >= rate) / (1 - rate), out=out),
               case)


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
