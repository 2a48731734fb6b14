"""clip_by_global_norm (torch.nn.utils.clip_grad_norm_ semantics) against
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
    U64,
    VALUE_KINDS,
    assert_close,
    assert_float32_array,
    assert_same_bits,
    at_alignment,
    check_guards,
    make_values,
    seeds,
    sizes,
)

# (shape, value kind, max_norm as a multiple of the norm (or absolute), seed). Multiples
# around 1 reach both branches and the boundary.
clip_problems = st.tuples(
    st.lists(sizes, min_size=1, max_size=3).filter(lambda s: np.prod(s) <= 1 << 16),
    st.sampled_from(VALUE_KINDS),
    st.one_of(st.sampled_from([0.01, 0.5, 0.999999, 1.0, 1.000001, 2.0]), st.floats(1e-3, 1e3)),
    seeds,
)


def build(problem):
    shape, kind, ratio, seed = problem
    grad = make_values(np.random.default_rng(seed), shape, kind, huge=1e30)
    norm = float(np.sqrt(np.sum(grad.astype(np.float64) ** 2)))
    max_norm = float(np.float32(ratio * norm)) if norm > 0 else float(np.float32(ratio))
    if not (np.isfinite(max_norm) and max_norm > 0):  # norm in the subnormal range, say
        max_norm = float(np.float32(ratio))
    return grad, max_norm


@given(problem=clip_problems)
@example(problem=([1025, 257], "normal", 0.5, 1))
@example(problem=([3], "normal", 1.0, 2))
@example(problem=([5, 7], "subnormal", 0.5, 3))
def test_clip_by_global_norm_matches_reference(isa, device, problem):
    grad, max_norm = build(problem)
    before = grad.copy()
    norm = ops.clip_by_global_norm(grad, max_norm, device=device)
    assert isinstance(norm, float)
    assert_float32_array(grad, before.shape, "grad")
    want, norm_ref = reference.clip_by_global_norm(before, max_norm)
    # The norm is a float64 sum of float32 squares (exact in float64) in any order:
    # relative error <= (n + 2) u64 on the sum, half that after the square root.
    n = before.size
    assert_close(norm, norm_ref, (n + 2) * U64 * norm_ref, "norm")
    # Scaling: fl32(coef) and the product, two float32 roundings of the result (plus
    # underflow). Near coef = 1 the two sums may pick different branches, but then
    # fl32(coef) is 1 and both leave grad as it was.
    assert_close(grad, want, 2.01 * U32 * np.abs(want) + TINY32, "clipped grad")
    coef = float(np.float32(max_norm)) / (norm_ref + 1e-6)
    if coef >= 1.0 + 1e-9:
        assert_same_bits(grad, before, "grad below max_norm (must be untouched)")
    else:
        assert np.sqrt(np.sum(grad.astype(np.float64) ** 2)) <= max_norm * (1 + 4 * U32)
    again = before.copy()
    assert ops.clip_by_global_norm(again, max_norm, device=device) == norm
    assert_same_bits(again, grad, "a second call")


def test_clip_zero_gradient_is_untouched(isa, device):
    grad = np.zeros((3, 5), np.float32)
    grad[0, 0] = -0.0
    before = grad.copy()
    assert ops.clip_by_global_norm(grad, 1e-3, device=device) == 0.0
    assert_same_bits(grad, before, "zero grad")


@pytest.mark.parametrize(
    "values,max_norm",
    [([3e38, -3e38, 1.0], 1.0), ([3e38] * 4, 1e-6), ([3e38] * 4, 1e-7)],
    ids=["coef 2.4e-39", "coef 1.7e-45", "coef 1.7e-46"],
)
def test_clip_float32_extremes(isa, device, values, max_norm):
    # Squares of 3e38 overflow float32 but not the float64 accumulator. The coefficient
    # max_norm / norm is then below float32's normal range (2**-126 = 1.2e-38): scaling
    # by it rounded to float32 would lose precision (subnormal) or flush the whole
    # gradient to 0; the clipped gradient must still have norm max_norm.
    grad = np.array(values, np.float32)
    want, norm_ref = reference.clip_by_global_norm(grad.copy(), max_norm)
    norm = ops.clip_by_global_norm(grad, max_norm, device=device)
    assert np.isfinite(norm) and np.isfinite(grad).all()
    assert_close(norm, norm_ref, 5 * U64 * norm_ref, "norm")
    assert_close(grad, want, 2.01 * U32 * np.abs(want) + TINY32, "grad")


def test_clip_empty_gradient(isa, device):
    # nothing to clip; the norm of no elements is 0 (a NumPy empty array has zero strides
    # and is C-contiguous)
    assert ops.clip_by_global_norm(np.zeros(0, np.float32), 1.0, device=device) == 0.0


BAD = {
    "grad float64": (np.ones(4), 1.0, TypeError, r"\[clip_by_global_norm\] grad must be float32"),
    "grad strided": (
        np.ones(8, np.float32)[::2],
        1.0,
        ValueError,
        r"\[clip_by_global_norm\] grad must be C-contiguous",
    ),
    "grad transposed": (
        np.ones((3, 4), np.float32).T,
        1.0,
        ValueError,
        r"\[clip_by_global_norm\] grad must be C-contiguous",
    ),
    "max_norm 0": (np.ones(4, np.float32), 0.0, ValueError, r"\[clip_by_global_norm\] max_norm must be finite and > 0"),
    "max_norm negative": (np.ones(4, np.float32), -1.0, ValueError, r"\[clip_by_global_norm\] max_norm"),
    "max_norm inf": (np.ones(4, np.float32), float("inf"), ValueError, r"\[clip_by_global_norm\] max_norm"),
    "max_norm NaN": (np.ones(4, np.float32), float("nan"), ValueError, r"\[clip_by_global_norm\] max_norm"),
    "max_norm underflows to 0": (np.ones(4, np.float32), 1e-50, ValueError, r"\[clip_by_global_norm\] max_norm"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_clip_by_global_norm_rejects_bad_input(device, case):
    grad, max_norm, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        ops.clip_by_global_norm(grad, max_norm, device=device)


@given(
    n=st.one_of(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 4099, 123457]), st.integers(1, 70)),
    kind=st.sampled_from(VALUE_KINDS),
    ratio=st.sampled_from([0.5, 2.0]),
    seed=seeds,
)
@example(n=4 * 4 * 120 * 256 + 4 * 120 * 256 + 13, kind="normal", ratio=0.5, seed=1)
def test_clip_same_bits_at_every_alignment(device, n, kind, ratio, seed):
    # On CUDA the norm is summed in quads counted from element 0 (float4 loads, four quads
    # at a time, where the gradient is 16-byte aligned; scalar loads otherwise) and the
    # scaling runs float4s between a scalar head and tail: neither the norm nor the clipped
    # gradient may depend on where the gradient starts. The example is past one unrolled
    # round of the fixed 120 x 256-thread grid (4 quads per thread), with a remainder.
    grad = make_values(np.random.default_rng(seed), (n,), kind, huge=1e30)
    max_norm = float(np.float32(ratio * np.sqrt(np.sum(grad.astype(np.float64) ** 2)))) or 1.0
    results = []
    for offset in range(4):
        buf, view = at_alignment(grad, offset)
        norm = ops.clip_by_global_norm(view, max_norm, device=device)
        check_guards(buf, f"grad at offset {offset}")
        results.append((norm, view.copy()))
    for offset, (norm, clipped) in enumerate(results[1:], 1):
        assert norm == results[0][0], f"norm at offset {offset}: {norm!r} != {results[0][0]!r} at offset 0"
        assert_same_bits(clipped, results[0][1], f"clipped grad at offset {offset}")
