"""Building a Sequential model and its layers: shapes, parameter counts and the summary,
building on first use, layer names and ownership, and the Dense and Dropout constructors'
checks. (Weights: tests/test_weights.py; initializers: tests/test_initializers.py.)"""

from __future__ import annotations

import re

import numpy as np
import pytest

import customml as cm
from model_reference import make_model


def test_build_shapes_count_params_and_summary():
    model = cm.Sequential(
        [cm.layers.Dense(7, activation="relu"), cm.layers.Dropout(0.2), cm.layers.Dense(3)], input_dim=5, seed=0
    )
    assert model.built and model.input_dim == 5 and model.output_dim == 3
    assert model.count_params() == 5 * 7 + 7 + 7 * 3 + 3
    ws = model.get_weights()
    assert [w.shape for w in ws] == [(5, 7), (7,), (7, 3), (3,)]
    assert all(w.dtype == np.float32 for w in ws)
    assert model.layers[1].get_weights() == []
    assert model.layers[0].count_params() == 42 and model.layers[1].count_params() == 0
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    for name in ("dense", "dropout", "dense_1"):
        assert re.search(rf"^{name} ", text, re.M), text
    assert "(None, 7)" in text and "(None, 3)" in text
    assert lines[-2] == "Total params: 66", text
    assert lines[-1] == "Trainable params: 66", text


def test_unbuilt_model_builds_on_first_predict():
    model = cm.Sequential([cm.layers.Dense(4), cm.layers.Dense(2)], seed=0)
    assert not model.built and model.input_dim is None
    with pytest.raises(ValueError, match="not built"):
        model.count_params()
    with pytest.raises(ValueError, match="not built"):
        model.get_weights()
    with pytest.raises(ValueError, match="not built"):
        model.summary(print_fn=lambda s: None)
    out = model.predict(np.ones((3, 6), np.float32))
    assert out.shape == (3, 2) and out.dtype == np.float32
    assert model.built and model.input_dim == 6 and model.count_params() == 6 * 4 + 4 + 4 * 2 + 2


def test_layer_auto_names():
    model = cm.Sequential(
        [
            cm.layers.Dense(4),
            cm.layers.Dropout(0.1),
            cm.layers.Dense(4),
            cm.layers.Dropout(0.1),
            cm.layers.Dense(2, name="head"),
        ]
    )
    assert [layer.name for layer in model.layers] == ["dense", "dropout", "dense_1", "dropout_1", "head"]
    taken = cm.Sequential([cm.layers.Dense(3, name="dense_1"), cm.layers.Dense(3), cm.layers.Dense(3)])
    assert [layer.name for layer in taken.layers] == ["dense_1", "dense", "dense_2"]
    # names are per model
    assert cm.Sequential([cm.layers.Dense(3)]).layers[0].name == "dense"


def test_layer_cannot_join_two_models_and_built_model_grows():
    layer = cm.layers.Dense(3)
    cm.Sequential([layer])
    with pytest.raises(ValueError, match="already belongs"):
        cm.Sequential([layer])
    model = make_model()
    model.add(cm.layers.Dense(2))  # rebuilds the executor (tests/test_trainable.py)
    assert model.output_dim == 2
    with pytest.raises(TypeError, match="layer"):
        cm.Sequential([cm.layers.Dense(2), "dense"])
    with pytest.raises(ValueError, match="Dense"):
        cm.Sequential([cm.layers.Dropout(0.5)], input_dim=3)


@pytest.mark.parametrize("units", [0, -1, 2.5, True, "3", None])
def test_dense_rejects_bad_units(units):
    with pytest.raises(ValueError, match="units"):
        cm.layers.Dense(units)


def test_dense_activations():
    assert cm.layers.Dense(2).activation == "identity"
    assert cm.layers.Dense(2, activation="linear").activation == "identity"
    for act in ("relu", "sigmoid", "tanh", "gelu"):
        assert cm.layers.Dense(2, activation=act).activation == act
    with pytest.raises(ValueError, match="activation"):
        cm.layers.Dense(2, activation="swish")
    with pytest.raises(TypeError, match="name"):
        cm.layers.Dense(2, name=3)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), True, "0.5", None])
def test_dropout_rejects_bad_rate(rate):
    with pytest.raises(ValueError, match="rate"):
        cm.layers.Dropout(rate)


def test_dropout_accepts_zero_and_fractions():
    assert cm.layers.Dropout(0).rate == 0.0
    assert cm.layers.Dropout(0.999).rate == 0.999
