"""Compiled metrics (accumulated by the executor, derived in customml.metrics) against
sklearn.metrics on the model's own predictions, on random and real data, on every
device.

Why the tolerances are tiny: the classification statistics are integer counts (the
confusion matrix, the ranks behind ROC AUC), identical to what sklearn counts from the
same predictions, so the metrics differ from sklearn's only by the float64 rounding of
a few divisions and a mean over at most `classes` terms: within 1e-12. The regression
sums are float64 over float32 values (each term exact or within 1 u64), so they differ
from sklearn's float64 sums by at most about n u64 relative; r2 subtracts (sum y)^2 / n
from sum y^2, which magnifies that by sum(y^2) / SS_tot (argued where it is checked).
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest
from sklearn import metrics as skm

import customml as cm
from support import U64

CLASS_TOL = 1e-12  # see the module docstring: counts are exact, only the final ratios round

AVERAGED = [f"{m}_{a}" for m in ("precision", "recall", "f1") for a in ("macro", "micro", "weighted")]
SK_FUNCS = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}


def _sk_metric(name, y, pred, classes):
    """sklearn's value of one of our classification metric names (zero_division=0, our
    convention and sklearn's default value)."""
    if name == "accuracy":
        return skm.accuracy_score(y, pred)
    if name in SK_FUNCS:
        name = f"{name}_{'binary' if classes == 2 else 'macro'}"
    metric, average = name.rsplit("_", 1)
    return SK_FUNCS[metric](y, pred, average=average, zero_division=0)


def _model(inputs, outputs, device, hidden=16, seed=0):
    return cm.Sequential(
        [cm.layers.Dense(hidden, activation="relu"), cm.layers.Dense(outputs)],
        input_dim=inputs,
        device=device,
        seed=seed,
    )


def _check_classification(model, x, y, classes, metrics, batch_size):
    got = model.evaluate(x, y, batch_size=batch_size)
    logits = model.predict(x, batch_size=batch_size)
    pred = (logits[:, 0] > 0).astype(int) if logits.shape[1] == 1 else np.argmax(logits, axis=1)
    for name in metrics:
        if name == "confusion_matrix":
            cmat = got[name]
            assert isinstance(cmat, np.ndarray) and cmat.dtype == np.int64 and cmat.shape == (classes, classes)
            np.testing.assert_array_equal(cmat, skm.confusion_matrix(y, pred, labels=np.arange(classes)))
        elif name == "roc_auc" and logits.shape[1] > 2:
            # One-vs-rest, macro: the softmax probabilities in float64, as the executor
            # forms them (exp may differ by an ulp between libm and NumPy, which would
            # only matter for two rows tied to within an ulp; there are none here).
            l64 = logits.astype(np.float64)
            e = np.exp(l64 - l64.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
            want = skm.roc_auc_score(y, prob, multi_class="ovr", average="macro")
            assert abs(got[name] - want) <= CLASS_TOL, (name, got[name], want)
        elif name == "roc_auc":
            # The score whose ranks we use: the logit, or logit_1 - logit_0 (monotone in
            # P(class 1)) in float64, as the executor forms it.
            l64 = logits.astype(np.float64)
            score = l64[:, 0] if logits.shape[1] == 1 else l64[:, 1] - l64[:, 0]
            # Exact: integer rank counts on both sides, one division each.
            assert abs(got[name] - skm.roc_auc_score(y, score)) <= CLASS_TOL, name
        else:
            want = _sk_metric(name, y, pred, classes)
            assert isinstance(got[name], float)
            assert abs(got[name] - want) <= CLASS_TOL, (name, got[name], want)
    return got


@pytest.mark.parametrize("classes", [3, 7])
def test_multiclass_metrics_match_sklearn_on_random_data(device, classes):
    rng = np.random.default_rng(classes)
    x = rng.normal(size=(501, 6)).astype(np.float32)
    y = rng.integers(0, classes, 501)
    model = _model(6, classes, device)
    metrics = ["accuracy", "precision", "recall", "f1", *AVERAGED, "confusion_matrix"]
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", metrics=metrics)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    # batch 100 leaves a short last batch (the statistics add across batches)
    _check_classification(model, x, y, classes, metrics, batch_size=100)


def test_macro_averages_over_present_classes_like_sklearn(device):
    # An untrained model that predicts class 0 everywhere and labels without class 3:
    # sklearn's macro averages over the labels in y_true or y_pred (here 0, 1, 2), so
    # must ours, and precision of never-predicted classes is 0 (zero_division).
    model = cm.Sequential([cm.layers.Dense(4)], input_dim=2, device=device, seed=0)
    model.compile(
        loss="softmax_cross_entropy",
        metrics=["precision_macro", "recall_macro", "f1_macro", "f1_weighted", "confusion_matrix"],
    )
    model.set_weights([np.zeros((2, 4), np.float32), np.array([1, 0, 0, 0], np.float32)])
    x = np.ones((9, 2), np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1])
    got = _check_classification(
        model, x, y, 4, ["precision_macro", "recall_macro", "f1_macro", "f1_weighted", "confusion_matrix"], batch_size=4
    )
    assert got["confusion_matrix"][:, 0].sum() == 9


@pytest.mark.parametrize("loss, outputs", [("binary_cross_entropy", 1), ("softmax_cross_entropy", 2)])
def test_binary_metrics_and_roc_auc_match_sklearn_on_random_data(device, loss, outputs):
    rng = np.random.default_rng(outputs)
    x = rng.normal(size=(700, 5)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=700) > 0).astype(int)
    # integer-valued inputs and few hidden units give tied scores: the tie rule (1/2) counts
    x[:350] = np.round(x[:350])
    model = _model(5, outputs, device, hidden=3)
    metrics = [
        "accuracy",
        "precision",
        "recall",
        "f1",
        "precision_binary",
        "recall_binary",
        "f1_binary",
        "f1_macro",
        "f1_micro",
        "roc_auc",
        "confusion_matrix",
    ]
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss=loss, metrics=metrics)
    model.fit(x, y, epochs=2, batch_size=50, verbose=0)
    _check_classification(model, x, y, 2, metrics, batch_size=128)


def test_metrics_match_sklearn_on_digits(device):
    (x, y), (xt, yt) = cm.datasets.load("digits")
    model = _model(x.shape[1], 10, device, hidden=32)
    metrics = [
        "accuracy",
        "f1",
        "precision_macro",
        "recall_macro",
        "f1_weighted",
        "f1_micro",
        "confusion_matrix",
        "roc_auc",
    ]
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", metrics=metrics)
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0, validation_data=(xt, yt))
    got = _check_classification(model, xt, yt, 10, metrics, batch_size=1024)
    # fit's val_ twins are evaluate's numbers on the same data and weights (the last epoch)
    for name in metrics:
        last = history.history[f"val_{name}"][-1]
        if name == "confusion_matrix":
            np.testing.assert_array_equal(last, got[name])
        else:
            assert last == got[name], name
    assert len(history.history["f1"]) == 2 and len(history.history["confusion_matrix"]) == 2


def test_metrics_match_sklearn_on_breast_cancer(device):
    (x, y), (xt, yt) = cm.datasets.load("breast_cancer")
    model = _model(x.shape[1], 1, device, hidden=8)
    metrics = ["accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"]
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="binary_cross_entropy", metrics=metrics)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    got = _check_classification(model, xt, yt, 2, metrics, batch_size=17)
    assert got["roc_auc"] > 0.9  # a real classifier, not a degenerate one


def _check_regression(model, x, y, batch_size):
    got = model.evaluate(x, y, batch_size=batch_size)
    p = model.predict(x, batch_size=batch_size).astype(np.float64)
    y = y.astype(np.float64)
    n = y.shape[0]
    # mae and rmse: float64 sums of n terms, each within 1 u64: relative error <= (n + 2) u64.
    # sklearn's root_mean_squared_error (1.4+) is the mean of the per-output roots
    rmse = np.sqrt(skm.mean_squared_error(y, p, multioutput="raw_values")).mean()
    for name, want in (("mae", skm.mean_absolute_error(y, p)), ("rmse", rmse)):
        assert abs(got[name] - want) <= (n + 4) * U64 * want, name
    # r2 per output = 1 - SS_res / SS_tot with SS_tot = sum d^2 - (sum d)^2 / n, where
    # d = y - y[0] (evaluate's shift: the first target row): the moments carry
    # (n + 4) u64 of sum d^2 each, so SS_tot is within about 3 (n + 4) u64 sum(d^2), and
    # r2 within that relative to SS_tot, times |1 - r2| (plus sklearn's own rounding).
    d = y - y[0]
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    r2_out = skm.r2_score(y, p, multioutput="raw_values")
    tol = np.mean(3 * (n + 4) * U64 * (d * d).sum(0) / ss_tot * (np.abs(1 - r2_out) + 1))
    assert abs(got["r2"] - skm.r2_score(y, p)) <= tol
    return got


def test_regression_metrics_match_sklearn_on_random_data(device):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(777, 4)).astype(np.float32)
    # offsets and scales differ per output, so averaging per output (uniform_average)
    # is distinguishable from pooling all elements
    y = (x[:, :3] * [1.0, 5.0, 0.1] + [3.0, -20.0, 0.5] + rng.normal(size=(777, 3))).astype(np.float32)
    model = _model(4, 3, device)
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="mse", metrics=["mae", "rmse", "r2"])
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0, validation_split=0.2)
    assert set(history.history) == {"loss", "mae", "rmse", "r2", "val_loss", "val_mae", "val_rmse", "val_r2"}
    got = _check_regression(model, x, y, batch_size=100)
    # mse is the mean over every element; rmse averages the per-output roots (sklearn)
    assert got["rmse"] != pytest.approx(np.sqrt(got["loss"]), rel=1e-6)


def test_r2_of_targets_with_a_large_offset(device):
    # Targets 1e6 + N(0, 1): raw moments would cancel sum y^2 ~ n 1e12 down to SS_tot ~ n,
    # losing 12 of float64's 16 digits (measured for these data: SS_tot off by 2e-4
    # relative, 1e8 times the tolerance); the executor sums y - y_first instead, so r2
    # keeps the tolerance of _check_regression.
    rng = np.random.default_rng(9)
    x = rng.normal(size=(600, 2)).astype(np.float32)
    y = (1e6 + x[:, :1] + 0.5 * rng.normal(size=(600, 1))).astype(np.float32)
    model = cm.Sequential([cm.layers.Dense(1)], input_dim=2, device=device, seed=0)
    model.compile(loss="mse", metrics=["mae", "rmse", "r2"])
    model.set_weights([np.array([[1.0], [0.0]], np.float32), np.array([1e6], np.float32)])
    got = _check_regression(model, x, y, batch_size=128)
    assert 0.5 < got["r2"] < 0.95


def test_r2_of_a_constant_target_follows_sklearn(device):
    # SS_tot = 0: sklearn (force_finite) gives 1 for an exact prediction, else 0.
    model = cm.Sequential([cm.layers.Dense(2)], input_dim=1, device=device, seed=0)
    model.compile(loss="mse", metrics=["r2"])
    model.set_weights([np.zeros((1, 2), np.float32), np.array([2.0, 1.0], np.float32)])
    x = np.zeros((10, 1), np.float32)
    y = np.tile(np.array([[2.0, 3.0]], np.float32), (10, 1))
    assert model.evaluate(x, y)["r2"] == skm.r2_score(y, model.predict(x)) == 0.5


def test_ovr_roc_auc_on_random_data_and_a_missing_class(device):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (np.digitize(x[:, 0] + 0.5 * rng.normal(size=300), [-0.5, 0.5])).astype(int)
    model = _model(4, 4, device, hidden=6)  # four outputs, three classes in y
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", metrics=["roc_auc"])
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    # sklearn refuses labels missing a class of y_score; the metric is NaN, as for one class.
    assert np.isnan(model.evaluate(x, y)["roc_auc"])
    y[:4] = 3
    _check_classification(model, x, y, 4, ["roc_auc"], batch_size=64)


def test_roc_auc_of_one_class_is_nan(device):
    # sklearn raises for a single class; a metric inside fit reports NaN instead.
    model = cm.Sequential([cm.layers.Dense(1)], input_dim=2, device=device, seed=0)
    model.compile(loss="binary_cross_entropy", metrics=["roc_auc"])
    assert np.isnan(model.evaluate(np.ones((5, 2), np.float32), np.ones(5, int))["roc_auc"])


def test_metrics_survive_save_and_load(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    model = _model(3, 1, "cpu")
    model.compile(loss="binary_cross_entropy", metrics=["f1", "roc_auc", "confusion_matrix"])
    model.save(tmp_path / "m.cml")
    loaded = cm.load(tmp_path / "m.cml")
    a, b = model.evaluate(x, y), loaded.evaluate(x, y)
    assert a.keys() == b.keys() == {"loss", "f1", "roc_auc", "confusion_matrix"}
    assert a["roc_auc"] == b["roc_auc"] and (a["confusion_matrix"] == b["confusion_matrix"]).all()


def test_only_requested_statistics_are_accumulated():
    model = _model(3, 4, "cpu")
    model.compile(loss="softmax_cross_entropy", metrics=["accuracy"])
    net = model._net
    assert net.confusion_matrix().size == 0 and net.regression_stats().size == 0 and np.isnan(net.roc_auc())
    model.compile(loss="softmax_cross_entropy", metrics=["f1_macro"])
    assert net.confusion_matrix().shape == (4, 4)


@pytest.mark.parametrize(
    "loss, metrics, match",
    [
        ("softmax_cross_entropy", ["f2"], r"unknown metric 'f2'; available: accuracy, precision"),
        ("softmax_cross_entropy", ["F1"], r"unknown metric 'F1'"),
        ("softmax_cross_entropy", [3], r"unknown metric 3"),
        ("softmax_cross_entropy", ["f1", "f1"], r"lists a name twice"),
        ("mse", ["accuracy"], r"metric 'accuracy' needs a classification loss, not 'mse'"),
        ("mse", ["f1_macro"], r"metric 'f1_macro' needs a classification loss"),
        ("mse", ["roc_auc"], r"metric 'roc_auc' needs a classification loss"),
        ("mse", ["confusion_matrix"], r"metric 'confusion_matrix' needs a classification loss"),
        ("softmax_cross_entropy", ["r2"], r"metric 'r2' needs the loss 'mse', not 'softmax_cross_entropy'"),
        ("binary_cross_entropy", ["mae"], r"metric 'mae' needs the loss 'mse'"),
        ("softmax_cross_entropy", ["f1_binary"], r"metric 'f1_binary' needs a binary classifier"),
    ],
)
def test_bad_metrics_are_rejected(loss, metrics, match):
    model = _model(2, 3, "cpu")
    model.compile(loss="softmax_cross_entropy", metrics=["accuracy"])
    with pytest.raises(ValueError, match=match):
        model.compile(loss=loss, metrics=metrics)
    assert model._metrics == ("accuracy",)  # a refused compile leaves the model as it was


def test_binary_metric_checked_when_an_unbuilt_model_is_built():
    model = cm.Sequential([cm.layers.Dense(3)], seed=0)
    model.compile(loss="softmax_cross_entropy", metrics=["f1_binary"])
    with pytest.raises(ValueError, match="f1_binary"):
        model.fit(np.zeros((4, 2), np.float32), np.zeros(4, int), verbose=0)


def test_confusion_matrix_in_history_and_displays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = _model(3, 3, "cpu")
    model.compile(loss="softmax_cross_entropy", metrics=["accuracy", "confusion_matrix"])
    out = io.StringIO()
    with redirect_stdout(out):
        history = model.fit(x, y, epochs=2, verbose=2, validation_split=0.25)
    assert "accuracy" in out.getvalue() and "confusion_matrix" not in out.getvalue()
    for key in ("confusion_matrix", "val_confusion_matrix"):
        assert [m.shape for m in history.history[key]] == [(3, 3), (3, 3)]
    assert history.history["confusion_matrix"][0].sum() == 48 and history.history["val_confusion_matrix"][0].sum() == 16
    # CSVLogger writes the matrix as a JSON nested list in one cell
    log = tmp_path / "log.csv"
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cm.callbacks.CSVLogger(log)])
    header, row = log.read_text().splitlines()
    cell = dict(zip(header.split(","), next(csv.reader([row]))))["confusion_matrix"]
    np.testing.assert_array_equal(json.loads(cell), model.history.history["confusion_matrix"][0])
    pytest.importorskip("matplotlib")
    history.plot(tmp_path / "h.png")  # plots the scalar metrics, skips the matrices
