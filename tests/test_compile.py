"""compile: optimizer, loss and metric names against the objects they stand for, optimizer
settings, a recompile's fresh optimizer state, and the loss checked against the model."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from model_reference import make_model, step_data


def test_compile_names_equal_objects():
    """Optimizer and loss names build the same configuration as the default objects."""
    x, y = step_data("softmax_cross_entropy")
    pairs = [
        ("adam", cm.optimizers.Adam()),
        ("Adam", cm.optimizers.Adam()),
        ("sgd", cm.optimizers.SGD()),
        ("adamw", cm.optimizers.AdamW()),
    ]
    for name, obj in pairs:
        a, b = make_model(seed=3), make_model(seed=3)
        a.compile(optimizer=name, loss="sparse_categorical_crossentropy")
        b.compile(optimizer=obj, loss=cm.losses.SoftmaxCrossEntropy())
        for m in (a, b):
            m.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb, err_msg=name)
    assert isinstance(cm.optimizers.get("adamw"), cm.optimizers.AdamW)
    assert isinstance(cm.losses.get("binary_crossentropy"), cm.losses.BinaryCrossEntropy)
    assert isinstance(cm.losses.get("mean_squared_error"), cm.losses.MeanSquaredError)


def test_a_single_metric_name_is_accepted_as_a_string():
    x, y = step_data("softmax_cross_entropy")
    model = make_model()
    model.compile(optimizer="sgd", loss="softmax_cross_entropy", metrics="accuracy")
    history = model.fit(x, y, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}


def test_optimizer_objects_keep_their_settings():
    sgd = cm.optimizers.SGD(0.05, momentum=0.9, nesterov=True)
    assert (sgd.learning_rate, sgd.momentum, sgd.nesterov) == (0.05, 0.9, True)
    adam = cm.optimizers.Adam(amsgrad=True)
    assert adam.amsgrad and adam.learning_rate == 1e-3 and adam.weight_decay == 0.0
    assert cm.optimizers.AdamW().weight_decay == 0.01
    assert cm.optimizers.Adam(clipnorm=1.0).clipnorm == 1.0


def test_recompile_resets_the_optimizer_state():
    x, y = step_data("softmax_cross_entropy")
    a = make_model(seed=3)
    a.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy")
    a.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    b = make_model(seed=99)
    b.set_weights(a.get_weights())
    a.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy")
    b.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy")
    for m in (a, b):
        m.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_compile_checks_the_loss_against_the_model():
    model = make_model()
    with pytest.raises(ValueError, match="one output"):
        model.compile(loss="binary_cross_entropy")
    with pytest.raises(ValueError, match="class_weights"):
        model.compile(loss=cm.losses.SoftmaxCrossEntropy(class_weights=[1.0, 2.0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        cm.losses.SoftmaxCrossEntropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="class_weights"):
        cm.losses.SoftmaxCrossEntropy(class_weights=[1.0, -1.0])


def test_a_loss_repr_shows_its_settings_and_they_survive_save(tmp_path):
    """A label-smoothed or class-weighted loss says so in its repr, before and after a save."""
    assert repr(cm.losses.SoftmaxCrossEntropy()) == "SoftmaxCrossEntropy()"
    loss = cm.losses.SoftmaxCrossEntropy(label_smoothing=0.1, class_weights=[1.0, 2.0, 1.0])
    assert repr(loss) == "SoftmaxCrossEntropy(label_smoothing=0.1, class_weights=[1.0, 2.0, 1.0])"
    model = cm.Sequential([cm.layers.Dense(3)], input_dim=4, seed=0)
    model.compile(optimizer="adam", loss=loss)
    model.save(tmp_path / "m.cml")
    assert repr(cm.load(tmp_path / "m.cml")._loss) == repr(loss)
