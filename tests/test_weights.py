"""get_weights and set_weights: copies both ways, the inference plan dropped on a change,
every shape and value checked before anything is written (all or nothing)."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from model_reference import make_model, numpy_forward


def test_get_weights_returns_copies_and_set_weights_round_trips():
    model = make_model()
    rng = np.random.default_rng(1)
    first = model.get_weights()
    second = model.get_weights()
    for a, b in zip(first, second):
        assert not np.shares_memory(a, b)
        np.testing.assert_array_equal(a, b)
    first[0][:] = 123.0  # writing into a copy must not reach the model
    np.testing.assert_array_equal(model.get_weights()[0], second[0])

    new = [rng.standard_normal(w.shape).astype(np.float32) for w in second]
    model.set_weights(new)
    back = model.get_weights()
    for a, b in zip(back, new):
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b)
    new[0][:] = 0.0  # the model holds its own copy
    np.testing.assert_array_equal(model.get_weights()[0], back[0])
    # float64 and nested lists convert
    model.layers[1].set_weights([back[2].astype(np.float64).tolist(), back[3].astype(np.float64)])
    np.testing.assert_array_equal(model.get_weights()[2], back[2])


def test_predict_follows_set_weights():
    """A prepared inference plan is dropped when the weights change."""
    model = make_model()
    x = np.random.default_rng(2).standard_normal((9, 5)).astype(np.float32)
    model.predict(x)  # prepares whatever predict prepares
    rng = np.random.default_rng(3)
    ws = [rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(ws)
    got = model.predict(x)
    want = numpy_forward(x, [(ws[0], ws[1]), (ws[2], ws[3])], ["relu", None])
    # float32 forward of a 5- and a 7-term dot product: relative error ~1e-6 of the
    # absolute-value sums, which are O(10) here.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "index, bad, match",
    [
        (0, np.zeros((5, 6), np.float32), r"kernel has shape \(5, 6\), expected \(5, 7\)"),
        (0, np.zeros((7, 5), np.float32), r"kernel has shape \(7, 5\)"),
        (0, np.zeros(35, np.float32), r"kernel has shape \(35,\)"),
        (1, np.zeros(6, np.float32), r"bias has shape \(6,\), expected \(7,\)"),
        (1, np.zeros((1, 7), np.float32), r"bias has shape \(1, 7\)"),
        (0, np.full((5, 7), np.nan, np.float32), r"kernel contains NaN"),
        (1, np.array([0, 0, 0, np.inf, 0, 0, 0], np.float32), r"bias contains NaN or inf"),
        (3, np.array([0, -np.inf, 0], np.float32), r"bias contains NaN or inf"),
    ],
)
def test_set_weights_rejects_wrong_shapes_and_non_finite(index, bad, match):
    model = make_model()
    before = model.get_weights()
    ws = model.get_weights()
    ws[index] = bad
    with pytest.raises(ValueError, match=match):
        model.set_weights(ws)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_set_weights_wrong_count():
    model = make_model()
    ws = model.get_weights()
    with pytest.raises(ValueError, match="more arrays"):
        model.set_weights(ws + [np.zeros(3, np.float32)])
    with pytest.raises(ValueError, match="too few arrays"):
        model.set_weights(ws[:3])
    with pytest.raises(ValueError, match="kernel, bias"):
        model.layers[0].set_weights([ws[0]])
    with pytest.raises(ValueError, match="no weights"):
        cm.Sequential([cm.layers.Dense(2), cm.layers.Dropout(0.5)], input_dim=2).layers[1].set_weights([ws[0]])


def test_set_weights_is_all_or_nothing():
    """A rejected set_weights must leave the model as it was, not half-updated: here the
    last array is bad, and the first layer must keep its old kernel (as Keras checks
    every shape before assigning any)."""
    model = make_model()
    before = model.get_weights()
    ws = [w + 1.0 for w in before]
    ws[3] = np.array([0.0, np.nan, 0.0], np.float32)
    with pytest.raises(ValueError, match="bias"):
        model.set_weights(ws)
    for i, (a, b) in enumerate(zip(model.get_weights(), before)):
        np.testing.assert_array_equal(a, b, err_msg=f"weight {i} changed although set_weights raised")
