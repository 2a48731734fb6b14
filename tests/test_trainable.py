"""Fine-tuning: layer.trainable = False freezes a Dense layer (no update, no optimizer
state change, no weight-gradient work), saved in the model file; Sequential.pop() and
add() replace a head on a built model, keeping the other layers' weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

import customml as cm


def _data(n=64, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return x, y


def _model(device, optimizer=None, **kw):
    model = cm.Sequential(
        [
            cm.layers.Dense(16, activation="relu", **kw),
            cm.layers.Dropout(0.2),
            cm.layers.Dense(8, activation="tanh"),
            cm.layers.Dense(3),
        ],
        input_dim=6,
        device=device,
        seed=11,
    )
    model.compile(optimizer=optimizer or cm.optimizers.AdamW(1e-2, weight_decay=0.1), loss="softmax_cross_entropy")
    return model


OPTIMIZERS = {
    "adamw": lambda: cm.optimizers.AdamW(1e-2, weight_decay=0.1),
    "adam-l2-amsgrad": lambda: cm.optimizers.Adam(1e-2, weight_decay=0.1, amsgrad=True),
    "sgd-momentum-decay": lambda: cm.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("frozen", [[0], [2], [0, 2], [3]])
def test_frozen_layers_stay_bit_identical(device, opt, frozen):
    x, y = _data()
    model = _model(device, OPTIMIZERS[opt]())
    for i in frozen:
        model.layers[i].trainable = False
    before = [layer.get_weights() for layer in model.layers]
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    net = model._net
    for i, layer in enumerate(model.layers):
        for b, a in zip(before[i], layer.get_weights()):
            assert np.array_equal(a, b) == (i in frozen), (i, frozen)
        if i in frozen:
            # The optimizer state of a frozen layer stays as compile left it (zeros).
            for slot in range(net.state_slots):
                assert not net.read_state(slot, net.weight_offsets[i], layer.count_params()).any()


def test_frozen_base_trains_the_head_as_a_head_only_model(device):
    # With the base frozen, the head sees fixed features: training the full model equals
    # training a head-only model on the base's outputs, clipping included (the global norm
    # covers trainable gradients only), with dropout off so the features are the same.
    x, y = _data()
    full = cm.Sequential(
        [cm.layers.Dense(16, activation="relu"), cm.layers.Dense(3)], input_dim=6, device=device, seed=4
    )
    full.compile(optimizer=cm.optimizers.Adam(1e-2, clipnorm=0.05), loss="softmax_cross_entropy")
    full.layers[0].trainable = False
    base = cm.Sequential([cm.layers.Dense(16, activation="relu")], input_dim=6, device=device)
    base.set_weights(full.layers[0].get_weights())
    features = base.predict(x)
    head = cm.Sequential([cm.layers.Dense(3)], input_dim=16, device=device)
    head.set_weights(full.layers[1].get_weights())
    head.compile(optimizer=cm.optimizers.Adam(1e-2, clipnorm=0.05), loss="softmax_cross_entropy")
    full.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    head.fit(features, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(full.layers[1].get_weights(), head.layers[0].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # the same float32 steps; GEMM blocking may differ


def test_unfreezing_resumes_updates():
    x, y = _data()
    model = _model("cpu")
    model.layers[0].trainable = False
    model.fit(x, y, epochs=1, verbose=0)
    frozen = model.layers[0].get_weights()
    model.layers[0].trainable = True
    assert model._net.trainable(0)
    model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(model.layers[0].get_weights()[0], frozen[0])


def test_all_frozen_changes_nothing_but_counts_steps():
    x, y = _data()
    model = _model("cpu")
    for layer in model.layers:
        layer.trainable = False
    before = model.get_weights()
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model._net.step == 4 and np.isfinite(history.history["loss"]).all()


def test_frozen_regularized_layer_keeps_its_penalty_in_the_loss():
    # As Keras: the penalty of a frozen layer still counts in the loss; it only takes no step.
    x, y = _data()
    model = _model("cpu", kernel_regularizer=cm.regularizers.l2(0.5))
    model.layers[0].trainable = False
    kernel = model.layers[0].get_weights()[0]
    penalty = 0.5 * float((kernel.astype(np.float64) ** 2).sum())
    assert model.evaluate(x, y)["loss"] > penalty
    model.fit(x, y, epochs=1, verbose=0)
    assert np.array_equal(model.layers[0].get_weights()[0], kernel)


def test_set_before_build_and_summary():
    model = cm.Sequential([cm.layers.Dense(4), cm.layers.Dense(2)], seed=1)
    model.layers[0].trainable = False
    model.build(3)
    assert not model._net.trainable(0) and model._net.trainable(1)
    lines = []
    model.summary(print_fn=lines.append)
    assert lines[-2] == "Total params: 26" and lines[-1] == "Trainable params: 10"
    with pytest.raises(TypeError, match="trainable must be True or False"):
        model.layers[1].trainable = "no"


def test_trainable_is_saved(tmp_path):
    x, y = _data()
    model = _model("cpu")
    path = tmp_path / "m.cml"
    model.save(path)
    assert _metadata(path)["format_version"] == "1"  # nothing frozen: readable by older versions
    model.layers[2].trainable = False
    model.save(path, include_optimizer=True)
    meta = _metadata(path)
    assert meta["format_version"] == "3"
    assert json.loads(meta["architecture"])["layers"][2]["trainable"] is False
    loaded = cm.load(path)
    assert [layer.trainable for layer in loaded.layers] == [True, True, False, True]
    assert not loaded._net.trainable(2)
    # Resuming from the file continues exactly as the original.
    model.fit(x, y, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, epochs=1, verbose=0, shuffle=False)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), loaded.get_weights()))


def _metadata(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n])["__metadata__"]


def test_pop_and_add_replace_the_head(device):
    x, y = _data()
    model = _model(device)
    model.fit(x, y, epochs=1, verbose=0)
    base = [layer.get_weights() for layer in model.layers[:3]]
    old_head = model.pop()
    assert old_head.name == "dense_2" and old_head._model is None and len(model.layers) == 3
    assert model.output_dim == 8
    for layer, weights in zip(model.layers, base):
        for a, b in zip(layer.get_weights(), weights):
            assert np.array_equal(a, b)
    for layer in model.layers:
        layer.trainable = False
    model.add(cm.layers.Dense(5, name="new_head"))
    assert model.output_dim == 5 and model._net.step == 0 and model.epochs_trained == 0
    head = model.layers[-1].get_weights()
    assert head[0].shape == (8, 5) and not head[1].any()
    y5 = np.random.default_rng(1).integers(0, 5, len(x)).astype(np.int32)
    model.fit(x, y5, epochs=2, verbose=0)
    for layer, weights in zip(model.layers, base):
        for a, b in zip(layer.get_weights(), weights):
            assert np.array_equal(a, b)
    assert not np.array_equal(model.layers[-1].get_weights()[0], head[0])
    assert model.predict(x).shape == (len(x), 5)


def test_new_head_weights_depend_on_seed_and_position():
    def make():
        m = cm.Sequential([cm.layers.Dense(4), cm.layers.Dense(2)], input_dim=3, seed=9)
        m.pop()
        m.add(cm.layers.Dense(6))
        return m.layers[-1].get_weights()[0]

    assert np.array_equal(make(), make())


def test_pop_and_add_errors():
    model = cm.Sequential([cm.layers.Dense(4)], input_dim=3)
    with pytest.raises(ValueError, match=r"\[pop\] cannot remove the only Dense layer"):
        model.pop()
    assert len(model.layers) == 1
    with pytest.raises(ValueError, match=r"\[pop\] the model has no layers"):
        cm.Sequential().pop()
    unbuilt = cm.Sequential([cm.layers.Dense(4), cm.layers.Dense(2)])
    assert unbuilt.pop().units == 2 and len(unbuilt.layers) == 1
    other = cm.Sequential([cm.layers.Dense(4)], input_dim=3)
    with pytest.raises(ValueError, match="already belongs to a model"):
        model.add(other.layers[0])
    # A layer the executor refuses leaves the model as it was.
    with pytest.raises(ValueError):
        model.add(cm.layers.Dense(2, kernel_regularizer=cm.regularizers.L1L2(l1=float("nan"))))
    assert len(model.layers) == 1 and model.output_dim == 4


def test_load_weights_then_freeze(tmp_path):
    x, y = _data()
    trained = _model("cpu")
    trained.fit(x, y, epochs=1, verbose=0)
    trained.save(tmp_path / "t.cml")
    fresh = _model("cpu")
    fresh.load_weights(tmp_path / "t.cml")
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), trained.get_weights()))
    fresh.layers[0].trainable = False
    fresh.fit(x, y, epochs=1, verbose=0)
    assert np.array_equal(fresh.layers[0].get_weights()[0], trained.layers[0].get_weights()[0])
