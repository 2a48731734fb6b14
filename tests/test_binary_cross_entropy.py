"""binary_cross_entropy_with_logits against tests/reference.py on every device."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import (
    ROW_WEIGHTS,
    TINY32,
    U32,
    U64,
    VALUE_KINDS,
    assert_close,
    assert_float32_array,
    assert_same_bits,
    make_values,
    nan_filled,
    row_weights_of,
    seeds,
    sizes,
)

TARGET_KINDS = ("binary", "soft", "mixed")

# (shape, logit kind, target kind, seed); any rank, the loss is over all elements.
bce_problems = st.tuples(
    st.lists(sizes, min_size=1, max_size=3).filter(lambda s: np.prod(s) <= 1 << 15),
    st.sampled_from(VALUE_KINDS),
    st.sampled_from(TARGET_KINDS),
    seeds,
)


def build(problem):
    shape, kind, target_kind, seed = problem
    rng = np.random.default_rng(seed)
    logits = make_values(rng, shape, kind, scale=4.0)  # "huge": +-1e20, far past saturation
    if target_kind == "binary":
        targets = rng.integers(0, 2, shape).astype(np.float32)
    elif target_kind == "soft":
        targets = rng.random(shape).astype(np.float32)
    else:
        targets = np.where(rng.random(shape) < 0.5, rng.integers(0, 2, shape), rng.random(shape)).astype(np.float32)
    return logits, targets


def tolerances(logits, targets, row_weights=None):
    """The kernel sums max(z, 0) - z t + L, L = log1p(exp(-|z|)), in float64 from
    float32 inputs (z t of two float32 is exact in float64), so those terms are
    float64-accurate: a few roundings per term plus n for the sum, relative to the sum of
    the terms' magnitudes (the terms cancel for confident, correct logits: z = 1e20,
    t = 1 gives exactly 0). L itself is float32, from cpp/cpu/vmath.h: e = exp(-|z|)
    errs by <= 1.5 ulp <= 3u relative, which moves log1p(e) by e / (1 + e) 3u <= 3u L
    (log1p(e) >= e / (1 + e)), and vlog1p_unit adds <= 1.5 ulp <= 3u L: 6u L per term.

    The gradient (sigmoid(z) - t) * fl32(1 / n) is float32: sigmoid = (z < 0 ? e : 1) /
    (1 + e) errs by <= 5u relative (e's 3u, damped by 1 / (1 + e) <= 1, then an add and
    a division; libm's 1-ulp expf gave 4u), the subtraction and the two roundings of
    1 / n and the product add 3u of the result.

    With row weights each element's term and gradient take the factor s = w_i / (cols W)
    (reference.row_weight_scale) instead of 1 / n; the float64 weighted sums and W add a
    few more float64 roundings (+4 below), and the gradient scale rounds once more than
    fl32(1 / n) in the one-column case, fl32(fl32(1 / W) w_i): 4u instead of 3u.
    """
    z, t = logits.astype(np.float64), targets.astype(np.float64)
    n = z.size
    s = reference.row_weight_scale(z.shape, row_weights)
    log_term = np.log1p(np.exp(-np.abs(z)))
    terms = np.maximum(z, 0) + np.abs(z * t) + log_term
    loss_tol = 2 * (n + 12) * U64 * (s * terms).sum() + 6 * U32 * (s * log_term).sum()
    sig = 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))
    product_roundings = 3 if row_weights is None else 4
    grad_tol = (5 * U32 * sig + product_roundings * U32 * np.abs(sig - t)) * s + 2 * TINY32
    return loss_tol, grad_tol


@given(problem=bce_problems)
@example(problem=([1025, 33], "huge", "mixed", 1))
@example(problem=([1], "normal", "binary", 2))
@example(problem=([5, 1, 3], "mixed", "soft", 3))
def test_binary_cross_entropy_matches_reference(isa, device, problem):
    logits, targets = build(problem)
    grad = nan_filled(logits.shape)
    loss, ret = ops.binary_cross_entropy_with_logits(logits, targets, grad_out=grad, device=device)
    assert ret is grad
    assert isinstance(loss, float)
    assert_float32_array(grad, logits.shape, "grad_out")
    loss_ref, grad_ref = reference.binary_cross_entropy_with_logits(logits, targets)
    loss_tol, grad_tol = tolerances(logits, targets)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    loss2, none = ops.binary_cross_entropy_with_logits(logits, targets, need_grad=False, device=device)
    assert none is None and loss2 == loss
    loss3, grad3 = ops.binary_cross_entropy_with_logits(logits, targets, device=device)
    assert loss3 == loss
    assert_same_bits(grad3, grad, "grad of a second call")


@given(problem=bce_problems, kind=st.sampled_from(ROW_WEIGHTS))
@example(problem=([1025, 1], "huge", "mixed", 1), kind="random")
@example(problem=([1], "normal", "binary", 2), kind="all_zero")
@example(problem=([5, 1, 3], "mixed", "soft", 3), kind="wide")
def test_binary_cross_entropy_row_weights_match_reference(isa, device, problem, kind):
    logits, targets = build(problem)
    w = row_weights_of(np.random.default_rng(problem[3]), logits.shape[0], kind)
    grad = nan_filled(logits.shape)
    loss, _ = ops.binary_cross_entropy_with_logits(logits, targets, row_weights=w, grad_out=grad, device=device)
    assert_float32_array(grad, logits.shape, "grad_out")
    loss_ref, grad_ref = reference.binary_cross_entropy_with_logits(logits, targets, w)
    loss_tol, grad_tol = tolerances(logits, targets, w)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    if not w.any():  # no weight at all: loss 0 and a zero gradient, by definition
        assert loss == 0.0 and (grad == 0.0).all()
    loss2, _ = ops.binary_cross_entropy_with_logits(logits, targets, row_weights=w, need_grad=False, device=device)
    assert loss2 == loss


def test_binary_cross_entropy_weights_scale_invariant(isa, device):
    # Only the ratios of the weights matter: multiplying them by 4 (exact) changes no bit
    # of the gradient, and the loss only by the float64 rounding of the sums.
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(40, 1)).astype(np.float32)
    targets = rng.integers(0, 2, (40, 1)).astype(np.float32)
    w = rng.uniform(0.1, 2.0, 40).astype(np.float32)
    loss, grad = ops.binary_cross_entropy_with_logits(logits, targets, row_weights=w, device=device)
    loss4, grad4 = ops.binary_cross_entropy_with_logits(logits, targets, row_weights=4 * w, device=device)
    assert loss4 == pytest.approx(loss, rel=1e-14)
    assert_same_bits(grad4, grad, "grad with 4x the weights")


@pytest.mark.parametrize("z", [1e20, -1e20, 3e38, -3e38, 1e4, -1e4, 0.0, -0.0, 1e-45])
@pytest.mark.parametrize("t", [0.0, 1.0, 0.25])
def test_binary_cross_entropy_extreme_logits(isa, device, z, t):
    # log(1 + exp(z)) must not overflow: the loss is |z| (1 - t) or |z| t, the gradient
    # sigmoid(z) - t, both finite.
    logits = np.full(3, z, np.float32)
    targets = np.full(3, t, np.float32)
    loss, grad = ops.binary_cross_entropy_with_logits(logits, targets, device=device)
    loss_ref, grad_ref = reference.binary_cross_entropy_with_logits(logits, targets)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    loss_tol, grad_tol = tolerances(logits, targets)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")


def _call(device, **over):
    kw = dict(logits=np.zeros((4, 3), np.float32), targets=np.zeros((4, 3), np.float32), device=device)
    kw.update(over)
    return lambda: ops.binary_cross_entropy_with_logits(kw.pop("logits"), kw.pop("targets"), **kw)


OP = r"\[binary_cross_entropy_with_logits\]"
BAD = {
    "logits float64": (dict(logits=np.zeros((4, 3))), TypeError, OP + r" logits must be float32"),
    "targets int32": (dict(targets=np.zeros((4, 3), np.int32)), TypeError, OP + r" targets must be float32"),
    "grad_out float64": (dict(grad_out=np.zeros((4, 3))), TypeError, OP + r" grad_out must be float32"),
    "targets shape": (dict(targets=np.zeros((4, 4), np.float32)), ValueError, OP + r" targets has shape"),
    "targets rank": (dict(targets=np.zeros(12, np.float32)), ValueError, OP + r" targets has shape"),
    "grad_out shape": (dict(grad_out=np.zeros((3, 4), np.float32)), ValueError, OP + r" grad_out has shape"),
    "empty": (
        dict(logits=np.zeros((0, 3), np.float32), targets=np.zeros((0, 3), np.float32)),
        ValueError,
        OP + r" logits is empty",
    ),
    "logits strided": (
        dict(logits=np.zeros((4, 6), np.float32)[:, ::2]),
        ValueError,
        OP + r" logits must be C-contiguous",
    ),
    "targets transposed": (
        dict(targets=np.zeros((3, 4), np.float32).T),
        ValueError,
        OP + r" targets must be C-contiguous",
    ),
    "row_weights int32": (dict(row_weights=np.ones(4, np.int32)), TypeError, OP + r" row_weights must be float32"),
    "row_weights length": (dict(row_weights=np.ones(12, np.float32)), ValueError, OP + r" row_weights has shape"),
    "inf row weight": (
        dict(row_weights=np.array([1, np.inf, 1, 1], np.float32)),
        ValueError,
        OP + r" row_weights\[1\] = inf must be finite and >= 0",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_binary_cross_entropy_rejects_bad_input(device, case):
    over, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        _call(device, **over)()


@pytest.mark.parametrize("which", ["logits", "targets"])
def test_binary_cross_entropy_rejects_grad_aliasing_an_input(device, which):
    logits, targets = np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32)
    alias = logits if which == "logits" else targets
    with pytest.raises(ValueError, match=OP + rf" grad_out shares memory with {which}"):
        ops.binary_cross_entropy_with_logits(logits, targets, grad_out=alias, device=device)
