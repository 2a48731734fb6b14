"""fit from an iterable of (x, y) or (x, y, sample_weight) batches: re-iterables are one
pass per epoch, one-shot iterators one stream (steps_per_epoch per epoch), and an
exhausted stream is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    return x, y


def _model(device="cpu", built=True):
    model = cm.Sequential(
        [cm.layers.Dense(8, activation="relu"), cm.layers.Dense(2)],
        input_dim=4 if built else None,
        device=device,
        seed=5,
    )
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", metrics=["accuracy"])
    return model


def _batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def test_list_of_batches_equals_arrays(device):
    # The same batches in the same order (shuffle off) give the same bits either way.
    x, y = _data()
    a = _model(device)
    ha = a.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    b = _model(device)
    hb = b.fit(_batches(x, y, 16), epochs=3, verbose=0)
    for u, v in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(u, v)
    assert ha.history["loss"] == hb.history["loss"]
    assert hb.params["steps"] == 4 and b.epochs_trained == 3


def test_customml_batches_reshuffles_each_epoch():
    x, y = _data()
    model = _model()
    history = model.fit(cm.data.batches(x, y, 16, seed=1), epochs=4, verbose=0, validation_data=(x[:10], y[:10]))
    assert len(history.history["loss"]) == 4 and "val_accuracy" in history.history


def test_builds_an_unbuilt_model_from_the_first_batch():
    x, y = _data()
    model = _model(built=False)
    model.fit(_batches(x, y, 20), epochs=1, verbose=0)
    assert model.built and model.input_dim == 4


def test_generator_with_steps_per_epoch_is_one_stream():
    x, y = _data()

    def stream():
        while True:
            yield from _batches(x, y, 15)

    model = _model()
    history = model.fit(stream(), epochs=3, steps_per_epoch=2, verbose=0)
    assert len(history.history["loss"]) == 3
    assert model._net.step == 6


def test_exhausted_generator_is_an_error():
    x, y = _data()
    model = _model()
    gen = (b for b in _batches(x, y, 20))
    with pytest.raises(
        ValueError,
        match=r"\[fit\] the iterable of batches yielded no batch in epoch 2: a one-shot "
        r"iterator .* is exhausted after one pass",
    ):
        model.fit(gen, epochs=2, verbose=0)
    assert model.epochs_trained == 1  # the first epoch ran and counts


def test_one_epoch_from_a_generator_is_fine():
    x, y = _data()
    model = _model()
    model.fit((b for b in _batches(x, y, 20)), epochs=1, verbose=0)
    assert model._net.step == 3


def test_sample_weight_as_a_third_element(device):
    x, y = _data()
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(x)).astype(np.float32)
    a = _model(device)
    a.fit(x, y, epochs=2, batch_size=20, shuffle=False, verbose=0, sample_weight=w)
    b = _model(device)
    b.fit([(x[i : i + 20], y[i : i + 20], w[i : i + 20]) for i in range(0, 60, 20)], epochs=2, verbose=0)
    for u, v in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(u, v)


BAD = {
    "no y": (lambda x, y: dict(x=x), r"\[fit\] y is missing"),
    "not a tuple": (lambda x, y: dict(x=[x[:10]]), r"\[fit\] batch 0 of the iterable must be a tuple"),
    "wrong features": (
        lambda x, y: dict(x=[(x[:10, :3], y[:10])]),
        r"\[fit\] x has 3 features but the model expects 4",
    ),
    "bad labels": (lambda x, y: dict(x=[(x[:10], y[:10] + 5)]), r"\[fit\] batch 0 y contains label"),
    "length mismatch": (lambda x, y: dict(x=[(x[:10], y[:9])]), r"\[fit\] x has 10 samples but batch 0 y has 9"),
    "steps with arrays": (lambda x, y: dict(x=x, y=y, steps_per_epoch=2), r"\[fit\] steps_per_epoch applies to"),
    "validation_split": (lambda x, y: dict(x=[(x, y)], validation_split=0.5), r"\[fit\] with an iterable of batches"),
    "empty list": (lambda x, y: dict(x=[]), r"\[fit\] the iterable of batches yielded no batch in epoch 1$"),
    "steps zero": (lambda x, y: dict(x=[(x, y)], steps_per_epoch=0), r"\[fit\] steps_per_epoch must be an integer"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_iterables(case):
    make, match = BAD[case]
    x, y = _data()
    model = _model()
    with pytest.raises(ValueError, match=match):
        model.fit(verbose=0, **make(x, y))
