"""Probability targets through fit and evaluate (Keras' CategoricalCrossentropy): a
(n, classes) y for the softmax cross-entropy, checked (finite, >= 0, rows summing to 1,
the shape), trained and evaluated against the NumPy reference on every device, with
sample weights, label smoothing, validation data and an iterable of batches; the metrics
compare predictions with each row's argmax; one-hot rows train exactly as their labels."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
import reference
from support import assert_close

U32 = 2.0**-24
CLASSES, FEATURES = 5, 9


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    # Label distributions with exact zeros in some rows (a zero target adds 0 log 0 = 0).
    q = rng.dirichlet(np.full(CLASSES, 0.7), n)
    q[::7, 1] = 0.0
    q /= q.sum(axis=1, keepdims=True)
    return x, q.astype(np.float32)


def _model(device="cpu", hidden=True, loss="softmax_cross_entropy", lr=0.3, metrics=("accuracy",)):
    layers = [cm.layers.Dense(CLASSES)]
    if hidden:
        layers = [cm.layers.Dense(11, activation="tanh"), cm.layers.Dropout(0.25)] + layers
    model = cm.Sequential(layers, input_dim=FEATURES, seed=4, device=device)
    model.compile(optimizer=cm.optimizers.SGD(lr, momentum=0.5), loss=loss, metrics=list(metrics))
    return model


def _same_model_state(a, b):
    for i, (u, v) in enumerate(zip(a.get_weights(), b.get_weights())):
        assert np.array_equal(u.view(np.uint32), v.view(np.uint32)), f"parameter {i} differs"


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_one_hot_rows_train_as_their_labels_bit_for_bit(device, smoothing):
    x, q = _data()
    labels = q.argmax(axis=1).astype(np.int32)
    onehot = np.eye(CLASSES, dtype=np.float32)[labels]
    w = np.random.default_rng(1).uniform(0.0, 2.0, x.shape[0]).astype(np.float32)
    loss = cm.losses.SoftmaxCrossEntropy(label_smoothing=smoothing)
    histories = []
    models = []
    for y, y_val in ((labels, labels[:20]), (onehot, onehot[:20])):
        model = _model(device, loss=loss, metrics=("accuracy", "confusion_matrix"))
        h = model.fit(x, y, epochs=3, batch_size=16, sample_weight=w, validation_data=(x[:20], y_val), verbose=0)
        histories.append(h.history)
        models.append(model)
    _same_model_state(*models)
    a, b = histories
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert a[key] == b[key], key
    assert all(np.array_equal(u, v) for u, v in zip(a["confusion_matrix"], b["confusion_matrix"]))
    ea, eb = models[0].evaluate(x, labels), models[1].evaluate(x, onehot)
    assert (ea["loss"], ea["accuracy"]) == (eb["loss"], eb["accuracy"])
    assert np.array_equal(ea["confusion_matrix"], eb["confusion_matrix"])


def test_one_hot_integer_and_bool_rows_are_labels_too():
    x, q = _data()
    labels = q.argmax(axis=1)
    a, b, c = _model(), _model(), _model()
    a.fit(x, labels, epochs=2, verbose=0)
    b.fit(x, np.eye(CLASSES, dtype=np.int64)[labels], epochs=2, verbose=0)
    c.fit(x, np.eye(CLASSES, dtype=bool)[labels], epochs=2, verbose=0)
    _same_model_state(a, b)
    _same_model_state(a, c)


def _one_step_reference(x, q, w0, b0, lr, row_weights=None):
    """One full-batch SGD step of a linear softmax classifier on targets q, in float64:
    the loss before the step, the new kernel and bias, and float32 rounding bounds."""
    x64 = x.astype(np.float64)
    logits = x64 @ w0 + b0
    loss, g = reference.softmax_cross_entropy_soft(logits, q, row_weights=row_weights)
    dw, db = x64.T @ g, g.sum(axis=0)
    # The model's float32 logits are within FEATURES 2^-24 (|x| |W| + |b|) of these; the
    # loss moves by at most 2 per unit of logit error (|dl/dz| sums to <= 2 per row: q and
    # softmax each sum to 1). The kernel's gradient is within a few float32 ulps of g
    # (the op's own property tests); dW's float32 sum over n rows adds n 2^-24 |x|^T |g|,
    # and the update rounds once more against |W|.
    logit_err = (FEATURES + 2) * U32 * (np.abs(x64) @ np.abs(w0) + np.abs(b0)).max()
    loss_tol = 2 * logit_err + 1e-6 * abs(loss)
    n = x.shape[0]
    grad_err = np.abs(x64).T @ np.abs(g)
    w_tol = (
        lr * (n + 16) * U32 * grad_err
        + lr * 8 * logit_err * (np.abs(x64).sum(axis=0)[:, None] / n)
        + 2 * U32 * (np.abs(w0) + lr * np.abs(dw))
    )
    b_tol = lr * (n + 16) * U32 * np.abs(g).sum(axis=0) + lr * 8 * logit_err + 2 * U32 * (np.abs(b0) + lr * np.abs(db))
    return loss, w0 - lr * dw, b0 - lr * db, loss_tol, w_tol, b_tol


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_a_step_on_probability_targets_equals_the_numpy_reference(device, weighted, smoothing):
    x, q = _data()
    lr = 0.5
    model = cm.Sequential([cm.layers.Dense(CLASSES)], input_dim=FEATURES, seed=4, device=device)
    model.compile(
        optimizer=cm.optimizers.SGD(lr),
        loss=cm.losses.SoftmaxCrossEntropy(label_smoothing=smoothing),
        metrics=["accuracy"],
    )
    w0, b0 = (p.astype(np.float64) for p in model.get_weights())
    rw = np.random.default_rng(2).uniform(0.0, 3.0, x.shape[0]).astype(np.float32) if weighted else None
    # Label smoothing applies to the rows, as Keras': (1 - eps) q + eps / C, in float32.
    q_eff = (np.float32(1 - smoothing) * q + np.float32(smoothing / CLASSES)) if smoothing else q
    loss, w1, b1, loss_tol, w_tol, b_tol = _one_step_reference(x, q_eff, w0, b0, lr, rw)
    h = model.fit(x, q, epochs=1, batch_size=x.shape[0], shuffle=False, sample_weight=rw, verbose=0)
    got_w, got_b = model.get_weights()
    assert_close(h.history["loss"][0], loss, loss_tol, "loss")
    assert_close(got_w, w1, w_tol, "kernel")
    assert_close(got_b, b1, b_tol, "bias")
    # Accuracy counts the rows whose prediction is the target's argmax (before the step).
    logits0 = x.astype(np.float64) @ w0 + b0
    assert h.history["accuracy"][0] == np.mean(logits0.argmax(axis=1) == q.argmax(axis=1))


def test_evaluate_and_validation_on_probability_targets(device):
    x, q = _data(n=300, seed=3)
    model = _model(device, metrics=("accuracy", "confusion_matrix"))
    h = model.fit(x[:200], q[:200], epochs=4, batch_size=32, validation_data=(x[200:], q[200:]), verbose=0)
    got = model.evaluate(x[200:], q[200:], batch_size=37)
    logits = model.predict(x[200:]).astype(np.float64)
    loss, _ = reference.softmax_cross_entropy_soft(logits, q[200:])
    # evaluate's loss against the reference on the model's own logits: the kernel's
    # float64 sums of float32 terms, a few ulps per row.
    assert_close(got["loss"], loss, 1e-5 * abs(loss), "evaluate loss")
    # Validation evaluates in batches of 1024: the same sums as evaluate's default.
    assert h.history["val_loss"][-1] == model.evaluate(x[200:], q[200:])["loss"]
    truth = q[200:].argmax(axis=1)
    assert got["accuracy"] == np.mean(logits.argmax(axis=1) == truth)
    expected = np.zeros((CLASSES, CLASSES), np.int64)
    np.add.at(expected, (truth, logits.argmax(axis=1)), 1)
    assert np.array_equal(got["confusion_matrix"], expected)
    # Probability targets and labels validate against each other: the same metrics.
    assert model.evaluate(x[200:], truth)["accuracy"] == got["accuracy"]


def test_probability_targets_learn_the_distribution():
    # Targets that are a fixed softmax of a linear function of x: a linear model trained on
    # them approaches that function's probabilities, which labels alone would not give.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, FEATURES)).astype(np.float32)
    true_w = rng.normal(scale=0.5, size=(FEATURES, CLASSES))
    z = x @ true_w
    q = np.exp(z - z.max(axis=1, keepdims=True))
    q = (q / q.sum(axis=1, keepdims=True)).astype(np.float32)
    model = cm.Sequential([cm.layers.Dense(CLASSES)], input_dim=FEATURES, seed=1)
    model.compile(optimizer=cm.optimizers.Adam(0.05), loss="softmax_cross_entropy")
    model.fit(x, q, epochs=30, batch_size=100, verbose=0)
    p = model.predict_proba(x)
    assert np.abs(p - q).max() < 0.03


def test_an_iterable_of_batches_with_probability_targets_equals_arrays(device):
    x, q = _data()
    a, b = _model(device), _model(device)
    a.fit(x, q, epochs=2, batch_size=16, shuffle=False, verbose=0)
    batches = [(x[i : i + 16], q[i : i + 16]) for i in range(0, x.shape[0], 16)]
    b.fit(batches, epochs=2, verbose=0)
    _same_model_state(a, b)


def test_validation_split_takes_the_last_rows_of_probability_targets():
    x, q = _data(n=100)
    a, b = _model(), _model()
    ha = a.fit(x, q, epochs=2, validation_split=0.2, shuffle=False, verbose=0)
    hb = b.fit(x[:80], q[:80], epochs=2, validation_data=(x[80:], q[80:]), shuffle=False, verbose=0)
    _same_model_state(a, b)
    assert ha.history == hb.history


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda q: q * 1.01, r"y row 0 sums to 1\.01.*sum to 1 per row"),
        (lambda q: np.where(np.arange(CLASSES) == 0, -0.5, q + 0.5 / (CLASSES - 1)), r"y must hold probabilities >= 0"),
        (lambda q: np.where(np.arange(q.size).reshape(q.shape) == 7, np.nan, q), r"y contains NaN or inf.*row 1"),
        (lambda q: np.where(np.arange(q.size).reshape(q.shape) == 3, np.inf, q), r"y contains NaN or inf"),
        (lambda q: q[:, :-1], r"y must be 1-D class labels or probability targets of shape \(64, 5\)"),
        (lambda q: q[:-1], r"x has 64 samples but y has 63"),
        (lambda q: q.astype(np.complex64), r"y must be numeric probabilities"),
        (lambda q: q.astype(str), r"y must be numeric probabilities"),
    ],
)
def test_bad_probability_targets_are_refused_naming_the_argument(make, match):
    x, q = _data()
    model = _model()
    before = [p.copy() for p in model.get_weights()]
    with pytest.raises((ValueError, TypeError), match=match):
        model.fit(x, make(q), verbose=0)
    _same_model_state_arrays(before, model.get_weights())


def _same_model_state_arrays(before, after):
    assert all(np.array_equal(u, v) for u, v in zip(before, after))


def test_bad_targets_name_the_validation_data_and_the_batch():
    x, q = _data()
    model = _model()
    with pytest.raises(ValueError, match=r"validation_data y row 0 sums to 2"):
        model.fit(x, q, validation_data=(x, q * 2), verbose=0)
    with pytest.raises(ValueError, match=r"batch 1 y must hold probabilities >= 0"):
        model.fit([(x[:8], q[:8]), (x[8:16], -q[8:16])], verbose=0)
    with pytest.raises(ValueError, match=r"\[evaluate\] y row 0 sums to 0"):
        model.evaluate(x, np.zeros_like(q))


def test_rows_within_the_tolerance_pass():
    x, q = _data()
    q = np.round(q, 4)  # rows now sum to 1 +- 5e-4
    q[:, 0] += 1.0 - q.sum(axis=1) + 9e-4
    _model().fit(x, q, verbose=0)


def test_class_weights_need_labels_and_other_losses_refuse_probabilities():
    x, q = _data()
    model = _model(loss=cm.losses.SoftmaxCrossEntropy(class_weights=[1, 2, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"class_weights need integer labels.*sample_weight"):
        model.fit(x, q, verbose=0)
    # One-hot rows are labels, so class weights apply to them.
    model.fit(x, np.eye(CLASSES, dtype=np.float32)[q.argmax(axis=1)], verbose=0)
    binary = cm.Sequential([cm.layers.Dense(1)], input_dim=FEATURES)
    binary.compile(loss="binary_cross_entropy")
    with pytest.raises(ValueError, match=r"y must be 1-D class labels, got shape \(64, 2\)"):
        binary.fit(x, q[:, :2] / q[:, :2].sum(axis=1, keepdims=True), verbose=0)


def test_the_executor_refuses_probability_targets_for_other_losses():
    x, q = _data()
    model = cm.Sequential([cm.layers.Dense(CLASSES)], input_dim=FEATURES)
    model.compile(loss="mse")
    index = np.arange(4, dtype=np.int64)
    with pytest.raises(ValueError, match=r"probability targets apply to the softmax cross-entropy loss, not mse"):
        model._net.train_batch(x, q, index, None, q)
    with pytest.raises(ValueError, match=r"soft_targets must be a C-contiguous float32 array of shape \(64, 5\)"):
        model._net.evaluate(x, q, 16, q[:, :2].copy())
