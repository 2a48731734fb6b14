"""customml against the libraries its users would otherwise pick (issue #4): PyTorch eager
on the CPU, ONNX Runtime and plain NumPy, side by side in one pytest-benchmark group per
comparison and thread count. Every library in a group runs on the same number of threads
(customml.set_num_threads, torch.set_num_threads, ORT's intra_op_num_threads, OpenBLAS
through threadpoolctl); each comparison runs at 1 and 2 threads.

    python -m pytest bench/bench_peers.py --benchmark-json=/tmp/peers.json
    python bench/bench_peers.py /tmp/peers.json   # the Markdown tables of docs/performance.md
    python bench/peers_isolated.py          # the same workloads, each library in its own process

Before a workload is timed its result is checked against NumPy's (the training step:
every implementation starts from the same weights, and their losses after the timed
number of steps must agree and have decreased), so no benchmark times a wrong program.
torch and onnxruntime are optional (`pip install .[bench]`): their benchmarks skip when
they are not importable.

The workload builders import their library lazily, so bench/peers_isolated.py can run one
library in a process that never loads the others.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pytest

import timing

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
THREADS = (1, 2)
SEED = 0

# The MLP of the issue: 784-256-256-10, relu, softmax cross-entropy, Adam(1e-3).
SIZES = (784, 256, 256, 10)
BATCH = 128
STEPS = 16  # training steps per timed call, over one fixed 2048-sample set
LR = 1e-3
LATENCY_CALLS = 10_000

# GEMM shapes (m, k, n): the 1024-cube and the MLP's layers at batch 128 and 1024.
GEMM_SHAPES = ((1024, 1024, 1024), (128, 784, 256), (128, 256, 256), (1024, 784, 256), (1024, 256, 256))
ADAM_N = 10_000_000
CE_SHAPE = (4096, 1000)


def _skip_unless(lib: str):
    have = {"torch": HAVE_TORCH, "onnxruntime": HAVE_ORT}.get(lib, True)
    return pytest.mark.skipif(not have, reason=f"{lib} is not importable (pip install .[bench])")


def _impl(name: str, lib: str):
    return pytest.param(name, marks=_skip_unless(lib), id=name)


# --- threads ---------------------------------------------------------------------------------

_blas_limit = None


def set_threads(n: int) -> None:
    """Every loaded library on n threads: customml's pool, torch's intra-op pool and
    OpenBLAS (NumPy); ORT takes n per session (intra_op_num_threads)."""
    global _blas_limit
    import sys

    import threadpoolctl

    if "customml" in sys.modules:
        sys.modules["customml"].set_num_threads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if _blas_limit is not None:
        _blas_limit.restore_original_limits()
    _blas_limit = threadpoolctl.threadpool_limits(limits=n, user_api="blas")


# --- data ----------------------------------------------------------------------------------------


def mlp_data():
    """2048 samples of 784 features in [0, 1) with 10 classes, and the initial weights
    [(784, 256) kernel, (256,) bias, ...] every implementation starts from."""
    rng = np.random.default_rng(SEED)
    x = rng.random((BATCH * STEPS, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], BATCH * STEPS).astype(np.int32)
    weights = []
    for i, o in zip(SIZES[:-1], SIZES[1:]):
        bound = np.float32(np.sqrt(6.0 / (i + o)))
        weights.append(rng.uniform(-bound, bound, (i, o)).astype(np.float32))
        weights.append(np.zeros(o, np.float32))
    return x, y, weights


def mlp_logits(weights, x) -> np.ndarray:
    """The MLP's logits in float64: the reference every implementation is checked against."""
    h = x.astype(np.float64)
    for j in range(0, len(weights), 2):
        h = h @ weights[j] + weights[j + 1]
        if j + 2 < len(weights):
            h = np.maximum(h, 0.0)
    return h


def mlp_loss(weights, x, y) -> float:
    """Mean softmax cross-entropy of the MLP on (x, y), in float64."""
    h = mlp_logits(weights, x)
    h = h - h.max(axis=1, keepdims=True)
    logp = h - np.log(np.exp(h).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


# --- workloads: each builder returns (timed call, weights or result after it) ------------------


@dataclass
class Workload:
    fn: Callable[[], object]
    result: Optional[Callable[[], object]] = None


def customml_model(weights, compile_model: bool = True, device: str = "cpu"):
    import customml as cm

    model = cm.Sequential(
        [
            cm.layers.Dense(SIZES[1], activation="relu"),
            cm.layers.Dense(SIZES[2], activation="relu"),
            cm.layers.Dense(SIZES[3]),
        ],
        input_dim=SIZES[0],
        device=device,
    )
    model.set_weights(weights)
    if compile_model:
        model.compile(optimizer=cm.optimizers.Adam(LR), loss="softmax_cross_entropy")
    return model


def torch_model(weights):
    import torch

    net = torch.nn.Sequential(
        torch.nn.Linear(SIZES[0], SIZES[1]),
        torch.nn.ReLU(),
        torch.nn.Linear(SIZES[1], SIZES[2]),
        torch.nn.ReLU(),
        torch.nn.Linear(SIZES[2], SIZES[3]),
    )
    with torch.no_grad():
        for layer, (w, b) in zip(net[::2], zip(weights[::2], weights[1::2])):
            layer.weight.copy_(torch.from_numpy(w.T.copy()))  # torch keeps (out, in)
            layer.bias.copy_(torch.from_numpy(b))
    return net


def train_step(impl: str, x, y, weights, device: str = "cpu") -> Workload:
    """STEPS Adam steps of batch BATCH over (x, y) in order, per call (customml on the
    device given; the peers on the CPU)."""
    if impl == "customml":
        # The model API has no single-step call: fit() over STEPS batches, one epoch
        # (its per-epoch overhead is part of what a user pays, and is measured here).
        model = customml_model(weights, device=device)

        def fn():
            model.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)

        return Workload(fn, model.get_weights)
    if impl.startswith("torch"):
        import torch
        import torch.nn.functional as F

        net = torch_model(weights)
        fused = impl == "torch_fused"
        opt = torch.optim.Adam(net.parameters(), lr=LR, fused=fused, foreach=None if fused else True)
        xs = torch.from_numpy(x).split(BATCH)
        ys = torch.from_numpy(y.astype(np.int64)).split(BATCH)

        def fn():
            for xb, yb in zip(xs, ys):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(xb), yb).backward()
                opt.step()

        def result():
            out = []
            for layer in net[::2]:
                out += [layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()]
            return out

        return Workload(fn, result)
    assert impl == "numpy"
    params = [w.copy() for w in weights]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = [0]
    b1, b2, eps = 0.9, 0.999, 1e-8
    n_layers = len(params) // 2

    def step(xb, yb):
        # forward, keeping each layer's input
        acts = [xb]
        for j in range(n_layers):
            z = acts[-1] @ params[2 * j] + params[2 * j + 1]
            acts.append(np.maximum(z, 0.0) if j < n_layers - 1 else z)
        # softmax cross-entropy gradient: (softmax - onehot) / batch
        z = acts[-1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        dz = e / e.sum(axis=1, keepdims=True)
        dz[np.arange(len(yb)), yb] -= 1.0
        dz /= np.float32(len(yb))
        grads = [None] * len(params)
        for j in reversed(range(n_layers)):
            grads[2 * j] = acts[j].T @ dz
            grads[2 * j + 1] = dz.sum(axis=0)
            if j > 0:  # the first layer needs no input gradient
                dz = (dz @ params[2 * j].T) * (acts[j] > 0)
        t[0] += 1
        c1 = 1.0 - b1 ** t[0]
        c2 = 1.0 - b2 ** t[0]
        for p, g, mi, vi in zip(params, grads, m, v):
            mi *= b1
            mi += (1 - b1) * g
            vi *= b2
            vi += (1 - b2) * g * g
            p -= (LR / c1) * mi / (np.sqrt(vi / c2) + eps)

    def fn():
        for s in range(0, len(y), BATCH):
            step(x[s : s + BATCH], y[s : s + BATCH])

    return Workload(fn, lambda: params)


def predict_b1(impl: str, x1, weights, threads: int, onnx_path: Optional[str] = None, device: str = "cpu") -> Workload:
    """One sample through the MLP, from Python, into a preallocated output where the
    library allows it (customml on the device given; the peers on the CPU)."""
    if impl == "customml":
        model = customml_model(weights, compile_model=False, device=device)
        out = np.empty((1, SIZES[-1]), np.float32)
        predict = model.predict

        def fn():
            return predict(x1, out=out)

        return Workload(fn)
    if impl == "torch":
        import torch

        net = torch_model(weights).eval()
        xt = torch.from_numpy(x1)

        def fn():
            with torch.inference_mode():
                return net(xt)

        return Workload(fn)
    assert impl == "onnxruntime"
    import onnxruntime as ort

    if onnx_path is None:
        raise ValueError("predict_b1: onnxruntime needs the path of the exported model")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    feed = {name: x1}
    run = sess.run

    def fn():
        return run(None, feed)[0]

    return Workload(fn)


def export_onnx(weights, path: str) -> str:
    customml_model(weights, compile_model=False).export_onnx(path)
    return path


def numpy_trained_loss(x, y, weights) -> float:
    """The loss after one call of NumPy's train_step from weights: what the others must reach."""
    ref = train_step("numpy", x, y, weights)
    ref.fn()
    return mlp_loss(ref.result(), x, y)


def check_train_step(impl: str, x, y, weights, ref_loss: float, device: str = "cpu") -> tuple[float, float]:
    """(loss before, loss after) one call of the impl's train_step from weights; the call
    must lower the loss and land within 1e-2 of NumPy's (ref_loss)."""
    check = train_step(impl, x, y, weights, device)
    check.fn()
    loss0, loss = mlp_loss(weights, x, y), mlp_loss(check.result(), x, y)
    # STEPS Adam steps from the same start in float32: the orderings of the sums differ by
    # ~1e-6 relative per step, and Adam's normalized step keeps that from growing beyond
    # ~1e-4 of the loss over 16 steps; 1e-2 catches a wrong gradient or update (order 1).
    assert loss < loss0, f"{impl}: loss {loss:.4f} did not decrease from {loss0:.4f}"
    assert abs(loss - ref_loss) <= 1e-2 * ref_loss, f"{impl}: loss {loss:.5f}, NumPy {ref_loss:.5f}"
    return loss0, loss


def check_predict_b1(impl: str, run: Workload, x1, weights) -> None:
    """One call of a predict_b1 workload against the float64 logits."""
    expected = mlp_logits(weights, x1)
    got = np.asarray(run.fn(), dtype=np.float64)
    # float32 dot products of length <= 784: ~1e-6 relative; 1e-4 of the output's scale.
    assert got.shape == expected.shape, f"{impl}: shape {got.shape}, expected {expected.shape}"
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected)), impl


def latency_ns(fn: Callable[[], object], calls: int = LATENCY_CALLS) -> np.ndarray:
    """Per-call wall time in ns of `calls` back-to-back calls (after 1,000 warm-up calls)."""
    return timing.call_ns(fn, calls, warmup=1000)


def adam_state(n: int = ADAM_N):
    rng = np.random.default_rng(SEED)
    p = rng.standard_normal(n, dtype=np.float32) * np.float32(0.1)
    g = rng.standard_normal(n, dtype=np.float32) * np.float32(0.1)
    return p, g


ADAM_STEP = 10  # bias corrections fixed, so every timed call does the same work


def adam(impl: str, p0, g, decoupled: bool) -> Workload:
    """One Adam (AdamW with decoupled) step over n parameters in place; weight decay 1e-2
    for AdamW, none for Adam."""
    p = p0.copy()
    wd = 1e-2 if decoupled else 0.0
    if impl == "customml":
        from customml import ops

        m = np.zeros_like(p)
        v = np.zeros_like(p)
        step = [0]

        def fn():
            step[0] += 1
            ops.adam_update(p, g, m, v, lr=LR, step=step[0], weight_decay=wd, decoupled=decoupled)

        return Workload(fn, lambda: p)
    import torch

    P = torch.from_numpy(p).requires_grad_()
    P.grad = torch.from_numpy(g)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    fused = impl == "torch_fused"
    opt = cls([P], lr=LR, weight_decay=wd, fused=fused, foreach=None if fused else True)
    return Workload(opt.step, lambda: p)


def gemm_inputs(shape):
    m, k, n = shape
    rng = np.random.default_rng(SEED)
    a = rng.uniform(-1.0, 1.0, (m, k)).astype(np.float32)
    b = (rng.standard_normal((k, n), dtype=np.float32) / np.float32(np.sqrt(k))).astype(np.float32)
    return a, b


def gemm(impl: str, a, b) -> Workload:
    """c = a @ b into a preallocated output (customml: dense_forward with a zero bias)."""
    c = np.full((a.shape[0], b.shape[1]), np.nan, np.float32)
    if impl == "customml":
        from customml import ops

        zero = np.zeros(b.shape[1], np.float32)

        def fn():
            ops.dense_forward(a, b, zero, out=c)
    elif impl == "numpy":

        def fn():
            np.matmul(a, b, out=c)
    else:
        import torch

        A, B, C = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)

        def fn():
            torch.mm(A, B, out=C)

    return Workload(fn, lambda: c)


def ce_inputs(shape=CE_SHAPE):
    rng = np.random.default_rng(SEED)
    logits = rng.standard_normal(shape, dtype=np.float32) * np.float32(3.0)
    labels = rng.integers(0, shape[1], shape[0]).astype(np.int32)
    return logits, labels


def softmax_ce(impl: str, logits, labels) -> Workload:
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    if impl == "customml":
        from customml import ops

        grad = np.full(logits.shape, np.nan, np.float32)

        def fn():
            return ops.softmax_cross_entropy(logits, labels, grad_out=grad)[0], grad

        return Workload(fn)
    import torch
    import torch.nn.functional as F

    L = torch.from_numpy(logits).requires_grad_()
    Y = torch.from_numpy(labels.astype(np.int64))

    def fn():
        loss = F.cross_entropy(L, Y)
        (g,) = torch.autograd.grad(loss, L)
        return loss.item(), g.numpy()

    return Workload(fn)


# --- pytest-benchmark ----------------------------------------------------------------------------


@pytest.fixture(params=THREADS, ids=lambda n: f"{n}t")
def threads(request):
    n = request.param
    set_threads(n)
    yield n
    set_threads(1)  # bench/conftest.py's setting for the rest of the suite


def _group(benchmark, name: str, n: int, **info) -> None:
    benchmark.group = f"{name} {n}t"
    benchmark.extra_info.update(case=name, threads=n, **info)


_train_data = {}


@pytest.mark.parametrize("impl", ["customml", _impl("torch_fused", "torch"), _impl("torch_foreach", "torch"), "numpy"])
def bench_train_step(benchmark, impl, threads):
    if not _train_data:
        _train_data["data"] = mlp_data()
    x, y, w0 = _train_data["data"]
    _group(benchmark, f"train_step mlp784-256-256-10 b{BATCH} x{STEPS} steps", threads, impl=impl, steps=STEPS)
    # Agreement, untimed: one call (STEPS steps) from the same weights as NumPy's.
    if "ref_loss" not in _train_data:
        _train_data["ref_loss"] = numpy_trained_loss(x, y, w0)
    loss0, loss = check_train_step(impl, x, y, w0, _train_data["ref_loss"])
    benchmark.extra_info.update(loss_start=loss0, loss_after=loss)
    run = train_step(impl, x, y, w0)
    benchmark(run.fn)


@pytest.mark.parametrize("impl", ["customml", _impl("torch", "torch"), _impl("onnxruntime", "onnxruntime")])
def bench_predict_b1(benchmark, impl, threads, tmp_path_factory):
    if "data" not in _train_data:
        _train_data["data"] = mlp_data()
    x, _, w0 = _train_data["data"]
    x1 = np.ascontiguousarray(x[:1])
    onnx_path = None
    if impl == "onnxruntime":
        onnx_path = export_onnx(w0, str(tmp_path_factory.mktemp("onnx") / "mlp.onnx"))
    _group(benchmark, "predict mlp784-256-256-10 b1", threads, impl=impl)
    run = predict_b1(impl, x1, w0, threads, onnx_path)
    check_predict_b1(impl, run, x1, w0)
    benchmark(run.fn)
    if not getattr(benchmark, "disabled", False):
        ns = latency_ns(run.fn)
        benchmark.extra_info.update(
            calls=LATENCY_CALLS, p50_ns=float(np.percentile(ns, 50)), p99_ns=float(np.percentile(ns, 99))
        )


_adam_data = {}


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@pytest.mark.parametrize("impl", ["customml", _impl("torch_fused", "torch"), _impl("torch_foreach", "torch")])
def bench_adam_1e7(benchmark, impl, decoupled, threads):
    if not _adam_data:
        _adam_data["state"] = adam_state()
    p0, g = _adam_data["state"]
    name = "adamw" if decoupled else "adam"
    _group(benchmark, f"{name} 1e7", threads, impl=impl, bytes=28 * ADAM_N)
    # Agreement: the first step from zero moments moves every parameter by about lr
    # (sign of g); customml's and torch's must agree to float32 rounding of that step.
    if impl != "customml":
        ours, theirs = adam("customml", p0, g, decoupled), adam(impl, p0, g, decoupled)
        ours.fn()
        theirs.fn()
        err = np.max(np.abs((ours.result() - p0) - (theirs.result() - p0)))
        assert err <= 1e-3 * LR, f"{impl}: first steps differ by {err:.3g}"
    run = adam(impl, p0, g, decoupled)
    for _ in range(ADAM_STEP):  # the moments of a steady state, not zeros
        run.fn()
    benchmark(run.fn)


@pytest.mark.parametrize("impl", ["customml", "numpy", _impl("torch", "torch")])
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def bench_gemm(benchmark, impl, shape, threads):
    a, b = gemm_inputs(shape)
    m, k, n = shape
    _group(benchmark, f"gemm {m}x{k}x{n}", threads, impl=impl, flops=2 * m * k * n)
    run = gemm(impl, a, b)
    run.fn()
    expected = a.astype(np.float64) @ b
    # float32 sums of k <= 1024 products: ~sqrt(k) ulps, far below 1e-4 of the scale.
    assert np.max(np.abs(run.result() - expected)) <= 1e-4 * np.max(np.abs(expected)), impl
    benchmark(run.fn)


@pytest.mark.parametrize("impl", ["customml", _impl("torch", "torch")])
def bench_softmax_ce(benchmark, impl, threads):
    logits, labels = ce_inputs()
    n, c = logits.shape
    _group(benchmark, f"softmax_ce fwd+bwd {n}x{c}", threads, impl=impl, bytes=8 * n * c + 4 * n)
    run = softmax_ce(impl, logits, labels)
    loss, grad = run.fn()
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    s = p.sum(axis=1, keepdims=True)
    ref_loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), labels]))
    p /= s
    p[np.arange(n), labels] -= 1.0
    p /= n
    # float32 exp and sums of 1000 terms: ~1e-6 relative; 1e-4 catches any real error.
    assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss), impl
    assert np.max(np.abs(grad - p)) <= 1e-4 * np.max(np.abs(p)), impl
    benchmark(run.fn)


# --- report ----------------------------------------------------------------------------------------


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def report(path: str) -> None:
    """Markdown: one row per benchmark, grouped as run, with each peer's median over
    customml's (above 1: customml is faster) and the batch-1 percentiles."""
    import json

    with open(path) as f:
        benches = json.load(f)["benchmarks"]
    groups: dict = {}
    for b in benches:
        groups.setdefault(b["group"], []).append(b)
    print("| comparison | impl | median | min | peer / customml (median) | p50 / p99 of 10,000 calls |")
    print("|---|---|---:|---:|---:|---:|")
    for group, rows in groups.items():
        ours = next((r["stats"]["median"] for r in rows if r["extra_info"]["impl"] == "customml"), None)
        for r in rows:
            info, st = r["extra_info"], r["stats"]
            ratio = "" if ours is None or info["impl"] == "customml" else f"{st['median'] / ours:.2f}x"
            pct = f"{info['p50_ns'] / 1e3:.1f} / {info['p99_ns'] / 1e3:.1f} us" if "p50_ns" in info else ""
            print(f"| {group} | {info['impl']} | {_fmt(st['median'])} | {_fmt(st['min'])} | {ratio} | {pct} |")


if __name__ == "__main__":
    import sys

    report(sys.argv[1])
