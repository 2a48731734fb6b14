"""adam_update (Adam with L2, AdamW with decoupled decay, amsgrad, no_decay segments)
against tests/reference.py (torch.optim.Adam / AdamW semantics) on every device."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import (
    TINY32,
    U32,
    VALUE_KINDS,
    assert_close,
    assert_float32_array,
    assert_same_bits,
    at_alignment,
    check_guards,
    make_values,
    no_decay_segments,
    seeds,
    sizes,
)

f32 = dict(width=32, allow_nan=False, allow_infinity=False)
lrs = st.one_of(st.sampled_from([0.0, 1e-3, 0.1, 1.0]), st.floats(0.0, 1.0, **f32))
beta1s = st.one_of(st.sampled_from([0.0, 0.5, 0.9]), st.floats(0.0, float(np.float32(0.999)), **f32))
beta2s = st.one_of(st.sampled_from([0.0, 0.999, 0.99999]), st.floats(0.0, float(np.float32(0.99999)), **f32))
# eps >= 1e-10: v underflows to 0 in float32 for |g| < 1e-22 while the reference keeps
# it; sqrt of that lost part (< 1e-22) must stay negligible next to eps.
epss = st.sampled_from([1e-10, 1e-8, 1e-6, 1e-3])
decays = st.one_of(st.sampled_from([0.0, 1e-2, 0.1]), st.floats(0.0, 1.0, **f32))
# "huge" gradients stay at 1e15: g^2 (1e30) must stay inside float32, as it would in torch.
GRAD_KINDS = VALUE_KINDS


@st.composite
def adam_problems(draw):
    n = draw(st.one_of(sizes, st.sampled_from([1000, 4099])))
    return dict(
        n=n,
        kind=draw(st.sampled_from(GRAD_KINDS)),
        seed=draw(seeds),
        lr=draw(lrs),
        beta1=draw(beta1s),
        beta2=draw(beta2s),
        eps=float(np.float32(draw(epss))),
        weight_decay=draw(decays),
        decoupled=draw(st.booleans()),
        amsgrad=draw(st.booleans()),
        no_decay=draw(no_decay_segments(n)),
        step=draw(st.one_of(st.sampled_from([1, 2, 10, 1000]), st.integers(1, 10**6))),
        fresh_state=draw(st.booleans()),
        steps=draw(st.integers(1, 3)),
    )


def build(p):
    rng = np.random.default_rng(p["seed"])
    n = p["n"]
    param = make_values(rng, (n,), "normal")
    grads = [make_values(rng, (n,), p["kind"], huge=1e15) for _ in range(p["steps"])]
    if p["fresh_state"]:
        m, v, vmax = (np.zeros(n, np.float32) for _ in range(3))
    else:
        m = make_values(rng, (n,), "normal") * np.float32(0.1)
        v = np.abs(make_values(rng, (n,), "normal")) * np.float32(0.01)
        vmax = v * rng.uniform(0.5, 2.0, n).astype(np.float32)  # above v in some entries, below in others
    return param, grads, m, v, vmax


def tolerances(param, grad, m0, v0, vmax0, p, mask, p_ref, m_ref, v_ref):
    """Bounds for one float32 step, each float32 operation one rounding (u of its result).

    G = |grad| + l2 |p| bounds |g| where g = grad + l2 p may cancel; g errs by 2uG.
    m = b1 m + (1 - b1) g errs by <= 4u M, M = b1 |m| + (1 - b1) G (cancellation allowed).
    v = b2 v + (1 - b2) g g errs by <= 7u Vb, Vb = b2 v + (1 - b2) G^2 (g^2 inherits 4uG^2).
    The denominator sqrt(vhat) / sqrt(1 - b2^t) + eps: the v error moves sqrt(vhat) by at
    most sqrt(vhat) - sqrt(vhat - E_v), plus 4 roundings (sqrt, the float32 bias
    correction, the division, + eps). The step lr / (1 - b1^t) * m / denom adds 4 more
    (bias1 to float32, lr / bias1, the product, the division); AdamW's p (1 - lr wd) 3u of p;
    the final subtraction u of the new parameter. 1.25 covers second-order terms.
    """
    b1, b2, lr, eps, wd = (float(np.float32(p[k])) for k in ("beta1", "beta2", "lr", "eps", "weight_decay"))
    t = p["step"]
    wd_i = np.where(mask, wd, 0.0)
    pa = np.abs(param.astype(np.float64))
    l2 = 0.0 if p["decoupled"] else wd_i
    G = np.abs(grad.astype(np.float64)) + l2 * pa
    e_m = 4 * U32 * (b1 * np.abs(m0.astype(np.float64)) + (1 - b1) * G) + 2 * TINY32
    e_v = 7 * U32 * (b2 * v0.astype(np.float64) + (1 - b2) * G * G) + 4 * TINY32
    vhat = np.maximum(vmax0.astype(np.float64), v_ref) if p["amsgrad"] else v_ref
    b2s = np.sqrt(1.0 - b2**t)
    den = np.sqrt(vhat) / b2s + eps
    den_err = (np.sqrt(vhat) - np.sqrt(np.maximum(vhat - e_v, 0.0))) / b2s + 4 * U32 * den
    den_lo = np.maximum(den - den_err, eps * (1 - 4 * U32))
    step_size = lr / (1.0 - b1**t)
    mag = np.abs(m_ref)
    e_upd = step_size * ((e_m + 4 * U32 * mag) / den_lo + mag * den_err / (den * den_lo))
    e_shrink = 3 * U32 * pa if p["decoupled"] else 0.0
    tol_p = 1.25 * (e_shrink + e_upd + U32 * np.abs(p_ref)) + 2 * TINY32
    return tol_p, 1.25 * e_m, 1.25 * e_v


def config(p, step):
    return dict(
        lr=p["lr"],
        step=step,
        beta1=p["beta1"],
        beta2=p["beta2"],
        eps=p["eps"],
        weight_decay=p["weight_decay"],
        decoupled=p["decoupled"],
        amsgrad=p["amsgrad"],
        no_decay=p["no_decay"],
    )


@given(p=adam_problems())
@example(
    p=dict(
        n=4099,
        kind="mixed",
        seed=1,
        lr=1e-3,
        beta1=0.9,
        beta2=0.999,
        eps=float(np.float32(1e-8)),
        weight_decay=0.01,
        decoupled=True,
        amsgrad=True,
        no_decay=[(0, 0), (0, 17), (17, 33), (4000, 4099)],
        step=1,
        fresh_state=True,
        steps=3,
    )
)
@example(
    p=dict(
        n=1,
        kind="huge",
        seed=2,
        lr=0.5,
        beta1=0.0,
        beta2=0.0,
        eps=float(np.float32(1e-3)),
        weight_decay=0.5,
        decoupled=False,
        amsgrad=False,
        no_decay=[],
        step=7,
        fresh_state=False,
        steps=2,
    )
)
def test_adam_update_matches_reference(isa, device, p):
    param, grads, m, v, vmax = build(p)
    vmax_arg = vmax if p["amsgrad"] or p["n"] % 2 else None  # vmax is optional without amsgrad
    mask = reference.decay_mask(p["n"], p["no_decay"])
    for i, grad in enumerate(grads):
        step = p["step"] + i
        # one step at a time from the kernel's own float32 state: errors do not compound
        p0, g0, m0, v0 = param.copy(), grad.copy(), m.copy(), v.copy()
        vmax0 = None if vmax_arg is None else vmax_arg.copy()
        ret = ops.adam_update(param, grad, m, v, vmax_arg, **config(p, step), device=device)
        assert ret is None
        for a, name in ((param, "param"), (m, "m"), (v, "v")):
            assert_float32_array(a, (p["n"],), name)
        p_ref, m_ref, v_ref, _ = reference.adam_update(p0, g0, m0, v0, vmax0, **config(p, step))
        tol_p, tol_m, tol_v = tolerances(
            p0, g0, m0, v0, vmax0 if vmax0 is not None else v0, p, mask, p_ref, m_ref, v_ref
        )
        where = f"after step {step}"
        assert_close(m, m_ref, tol_m, f"m {where}")
        assert_close(v, v_ref, tol_v, f"v {where}")
        assert_close(param, p_ref, tol_p, f"param {where}")
        if vmax_arg is not None:
            if p["amsgrad"]:  # exactly the running maximum of the kernel's own v
                assert_same_bits(vmax_arg, np.maximum(vmax0, v), f"vmax {where}")
            else:
                assert_same_bits(vmax_arg, vmax0, "vmax without amsgrad (must be untouched)")
        assert_same_bits(grad, g0, "grad (must be untouched)")
        again = [a.copy() for a in (p0, m0, v0)] + [None if vmax0 is None else vmax0.copy()]
        ops.adam_update(again[0], g0, again[1], again[2], again[3], **config(p, step), device=device)
        assert_same_bits(again[0], param, "param of a repeated step")


def test_adam_first_step_is_sign_times_lr(isa, device):
    # torch: from zero state with b1 = 0.9, b2 = 0.999, step 1, the bias corrections make
    # the update lr * g / (|g| + eps'), i.e. lr * sign(g) for |g| >> eps.
    param = np.zeros(6, np.float32)
    grad = np.array([3.0, -2.0, 1e3, -1e-2, 0.5, -7.0], np.float32)
    m, v = np.zeros(6, np.float32), np.zeros(6, np.float32)
    ops.adam_update(param, grad, m, v, lr=0.01, step=1, device=device)
    assert_close(param, -0.01 * np.sign(grad), 0.01 * (1e-8 / 1e-2 + 16 * U32), "param")


def test_adamw_decay_is_decoupled(isa, device):
    # zero gradient from zero state: Adam's L2 turns wd p into a gradient (a full lr step),
    # AdamW only shrinks p by lr wd; no_decay entries do not move at all.
    for decoupled, want in ((False, 1.0 - 0.1), (True, 1.0 * (1 - 0.1 * 0.5))):
        param = np.ones(4, np.float32)
        m, v = np.zeros(4, np.float32), np.zeros(4, np.float32)
        ops.adam_update(
            param,
            np.zeros(4, np.float32),
            m,
            v,
            lr=0.1,
            step=1,
            weight_decay=0.5,
            decoupled=decoupled,
            no_decay=[(3, 4)],
            device=device,
        )
        assert_close(param[:3], np.full(3, want), 8 * U32, f"decoupled={decoupled}")
        assert param[3] == 1.0


def _call(device, **over):
    kw = dict(
        param=np.ones(8, np.float32),
        grad=np.ones(8, np.float32),
        m=np.zeros(8, np.float32),
        v=np.zeros(8, np.float32),
        vmax=None,
        lr=1e-3,
        step=1,
        device=device,
    )
    kw.update(over)
    return lambda: ops.adam_update(kw.pop("param"), kw.pop("grad"), kw.pop("m"), kw.pop("v"), kw.pop("vmax"), **kw)


OP = r"\[adam_update\]"
BAD = {
    "param float64": (dict(param=np.ones(8)), TypeError, OP + r" param must be float32"),
    "grad float16": (dict(grad=np.ones(8, np.float16)), TypeError, OP + r" grad must be float32"),
    "m float64": (dict(m=np.zeros(8)), TypeError, OP + r" m must be float32"),
    "v int32": (dict(v=np.zeros(8, np.int32)), TypeError, OP + r" v must be float32"),
    "vmax float64": (dict(vmax=np.zeros(8), amsgrad=True), TypeError, OP + r" vmax must be float32"),
    "m shape": (dict(m=np.zeros(7, np.float32)), ValueError, OP + r" m has shape"),
    "v rank": (dict(v=np.zeros((2, 4), np.float32)), ValueError, OP + r" v has shape"),
    "vmax shape": (dict(vmax=np.zeros(9, np.float32), amsgrad=True), ValueError, OP + r" vmax has shape"),
    "grad strided": (dict(grad=np.ones(16, np.float32)[::2]), ValueError, OP + r" grad must be C-contiguous"),
    "param transposed": (
        dict(
            param=np.ones((4, 2), np.float32).T,
            grad=np.ones((2, 4), np.float32),
            m=np.zeros((2, 4), np.float32),
            v=np.zeros((2, 4), np.float32),
        ),
        ValueError,
        OP + r" param must be C-contiguous",
    ),
    "negative lr": (dict(lr=-1e-3), ValueError, OP + r" lr must be >= 0"),
    "NaN lr": (dict(lr=float("nan")), ValueError, OP + r" lr must be finite"),
    "beta1 = 1": (dict(beta1=1.0), ValueError, OP + r" beta1 must be in \[0, 1\)"),
    "beta1 negative": (dict(beta1=-0.1), ValueError, OP + r" beta1 must be in \[0, 1\)"),
    "beta1 NaN": (dict(beta1=float("nan")), ValueError, OP + r" beta1"),
    "beta2 = 1": (dict(beta2=1.0), ValueError, OP + r" beta2 must be in \[0, 1\)"),
    "beta2 rounds to 1": (dict(beta2=1.0 - 1e-9), ValueError, OP + r" beta2 must be in \[0, 1\)"),
    "eps 0": (dict(eps=0.0), ValueError, OP + r" eps must be > 0"),
    "eps negative": (dict(eps=-1e-8), ValueError, OP + r" eps must be > 0"),
    "eps inf": (dict(eps=float("inf")), ValueError, OP + r" eps must be finite"),
    "negative weight_decay": (dict(weight_decay=-0.1), ValueError, OP + r" weight_decay must be >= 0"),
    "step 0": (dict(step=0), ValueError, OP + r" step must be >= 1"),
    "amsgrad without vmax": (dict(amsgrad=True), ValueError, OP + r" amsgrad needs a vmax buffer"),
    "segments overlapping": (dict(no_decay=[(0, 4), (2, 6)]), ValueError, OP + r" no_decay segment 1"),
    "segments unsorted": (dict(no_decay=[(6, 8), (0, 2)]), ValueError, OP + r" no_decay segment 1"),
    "segment past the end": (dict(no_decay=[(0, 9)]), ValueError, OP + r" no_decay segment 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_adam_update_rejects_bad_input(device, case):
    over, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        _call(device, **over)()


@pytest.mark.parametrize("pair", [("param", "m"), ("m", "v"), ("v", "vmax"), ("param", "grad"), ("grad", "vmax")])
def test_adam_update_rejects_aliasing(device, pair):
    bufs = {name: np.zeros(8, np.float32) for name in ("param", "grad", "m", "v", "vmax")}
    bufs[pair[1]] = bufs[pair[0]]
    a, b = pair
    with pytest.raises(ValueError, match=rf"{OP} (?:{a} shares memory with {b}|{b} shares memory with {a})"):
        ops.adam_update(
            bufs["param"],
            bufs["grad"],
            bufs["m"],
            bufs["v"],
            bufs["vmax"],
            lr=1e-3,
            step=1,
            amsgrad=True,
            device=device,
        )


# The CUDA kernel runs float4s between a scalar head and tail where the five arrays share
# one 16-byte alignment, and scalar elements throughout where they do not. Layouts: each
# array's offset in floats past a 16-byte boundary, all equal (head of 0-3 elements, then
# float4s, then a tail) or drawn apart; SCALAR_LAYOUT has no common alignment, so the whole
# pass is the scalar loop. Sizes: around one float4 and a head + body + tail, and large.
ALIGN_SIZES = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 4099]), st.integers(1, 70))
LAYOUTS = st.one_of(st.integers(0, 3).map(lambda o: (o,) * 5), st.tuples(*[st.integers(0, 3)] * 5))
SCALAR_LAYOUT = (0, 1, 0, 0, 0)
NAMES = ("param", "grad", "m", "v", "vmax")


@st.composite
def aligned_problems(draw):
    n = draw(ALIGN_SIZES)
    return dict(
        n=n,
        layout=draw(LAYOUTS),
        kind=draw(st.sampled_from(GRAD_KINDS)),
        seed=draw(seeds),
        lr=draw(st.sampled_from([1e-3, 0.1, 1.0])),
        beta1=0.9,
        beta2=0.999,
        eps=float(np.float32(1e-8)),
        weight_decay=draw(st.sampled_from([0.1, 0.5])),
        decoupled=draw(st.booleans()),
        amsgrad=draw(st.booleans()),
        no_decay=draw(no_decay_segments(n)),
        step=draw(st.integers(1, 100)),
    )


def adam_at(device, layout, values, p):
    """adam_update with the five arrays at `layout`'s offsets; the arrays afterwards, with
    their NaN guards checked."""
    bufs = [at_alignment(a, offset) for a, offset in zip(values, layout)]
    param, grad, m, v, vmax = (view for _, view in bufs)
    ops.adam_update(param, grad, m, v, vmax if p["amsgrad"] else None, **config(p, p["step"]), device=device)
    for (buf, _), name in zip(bufs, NAMES):
        check_guards(buf, f"{name} at layout {layout}")
    return [view.copy() for _, view in bufs]


@given(p=aligned_problems())
@example(
    p=dict(
        n=13,
        layout=(1, 1, 1, 1, 1),
        kind="normal",
        seed=3,
        lr=0.1,
        beta1=0.9,
        beta2=0.999,
        eps=float(np.float32(1e-8)),
        weight_decay=0.5,
        decoupled=True,
        amsgrad=True,
        no_decay=[(0, 1), (2, 3), (5, 6), (7, 9), (12, 13)],
        step=2,
    )
)
@example(
    p=dict(
        n=4099,
        layout=(3, 3, 3, 3, 3),
        kind="mixed",
        seed=4,
        lr=1e-3,
        beta1=0.9,
        beta2=0.999,
        eps=float(np.float32(1e-8)),
        weight_decay=0.1,
        decoupled=False,
        amsgrad=False,
        no_decay=[(1, 2), (4097, 4098)],
        step=1,
    )
)
def test_adam_update_same_bits_at_every_alignment(device, p):
    # A float4 lane must round as the scalar element does (one expression for both), and
    # a no-decay segment boundary inside a float4 must split it element by element.
    rng = np.random.default_rng(p["seed"])
    n = p["n"]
    m = make_values(rng, (n,), "normal") * np.float32(0.1)
    v = np.abs(make_values(rng, (n,), "normal")) * np.float32(0.01)
    values = [
        make_values(rng, (n,), "normal"),
        make_values(rng, (n,), p["kind"], huge=1e15),
        m,
        v,
        v * rng.uniform(0.5, 2.0, n).astype(np.float32),
    ]
    got = adam_at(device, p["layout"], values, p)
    want = adam_at(device, SCALAR_LAYOUT, values, p)
    for a, b, name in zip(got, want, NAMES):
        assert_same_bits(a, b, f"{name} at layout {p['layout']} against the scalar layout")
    assert_same_bits(got[1], values[1], "grad (must be untouched)")
    if device == "cuda-emulated":
        # the emulated kernel (no FMA contraction on the host) also gives the CPU's bits
        for a, b, name in zip(got, adam_at("cpu", (0,) * 5, values, p), NAMES):
            assert_same_bits(a, b, f"{name} on cuda-emulated against cpu")
