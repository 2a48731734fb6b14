"""Every op in customml.ops against a straightforward float32 NumPy implementation of the
same maths (and torch on the CPU when it is importable), one pytest-benchmark group per
case of bench/floors.py, all on one thread (bench/conftest.py).

Before anything is timed, the customml and NumPy results of each case are compared once
on the same inputs (and torch's against NumPy's), so no benchmark times a wrong kernel.
The tolerances are loose on purpose: they catch a wrong kernel, not rounding.

    python -m pytest bench --benchmark-json=/tmp/bench.json
    python bench/report.py /tmp/bench.json
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pytest

import floors
from customml import ops

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

IMPLS = [
    "customml",
    "numpy",
    pytest.param(
        "torch", marks=pytest.mark.skipif(torch is None, reason="torch is not importable (not installed here)")
    ),
]

SEED = 0
LR = 1e-3
ADAM_STEP = 10  # bias corrections fixed, so every timed call does the same work


@dataclass
class Run:
    fn: Callable[[], object]  # the timed call
    result: Callable[[object], dict]  # fn's return value -> named outputs (arrays or scalars)
    setup: Optional[Callable[[], None]] = None  # untimed, before each round (in-place inputs)


# --- agreement ---------------------------------------------------------------------------


def _close(name: str, actual, expected, rel: float) -> None:
    """max |actual - expected| <= rel * max |expected|: relative to the output's scale,
    so that entries near zero do not demand impossible relative accuracy."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != {e.shape}"
    assert np.all(np.isfinite(a)), f"{name}: non-finite values"
    scale = float(np.max(np.abs(e))) if e.size else 0.0
    err = float(np.max(np.abs(a - e))) if e.size else 0.0
    assert err <= rel * scale + 1e-30, f"{name}: max error {err:.3g} > {rel:g} x scale {scale:.3g}"


# Float32 sums reordered (blocking, SIMD lanes, pairwise vs sequential, float64 vs float32
# accumulators) differ by ~sqrt(k) ulps, ~1e-6 of scale for k <= 1e7 terms; 1e-3 is three
# orders looser, and any indexing or maths error is of order 1.
REL = 1e-3


def _agree_default(ours: dict, ref: dict) -> None:
    # Every output ours has (torch's optimizers keep their state to themselves).
    assert ours and set(ours) <= set(ref), f"outputs {sorted(ours)} not among {sorted(ref)}"
    for k, v in ours.items():
        _close(k, v, ref[k], REL)


def _agree_dropout(rate: float, x: np.ndarray) -> Callable[[dict, dict], None]:
    # Masks come from different generators, so compare what every correct dropout shares:
    # each output is 0 or x / (1 - rate), and the kept fraction is 1 - rate within 5 sigma
    # of a binomial draw (1.5e-4 at n = 1e7) plus slack: 1e-3.
    def check(ours: dict, ref: dict) -> None:
        scale = 1.0 / (1.0 - rate)
        for name, out in (("ours", ours["y"]), ("ref", ref["y"])):
            kept = out != 0
            frac = float(np.count_nonzero(kept)) / out.size
            assert abs(frac - (1.0 - rate)) < 1e-3, f"{name}: kept fraction {frac:.5f}, expected {1 - rate}"
            _close(f"{name} kept values", out[kept], x[kept] * scale, 1e-6)

    return check


# --- inputs, one case at a time ------------------------------------------------------------

_cache: dict = {}


def _inputs(case: floors.Case, make: Callable[[np.random.Generator, dict], dict]) -> dict:
    """The case's inputs, built once and shared by its impls (impls copy what they
    mutate); only the current case is kept, so memory stays at one case's worth."""
    if _cache.get("key") != case.key:
        _cache.clear()
        _cache["key"] = case.key
        _cache["inputs"] = make(np.random.default_rng(SEED), case.params)
        _cache["checked"] = False
    return _cache["inputs"]


def _f32(rng: np.random.Generator, *shape, scale: float = 1.0) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)


def _bench(
    benchmark,
    case: floors.Case,
    impl: str,
    inputs: dict,
    make_run: Callable[[str, dict, bool], Run],
    agree: Callable[[dict, dict], None] = _agree_default,
    pedantic_rounds: int = 7,
) -> None:
    benchmark.group = case.key
    benchmark.extra_info.update(case=case.key, impl=impl, bytes=case.nbytes, flops=case.flops)
    # Agreement, once per case, untimed: customml against NumPy on the same inputs.
    if not _cache["checked"]:
        ref = make_run("numpy", inputs, True)
        if ref.setup:
            ref.setup()
        ref_out = ref.result(ref.fn())
        ours = make_run("customml", inputs, True)
        if ours.setup:
            ours.setup()
        agree(ours.result(ours.fn()), ref_out)
        _cache["checked"] = True
        _cache["ref_out"] = ref_out
    if impl == "torch":
        theirs = make_run("torch", inputs, True)
        if theirs.setup:
            theirs.setup()
        agree(theirs.result(theirs.fn()), _cache["ref_out"])
    run = make_run(impl, inputs, False)
    if run.setup is None:
        benchmark(run.fn)
    else:
        # The kernel changes its input (clipping scales it): restore it before each round,
        # untimed. pedantic ignores --benchmark-min-rounds, so the rounds are fixed here.
        benchmark.pedantic(run.fn, setup=run.setup, rounds=pedantic_rounds, warmup_rounds=1, iterations=1)
    if not getattr(benchmark, "disabled", False):
        # This machine's bandwidth at the case's working set and access pattern, measured
        # once per size (after the timed part) and stored beside its bytes and FLOPs.
        benchmark.extra_info["bw"] = floors.measure_case(case)
        benchmark.extra_info["pattern"] = case.pattern


def _t(a: np.ndarray):
    """A torch view of a NumPy array (shared memory)."""
    return torch.from_numpy(a)


# --- dense_forward -----------------------------------------------------------------------


def _dense_forward_inputs(rng, p):
    x = rng.uniform(-1.0, 1.0, (p["batch"], p["inp"])).astype(np.float32)
    w = _f32(rng, p["inp"], p["out"], scale=1.0 / np.sqrt(p["inp"]))
    b = np.zeros(p["out"], np.float32) if p.get("zero_bias") else _f32(rng, p["out"], scale=0.1)
    return dict(x=x, w=w, b=b, act=p["activation"])


def _dense_forward_run(impl, d, for_check):
    x, w, b, act = d["x"], d["w"], d["b"], d["act"]
    y = np.full((x.shape[0], w.shape[1]), np.nan, np.float32)
    if impl == "customml":

        def fn():
            ops.dense_forward(x, w, b, activation=act, out=y)
    elif impl == "numpy":

        def fn():
            np.matmul(x, w, out=y)
            np.add(y, b, out=y)
            if act == "relu":
                np.maximum(y, 0.0, out=y)
    else:
        X, W, B, Y = _t(x), _t(w), _t(b), _t(y)

        def fn():
            torch.addmm(B, X, W, out=Y)
            if act == "relu":
                torch.relu_(Y)

    return Run(fn, lambda _: {"y": y})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("dense_forward"), ids=lambda c: c.key)
def bench_dense_forward(benchmark, case, impl):
    _bench(benchmark, case, impl, _inputs(case, _dense_forward_inputs), _dense_forward_run)


# --- dense_backward (relu, with dx) ----------------------------------------------------------


def _dense_backward_inputs(rng, p):
    x = rng.uniform(-1.0, 1.0, (p["batch"], p["inp"])).astype(np.float32)
    w = _f32(rng, p["inp"], p["out"], scale=1.0 / np.sqrt(p["inp"]))
    b = _f32(rng, p["out"], scale=0.1)
    y = np.maximum(x @ w + b, 0.0).astype(np.float32)
    dy = _f32(rng, p["batch"], p["out"], scale=1.0 / p["batch"])
    return dict(x=x, w=w, y=y, dy=dy)


def _dense_backward_run(impl, d, for_check):
    x, w, y, dy = d["x"], d["w"], d["y"], d["dy"]
    dx = np.full(x.shape, np.nan, np.float32)
    dw = np.full(w.shape, np.nan, np.float32)
    db = np.full(w.shape[1], np.nan, np.float32)
    if impl == "customml":

        def fn():
            ops.dense_backward(dy, x, w, y, activation="relu", dx_out=dx, dweight_out=dw, dbias_out=db)
    elif impl == "numpy":
        mask = np.empty(y.shape, bool)
        dz = np.empty(y.shape, np.float32)

        def fn():
            np.greater(y, 0.0, out=mask)
            np.multiply(dy, mask, out=dz)
            np.sum(dz, axis=0, out=db)
            np.matmul(x.T, dz, out=dw)
            np.matmul(dz, w.T, out=dx)
    else:
        X, W, Y, DY, DX, DW, DB = map(_t, (x, w, y, dy, dx, dw, db))
        DZ = torch.empty_like(DY)

        def fn():
            torch.mul(DY, Y > 0, out=DZ)
            torch.sum(DZ, 0, out=DB)
            torch.mm(X.t(), DZ, out=DW)
            torch.mm(DZ, W.t(), out=DX)

    return Run(fn, lambda _: {"dx": dx, "dw": dw, "db": db})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("dense_backward"), ids=lambda c: c.key)
def bench_dense_backward(benchmark, case, impl):
    _bench(benchmark, case, impl, _inputs(case, _dense_backward_inputs), _dense_backward_run)


# --- softmax_cross_entropy (loss and gradient) --------------------------------------------------


def _softmax_ce_inputs(rng, p):
    logits = _f32(rng, p["n"], p["c"], scale=3.0)
    labels = rng.integers(0, p["c"], p["n"], dtype=np.int32)
    return dict(logits=logits, labels=labels)


def _softmax_ce_run(impl, d, for_check):
    logits, labels = d["logits"], d["labels"]
    n, c = logits.shape
    grad = np.full((n, c), np.nan, np.float32)
    if impl == "customml":

        def fn():
            return ops.softmax_cross_entropy(logits, labels, grad_out=grad)[0]

        return Run(fn, lambda loss: {"loss": loss, "grad": grad})
    if impl == "numpy":
        rows = np.arange(n)
        mx = np.empty(n, np.float32)
        s = np.empty(n, np.float32)

        def fn():
            # grad = (softmax(logits) - onehot) / n; loss = mean(log sum exp(l - mx) - (l_y - mx))
            np.max(logits, axis=1, out=mx)
            np.subtract(logits, mx[:, None], out=grad)
            shifted_y = grad[rows, labels]
            np.exp(grad, out=grad)
            np.sum(grad, axis=1, out=s)
            loss = float(np.mean(np.log(s) - shifted_y, dtype=np.float64))
            np.divide(grad, s[:, None], out=grad)
            grad[rows, labels] -= 1.0
            np.multiply(grad, np.float32(1.0 / n), out=grad)
            return loss

        return Run(fn, lambda loss: {"loss": loss, "grad": grad})
    L = _t(logits).requires_grad_()
    Y = _t(labels.astype(np.int64))

    def fn():
        loss = F.cross_entropy(L, Y)
        (g,) = torch.autograd.grad(loss, L)
        return loss.item(), g

    return Run(fn, lambda r: {"loss": r[0], "grad": r[1].numpy()})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("softmax_cross_entropy"), ids=lambda c: c.key)
def bench_softmax_cross_entropy(benchmark, case, impl):
    _bench(benchmark, case, impl, _inputs(case, _softmax_ce_inputs), _softmax_ce_run)


# --- binary_cross_entropy_with_logits (loss and gradient) -----------------------------------------


def _bce_inputs(rng, p):
    z = _f32(rng, p["n"], scale=3.0)
    t = rng.uniform(0.0, 1.0, p["n"]).astype(np.float32)
    return dict(z=z, t=t)


def _bce_run(impl, d, for_check):
    z, t = d["z"], d["t"]
    n = z.size
    grad = np.full(n, np.nan, np.float32)
    if impl == "customml":

        def fn():
            return ops.binary_cross_entropy_with_logits(z, t, grad_out=grad)[0]

        return Run(fn, lambda loss: {"loss": loss, "grad": grad})
    if impl == "numpy":
        e = np.empty(n, np.float32)
        a = np.empty(n, np.float32)
        neg = np.empty(n, bool)

        def fn():
            # loss_i = max(z, 0) - z t + log1p(exp(-|z|)); grad_i = (sigmoid(z) - t) / n
            np.abs(z, out=e)
            np.negative(e, out=e)
            np.exp(e, out=e)  # e = exp(-|z|), never overflows
            np.log1p(e, out=a)
            np.maximum(z, 0.0, out=grad)
            np.add(a, grad, out=a)
            np.multiply(z, t, out=grad)
            np.subtract(a, grad, out=a)
            loss = float(np.sum(a, dtype=np.float64)) / n
            np.add(e, 1.0, out=a)
            np.divide(1.0, a, out=grad)  # sigmoid(|z|)
            np.less(z, 0.0, out=neg)
            np.multiply(e, grad, out=a)  # sigmoid(-|z|)
            np.copyto(grad, a, where=neg)
            np.subtract(grad, t, out=grad)
            np.multiply(grad, np.float32(1.0 / n), out=grad)
            return loss

        return Run(fn, lambda loss: {"loss": loss, "grad": grad})
    Z = _t(z).requires_grad_()
    T = _t(t)

    def fn():
        loss = F.binary_cross_entropy_with_logits(Z, T)
        (g,) = torch.autograd.grad(loss, Z)
        return loss.item(), g

    return Run(fn, lambda r: {"loss": r[0], "grad": r[1].numpy()})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("binary_cross_entropy_with_logits"), ids=lambda c: c.key)
def bench_binary_cross_entropy_with_logits(benchmark, case, impl):
    _bench(benchmark, case, impl, _inputs(case, _bce_inputs), _bce_run)


# --- mse (loss and gradient) -----------------------------------------------------------------


def _mse_inputs(rng, p):
    return dict(pred=_f32(rng, p["n"]), target=_f32(rng, p["n"]))


def _mse_run(impl, d, for_check):
    pred, target = d["pred"], d["target"]
    n = pred.size
    grad = np.full(n, np.nan, np.float32)
    if impl == "customml":

        def fn():
            return ops.mse(pred, target, grad_out=grad)[0]

        return Run(fn, lambda loss: {"loss": loss, "grad": grad})
    if impl == "numpy":
        diff = np.empty(n, np.float32)

        def fn():
            np.subtract(pred, target, out=diff)
            loss = float(np.dot(diff, diff)) / n
            np.multiply(diff, np.float32(2.0 / n), out=grad)
            return loss

        return Run(fn, lambda loss: {"loss": loss, "grad": grad})
    P = _t(pred).requires_grad_()
    T = _t(target)

    def fn():
        loss = F.mse_loss(P, T)
        (g,) = torch.autograd.grad(loss, P)
        return loss.item(), g

    return Run(fn, lambda r: {"loss": r[0], "grad": r[1].numpy()})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("mse"), ids=lambda c: c.key)
def bench_mse(benchmark, case, impl):
    _bench(benchmark, case, impl, _inputs(case, _mse_inputs), _mse_run)


# --- dropout ------------------------------------------------------------------------------------


def _dropout_inputs(rng, p):
    return dict(x=_f32(rng, p["n"]), rate=p["rate"])


def _dropout_run(impl, d, for_check):
    x, rate = d["x"], d["rate"]
    y = np.full(x.shape, np.nan, np.float32)
    seed, stream = 1234, 7
    if impl == "customml":

        def fn():
            ops.dropout(x, rate=rate, seed=seed, stream=stream, out=y)

        return Run(fn, lambda _: {"y": y})
    if impl == "numpy":
        u = np.empty(x.shape, np.float32)
        keep = np.empty(x.shape, bool)
        scale = np.float32(1.0 / (1.0 - rate))

        def fn():
            # A counter-based generator keyed by (seed, stream), as customml's mask is.
            rng = np.random.Generator(np.random.Philox(key=(stream << 64) | seed))
            rng.random(dtype=np.float32, out=u)
            np.greater_equal(u, rate, out=keep)
            np.multiply(x, scale, out=y)
            np.multiply(y, keep, out=y)

        return Run(fn, lambda _: {"y": y})
    X = _t(x)
    torch.manual_seed(seed)

    def fn():
        return F.dropout(X, p=rate, training=True)

    return Run(fn, lambda out: {"y": out.numpy()})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("dropout"), ids=lambda c: c.key)
def bench_dropout(benchmark, case, impl):
    inputs = _inputs(case, _dropout_inputs)
    _bench(benchmark, case, impl, inputs, _dropout_run, agree=_agree_dropout(inputs["rate"], inputs["x"]))


# --- sgd_update (momentum) ---------------------------------------------------------------------


# Parameters of magnitude < 1 keep float32 p's rounding (ulp <= 6e-8) far below the step
# (~1e-4 to 1e-3), so the step p - p0 is what the agreement check compares.
def _sgd_inputs(rng, p):
    return dict(p=_f32(rng, p["n"], scale=0.1), g=_f32(rng, p["n"], scale=0.1), momentum=p["momentum"])


def _sgd_run(impl, d, for_check):
    # Velocity starts at zero, as torch's momentum buffer does (its first step sets it to g).
    p0, g, mu = d["p"], d["g"], d["momentum"]
    p = p0.copy()
    v = np.zeros_like(p)
    keys = ("dp", "v")
    if impl == "customml":

        def fn():
            ops.sgd_update(p, g, v, lr=LR, momentum=mu)
    elif impl == "numpy":
        tmp = np.empty_like(p)

        def fn():
            # v = mu v + g; p -= lr v
            np.multiply(v, np.float32(mu), out=v)
            np.add(v, g, out=v)
            np.multiply(v, np.float32(LR), out=tmp)
            np.subtract(p, tmp, out=p)
    else:
        P = _t(p).requires_grad_()
        P.grad = _t(g)
        opt = torch.optim.SGD([P], lr=LR, momentum=mu)

        def fn():
            opt.step()

        keys = ("dp",)  # torch keeps its momentum buffer in its own state
    return Run(fn, lambda _: {k: {"dp": p - p0, "v": v}[k] for k in keys})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("sgd_update"), ids=lambda c: c.key)
def bench_sgd_update(benchmark, case, impl):
    _bench(benchmark, case, impl, _inputs(case, _sgd_inputs), _sgd_run)


# --- adam_update -------------------------------------------------------------------------------


def _adam_inputs(rng, p):
    return dict(p=_f32(rng, p["n"], scale=0.1), g=_f32(rng, p["n"], scale=0.1))


def _adam_run(impl, d, for_check):
    # The check runs step 1 from zero moments (what torch's first step does); the timed
    # calls use a fixed step so each does identical work.
    p0, g = d["p"], d["g"]
    p = p0.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    step = 1 if for_check else ADAM_STEP
    b1, b2, eps = 0.9, 0.999, 1e-8
    keys = ("dp", "m", "v")
    if impl == "customml":

        def fn():
            ops.adam_update(p, g, m, v, lr=LR, step=step, beta1=b1, beta2=b2, eps=eps)
    elif impl == "numpy":
        tmp = np.empty_like(p)
        step_size = np.float32(LR / (1.0 - b1**step))
        bias2_sqrt = np.float32(np.sqrt(1.0 - b2**step))

        def fn():
            # m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2
            np.multiply(m, np.float32(b1), out=m)
            np.multiply(g, np.float32(1.0 - b1), out=tmp)
            np.add(m, tmp, out=m)
            np.multiply(v, np.float32(b2), out=v)
            np.multiply(g, g, out=tmp)
            np.multiply(tmp, np.float32(1.0 - b2), out=tmp)
            np.add(v, tmp, out=v)
            # p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
            np.sqrt(v, out=tmp)
            np.divide(tmp, bias2_sqrt, out=tmp)
            np.add(tmp, np.float32(eps), out=tmp)
            np.divide(m, tmp, out=tmp)
            np.multiply(tmp, step_size, out=tmp)
            np.subtract(p, tmp, out=p)
    else:
        P = _t(p).requires_grad_()
        P.grad = _t(g)
        opt = torch.optim.Adam([P], lr=LR, betas=(b1, b2), eps=eps)

        def fn():
            opt.step()

        keys = ("dp",)
    return Run(fn, lambda _: {k: {"dp": p - p0, "m": m, "v": v}[k] for k in keys})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("adam_update"), ids=lambda c: c.key)
def bench_adam_update(benchmark, case, impl):
    _bench(benchmark, case, impl, _inputs(case, _adam_inputs), _adam_run)


# --- clip_by_global_norm -------------------------------------------------------------------------


def _clip_inputs(rng, p):
    g0 = _f32(rng, p["n"], scale=0.01)
    norm = float(np.sqrt(np.sum(g0.astype(np.float64) ** 2)))
    # Clipping: half the norm, so every round scales; not clipping: twice it (one read).
    max_norm = 0.5 * norm if p["clips"] else 2.0 * norm
    return dict(g0=g0, max_norm=max_norm, clips=p["clips"])


def _clip_run(impl, d, for_check):
    g0, max_norm, clips = d["g0"], d["max_norm"], d["clips"]
    g = g0.copy()
    setup = (lambda: np.copyto(g, g0)) if clips else None
    if impl == "customml":

        def fn():
            return ops.clip_by_global_norm(g, max_norm)
    elif impl == "numpy":

        def fn():
            norm = float(np.linalg.norm(g))
            coef = max_norm / (norm + 1e-6)
            if coef < 1.0:
                np.multiply(g, np.float32(coef), out=g)
            return norm
    else:
        P = torch.zeros(g.shape, dtype=torch.float32, requires_grad=True)
        P.grad = _t(g)

        def fn():
            return float(torch.nn.utils.clip_grad_norm_([P], max_norm))

    return Run(fn, lambda norm: {"norm": norm, "g": g}, setup)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("clip_by_global_norm"), ids=lambda c: c.key)
def bench_clip_by_global_norm(benchmark, case, impl):
    _bench(benchmark, case, impl, _inputs(case, _clip_inputs), _clip_run)


# --- count_correct -------------------------------------------------------------------------------


def _count_correct_inputs(rng, p):
    logits = _f32(rng, p["n"], p["c"])
    labels = rng.integers(0, p["c"], p["n"], dtype=np.int32)
    # About half the rows right, so the comparison is not trivially all-false.
    right = rng.random(p["n"]) < 0.5
    labels[right] = np.argmax(logits[right], axis=1)
    return dict(logits=logits, labels=labels)


def _agree_exact(ours: dict, ref: dict) -> None:
    assert ours["correct"] == ref["correct"], f"count {ours['correct']} != {ref['correct']}"


def _count_correct_run(impl, d, for_check):
    logits, labels = d["logits"], d["labels"]
    if impl == "customml":

        def fn():
            return ops.count_correct(logits, labels)
    elif impl == "numpy":
        idx = np.empty(labels.shape, np.intp)

        def fn():
            np.argmax(logits, axis=1, out=idx)
            return int(np.count_nonzero(idx == labels))
    else:
        L, Y = _t(logits), _t(labels)

        def fn():
            return int((L.argmax(1) == Y).sum())

    return Run(fn, lambda c: {"correct": int(c)})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", floors.cases_for("count_correct"), ids=lambda c: c.key)
def bench_count_correct(benchmark, case, impl):
    _bench(benchmark, case, impl, _inputs(case, _count_correct_inputs), _count_correct_run, agree=_agree_exact)
