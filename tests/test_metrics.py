"""count_correct, confusion_matrix_update and regression_stats_update (the per-batch
statistics of the metrics) against tests/reference.py on every device."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import LOGIT_KINDS, U64, assert_close, logits_of, make_values, seeds, sizes

# ------------------------------------------------------------------------------ count_correct

# (batch, classes, logit kind, seed); classes 1 is the binary rule.
cc_problems = st.tuples(sizes, sizes, st.sampled_from(LOGIT_KINDS), seeds).filter(lambda p: p[0] * p[1] <= 1 << 15)


@given(problem=cc_problems)
@example(problem=(50, 1, "ints", 1))
@example(problem=(50, 3, "ints", 2))
def test_count_correct_matches_reference(isa, device, problem):
    batch, classes, kind, seed = problem
    rng = np.random.default_rng(seed)
    logits = logits_of(rng, (batch, classes), kind)
    if classes == 1:
        labels = rng.integers(0, 2, batch).astype(np.int32)
    else:
        labels = rng.integers(0, classes, batch).astype(np.int32)
        # make the label the first of several tied maxima in some rows, a later tie in others
        if batch and classes > 1:
            ties = rng.random(batch) < 0.3
            logits[ties, :] = logits[ties, 0:1]
            labels[ties] = rng.choice([0, classes - 1], int(ties.sum()))
    got = ops.count_correct(logits, labels, device=device)
    assert isinstance(got, int)
    assert got == reference.count_correct(logits, labels)
    assert ops.count_correct(logits, labels, device=device) == got


def test_count_correct_empty_batch(device):
    # no rows, none correct (a NumPy (0, C) array has zero strides and is C-contiguous)
    assert ops.count_correct(np.zeros((0, 3), np.float32), np.zeros(0, np.int32), device=device) == 0


def test_count_correct_first_maximum_wins(isa, device):
    logits = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [-0.0, 0.0, -1.0], [0.0, -0.0, -1.0]], np.float32)
    # argmax is 1, 0, 0, 0 (-0.0 == 0.0: the first wins)
    assert ops.count_correct(logits, np.array([1, 0, 0, 0], np.int32), device=device) == 4
    assert ops.count_correct(logits, np.array([2, 1, 1, 1], np.int32), device=device) == 0


def test_count_correct_one_column(isa, device):
    # logit > 0 predicts class 1 (any nonzero label); 0 and -0.0 predict class 0
    logits = np.array([[0.5], [-0.5], [0.0], [-0.0], [1e-45], [-1e-45]], np.float32)
    assert ops.count_correct(logits, np.array([1, 0, 0, 0, 1, 0], np.int32), device=device) == 6
    assert ops.count_correct(logits, np.array([0, 1, 1, 1, 0, 1], np.int32), device=device) == 0


CC_BAD = {
    "logits float64": (np.zeros((4, 3)), np.zeros(4, np.int32), TypeError, r"\[count_correct\] logits must be float32"),
    "labels int64": (
        np.zeros((4, 3), np.float32),
        np.zeros(4, np.int64),
        TypeError,
        r"\[count_correct\] labels must be int32",
    ),
    "logits 1-D": (np.zeros(4, np.float32), np.zeros(4, np.int32), ValueError, r"\[count_correct\] logits must be 2-D"),
    "labels length": (
        np.zeros((4, 3), np.float32),
        np.zeros(3, np.int32),
        ValueError,
        r"\[count_correct\] labels has shape",
    ),
    "no classes": (
        np.zeros((4, 0), np.float32),
        np.zeros(4, np.int32),
        ValueError,
        r"\[count_correct\] logits has 0 columns",
    ),
    "logits transposed": (
        np.zeros((3, 4), np.float32).T,
        np.zeros(4, np.int32),
        ValueError,
        r"\[count_correct\] logits must be C-contiguous",
    ),
    # Validation gap (see the report): softmax_cross_entropy rejects these labels with
    # IndexError, count_correct silently counts the rows as wrong.
    "label too large": (
        np.zeros((4, 3), np.float32),
        np.array([0, 3, 1, 0], np.int32),
        IndexError,
        r"\[count_correct\] labels\[1\] = 3 is outside",
    ),
    "label negative": (
        np.zeros((4, 3), np.float32),
        np.array([0, 1, -1, 0], np.int32),
        IndexError,
        r"\[count_correct\] labels\[2\] = -1 is outside",
    ),
}


@pytest.mark.parametrize("case", list(CC_BAD))
def test_count_correct_rejects_bad_input(device, case):
    logits, labels, exc, match = CC_BAD[case]
    with pytest.raises(exc, match=match):
        ops.count_correct(logits, labels, device=device)


# ------------------------------------------------------------------------------ confusion_matrix_update

KINDS = ("normal", "ints", "tiny", "huge", "mixed")

# (batch, columns, value kind, seed); one column is the binary rule (logit > 0).
problems = st.tuples(sizes, sizes, st.sampled_from(KINDS), seeds).filter(lambda p: p[0] * p[1] <= 1 << 15)


@given(problem=problems)
@example(problem=(257, 1, "ints", 1))
@example(problem=(50, 3, "ints", 2))
@example(problem=(33, 40, "normal", 3))  # more classes than a warp's lanes
def test_confusion_matrix_update_matches_reference(device, problem):
    batch, k, kind, seed = problem
    rng = np.random.default_rng(seed)
    logits = make_values(rng, (batch, k), kind)
    classes = 2 if k == 1 else k
    labels = rng.integers(0, classes, batch).astype(np.int32)
    if k > 1:
        # ties: the first maximum wins, as numpy.argmax
        ties = rng.random(batch) < 0.3
        logits[ties, :] = logits[ties, 0:1]
    # Start from non-zero counts: the op adds, it does not overwrite.
    start = rng.integers(0, 1000, (classes, classes)).astype(np.int64)
    counts = start.copy()
    got = ops.confusion_matrix_update(counts, logits, labels, device=device)
    assert got is counts and counts.dtype == np.int64 and counts.shape == (classes, classes)
    # Integer counts are exact whatever order the device adds them in: equality.
    np.testing.assert_array_equal(counts, reference.confusion_matrix_update(start, logits, labels))


def test_confusion_matrix_update_empty_batch(device):
    counts = np.ones((3, 3), np.int64)
    ops.confusion_matrix_update(counts, np.zeros((0, 3), np.float32), np.zeros(0, np.int32), device=device)
    np.testing.assert_array_equal(counts, np.ones((3, 3)))


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (dict(counts=np.zeros((3, 3), np.int32)), TypeError, "counts must be int64"),
        (dict(counts=np.zeros((2, 3), np.int64)), ValueError, r"counts has shape \(2, 3\), expected \(3, 3\)"),
        (dict(labels=np.array([0, 3], np.int32)), IndexError, r"labels\[1\] = 3 is outside \[0, 3\)"),
        (dict(labels=np.array([0], np.int32)), ValueError, "labels has shape"),
    ],
)
def test_confusion_matrix_update_rejects(device, bad, error, match):
    args = dict(
        counts=np.zeros((3, 3), np.int64), logits=np.zeros((2, 3), np.float32), labels=np.array([0, 1], np.int32)
    )
    args.update(bad)
    with pytest.raises(error, match=r"\[confusion_matrix_update\] " + match):
        ops.confusion_matrix_update(args["counts"], args["logits"], args["labels"], device=device)


@given(problem=problems)
@example(problem=(257, 1, "normal", 1))
@example(problem=(1, 300, "huge", 2))  # more columns than a block's threads
def test_regression_stats_update_matches_reference(device, problem):
    batch, outputs, kind, seed = problem
    rng = np.random.default_rng(seed)
    # "huge" stays below 1e150 when squared in float64: no overflow in the reference.
    pred = make_values(rng, (batch, outputs), kind)
    target = make_values(rng, (batch, outputs), kind)
    shift = target[0].astype(np.float64) if rng.random() < 0.5 else rng.normal(size=outputs)
    start = rng.normal(size=(4, outputs))
    stats = start.copy()
    got = ops.regression_stats_update(stats, pred, target, shift, device=device)
    assert got is stats and stats.dtype == np.float64 and stats.shape == (4, outputs)
    want = reference.regression_stats_update(start, pred, target, shift)
    # Each term (|e|, e^2, d, d^2 from float32 values and a float64 shift) is within
    # 3 u64 of its magnitude in float64, and the reference adds in another order: each
    # sum is within (batch + 4) u64 of the sum of the magnitudes of its terms (plus the
    # start value's).
    y = target.astype(np.float64)
    e = pred.astype(np.float64) - y
    d = y - shift
    mags = np.abs(start) + np.stack([np.abs(e).sum(0), (e * e).sum(0), np.abs(d).sum(0), (d * d).sum(0)])
    assert_close(stats, want, (batch + 4) * U64 * mags, "stats")


def test_regression_stats_update_same_bits_on_every_device(device):
    # Rows are added in order on every device (no float atomics): the same bits as cpu.
    rng = np.random.default_rng(7)
    pred = rng.normal(size=(1000, 3)).astype(np.float32)
    target = rng.normal(size=(1000, 3)).astype(np.float32)
    shift = target[0].astype(np.float64)
    a = ops.regression_stats_update(np.zeros((4, 3)), pred, target, shift, device="cpu")
    b = ops.regression_stats_update(np.zeros((4, 3)), pred, target, shift, device=device)
    assert a.tobytes() == b.tobytes()


def test_regression_stats_update_rejects(device):
    p = np.zeros((2, 3), np.float32)
    s = np.zeros(3)
    with pytest.raises(TypeError, match=r"\[regression_stats_update\] stats must be float64"):
        ops.regression_stats_update(np.zeros((4, 3), np.float32), p, p, s, device=device)
    with pytest.raises(ValueError, match=r"\[regression_stats_update\] stats has shape \(3, 3\), expected \(4, 3\)"):
        ops.regression_stats_update(np.zeros((3, 3)), p, p, s, device=device)
    with pytest.raises(ValueError, match=r"\[regression_stats_update\] target has shape"):
        ops.regression_stats_update(np.zeros((4, 3)), p, np.zeros((3, 3), np.float32), s, device=device)
    with pytest.raises(TypeError, match=r"\[regression_stats_update\] shift must be float64"):
        ops.regression_stats_update(np.zeros((4, 3)), p, p, s.astype(np.float32), device=device)
    with pytest.raises(ValueError, match=r"\[regression_stats_update\] shift has shape \(2,\), expected \(3,\)"):
        ops.regression_stats_update(np.zeros((4, 3)), p, p, np.zeros(2), device=device)
