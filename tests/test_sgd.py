"""sgd_update (momentum, Nesterov, L2 weight decay, no_decay segments) against
tests/reference.py on every device."""

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
lrs = st.one_of(st.sampled_from([0.0, 0.01, 0.1, 1.0]), st.floats(0.0, 10.0, **f32))
momenta = st.one_of(st.sampled_from([0.0, 0.9, 0.99]), st.floats(0.0, 1.0, **f32))
decays = st.one_of(st.sampled_from([0.0, 1e-4, 0.1]), st.floats(0.0, 1.0, **f32))
GRAD_KINDS = tuple(k for k in VALUE_KINDS if k != "huge") + ("huge_grad",)


@st.composite
def sgd_problems(draw):
    n = draw(st.one_of(sizes, st.sampled_from([1000, 4099])))
    return dict(
        n=n,
        kind=draw(st.sampled_from(GRAD_KINDS)),
        seed=draw(seeds),
        lr=draw(lrs),
        momentum=(mu := draw(momenta)),
        nesterov=mu > 0 and draw(st.booleans()),
        weight_decay=draw(decays),
        no_decay=draw(no_decay_segments(n)),
        steps=draw(st.integers(1, 3)),
    )


def build(p):
    rng = np.random.default_rng(p["seed"])
    n = p["n"]
    param = make_values(rng, (n,), "normal")
    kind = p["kind"]
    # "huge_grad": gradients of 1e20, where the step dwarfs the parameter
    grad_kind = "huge" if kind == "huge_grad" else kind
    grads = [make_values(rng, (n,), grad_kind) for _ in range(p["steps"])]
    velocity = make_values(rng, (n,), "normal") * np.float32(0.1)
    return param, grads, velocity


def tolerances(param, grad, velocity, p_ref, lr, momentum, weight_decay, mask):
    """Each float32 operation rounds once (error u of its result). With A = |g| + wd |p|
    and V = mu |v| + A: g' = g + wd p errs by <= 2uA (cancellation allowed), v = mu v + g'
    by <= 3uV, the step (v, or g' + mu v) by <= 4u (1 + mu) V, and p - lr step by
    u |p_new| + lr 5u (1 + mu) V: a few ulps of the parameter plus an lr-scaled term.
    Underflow (tiny gradients times small lr) adds a few 2**-149."""
    p = np.abs(param.astype(np.float64))
    wd = np.where(mask, weight_decay, 0.0)
    a = np.abs(grad.astype(np.float64)) + wd * p
    mu = momentum
    v = mu * np.abs(velocity.astype(np.float64)) + a if mu else a
    tol_p = 1.01 * (U32 * np.abs(p_ref) + 5 * U32 * lr * (1 + mu) * v) + 4 * TINY32
    tol_v = 3.01 * U32 * v + 2 * TINY32
    return tol_p, tol_v


@given(p=sgd_problems())
@example(
    p=dict(
        n=4099,
        kind="mixed",
        seed=1,
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=0.01,
        no_decay=[(0, 0), (0, 17), (17, 33), (4000, 4099)],
        steps=3,
    )
)
@example(
    p=dict(
        n=1, kind="normal", seed=2, lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.5, no_decay=[(0, 1)], steps=1
    )
)
def test_sgd_update_matches_reference(isa, device, p):
    param, grads, velocity = build(p)
    hyper = dict(
        lr=p["lr"],
        momentum=p["momentum"],
        nesterov=p["nesterov"],
        weight_decay=p["weight_decay"],
        no_decay=p["no_decay"],
    )
    mask = reference.decay_mask(p["n"], p["no_decay"])
    velocity_arg = velocity if p["momentum"] or p["n"] % 2 else None  # optional without momentum
    for step, grad in enumerate(grads):
        # Compare one step at a time from the kernel's own float32 state, so errors do
        # not compound across steps.
        p0 = param.copy()
        v0 = None if velocity_arg is None else velocity_arg.copy()
        g0 = grad.copy()
        ret = ops.sgd_update(param, grad, velocity_arg, **hyper, device=device)
        assert ret is None
        assert_float32_array(param, (p["n"],), "param")
        p_ref, v_ref = reference.sgd_update(p0, g0, v0, **hyper)
        tol_p, tol_v = tolerances(
            p0, g0, v0 if v0 is not None else np.zeros_like(p0), p_ref, p["lr"], p["momentum"], p["weight_decay"], mask
        )
        assert_close(param, p_ref, tol_p, f"param after step {step + 1}")
        if velocity_arg is not None:
            if p["momentum"]:
                assert_close(velocity_arg, v_ref, tol_v, f"velocity after step {step + 1}")
            else:
                assert_same_bits(velocity_arg, v0, "velocity with momentum 0 (must be untouched)")
        assert_same_bits(grad, g0, "grad (must be untouched)")
        # deterministic: the same step from the same state gives the same bits
        p_again = p0.copy()
        v_again = None if v0 is None else v0.copy()
        ops.sgd_update(p_again, g0, v_again, **hyper, device=device)
        assert_same_bits(p_again, param, "param of a repeated step")


def test_sgd_no_decay_segments_take_no_decay(isa, device):
    # zero gradient, lr 1, wd 0.5: decayed entries halve, no_decay entries stay exact
    param = np.arange(1, 11, dtype=np.float32)
    ops.sgd_update(
        param, np.zeros(10, np.float32), lr=1.0, weight_decay=0.5, no_decay=[(2, 4), (4, 5), (9, 10)], device=device
    )
    want = np.arange(1, 11, dtype=np.float32) * 0.5
    want[[2, 3, 4, 9]] = [3, 4, 5, 10]
    assert_same_bits(param, want, "param")


def test_sgd_multidimensional_param(isa, device):
    # the update is flat: any shape, no_decay indexes the flat (C-order) buffer
    param = np.ones((3, 4), np.float32)
    ops.sgd_update(param, np.ones((3, 4), np.float32), lr=0.5, weight_decay=1.0, no_decay=[(4, 8)], device=device)
    want = np.zeros((3, 4), np.float32)
    want[1] = 0.5
    assert_same_bits(param, want, "param")


def _call(device, **over):
    kw = dict(
        param=np.ones(8, np.float32),
        grad=np.ones(8, np.float32),
        velocity=np.zeros(8, np.float32),
        lr=0.1,
        momentum=0.9,
        device=device,
    )
    kw.update(over)
    return lambda: ops.sgd_update(kw.pop("param"), kw.pop("grad"), kw.pop("velocity"), **kw)


BAD = {
    "param float64": (dict(param=np.ones(8)), TypeError, r"\[sgd_update\] param must be float32"),
    "grad float16": (dict(grad=np.ones(8, np.float16)), TypeError, r"\[sgd_update\] grad must be float32"),
    "velocity int32": (dict(velocity=np.zeros(8, np.int32)), TypeError, r"\[sgd_update\] velocity must be float32"),
    "grad shape": (dict(grad=np.ones(7, np.float32)), ValueError, r"\[sgd_update\] grad has shape"),
    "grad rank": (dict(grad=np.ones((2, 4), np.float32)), ValueError, r"\[sgd_update\] grad has shape"),
    "velocity shape": (dict(velocity=np.zeros(9, np.float32)), ValueError, r"\[sgd_update\] velocity has shape"),
    "param strided": (
        dict(param=np.ones(16, np.float32)[::2]),
        ValueError,
        r"\[sgd_update\] param must be C-contiguous",
    ),
    "grad transposed": (
        dict(
            param=np.ones((2, 4), np.float32), grad=np.ones((4, 2), np.float32).T, velocity=np.zeros((2, 4), np.float32)
        ),
        ValueError,
        r"\[sgd_update\] grad must be C-contiguous",
    ),
    "negative lr": (dict(lr=-0.1), ValueError, r"\[sgd_update\] lr must be >= 0"),
    "NaN lr": (dict(lr=float("nan")), ValueError, r"\[sgd_update\] lr must be finite"),
    "inf lr": (dict(lr=float("inf")), ValueError, r"\[sgd_update\] lr must be finite"),
    "negative momentum": (dict(momentum=-0.5), ValueError, r"\[sgd_update\] momentum must be >= 0"),
    "negative weight_decay": (dict(weight_decay=-1e-4), ValueError, r"\[sgd_update\] weight_decay must be >= 0"),
    "nesterov without momentum": (
        dict(momentum=0.0, nesterov=True),
        ValueError,
        r"\[sgd_update\] nesterov needs momentum > 0",
    ),
    "momentum without velocity": (
        dict(velocity=None),
        ValueError,
        r"\[sgd_update\] momentum > 0 needs a velocity buffer",
    ),
    "segment past the end": (dict(no_decay=[(4, 9)]), ValueError, r"\[sgd_update\] no_decay segment 0 = \[4, 9\)"),
    "segments unsorted": (dict(no_decay=[(5, 6), (1, 2)]), ValueError, r"\[sgd_update\] no_decay segment 1 = \[1, 2\)"),
    "segments overlapping": (dict(no_decay=[(1, 4), (3, 6)]), ValueError, r"\[sgd_update\] no_decay segment 1"),
    "segment reversed": (dict(no_decay=[(4, 2)]), ValueError, r"\[sgd_update\] no_decay segment 0"),
    "segment negative": (dict(no_decay=[(-1, 2)]), ValueError, r"\[sgd_update\] no_decay segment 0"),
    "read-only param": (dict(param=np.ones(8, np.float32)), ValueError, r"\[sgd_update\] param"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_sgd_update_rejects_bad_input(device, case):
    over, exc, match = BAD[case]
    if case == "read-only param":
        over["param"].setflags(write=False)
    with pytest.raises(exc, match=match):
        _call(device, **over)()


@pytest.mark.parametrize("alias", ["velocity is param", "velocity is grad", "param is grad"])
def test_sgd_update_rejects_aliasing(device, alias):
    a, b = np.ones(8, np.float32), np.zeros(8, np.float32)
    buffers = {"velocity is param": (a, b, a), "velocity is grad": (a, b, b), "param is grad": (a, a, b)}
    param, grad, velocity = buffers[alias]
    first, second = alias.split(" is ")
    pattern = rf"\[sgd_update\] (?:{first} shares memory with {second}|{second} shares memory with {first})"
    with pytest.raises(ValueError, match=pattern):
        ops.sgd_update(param, grad, velocity, lr=0.1, momentum=0.9, device=device)


# As test_adam.py's alignment test: (param, grad, velocity) offsets in floats past a
# 16-byte boundary, all equal (float4s between a scalar head and tail) or apart;
# SCALAR_LAYOUT has no common alignment, so the whole pass is the scalar loop.
ALIGN_SIZES = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 4099]), st.integers(1, 70))
LAYOUTS = st.one_of(st.integers(0, 3).map(lambda o: (o,) * 3), st.tuples(*[st.integers(0, 3)] * 3))
SCALAR_LAYOUT = (1, 0, 0)
NAMES = ("param", "grad", "velocity")


@st.composite
def aligned_problems(draw):
    n = draw(ALIGN_SIZES)
    mu = draw(st.sampled_from([0.0, 0.9]))
    return dict(
        n=n,
        layout=draw(LAYOUTS),
        kind=draw(st.sampled_from(GRAD_KINDS)),
        seed=draw(seeds),
        lr=draw(st.sampled_from([0.01, 0.1, 1.0])),
        momentum=mu,
        nesterov=mu > 0 and draw(st.booleans()),
        weight_decay=draw(st.sampled_from([0.1, 0.5])),
        no_decay=draw(no_decay_segments(n)),
    )


def sgd_at(device, layout, values, p):
    """sgd_update with the three arrays at `layout`'s offsets; the arrays afterwards, with
    their NaN guards checked. Without momentum the velocity is passed and must stay as it was."""
    bufs = [at_alignment(a, offset) for a, offset in zip(values, layout)]
    param, grad, velocity = (view for _, view in bufs)
    ops.sgd_update(
        param,
        grad,
        velocity,
        lr=p["lr"],
        momentum=p["momentum"],
        nesterov=p["nesterov"],
        weight_decay=p["weight_decay"],
        no_decay=p["no_decay"],
        device=device,
    )
    for (buf, _), name in zip(bufs, NAMES):
        check_guards(buf, f"{name} at layout {layout}")
    return [view.copy() for _, view in bufs]


@given(p=aligned_problems())
@example(
    p=dict(
        n=13,
        layout=(2, 2, 2),
        kind="normal",
        seed=3,
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=0.5,
        no_decay=[(0, 1), (2, 3), (5, 6), (7, 9), (12, 13)],
    )
)
@example(
    p=dict(
        n=4099,
        layout=(3, 3, 3),
        kind="mixed",
        seed=4,
        lr=0.01,
        momentum=0.0,
        nesterov=False,
        weight_decay=0.1,
        no_decay=[(1, 2), (4097, 4098)],
    )
)
def test_sgd_update_same_bits_at_every_alignment(device, p):
    # A float4 lane must round as the scalar element does, and a no-decay segment
    # boundary inside a float4 must split it element by element.
    rng = np.random.default_rng(p["seed"])
    n = p["n"]
    grad_kind = "huge" if p["kind"] == "huge_grad" else p["kind"]
    values = [
        make_values(rng, (n,), "normal"),
        make_values(rng, (n,), grad_kind),
        make_values(rng, (n,), "normal") * np.float32(0.1),
    ]
    got = sgd_at(device, p["layout"], values, p)
    for a, b, name in zip(got, sgd_at(device, SCALAR_LAYOUT, values, p), NAMES):
        assert_same_bits(a, b, f"{name} at layout {p['layout']} against the scalar layout")
    assert_same_bits(got[1], values[1], "grad (must be untouched)")
    if not p["momentum"]:
        assert_same_bits(got[2], values[2], "velocity without momentum (must be untouched)")
    if device == "cuda-emulated":
        # the emulated kernel (no FMA contraction on the host) also gives the CPU's bits
        for a, b, name in zip(got, sgd_at("cpu", (0,) * 3, values, p), NAMES):
            assert_same_bits(a, b, f"{name} on cuda-emulated against cpu")
