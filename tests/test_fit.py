"""fit's interface: the History, validation (split and data), verbosity, and Ctrl-C during
fit. (Each step's arithmetic: tests/test_training_step.py; fit from iterables:
tests/test_fit_iterable.py.)"""

from __future__ import annotations

import _thread
import re
import signal
import threading
import time

import numpy as np
import pytest

import customml as cm
from model_reference import make_model


def _classification_data(n=120, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
    return x, np.minimum(y, classes - 1)


def test_fit_history_keys_and_lengths():
    x, y = _classification_data()
    model = make_model(widths=(16, 3), input_dim=6)
    model.compile("adam", metrics=["accuracy"])
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert isinstance(history, cm.History) and model.history is history
    assert list(history.history) == ["loss", "accuracy"]
    assert history.epoch == [0, 1, 2]
    for key, values in history.history.items():
        assert len(values) == 3 and all(isinstance(v, float) and np.isfinite(v) for v in values), key
    assert all(0.0 <= a <= 1.0 for a in history.history["accuracy"])
    assert history.params == {"epochs": 3, "batch_size": 32, "steps": 4, "samples": 120}


def test_fit_without_metrics_records_loss_only():
    x, y = _classification_data()
    model = make_model(widths=(16, 3), input_dim=6)
    model.compile("sgd")
    history = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0)
    assert list(history.history) == ["loss", "val_loss"]


def test_fit_epochs_zero():
    x, y = _classification_data()
    model = make_model(widths=(16, 3), input_dim=6)
    model.compile("adam", metrics=["accuracy"])
    before = model.get_weights()
    history = model.fit(x, y, epochs=0, verbose=1)
    assert history.history == {} and history.epoch == []
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_fit_validation_split_uses_the_last_samples():
    x, y = _classification_data(n=100)
    model = make_model(widths=(16, 3), input_dim=6)
    model.compile("adam", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=16, validation_split=0.2, verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 2 for v in history.history.values())
    assert history.params["samples"] == 80
    # As Keras: the last 20 % before shuffling; at the end of the last epoch the model
    # is the one evaluate sees now (the same computation, so exactly equal).
    result = model.evaluate(x[80:], y[80:])
    assert history.history["val_loss"][-1] == result["loss"]
    assert history.history["val_accuracy"][-1] == result["accuracy"]


def test_fit_validation_data():
    x, y = _classification_data(n=100)
    xv, yv = _classification_data(n=37, seed=1)
    model = make_model(widths=(16, 3), input_dim=6)
    model.compile("adam", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, validation_data=(xv, yv), verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert history.params["samples"] == 100
    result = model.evaluate(xv, yv)
    assert history.history["val_loss"][-1] == result["loss"]
    assert history.history["val_accuracy"][-1] == result["accuracy"]
    # a list works as well as a tuple
    model.fit(x, y, epochs=1, validation_data=[xv, yv], verbose=0)


def test_verbose_levels(capsys):
    x, y = _classification_data()
    model = make_model(widths=(16, 3), input_dim=6)
    model.compile("adam", metrics=["accuracy"])
    capsys.readouterr()

    model.fit(x, y, epochs=3, verbose=0)
    out, err = capsys.readouterr()
    assert out == "" and err == ""

    model.fit(x, y, epochs=3, validation_split=0.1, verbose=2)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3, out
    for i, line in enumerate(lines):
        assert re.match(
            rf"Epoch {i + 1}/3 - \d+\.\d+s - loss: \d+\.\d{{4}} - accuracy: \d\.\d{{4}} - "
            r"val_loss: \d+\.\d{4} - val_accuracy: \d\.\d{4}$",
            line,
        ), line
    assert err == ""

    model.fit(x, y, epochs=2, verbose=1)
    out, err = capsys.readouterr()
    assert out == ""
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "batch" in err and "loss=" in err

    with pytest.raises(ValueError, match="verbose"):
        model.fit(x, y, epochs=1, verbose=3)


@pytest.mark.timing  # fit must stop within 5 s of the interrupt
def test_ctrl_c_during_fit():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2048, 64)).astype(np.float32)
    y = rng.integers(0, 10, 2048).astype(np.int32)
    model = cm.Sequential(
        [cm.layers.Dense(128, activation="relu"), cm.layers.Dropout(0.2), cm.layers.Dense(10)], input_dim=64, seed=0
    )
    model.compile("adam", metrics=["accuracy"])
    # Python's own SIGINT handler, as at a terminal: a runner started in the background by a
    # shell without job control inherits SIGINT ignored, and interrupt_main then does nothing.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    returned = interrupted = False
    start = time.perf_counter()
    timer.start()
    try:
        model.fit(x, y, epochs=2000, batch_size=32, verbose=0)  # minutes if not interrupted
        returned = True
        timer.join()
        time.sleep(1.0)  # a late interrupt lands here, not in a later test
    except KeyboardInterrupt:
        interrupted = True
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGINT, previous)
    elapsed = time.perf_counter() - start
    assert interrupted and not returned, "KeyboardInterrupt did not propagate out of fit"
    assert elapsed < 5.0, f"fit took {elapsed:.1f}s to stop after Ctrl-C"
    for w in model.get_weights():
        assert np.isfinite(w).all()
    out = model.predict(x[:5])
    assert out.shape == (5, 10) and np.isfinite(out).all()
    history = model.fit(x[:256], y[:256], epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
