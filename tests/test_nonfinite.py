"""NaN and inf in a model's input (docs/decisions.md, "NaN and infinity"): predict
propagates them through every activation, model kind (float32, pruned in a sparse format,
int8 static and dynamic) and device, leaving the other rows as they were; an int8
model's row with one is NaN; ``check_finite=True`` refuses such input naming the row and
column; evaluate refuses it as fit does. The kernels' side: tests/test_dense.py."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
import reference
from customml._formats import UNBOUNDED
from support import assert_same_bits

KINDS = ["float32", "pruned", "int8_static", "int8_dynamic"]


def _model(kind: str, activation: str, device: str):
    model = cm.Sequential(
        [cm.layers.Dense(32, activation), cm.layers.Dense(16, activation), cm.layers.Dense(4)],
        input_dim=8,
        seed=5,
        device=device,
    )
    model.compile(loss="softmax_cross_entropy")
    if kind == "pruned":
        cm.prune.magnitude(model, 0.5, measure=False)
        for i in (0, 1, 2):
            model._net.set_sparse_format(i, "csr", UNBOUNDED)
    elif kind.startswith("int8"):
        calibration = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        model = cm.quantize.int8(model, calibration=calibration, static=kind == "int8_static")
    return model


def _x():
    return np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)


@pytest.mark.parametrize("activation", reference.ACTIVATIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_nan_feature_makes_its_row_nan(device, kind, activation):
    # A ReLU model used to map a NaN feature to 0 (max(z, 0) with the operands one way
    # round) and so answer with the last layer's bias; an int8 one quantized it to a code.
    model = _model(kind, activation, device)
    x = _x()
    clean = model.predict(x)
    assert np.isfinite(clean).all()
    bad = x.copy()
    bad[2, 3] = np.nan
    bad[4, :] = np.nan
    got = model.predict(bad)
    assert np.isnan(got[[2, 4]]).all(), got[[2, 4]]
    rows = [0, 1, 3, 5]
    assert_same_bits(got[rows], clean[rows], "the rows without NaN")
    proba = model.predict_proba(bad)
    assert np.isnan(proba[[2, 4]]).all() and np.isfinite(proba[rows]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_an_infinite_feature_makes_its_row_nonfinite(device, kind):
    model = _model(kind, "relu", device)
    x = _x()
    bad = x.copy()
    bad[1, 0] = np.inf
    bad[3, 7] = -np.inf
    got = model.predict(bad)
    assert not np.isfinite(got[[1, 3]]).any(), got[[1, 3]]
    if kind.startswith("int8"):
        assert np.isnan(got[[1, 3]]).all()
    assert_same_bits(got[[0, 2, 4, 5]], model.predict(x)[[0, 2, 4, 5]], "the finite rows")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_check_finite_names_the_row_and_column(device, value):
    model = _model("float32", "relu", device)
    x = _x()
    x[4, 6] = value
    x[5, 0] = value
    with pytest.raises(
        ValueError, match=r"\[predict\] x contains NaN or inf: (nan|inf|-inf) at \(4, 6\), row 4, column 6"
    ):
        model.predict(x, check_finite=True)
    with pytest.raises(ValueError, match=r"row 4, column 6"):
        model.predict_proba(x.astype(np.float64), check_finite=True)
    np.testing.assert_array_equal(model.predict(_x(), check_finite=True), model.predict(_x()))


def test_evaluate_refuses_nonfinite_x(device):
    model = _model("float32", "relu", device)
    x = _x()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"\[evaluate\] x contains NaN or inf: nan at \(3, 1\), row 3, column 1"):
        model.evaluate(x, np.zeros(6, np.int32))


@pytest.mark.parametrize("static", [True, False], ids=["int8_static", "int8_dynamic"])
def test_an_overflow_inside_an_int8_model_makes_its_row_nan(device, static):
    # A float layer whose output overflows to inf (finite input) before an int8 layer: no
    # code represents inf, so the row used to come out finite; it is NaN, as in a float model.
    model = _model("float32", "relu", device)
    model.layers[0].set_weights([np.full((8, 32), 4.0, np.float32), np.zeros(32, np.float32)])
    calibration = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    model = cm.quantize.int8(model, calibration=calibration, static=static)
    model._net.clear_quantization(0)  # layer 0 runs float32, layers 1 and 2 int8
    x = _x()
    clean = model.predict(x)
    assert np.isfinite(clean).all()
    bad = x.copy()
    bad[3] = 3e38  # finite; 4 * 3e38 overflows in layer 0
    got = model.predict(bad)
    assert np.isnan(got[3]).all(), got[3]
    rows = [0, 1, 2, 4, 5]
    assert_same_bits(got[rows], clean[rows], "the rows without an overflow")
