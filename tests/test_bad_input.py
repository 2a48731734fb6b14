"""Malformed input: every bad argument raises ValueError, TypeError or IndexError with a
message naming it, nothing crashes, and the model is untouched (after each error a
predict gives bit-identical results to the one before). Then the conversions that
must work: float64 and list features, int64 / uint8 / bool / (n, 1) labels.
"""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm

ERRORS = (ValueError, TypeError, IndexError)

N, D, C = 24, 4, 3


def _xy(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = rng.integers(0, C, N).astype(np.int32)
    return x, y


def _classifier(compile=True):
    model = cm.Sequential([cm.layers.Dense(8, activation="relu"), cm.layers.Dense(C)], input_dim=D, seed=0)
    if compile:
        model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", metrics=["accuracy"])
    return model


def _regressor(outputs=2):
    model = cm.Sequential([cm.layers.Dense(8, activation="relu"), cm.layers.Dense(outputs)], input_dim=D, seed=0)
    model.compile(optimizer="sgd", loss="mse")
    return model


def _binary():
    model = cm.Sequential([cm.layers.Dense(8, activation="relu"), cm.layers.Dense(1)], input_dim=D, seed=0)
    model.compile(optimizer="adam", loss="binary_cross_entropy", metrics=["accuracy"])
    return model


def _expect_error(model, call, match, types=ERRORS):
    """call(model) raises one of ``types`` matching ``match``; afterwards the model
    still predicts, with bit-identical output and weights."""
    x, _ = _xy(1)
    before = model.predict(x)
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(types, match=match):
        call(model)
    after = model.predict(x)
    assert after.shape == before.shape and after.dtype == np.float32
    assert after.tobytes() == before.tobytes(), "a rejected call changed the model"
    for w, v in zip(model.get_weights(), weights):
        assert w.tobytes() == v.tobytes()


X, Y = _xy()
X_NAN = X.copy()
X_NAN[3, 2] = np.nan
X_INF = X.copy()
X_INF[5, 0] = -np.inf

# id: (model factory, call, message regex)
CASES = {
    # wrong number of features
    "fit-features": (_classifier, lambda m: m.fit(X[:, :3], Y, verbose=0), r"x has 3 features.*expects 4"),
    "evaluate-features": (_classifier, lambda m: m.evaluate(np.ones((N, 5), np.float32), Y), r"x has 5 features"),
    "predict-features": (_classifier, lambda m: m.predict(np.ones((2, 5), np.float32)), r"x has 5 features"),
    "predict-features-f64": (_classifier, lambda m: m.predict(np.ones((2, 3))), r"x has 3 features"),
    "val-features": (
        _classifier,
        lambda m: m.fit(X, Y, validation_data=(X[:, :3], Y), verbose=0),
        r"validation_data x has 3 features",
    ),
    # lengths
    "fit-length": (_classifier, lambda m: m.fit(X, Y[:-1], verbose=0), r"x has 24 samples but y has 23"),
    "evaluate-length": (_classifier, lambda m: m.evaluate(X[:5], Y), r"x has 5 samples but y has 24"),
    "val-length": (
        _classifier,
        lambda m: m.fit(X, Y, validation_data=(X, Y[:3]), verbose=0),
        r"validation_data y has 3",
    ),
    "y-scalar": (_classifier, lambda m: m.fit(X, 1, verbose=0), r"y must be an array"),
    # labels out of range
    "label-negative": (
        _classifier,
        lambda m: m.fit(X, np.where(np.arange(N) == 7, -1, Y), verbose=0),
        r"y contains label .*-1.* outside \[0, 3\)",
    ),
    "label-too-large": (
        _classifier,
        lambda m: m.fit(X, np.where(np.arange(N) == 7, 3, Y), verbose=0),
        r"y contains label .*3.* outside \[0, 3\)",
    ),
    # 2**32 + 1 would pass as label 1 if it were cast to int32 before the check
    "label-int64-wraps": (
        _classifier,
        lambda m: m.fit(X, _with(Y.astype(np.int64), 7, 2**32 + 1), verbose=0),
        r"y contains label .*4294967297",
    ),
    "label-uint64-huge": (
        _classifier,
        lambda m: m.evaluate(X, _with(Y.astype(np.uint64), 7, 2**63)),
        r"y contains label",
    ),
    "label-evaluate": (_classifier, lambda m: m.evaluate(X, Y + 1), r"y contains label .*3"),
    "label-val": (
        _classifier,
        lambda m: m.fit(X, Y, validation_data=(X, Y - 1), verbose=0),
        r"validation_data y contains label .*-1",
    ),
    "label-binary-2": (
        _binary,
        lambda m: m.fit(X, np.where(np.arange(N) == 7, 2, Y % 2), verbose=0),
        r"y contains label .*2.* outside \[0, 2\)",
    ),
    "label-binary-neg": (_binary, lambda m: m.evaluate(X, -(Y % 2)), r"y contains label .*-1"),
    # NaN / inf
    "x-nan": (_classifier, lambda m: m.fit(X_NAN, Y, verbose=0), r"x contains NaN or inf.*\(3, 2\)"),
    "x-inf": (_classifier, lambda m: m.fit(X_INF, Y, verbose=0), r"x contains NaN or inf.*\(5, 0\)"),
    "x-nan-f64-list": (
        _classifier,
        lambda m: m.fit(X_NAN.astype(np.float64).tolist(), Y, verbose=0),
        r"x contains NaN",
    ),
    "y-mse-nan": (
        _regressor,
        lambda m: m.fit(X, np.where(np.arange(2 * N).reshape(N, 2) == 9, np.nan, 1.0), verbose=0),
        r"y contains NaN or inf",
    ),
    "y-mse-inf": (_regressor, lambda m: m.evaluate(X, np.full((N, 2), np.inf)), r"y contains NaN or inf"),
    "y-label-nan": (
        _classifier,
        lambda m: m.fit(X, np.where(np.arange(N) == 2, np.nan, Y), verbose=0),
        r"y contains NaN",
    ),
    "val-x-nan": (
        _classifier,
        lambda m: m.fit(X, Y, validation_data=(X_NAN, Y), verbose=0),
        r"validation_data x contains NaN",
    ),
    "val-y-mse-nan": (
        _regressor,
        lambda m: m.fit(X, np.ones((N, 2)), validation_data=(X, np.full((N, 2), np.nan)), verbose=0),
        r"validation_data y contains NaN",
    ),
    # dimensions
    "x-1d-fit": (_classifier, lambda m: m.fit(X[:, 0], Y, verbose=0), r"x must be 2-D.*\(24,\)"),
    "x-1d-predict": (_classifier, lambda m: m.predict(np.ones(4, np.float32)), r"x must be 2-D"),
    "x-3d-fit": (_classifier, lambda m: m.fit(X.reshape(N, 2, 2), Y, verbose=0), r"x must be 2-D.*\(24, 2, 2\)"),
    "x-3d-predict": (_classifier, lambda m: m.predict(X.reshape(2, N // 2, D)), r"x must be 2-D"),
    "x-3d-evaluate": (_classifier, lambda m: m.evaluate(X.reshape(N, 2, 2), Y), r"x must be 2-D"),
    "x-scalar": (_classifier, lambda m: m.predict(np.float32(1.0)), r"x must be 2-D"),
    "x-empty-fit": (
        _classifier,
        lambda m: m.fit(np.empty((0, D), np.float32), np.empty(0, np.int32), verbose=0),
        r"x is empty",
    ),
    "x-empty-predict": (_classifier, lambda m: m.predict(np.empty((0, D), np.float32)), r"x is empty"),
    "x-empty-evaluate": (
        _classifier,
        lambda m: m.evaluate(np.empty((0, D), np.float32), np.empty(0, np.int32)),
        r"x is empty",
    ),
    "val-empty": (
        _classifier,
        lambda m: m.fit(X, Y, validation_data=(np.empty((0, D)), np.empty(0)), verbose=0),
        r"validation_data x is empty",
    ),
    # batch_size and epochs
    "fit-batch-0": (_classifier, lambda m: m.fit(X, Y, batch_size=0, verbose=0), r"batch_size"),
    "fit-batch-neg": (_classifier, lambda m: m.fit(X, Y, batch_size=-1, verbose=0), r"batch_size"),
    "fit-batch-float": (_classifier, lambda m: m.fit(X, Y, batch_size=8.0, verbose=0), r"batch_size"),
    "evaluate-batch-0": (_classifier, lambda m: m.evaluate(X, Y, batch_size=0), r"batch_size"),
    "evaluate-batch-neg": (_classifier, lambda m: m.evaluate(X, Y, batch_size=-1), r"batch_size"),
    "predict-batch-0": (_classifier, lambda m: m.predict(X, batch_size=0), r"batch_size"),
    "predict-batch-neg": (_classifier, lambda m: m.predict(X, batch_size=-1), r"batch_size"),
    "predict-batch-float": (_classifier, lambda m: m.predict(X, batch_size=1024.0), r"batch_size must be an integer"),
    "predict-batch-str": (_classifier, lambda m: m.predict(X, batch_size="8"), r"batch_size"),
    "epochs-neg": (_classifier, lambda m: m.fit(X, Y, epochs=-1, verbose=0), r"epochs"),
    "epochs-float": (_classifier, lambda m: m.fit(X, Y, epochs=2.5, verbose=0), r"epochs"),
    "epochs-str": (_classifier, lambda m: m.fit(X, Y, epochs="2", verbose=0), r"epochs"),
    "epochs-bool": (_classifier, lambda m: m.fit(X, Y, epochs=True, verbose=0), r"epochs"),
    "verbose": (_classifier, lambda m: m.fit(X, Y, verbose=5), r"verbose"),
    # names
    "loss-name": (_classifier, lambda m: m.compile(loss="hinge"), r"loss 'hinge'"),
    "optimizer-name": (_classifier, lambda m: m.compile(optimizer="rmsprop"), r"optimizer 'rmsprop'"),
    "optimizer-type": (_classifier, lambda m: m.compile(optimizer=0.01), r"optimizer"),
    "metric-name": (_classifier, lambda m: m.compile(metrics=["f2"]), r"metric 'f2'"),
    "accuracy-with-mse": (_classifier, lambda m: m.compile(loss="mse", metrics=["accuracy"]), r"accuracy.*mse"),
    "bce-many-outputs": (_classifier, lambda m: m.compile(loss="binary_cross_entropy"), r"one output"),
    # predict(out=)
    "out-shape": (_classifier, lambda m: m.predict(X, out=np.empty((N, C + 1), np.float32)), r"out has shape"),
    "out-rows": (_classifier, lambda m: m.predict(X, out=np.empty((N - 1, C), np.float32)), r"out has shape"),
    "out-dtype": (_classifier, lambda m: m.predict(X, out=np.empty((N, C), np.float64)), r"out must be float32"),
    "out-int": (_classifier, lambda m: m.predict(X, out=np.empty((N, C), np.int32)), r"out must be float32"),
    "out-noncontig": (
        _classifier,
        lambda m: m.predict(X, out=np.empty((N, 2 * C), np.float32)[:, ::2]),
        r"out .*contiguous",
    ),
    "out-fortran": (
        _classifier,
        lambda m: m.predict(X, out=np.empty((N, C), np.float32, order="F")),
        r"out .*contiguous",
    ),
    "out-overlap": (_classifier, lambda m: _overlap(m), r"out shares memory with x"),
    "out-readonly": (_classifier, lambda m: m.predict(X, out=_readonly((N, C))), r"out is read-only"),
    "out-list": (_classifier, lambda m: m.predict(X, out=[[0.0] * C] * N), r"out must be a numpy array"),
    # compile / validation options
    "fit-before-compile": (lambda: _classifier(compile=False), lambda m: m.fit(X, Y, verbose=0), r"compile"),
    "evaluate-before-compile": (lambda: _classifier(compile=False), lambda m: m.evaluate(X, Y), r"compile"),
    "validation-split-1.5": (_classifier, lambda m: m.fit(X, Y, validation_split=1.5, verbose=0), r"validation_split"),
    "validation-split-neg": (_classifier, lambda m: m.fit(X, Y, validation_split=-0.1, verbose=0), r"validation_split"),
    "validation-split-tiny": (
        _classifier,
        lambda m: m.fit(X, Y, validation_split=0.01, verbose=0),
        r"validation_split",
    ),
    "validation-split-and-data": (
        _classifier,
        lambda m: m.fit(X, Y, validation_split=0.2, validation_data=(X, Y), verbose=0),
        r"validation_split",
    ),
    "validation-data-shape": (_classifier, lambda m: m.fit(X, Y, validation_data=(X,), verbose=0), r"validation_data"),
    # label encodings
    "unnormalized-probabilities": (
        _classifier,
        lambda m: m.fit(X, np.ones((N, C), np.float32), verbose=0),
        r"y row 0 sums to",
    ),
    "y-2d-wide-int": (_classifier, lambda m: m.evaluate(X, np.stack([Y, Y], axis=1)), r"y .*1-D"),
    "fractional-labels": (_classifier, lambda m: m.fit(X, Y + 0.5, verbose=0), r"y .*integer"),
    "string-labels": (_classifier, lambda m: m.fit(X, np.array(["a"] * N), verbose=0), r"y .*integer"),
    "complex-labels": (_classifier, lambda m: m.fit(X, Y + 0j, verbose=0), r"y"),
    "mse-shape": (_regressor, lambda m: m.fit(X, np.ones((N, 3)), verbose=0), r"y has shape \(24, 3\)"),
    "mse-1d-for-2-outputs": (_regressor, lambda m: m.fit(X, np.ones(N), verbose=0), r"y has shape \(24,\)"),
    "mse-strings": (_regressor, lambda m: m.fit(X, np.full((N, 2), "1.0"), verbose=0), r"y must be numeric"),
    "mse-complex": (_regressor, lambda m: m.fit(X, np.ones((N, 2)) + 1j, verbose=0), r"y must be numeric"),
    # strings and other non-numbers as x
    "x-strings": (_classifier, lambda m: m.fit(np.full((N, D), "a"), Y, verbose=0), r"x must be a numeric array"),
    "x-strings-predict": (_classifier, lambda m: m.predict([["a", "b", "c", "d"]]), r"x must be a numeric array"),
    "x-ragged": (_classifier, lambda m: m.predict([[1.0, 2.0], [1.0]]), r"x"),
    "x-object-none": (
        _classifier,
        lambda m: m.fit(np.array([[1.0, None, 2.0, 3.0]] * N, dtype=object), Y, verbose=0),
        r"x contains NaN",
    ),
    "x-object-str": (
        _classifier,
        lambda m: m.predict(np.array([[1.0, "a", 2.0, 3.0]], dtype=object)),
        r"x must be a numeric array",
    ),
    "x-dict": (_classifier, lambda m: m.predict({"a": 1}), r"x"),
    # NumPy would drop the imaginary part with only a ComplexWarning
    "x-complex": (_classifier, lambda m: m.fit(X + 1j, Y, verbose=0), r"x"),
    "x-complex-predict": (_classifier, lambda m: m.predict(X.astype(np.complex64)), r"x"),
    "predict-proba-mse": (_regressor, lambda m: m.predict_proba(X), r"classification"),
    "set-weights-nan": (
        _classifier,
        lambda m: m.layers[0].set_weights([np.full((D, 8), np.nan), np.zeros(8)]),
        r"kernel contains NaN",
    ),
    # sample weights, iterables of batches, fine-tuning (checked before any batch runs; a
    # stream's later batches can only be checked when they arrive)
    "sample-weight-negative": (
        _classifier,
        lambda m: m.fit(X, Y, sample_weight=-np.ones(N), verbose=0),
        r"sample_weight must be >= 0",
    ),
    "sample-weight-inf": (
        _regressor,
        lambda m: m.fit(X, np.ones((N, 2)), sample_weight=np.full(N, np.inf), verbose=0),
        r"sample_weight contains NaN or inf",
    ),
    "sample-weight-length": (
        _binary,
        lambda m: m.fit(X, Y % 2, sample_weight=np.ones(N + 1), verbose=0),
        r"sample_weight has shape",
    ),
    "sample-weight-object": (_classifier, lambda m: m.fit(X, Y, sample_weight={"a": 1}, verbose=0), r"sample_weight"),
    "iterable-first-batch-features": (
        _classifier,
        lambda m: m.fit([(X[:, :3], Y)], verbose=0),
        r"x has 3 features but the model expects 4",
    ),
    "iterable-of-scalars": (_classifier, lambda m: m.fit([1, 2, 3], verbose=0), r"batch 0 of the iterable"),
    "fit-without-y": (_classifier, lambda m: m.fit(X, verbose=0), r"y is missing"),
    "trainable-not-bool": (_classifier, lambda m: setattr(m.layers[0], "trainable", None), r"trainable must be"),
    "pop-only-dense": (
        lambda: cm.Sequential([cm.layers.Dense(C)], input_dim=D, seed=0),
        lambda m: m.pop(),
        r"only Dense layer",
    ),
}


def _with(a, i, value):
    a = a.copy()
    a[i] = value
    return a


def _overlap(model):
    buf = np.zeros((N + 1, D), np.float32)
    x = buf[:N]
    out = buf.ravel()[D : D + N * C].reshape(N, C)  # overlaps x
    return model.predict(x, out=out)


def _readonly(shape):
    a = np.empty(shape, np.float32)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("case", list(CASES))
def test_rejected_with_a_message_naming_the_argument(case):
    factory, call, match = CASES[case]
    _expect_error(factory(), call, match)


# ------------------------------------------------------------------------------------
# Bad constructor and optimizer arguments (no model involved)
# ------------------------------------------------------------------------------------

CONSTRUCTORS = {
    "sgd-lr-negative": (lambda: cm.optimizers.SGD(learning_rate=-0.1), r"SGD learning_rate .*-0.1"),
    "sgd-lr-nan": (lambda: cm.optimizers.SGD(learning_rate=float("nan")), r"learning_rate"),
    "sgd-lr-str": (lambda: cm.optimizers.SGD(learning_rate="0.1"), r"learning_rate"),
    "adam-lr-negative": (lambda: cm.optimizers.Adam(learning_rate=-1e-3), r"Adam learning_rate"),
    "adam-beta1": (lambda: cm.optimizers.Adam(beta_1=1.2), r"Adam beta_1 must be in \[0(\.0)?, 1(\.0)?\), got 1\.2"),
    "adam-beta1-one": (lambda: cm.optimizers.Adam(beta_1=1.0), r"beta_1 .*got 1"),
    "adam-beta2-negative": (lambda: cm.optimizers.Adam(beta_2=-0.5), r"beta_2"),
    "adamw-beta2": (lambda: cm.optimizers.AdamW(beta_2=1.0), r"AdamW beta_2"),
    "adam-eps-zero": (lambda: cm.optimizers.Adam(epsilon=0), r"epsilon"),
    "adam-eps-negative": (lambda: cm.optimizers.Adam(epsilon=-1e-8), r"epsilon"),
    "adam-wd-negative": (lambda: cm.optimizers.Adam(weight_decay=-0.1), r"weight_decay"),
    "adamw-wd-inf": (lambda: cm.optimizers.AdamW(weight_decay=float("inf")), r"weight_decay"),
    "sgd-nesterov-no-momentum": (lambda: cm.optimizers.SGD(nesterov=True), r"nesterov.*momentum"),
    "sgd-momentum-negative": (lambda: cm.optimizers.SGD(momentum=-0.9), r"momentum"),
    "clipnorm-zero": (lambda: cm.optimizers.SGD(clipnorm=0.0), r"clipnorm"),
    "clipnorm-negative": (lambda: cm.optimizers.Adam(clipnorm=-1.0), r"clipnorm"),
    "dropout-1": (lambda: cm.layers.Dropout(1.0), r"Dropout rate"),
    "dense-0": (lambda: cm.layers.Dense(0), r"Dense units"),
    "dense-activation": (lambda: cm.layers.Dense(3, activation="softmax"), r"activation"),
    "dense-initializer": (lambda: cm.layers.Dense(3, kernel_initializer="ones"), r"kernel_initializer"),
    "sequential-input-dim-0": (lambda: cm.Sequential([cm.layers.Dense(2)], input_dim=0), r"input_dim"),
    "sequential-seed-negative": (lambda: cm.Sequential([cm.layers.Dense(2)], seed=-3), r"seed"),
    "sequential-seed-float": (lambda: cm.Sequential([cm.layers.Dense(2)], seed=1.5), r"seed"),
    "sequential-not-a-layer": (lambda: cm.Sequential([cm.layers.Dense(2), 3]), r"layer"),
    "loss-smoothing": (lambda: cm.losses.SoftmaxCrossEntropy(label_smoothing=-0.1), r"label_smoothing"),
    "loss-class-weights-nan": (
        lambda: cm.losses.SoftmaxCrossEntropy(class_weights=[1.0, float("nan")]),
        r"class_weights",
    ),
}


@pytest.mark.parametrize("case", list(CONSTRUCTORS))
def test_bad_constructor_arguments(case):
    make, match = CONSTRUCTORS[case]
    with pytest.raises(ERRORS, match=match):
        make()
    # the process is fine: a model still trains and predicts
    model = _classifier()
    model.fit(X, Y, epochs=1, verbose=0)
    assert np.isfinite(model.predict(X)).all()


def test_class_weights_length_checked_at_first_fit_of_an_unbuilt_model():
    model = cm.Sequential([cm.layers.Dense(C)], seed=0)
    model.compile(loss=cm.losses.SoftmaxCrossEntropy(class_weights=[1.0, 2.0]))
    with pytest.raises(ValueError, match="class_weights"):
        model.fit(X, Y, verbose=0)


def test_label_error_message_shows_the_plain_number():
    """The message is for people: "label -1", not NumPy 2's repr "np.int32(-1)"."""
    model = _classifier()
    _expect_error(model, lambda m: m.fit(X, _with(Y, 7, -1), verbose=0), r"y contains label -1 outside \[0, 3\)")
    _expect_error(model, lambda m: m.evaluate(X, _with(Y.astype(np.int64), 3, 7)), r"y contains label 7 outside")


def test_numeric_strings_are_not_features():
    """x holding strings is not a numeric array even when the strings spell numbers
    (as scikit-learn's check_array): y holding "1" is rejected, and x should be too."""
    model = _classifier()
    _expect_error(model, lambda m: m.predict(np.full((2, D), "1.5")), r"x must be a numeric array")


def test_huge_float64_features_are_rejected_not_turned_into_inf():
    """A float64 x beyond float32's range becomes inf in the conversion; fit must reject
    it as non-finite rather than train on it. (NumPy's overflow warning for the cast is
    silenced here: under warnings-as-errors it would surface before the ValueError.)"""
    model = _classifier()
    x = X.astype(np.float64)
    x[0, 0] = 1e300
    with np.errstate(over="ignore"):
        _expect_error(model, lambda m: m.fit(x, Y, verbose=0), r"x contains NaN or inf")


# ------------------------------------------------------------------------------------
# Conversions that must work
# ------------------------------------------------------------------------------------


def _fit_weights(model_factory, x, y, **kw):
    model = model_factory()
    model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, **kw)
    return [w.tobytes() for w in model.get_weights()]


def test_float64_and_list_features_work():
    base = _fit_weights(_classifier, X, Y)
    # exact conversions of float32 values: bit-identical training
    assert _fit_weights(_classifier, X.astype(np.float64), Y) == base
    assert _fit_weights(_classifier, X.tolist(), Y.tolist()) == base
    assert _fit_weights(_classifier, np.asfortranarray(X), Y) == base
    assert _fit_weights(_classifier, X.astype(np.float16).astype(np.float32), Y) != base  # sanity: inputs matter
    model = _classifier()
    want = model.predict(X)
    np.testing.assert_array_equal(model.predict(X.astype(np.float64)), want)
    np.testing.assert_array_equal(model.predict(X.tolist()), want)
    np.testing.assert_array_equal(model.predict(X[:, ::-1][:, ::-1]), want)  # non-contiguous view
    result = model.evaluate(X.tolist(), Y.tolist())
    assert result == model.evaluate(X, Y)


@pytest.mark.parametrize(
    "convert",
    [
        lambda y: y.astype(np.int64),
        lambda y: y.astype(np.uint8),
        lambda y: y.astype(np.int8),
        lambda y: y.astype(np.uint64),
        lambda y: y.reshape(N, 1),
        lambda y: y.astype(np.float64),
        lambda y: y.astype(np.float32).reshape(N, 1),
        lambda y: list(map(int, y)),
    ],
    ids=["int64", "uint8", "int8", "uint64", "n-by-1", "float64-integral", "float32-n-by-1", "list"],
)
def test_label_encodings_work(convert):
    assert _fit_weights(_classifier, X, convert(Y)) == _fit_weights(_classifier, X, Y)
    model = _classifier()
    assert model.evaluate(X, convert(Y)) == model.evaluate(X, Y)


def test_bool_labels_for_binary():
    yb = (Y % 2).astype(np.int32)
    base = _fit_weights(_binary, X, yb)
    assert _fit_weights(_binary, X, yb.astype(bool)) == base
    assert _fit_weights(_binary, X, yb.astype(bool).reshape(N, 1)) == base
    assert _fit_weights(_binary, X, yb.astype(np.float32)) == base
    model = _binary()
    assert model.evaluate(X, yb.astype(bool)) == model.evaluate(X, yb)


def test_mse_targets_convert():
    t = np.random.default_rng(3).standard_normal((N, 2)).astype(np.float32)
    base = _fit_weights(_regressor, X, t)
    assert _fit_weights(_regressor, X, t.astype(np.float64)) == base
    assert _fit_weights(_regressor, X, t.tolist()) == base
    one = lambda: _regressor(outputs=1)  # noqa: E731
    assert _fit_weights(one, X, t[:, 0]) == _fit_weights(one, X, t[:, :1])
    assert _fit_weights(one, X, Y) == _fit_weights(one, X, Y.astype(np.float32))  # integer targets


def test_predict_out_with_converted_x():
    model = _classifier()
    out = np.full((N, C), np.nan, np.float32)
    assert model.predict(X.tolist(), out=out) is out
    np.testing.assert_array_equal(out, model.predict(X))
