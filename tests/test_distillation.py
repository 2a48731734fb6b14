"""distillation_loss (Hinton et al.'s soft-target loss, fused with its gradient) against
tests/reference.py on every device and ISA level: shapes, temperatures 0.5 to 20,
alpha, extreme logits, sample weights and NaN propagation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import (
    LOGIT_KINDS,
    ROW_WEIGHTS,
    TINY32,
    U32,
    U64,
    assert_close,
    assert_float32_array,
    assert_same_bits,
    logits_of,
    nan_filled,
    row_weights_of,
    seeds,
    sizes,
)

TEMPERATURES = st.one_of(st.sampled_from([0.5, 1.0, 2.0, 4.0, 20.0]), st.floats(0.5, 20.0, width=32))
ALPHAS = st.one_of(st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.floats(0.0, 1.0, width=32))

# (batch, classes, student kind, teacher kind, weights, temperature, alpha, seed)
problems = st.tuples(
    sizes,
    sizes,
    st.sampled_from(LOGIT_KINDS),
    st.sampled_from(LOGIT_KINDS),
    st.sampled_from(("none",) + ROW_WEIGHTS),
    TEMPERATURES,
    ALPHAS,
    seeds,
).filter(lambda p: p[0] * p[1] <= 1 << 14)


def build(problem):
    batch, classes, s_kind, t_kind, weights, temperature, alpha, seed = problem
    rng = np.random.default_rng(seed)
    student = logits_of(rng, (batch, classes), s_kind)
    teacher = logits_of(rng, (batch, classes), t_kind)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    w = None if weights == "none" else row_weights_of(rng, batch, weights)
    return student, teacher, labels, w, float(np.float32(temperature)), float(np.float32(alpha))


def _softmax_terms(x):
    """(x - max) per row, softmax and log-sum-exp, in float64."""
    d = x - x.max(axis=1, keepdims=True)
    e = np.exp(d)
    return d, e / e.sum(axis=1, keepdims=True), np.log(e.sum(axis=1))


def tolerances(student, teacher, labels, row_weights, temperature, alpha):
    """(loss bound, grad bound) for the kernels' float32 / float64 mix.

    Each shifted, scaled logit a_c = fl32(fl32(s_c - max) fl32(1 / T)) (likewise b_c of the
    teacher, d_c = fl32(s_c - max)) errs by <= 3u |a_c|; an exponential of it (the CPU's
    vexp_nonpositive <= 1.5 ulp, CUDA's expf <= 2 ulp: 4u relative) then errs by
    e^{a_c} u (4 + 3 |a_c|). Sums are float64, so a log of an exp sum A errs by
    u sum_c r_c (4 + 3 |a_c|) (r = e^a / A: d log A / d a_c = r_c), the KL's cross term
    sum_c p_c (b_c - a_c) by u sum_c p_c [(4 + 3 |b_c|) |b_c - a_c| + 3 (|a_c| + |b_c|)],
    and the hard term log D - d_y as softmax_cross_entropy's. The row loss is their sum
    times alpha T^2 and 1 - alpha (float64 products); the weighted mean adds float64
    roundings. Each gradient element: alpha T w / W (r_c - p_c) with r_c = e^{a_c} fl32(1 / A)
    relative error u (6 + 3 |a_c| + the sum's), likewise p_c, the hard part the same with d;
    then the float32 scale factors and the sums: 4u of each part's magnitude.
    """
    s = student.astype(np.float64)
    t = teacher.astype(np.float64)
    T, a = temperature, alpha
    batch, classes = s.shape
    rows = np.arange(batch)
    with np.errstate(invalid="ignore", over="ignore"):
        sa, r, _ = _softmax_terms(s / T)
        tb, p, _ = _softmax_terms(t / T)
        d, q, _ = _softmax_terms(s)
    ea = 4 + 3 * np.abs(sa)
    eb = 4 + 3 * np.abs(tb)
    ed = 4 + 3 * np.abs(d)
    rel_a = (r * ea).sum(axis=1)
    rel_b = (p * eb).sum(axis=1)
    rel_d = (q * ed).sum(axis=1)
    cross = (p * (eb * np.abs(tb - sa) + 3 * (np.abs(sa) + np.abs(tb)))).sum(axis=1)
    soft_err = U32 * (rel_a + rel_b + cross + 8)
    hard_err = U32 * (rel_d + 3 * np.abs(d[rows, labels]) + 8)
    loss_rows_mag = (p * np.abs(tb - sa)).sum(axis=1) + np.abs(np.log(np.exp(sa).sum(axis=1))) + np.log(classes) + 1
    row_err = a * T * T * soft_err + (1 - a) * hard_err
    row_err = row_err + (classes + 8) * U64 * (a * T * T + 1) * (loss_rows_mag + np.abs(d[rows, labels]))
    w = np.ones(batch) if row_weights is None else row_weights.astype(np.float64)
    total = w.sum()
    if total == 0.0:
        return 0.0, np.zeros_like(s)
    loss_ref, _ = reference.distillation_loss(student, teacher, labels, temperature=T, alpha=a, row_weights=row_weights)
    loss_tol = (w * row_err).sum() / total + 4 * (batch + 4) * U64 * abs(loss_ref) + 4 * U64
    onehot = np.zeros_like(s)
    onehot[rows, labels] = 1.0
    soft = a * T * (U32 * (r * (ea + 2 + rel_a[:, None]) + p * (eb + 2 + rel_b[:, None])) + 4 * U32 * np.abs(r - p))
    hard = (1 - a) * (U32 * q * (ed + 2 + rel_d[:, None]) + 4 * U32 * (np.abs(q - onehot) + onehot))
    grad_tol = (w / total)[:, None] * (soft + hard) + 4 * TINY32
    return loss_tol, grad_tol


@given(problem=problems)
@example(problem=(1025, 10, "huge", "normal", "none", 0.5, 0.9, 1))
@example(problem=(3, 1025, "mixed", "huge", "random", 20.0, 0.5, 2))
@example(problem=(33, 31, "normal", "wide_logits", "with_zeros", 1.0, 1.0, 3))
@example(problem=(7, 5, "normal", "normal", "all_zero", 4.0, 0.9, 4))
@example(problem=(1, 1, "normal", "normal", "none", 2.0, 0.0, 5))
@example(problem=(17, 10, "ints", "ints", "wide", 3.0, 0.7, 6))
def test_distillation_loss_matches_reference(isa, device, problem):
    student, teacher, labels, w, temperature, alpha = build(problem)
    grad = nan_filled(student.shape)
    loss, ret = ops.distillation_loss(
        student, teacher, labels, temperature=temperature, alpha=alpha, row_weights=w, grad_out=grad, device=device
    )
    assert ret is grad and isinstance(loss, float)
    assert_float32_array(grad, student.shape, "grad_out")
    loss_ref, grad_ref = reference.distillation_loss(
        student, teacher, labels, temperature=temperature, alpha=alpha, row_weights=w
    )
    loss_tol, grad_tol = tolerances(student, teacher, labels, w, temperature, alpha)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    if w is not None and not w.any():
        assert loss == 0.0 and (grad == 0.0).all()
    # Deterministic, and the loss does not depend on whether the gradient is asked for.
    loss2, none = ops.distillation_loss(
        student, teacher, labels, temperature=temperature, alpha=alpha, row_weights=w, need_grad=False, device=device
    )
    assert none is None and loss2 == loss
    _, grad3 = ops.distillation_loss(
        student, teacher, labels, temperature=temperature, alpha=alpha, row_weights=w, device=device
    )
    assert_same_bits(grad3, grad, "grad of a second call")


def test_distillation_of_a_teacher_equal_to_the_student_is_the_hard_loss(device):
    # KL(p || p) = 0 and its gradient vanishes: what is left is (1 - alpha) times the
    # cross-entropy, a check independent of the reference.
    rng = np.random.default_rng(0)
    z = rng.standard_normal((64, 10)).astype(np.float32) * 3
    y = rng.integers(0, 10, 64).astype(np.int32)
    loss, grad = ops.distillation_loss(z, z, y, temperature=3.0, alpha=0.75, device=device)
    ce, ce_grad = ops.softmax_cross_entropy(z, y, device=device)
    assert loss == pytest.approx(0.25 * ce, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(grad, 0.25 * ce_grad, rtol=1e-4, atol=1e-7)


def test_distillation_loss_over_many_rows_is_split_and_thread_count_independent(device):
    # 3000 x 100 is past the CPU's one-piece limit (2^18 elements): the rows are spread
    # over the pool in pieces fixed by the shape.
    from customml import get_num_threads, set_num_threads

    rng = np.random.default_rng(1)
    s = rng.standard_normal((3000, 100)).astype(np.float32)
    t = rng.standard_normal((3000, 100)).astype(np.float32) * 4
    y = rng.integers(0, 100, 3000).astype(np.int32)
    w = row_weights_of(rng, 3000, "random")
    loss, grad = ops.distillation_loss(s, t, y, temperature=2.0, alpha=0.5, row_weights=w, device=device)
    loss_ref, grad_ref = reference.distillation_loss(s, t, y, temperature=2.0, alpha=0.5, row_weights=w)
    loss_tol, grad_tol = tolerances(s, t, y, w, 2.0, 0.5)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    threads = get_num_threads()
    try:
        set_num_threads(1)
        loss1, grad1 = ops.distillation_loss(s, t, y, temperature=2.0, alpha=0.5, row_weights=w, device=device)
    finally:
        set_num_threads(threads)
    assert loss1 == loss
    assert_same_bits(grad1, grad, "grad on one thread")


@pytest.mark.parametrize("which", ["student", "teacher"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_distillation_loss_propagates_nan_and_inf(device, which, value):
    # As PyTorch's kl_div + cross_entropy: a NaN (or an inf, whose softmax is NaN) in a row
    # makes the loss and that row's gradient NaN; the other rows' gradients stay finite.
    rng = np.random.default_rng(2)
    s = rng.standard_normal((4, 7)).astype(np.float32)
    t = rng.standard_normal((4, 7)).astype(np.float32)
    y = np.array([0, 1, 2, 3], np.int32)
    (s if which == "student" else t)[1, 3] = value
    loss, grad = ops.distillation_loss(s, t, y, temperature=2.0, alpha=0.5, device=device)
    loss_ref, grad_ref = reference.distillation_loss(s, t, y, temperature=2.0, alpha=0.5)
    assert np.isnan(loss) and np.isnan(loss_ref)
    assert np.isnan(grad[1]).all() and np.isnan(grad_ref[1]).all()
    assert np.isfinite(np.delete(grad, 1, axis=0)).all()


def test_distillation_loss_with_minus_inf_logits(device):
    # A class the teacher rules out (-inf) adds 0 log 0 = 0 to the KL; a class the student
    # rules out while the teacher gives it mass makes the KL infinite, as it is.
    s = np.array([[0.0, 1.0, 2.0], [0.0, -np.inf, 2.0]], np.float32)
    t = np.array([[0.0, -np.inf, 1.0], [0.0, 1.0, 2.0]], np.float32)
    y = np.array([0, 2], np.int32)
    loss, grad = ops.distillation_loss(s[:1], t[:1], y[:1], temperature=2.0, alpha=0.5, device=device)
    loss_ref, grad_ref = reference.distillation_loss(s[:1], t[:1], y[:1], temperature=2.0, alpha=0.5)
    assert np.isfinite(loss) and loss == pytest.approx(loss_ref, rel=1e-5)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-5, atol=1e-7)
    loss, _ = ops.distillation_loss(s[1:], t[1:], y[1:], temperature=2.0, alpha=1.0, device=device)
    assert loss == np.inf


BAD = {
    "temperature 0": (dict(temperature=0.0), ValueError, r"\[distillation_loss\] temperature"),
    "temperature NaN": (dict(temperature=float("nan")), ValueError, r"\[distillation_loss\] temperature"),
    "alpha > 1": (dict(alpha=1.5), ValueError, r"\[distillation_loss\] alpha"),
    "alpha NaN": (dict(alpha=float("nan")), ValueError, r"\[distillation_loss\] alpha"),
    "teacher shape": (
        dict(teacher_logits=np.zeros((4, 3), np.float32)),
        ValueError,
        r"\[distillation_loss\] teacher_logits",
    ),
    "teacher dtype": (dict(teacher_logits=np.zeros((4, 5), np.float64)), TypeError, r"teacher_logits"),
    "label range": (dict(labels=np.array([0, 1, 2, 5], np.int32)), IndexError, r"labels\[3\] = 5"),
    "labels dtype": (dict(labels=np.zeros(4, np.int64)), TypeError, r"labels"),
    "empty": (
        dict(
            student_logits=np.zeros((0, 5), np.float32),
            teacher_logits=np.zeros((0, 5), np.float32),
            labels=np.zeros(0, np.int32),
        ),
        ValueError,
        r"\[distillation_loss\] student_logits is empty",
    ),
    "negative weight": (dict(row_weights=np.array([1, -1, 1, 1], np.float32)), ValueError, r"row_weights\[1\]"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_distillation_loss_rejects_bad_input(device, case):
    args = dict(
        student_logits=np.zeros((4, 5), np.float32),
        teacher_logits=np.zeros((4, 5), np.float32),
        labels=np.zeros(4, np.int32),
        temperature=2.0,
        alpha=0.5,
    )
    change, error, match = BAD[case]
    args.update(change)
    with pytest.raises(error, match=match):
        ops.distillation_loss(
            args.pop("student_logits"), args.pop("teacher_logits"), args.pop("labels"), device=device, **args
        )
