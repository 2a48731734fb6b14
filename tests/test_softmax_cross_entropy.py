"""softmax_cross_entropy (label smoothing, class weights) against tests/reference.py on
every device."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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

WEIGHTS = ("none", "random", "with_zeros", "all_zero")

# (batch, classes, logit kind, weights, label_smoothing, seed)
sce_problems = st.tuples(
    sizes,
    sizes,
    st.sampled_from(LOGIT_KINDS),
    st.sampled_from(WEIGHTS),
    st.one_of(st.sampled_from([0.0, 0.1, 1.0]), st.floats(0.0, 1.0, width=32)),
    seeds,
).filter(lambda p: p[0] * p[1] <= 1 << 15)


def build(problem):
    batch, classes, kind, weights, smoothing, seed = problem
    rng = np.random.default_rng(seed)
    logits = logits_of(rng, (batch, classes), kind)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    if weights == "none":
        cw = None
    else:
        cw = rng.uniform(0.0, 3.0, classes).astype(np.float32)
        if weights == "with_zeros":
            cw[rng.random(classes) < 0.5] = 0.0
        elif weights == "all_zero":
            cw[:] = 0.0
    return logits, labels, cw, float(np.float32(smoothing))


def tolerances(logits, labels, class_weights, smoothing, row_weights=None):
    """(loss bound, grad bound) for the kernel's float32/float64 mix.

    The kernel shifts by the row max in float32 (d_c = fl32(z_c - max): error u |d_c|),
    sums exp(d_c) (cpp/cpu/vmath.h's vexp_nonpositive: <= 1.25 ulp, counted as vexp's
    1.5 ulp <= 3u relative each, where libm's expf was within 1 ulp = 2u; exp(0) = 1 is exact) in float32 partial sums of at most 8
    terms per lane (<= 7u relative for these positive terms) added in float64, sums d_c
    in float64, and
    forms l = log(sum) - (1 - eps) d_y - fl32(eps / C) sum_c d_c in float64. Since
    d log(sum) / d d_c = p_c, a row's loss errs by at most
    u [7 + sum_{d_c != 0} p_c (3 + |d_c|) + (1 - eps) |d_y| + 2 (eps / C) sum_c |d_c|]
    plus float64 roundings of the C-term sums. The weighted mean adds float64 roundings.
    The gradient w_i / W (p - q) in float32: p = exp(d) * fl32(1 / sum) errs by
    (5 + |d_c| + the sum's relative error) u relative; q = (1 - eps) + eps / C in float32
    by <= u (eps / C) + 2u q_y; then a subtraction, fl32(w / W) and the product: 3u.
    Row weights multiply w_i (exactly, in float64) and change nothing else.
    """
    z = logits.astype(np.float64)
    batch, classes = z.shape
    eps = smoothing
    off = eps / classes
    d = z - z.max(axis=1, keepdims=True)
    p = np.exp(d) / np.exp(d).sum(axis=1, keepdims=True)
    rows = np.arange(batch)
    d_y = np.abs(d[rows, labels])
    sum_rel = 7 + (p * (3 + np.abs(d)) * (d != 0)).sum(axis=1)  # relative error of the exp sum
    lse = np.log(np.exp(d).sum(axis=1))
    row_err = U32 * (sum_rel + (1 - eps) * d_y + 2 * off * np.abs(d).sum(axis=1)) + (classes + 4) * U64 * (
        lse + d_y + off * np.abs(d).sum(axis=1)
    )
    w = np.ones(batch) if class_weights is None else class_weights.astype(np.float64)[labels]
    if row_weights is not None:
        w = w * row_weights.astype(np.float64)
    total = w.sum()
    if total == 0.0:
        return 0.0, np.zeros_like(z)
    loss_rows = lse - (1 - eps) * d[rows, labels] - off * d.sum(axis=1)
    loss_tol = (w * row_err).sum() / total + 2 * (batch + 4) * U64 * (w * np.abs(loss_rows)).sum() / total
    q = np.full_like(z, off)
    q[rows, labels] += 1 - eps
    onehot = np.zeros_like(z)
    onehot[rows, labels] = 1.0
    p_err = U32 * p * (5 + np.abs(d) + sum_rel[:, None])
    q_err = U32 * (off + 2 * onehot * q)
    s = (w / total)[:, None]
    grad_tol = s * (p_err + q_err + 3 * U32 * np.abs(p - q)) + 2 * TINY32
    return loss_tol, grad_tol


@given(problem=sce_problems)
@example(problem=(1025, 10, "huge", "none", 0.1, 1))
@example(problem=(3, 1025, "mixed", "random", 0.0, 2))
# The CUDA kernels take a warp per row up to 1024 classes and a block per row beyond.
@example(problem=(2, 1024, "normal", "random", 0.1, 5))
@example(problem=(1, 4097, "huge", "none", 0.2, 6))
@example(problem=(7, 5, "normal", "all_zero", 0.2, 3))
@example(problem=(1, 1, "normal", "none", 0.0, 4))
def test_softmax_cross_entropy_matches_reference(isa, device, problem):
    logits, labels, cw, smoothing = build(problem)
    grad = nan_filled(logits.shape)
    loss, ret = ops.softmax_cross_entropy(
        logits, labels, class_weights=cw, label_smoothing=smoothing, grad_out=grad, device=device
    )
    assert ret is grad
    assert isinstance(loss, float)
    assert_float32_array(grad, logits.shape, "grad_out")
    loss_ref, grad_ref = reference.softmax_cross_entropy(logits, labels, class_weights=cw, label_smoothing=smoothing)
    loss_tol, grad_tol = tolerances(logits, labels, cw, smoothing)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    if cw is not None and not cw[labels].any():
        # no weight at all: loss 0 and an exactly zero gradient, by definition
        assert loss == 0.0 and (grad == 0.0).all()
    # Deterministic, and the loss does not depend on whether the gradient is asked for.
    loss2, none = ops.softmax_cross_entropy(
        logits, labels, class_weights=cw, label_smoothing=smoothing, need_grad=False, device=device
    )
    assert none is None and loss2 == loss
    loss3, grad3 = ops.softmax_cross_entropy(logits, labels, class_weights=cw, label_smoothing=smoothing, device=device)
    assert loss3 == loss
    assert_same_bits(grad3, grad, "grad of a second call")


@given(problem=sce_problems, kind=st.sampled_from(ROW_WEIGHTS))
@example(problem=(1025, 10, "huge", "random", 0.1, 1), kind="random")
@example(problem=(3, 1025, "mixed", "none", 0.0, 2), kind="wide")
@example(problem=(7, 5, "normal", "random", 0.2, 3), kind="all_zero")
def test_softmax_cross_entropy_row_weights_match_reference(isa, device, problem, kind):
    # Row weights alone and combined with class weights: w_i = c[y_i] r_i.
    logits, labels, cw, smoothing = build(problem)
    rw = row_weights_of(np.random.default_rng(problem[-1]), logits.shape[0], kind)
    grad = nan_filled(logits.shape)
    loss, _ = ops.softmax_cross_entropy(
        logits, labels, class_weights=cw, label_smoothing=smoothing, row_weights=rw, grad_out=grad, device=device
    )
    assert_float32_array(grad, logits.shape, "grad_out")
    loss_ref, grad_ref = reference.softmax_cross_entropy(
        logits, labels, class_weights=cw, label_smoothing=smoothing, row_weights=rw
    )
    loss_tol, grad_tol = tolerances(logits, labels, cw, smoothing, rw)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    w = rw.astype(np.float64) * (1.0 if cw is None else cw[labels])
    if not w.any():  # no weight at all: loss 0 and an exactly zero gradient, by definition
        assert loss == 0.0 and (grad == 0.0).all()
    loss2, _ = ops.softmax_cross_entropy(
        logits, labels, class_weights=cw, label_smoothing=smoothing, row_weights=rw, need_grad=False, device=device
    )
    assert loss2 == loss


@pytest.mark.parametrize("logit", [1e4, -1e4, 3e38])
def test_softmax_cross_entropy_is_stable_for_huge_logits(isa, device, logit):
    # One class at +-1e4 (or near float32 max) and the rest at 0: exp must not overflow.
    logits = np.zeros((2, 4), np.float32)
    logits[:, 1] = logit
    labels = np.array([1, 2], np.int32)
    grad = nan_filled(logits.shape)
    loss, _ = ops.softmax_cross_entropy(logits, labels, grad_out=grad, device=device)
    loss_ref, grad_ref = reference.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    loss_tol, grad_tol = tolerances(logits, labels, None, 0.0)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")


@pytest.mark.parametrize("classes", [40, 1024, 1025, 4097])
@pytest.mark.parametrize("order", ["rising", "falling", "sawtooth"])
def test_softmax_cross_entropy_when_the_row_max_keeps_moving(device, classes, order):
    """The CUDA kernels find each row's max and exp sum in one online pass, rescaling a
    thread's sums whenever its running max grows: with rising logits every element is a
    new max (a rescale per element), falling ones never rescale, and a sawtooth rescales
    on every tooth. The warp kernel takes up to 1024 classes, the block kernel more. The
    result must stay within the two-pass bound (tolerances() above) on every device."""
    base = np.linspace(-40.0, 40.0, classes)
    row = {"rising": base, "falling": base[::-1], "sawtooth": (np.arange(classes) % 37) * 0.9 + base * 0.1}[order]
    logits = np.stack([row, row * 0.5 + 3.0, -row]).astype(np.float32)
    labels = np.array([classes - 1, 0, classes // 2], np.int32)
    smoothing = float(np.float32(0.1))
    grad = nan_filled(logits.shape)
    loss, _ = ops.softmax_cross_entropy(logits, labels, label_smoothing=smoothing, grad_out=grad, device=device)
    loss_ref, grad_ref = reference.softmax_cross_entropy(logits, labels, label_smoothing=smoothing)
    loss_tol, grad_tol = tolerances(logits, labels, None, smoothing)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")


def test_softmax_cross_entropy_gradient_rows_sum_to_zero(isa, device):
    # sum_c (p_c - q_c) = 0 for every row, for any smoothing and weights
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((33, 17)).astype(np.float32)
    labels = rng.integers(0, 17, 33).astype(np.int32)
    cw = rng.uniform(0.5, 2.0, 17).astype(np.float32)
    smoothing = float(np.float32(0.3))
    _, grad = ops.softmax_cross_entropy(logits, labels, class_weights=cw, label_smoothing=smoothing, device=device)
    # exactly 0 in exact arithmetic, so each row sum is within the sum of its elements' bounds
    _, grad_tol = tolerances(logits, labels, cw, smoothing)
    assert_close(grad.astype(np.float64).sum(axis=1), np.zeros(33), grad_tol.sum(axis=1), "row sums of grad")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_large_batches_do_not_depend_on_the_thread_count(isa, smoothing):
    """Above 2^18 elements the CPU splits the rows into pieces of about 2^16 elements over
    the pool (here 7 pieces of 93 rows, the last one short); the pieces depend on the
    shape alone and their losses are added in piece order: the same bits for every thread
    count, and the reference's values."""
    import customml as cm

    rng = np.random.default_rng(11)
    logits = (rng.standard_normal((600, 701)) * 3).astype(np.float32)
    labels = rng.integers(0, 701, 600).astype(np.int32)
    cw = rng.uniform(0.5, 2.0, 701).astype(np.float32)
    smoothing = float(np.float32(smoothing))
    before = cm.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            cm.set_num_threads(threads)
            grad = nan_filled(logits.shape)
            loss, _ = ops.softmax_cross_entropy(
                logits, labels, class_weights=cw, label_smoothing=smoothing, grad_out=grad
            )
            results.append((loss, grad))
    finally:
        cm.set_num_threads(before)
    for loss, grad in results[1:]:
        assert loss == results[0][0]
        assert_same_bits(grad, results[0][1], "grad")
    loss_ref, grad_ref = reference.softmax_cross_entropy(logits, labels, class_weights=cw, label_smoothing=smoothing)
    loss_tol, grad_tol = tolerances(logits, labels, cw, smoothing)
    assert_close(results[0][0], loss_ref, loss_tol, "loss")
    assert_close(results[0][1], grad_ref, grad_tol, "grad")


# ------------------------------------------------------------------------------ bad input


def _sce_call(device, **over):
    kw = dict(logits=np.zeros((4, 3), np.float32), labels=np.array([0, 1, 2, 0], np.int32), device=device)
    kw.update(over)
    return lambda: ops.softmax_cross_entropy(kw.pop("logits"), kw.pop("labels"), **kw)


SCE_BAD = {
    "logits float64": (dict(logits=np.zeros((4, 3))), TypeError, r"\[softmax_cross_entropy\] logits must be float32"),
    "labels int64": (dict(labels=np.array([0, 1, 2, 0])), TypeError, r"\[softmax_cross_entropy\] labels must be int32"),
    "labels float32": (
        dict(labels=np.zeros(4, np.float32)),
        TypeError,
        r"\[softmax_cross_entropy\] labels must be int32",
    ),
    "class_weights float64": (
        dict(class_weights=np.ones(3)),
        TypeError,
        r"\[softmax_cross_entropy\] class_weights must be float32",
    ),
    "grad_out float16": (
        dict(grad_out=np.zeros((4, 3), np.float16)),
        TypeError,
        r"\[softmax_cross_entropy\] grad_out must be float32",
    ),
    "logits 1-D": (dict(logits=np.zeros(3, np.float32)), ValueError, r"\[softmax_cross_entropy\] logits must be 2-D"),
    "labels 2-D": (
        dict(labels=np.zeros((4, 1), np.int32)),
        ValueError,
        r"\[softmax_cross_entropy\] labels must be 1-D",
    ),
    "labels length": (dict(labels=np.zeros(5, np.int32)), ValueError, r"\[softmax_cross_entropy\] labels has shape"),
    "class_weights length": (
        dict(class_weights=np.ones(4, np.float32)),
        ValueError,
        r"\[softmax_cross_entropy\] class_weights has shape",
    ),
    "grad_out shape": (
        dict(grad_out=np.zeros((4, 4), np.float32)),
        ValueError,
        r"\[softmax_cross_entropy\] grad_out has shape",
    ),
    "empty batch": (
        dict(logits=np.zeros((0, 3), np.float32), labels=np.zeros(0, np.int32)),
        ValueError,
        r"\[softmax_cross_entropy\] logits is empty",
    ),
    "no classes": (
        dict(logits=np.zeros((4, 0), np.float32)),
        ValueError,
        r"\[softmax_cross_entropy\] logits has 0 columns",
    ),
    "logits strided": (
        dict(logits=np.zeros((4, 6), np.float32)[:, ::2]),
        ValueError,
        r"\[softmax_cross_entropy\] logits must be C-contiguous",
    ),
    "logits transposed": (
        dict(logits=np.zeros((3, 4), np.float32).T),
        ValueError,
        r"\[softmax_cross_entropy\] logits must be C-contiguous",
    ),
    "labels strided": (
        dict(labels=np.zeros(8, np.int32)[::2]),
        ValueError,
        r"\[softmax_cross_entropy\] labels must be C-contiguous",
    ),
    "label too large": (
        dict(labels=np.array([0, 3, 1, 0], np.int32)),
        IndexError,
        r"\[softmax_cross_entropy\] labels\[1\] = 3 is outside \[0, 3\)",
    ),
    "label negative": (
        dict(labels=np.array([0, 1, 2, -1], np.int32)),
        IndexError,
        r"\[softmax_cross_entropy\] labels\[3\] = -1 is outside",
    ),
    "negative class weight": (
        dict(class_weights=np.array([1.0, -0.5, 1.0], np.float32)),
        ValueError,
        r"\[softmax_cross_entropy\] class_weights\[1\]",
    ),
    "NaN class weight": (
        dict(class_weights=np.array([1.0, 1.0, np.nan], np.float32)),
        ValueError,
        r"\[softmax_cross_entropy\] class_weights\[2\]",
    ),
    "inf class weight": (
        dict(class_weights=np.array([np.inf, 1.0, 1.0], np.float32)),
        ValueError,
        r"\[softmax_cross_entropy\] class_weights\[0\]",
    ),
    "row_weights float64": (
        dict(row_weights=np.ones(4)),
        TypeError,
        r"\[softmax_cross_entropy\] row_weights must be float32",
    ),
    "row_weights length": (
        dict(row_weights=np.ones(3, np.float32)),
        ValueError,
        r"\[softmax_cross_entropy\] row_weights has shape",
    ),
    "negative row weight": (
        dict(row_weights=np.array([1.0, 1.0, 1.0, -2.0], np.float32)),
        ValueError,
        r"\[softmax_cross_entropy\] row_weights\[3\]",
    ),
    "smoothing above 1": (dict(label_smoothing=1.5), ValueError, r"\[softmax_cross_entropy\] label_smoothing"),
    "smoothing negative": (dict(label_smoothing=-0.1), ValueError, r"\[softmax_cross_entropy\] label_smoothing"),
    "smoothing NaN": (dict(label_smoothing=float("nan")), ValueError, r"\[softmax_cross_entropy\] label_smoothing"),
}


@pytest.mark.parametrize("case", list(SCE_BAD))
def test_softmax_cross_entropy_rejects_bad_input(device, case):
    over, exc, match = SCE_BAD[case]
    with pytest.raises(exc, match=match):
        _sce_call(device, **over)()


def test_softmax_cross_entropy_rejects_grad_aliasing_logits(device):
    logits = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"\[softmax_cross_entropy\] grad_out shares memory with logits"):
        ops.softmax_cross_entropy(logits, np.zeros(4, np.int32), grad_out=logits, device=device)


def test_softmax_cross_entropy_rejects_grad_aliasing_class_weights(device):
    # Kernel bug (see the report): not checked today, so row 0's gradient overwrites the
    # weights the later rows read, and the loss comes back wrong without an error.
    logits = np.array([[0, 1, 2], [1, 0, 0], [2, 2, 0]], np.float32)
    grad = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"\[softmax_cross_entropy\] grad_out shares memory with class_weights"):
        ops.softmax_cross_entropy(
            logits, np.array([0, 1, 2], np.int32), class_weights=grad[0], grad_out=grad, device=device
        )


def test_softmax_cross_entropy_rejects_grad_aliasing_labels(device):
    # Kernel bug (see the report): labels are range-checked before the kernel runs; a
    # grad_out that overlaps them is then written with gradient bits that the kernel
    # reads back as labels and indexes with. Today that crashes the interpreter (SIGSEGV),
    # so the call runs in a child process.
    code = textwrap.dedent(f"""
        import numpy as np
        from customml import ops
        g = np.zeros((64, 4), np.float32)
        labels = g.reshape(-1).view(np.int32)[4:68]
        logits = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
        try:
            ops.softmax_cross_entropy(logits, labels, class_weights=np.ones(4, np.float32), grad_out=g,
                                      device={device!r})
            print("no error")
        except ValueError as e:
            print("ValueError:", e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"the process died (exit status {proc.returncode}): {proc.stderr[-2000:]}"
    assert "[softmax_cross_entropy] grad_out shares memory with labels" in proc.stdout, proc.stdout


# Soft labels: (batch, classes, logit kind, target kind, weights, seed)
soft_problems = st.tuples(
    sizes,
    sizes,
    st.sampled_from(LOGIT_KINDS),
    st.sampled_from(("dirichlet", "onehot", "sparse", "unnormalized")),
    st.sampled_from(("none",) + ROW_WEIGHTS),
    seeds,
).filter(lambda p: p[0] * p[1] <= 1 << 14)


def build_soft(problem):
    batch, classes, kind, targets, weights, seed = problem
    rng = np.random.default_rng(seed)
    logits = logits_of(rng, (batch, classes), kind)
    if targets == "onehot":
        q = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]
    else:
        q = rng.dirichlet(np.full(classes, 0.5), batch)
        if targets == "sparse":  # mixup of two classes: most targets exactly 0
            q = np.zeros((batch, classes))
            lam = rng.uniform(0, 1, batch)
            q[np.arange(batch), rng.integers(0, classes, batch)] += lam
            q[np.arange(batch), rng.integers(0, classes, batch)] += 1 - lam
        elif targets == "unnormalized":  # PyTorch does not renormalize probability targets
            q = q * rng.uniform(0.1, 3.0, (batch, 1))
    w = None if weights == "none" else row_weights_of(rng, batch, weights)
    return logits, q.astype(np.float32), w


def soft_tolerances(logits, q, row_weights):
    """(loss bound, grad bound) of the soft-label kernels, argued as tolerances() above:
    d_c = fl32(z_c - max) errs by u |d_c|, e^{d_c} (<= 2 ulp on either device: 4u) by
    u e^{d_c} (4 + |d_c|), so log S by u sum_c p_c (4 + |d_c|); q_c d_c formed in float32
    (the CPU) errs by u q_c |d_c|; sums are float64. So a row's loss errs by at most
    u [Q (8 + sum_c p_c (4 + |d_c|)) + 2 sum_c q_c |d_c|] plus float64 roundings; the
    gradient fl32(w / W) (fl32(Q / S) e_c - q_c) by u [Q p_c (7 + |d_c| + the sum's) + 3 |Q p_c - q_c|]."""
    z = logits.astype(np.float64)
    q64 = q.astype(np.float64)
    batch, classes = z.shape
    d = z - z.max(axis=1, keepdims=True)
    p = np.exp(d) / np.exp(d).sum(axis=1, keepdims=True)
    Q = q64.sum(axis=1)
    sum_rel = (p * (4 + np.abs(d))).sum(axis=1)
    row_err = U32 * (Q * (8 + sum_rel) + 2 * (q64 * np.abs(d)).sum(axis=1))
    row_err += (classes + 8) * U64 * (Q * np.abs(np.log(np.exp(d).sum(axis=1))) + (q64 * np.abs(d)).sum(axis=1) + 1)
    w = np.ones(batch) if row_weights is None else row_weights.astype(np.float64)
    total = w.sum()
    if total == 0.0:
        return 0.0, np.zeros_like(z)
    loss_ref, _ = reference.softmax_cross_entropy_soft(logits, q, row_weights=row_weights)
    loss_tol = (w * row_err).sum() / total + 4 * (batch + 4) * U64 * abs(loss_ref)
    qp = Q[:, None] * p
    grad_tol = (w / total)[:, None] * U32 * (qp * (7 + np.abs(d) + sum_rel[:, None]) + 3 * np.abs(qp - q64) + 2 * q64)
    return loss_tol, grad_tol + 2 * TINY32


@given(problem=soft_problems)
@example(problem=(1025, 10, "huge", "dirichlet", "none", 1))
@example(problem=(3, 1025, "mixed", "sparse", "random", 2))
@example(problem=(7, 5, "normal", "onehot", "all_zero", 3))
@example(problem=(1, 1, "normal", "unnormalized", "none", 4))
def test_softmax_cross_entropy_soft_labels_match_reference(isa, device, problem):
    logits, q, w = build_soft(problem)
    grad = nan_filled(logits.shape)
    loss, ret = ops.softmax_cross_entropy(logits, q, row_weights=w, grad_out=grad, device=device)
    assert ret is grad and isinstance(loss, float)
    assert_float32_array(grad, logits.shape, "grad_out")
    loss_ref, grad_ref = reference.softmax_cross_entropy_soft(logits, q, row_weights=w)
    loss_tol, grad_tol = soft_tolerances(logits, q, w)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    loss2, none = ops.softmax_cross_entropy(logits, q, row_weights=w, need_grad=False, device=device)
    assert none is None and loss2 == loss


def test_one_hot_soft_labels_equal_hard_labels(device):
    # Independent of the reference: one-hot targets are the int32 labels' loss.
    rng = np.random.default_rng(7)
    z = rng.standard_normal((50, 13)).astype(np.float32) * 4
    y = rng.integers(0, 13, 50).astype(np.int32)
    q = np.eye(13, dtype=np.float32)[y]
    loss_soft, grad_soft = ops.softmax_cross_entropy(z, q, device=device)
    loss_hard, grad_hard = ops.softmax_cross_entropy(z, y, device=device)
    assert loss_soft == pytest.approx(loss_hard, rel=1e-6)
    np.testing.assert_allclose(grad_soft, grad_hard, rtol=1e-5, atol=1e-8)


def test_soft_labels_propagate_nan_and_reject_bad_input(device):
    z = np.zeros((3, 4), np.float32)
    q = np.full((3, 4), 0.25, np.float32)
    q[1, 2] = np.nan
    loss, grad = ops.softmax_cross_entropy(z, q, device=device)
    assert np.isnan(loss) and np.isnan(grad[1, 2]) and np.isfinite(grad[0]).all()
    with pytest.raises(ValueError, match=r"\[softmax_cross_entropy\] targets"):
        ops.softmax_cross_entropy(z, np.zeros((3, 5), np.float32), device=device)
    with pytest.raises(TypeError, match=r"targets"):
        ops.softmax_cross_entropy(z, np.zeros((3, 4), np.float64), device=device)
    with pytest.raises(ValueError, match=r"label_smoothing apply to int32 labels"):
        ops.softmax_cross_entropy(z, np.zeros((3, 4), np.float32), label_smoothing=0.1, device=device)
