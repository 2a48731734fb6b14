"""A weight change of several layers is one transaction (docs/decisions.md, "Concurrency"):
every prediction made while set_weights, load_weights, layer.set_weights or pruning runs in
another thread, and every file saved meanwhile, equals the model under one whole weight
set, bit for bit; on every model kind (float32, pruned in a sparse format, int8) and
device. Each race runs a fixed number of writes, with a time limit on the threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import customml as cm
from customml import _core
from customml._formats import UNBOUNDED

DEVICES = ["cpu"] + (["cuda-emulated"] if _core.build_info()["simt_emulation"] else [])
KINDS = ["float32", "pruned", "int8"]
LIMIT_S = 120.0  # far above what a race takes (a few seconds); a hang fails instead of stalling CI
RACE_S = 3.0


def _model(kind: str, device: str, scale: float = 1.0):
    """A 3-layer model of `kind` whose weights are the seed-0 ones times scale (plus 0.01)."""
    model = cm.Sequential(
        [cm.layers.Dense(256, "relu"), cm.layers.Dense(128, "tanh"), cm.layers.Dense(10)],
        input_dim=64,
        seed=0,
        device=device,
    )
    if scale != 1.0:
        model.set_weights([w * scale + 0.01 for w in model.get_weights()])
    if kind == "pruned":
        cm.prune.magnitude(model, 0.6, measure=False)
        for i in (0, 1, 2):
            model._net.set_sparse_format(i, "csr", UNBOUNDED)
    elif kind == "int8":
        calibration = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
        model = cm.quantize.int8(model, calibration=calibration)
    return model


def _x():
    return np.random.default_rng(2).standard_normal((5, 64)).astype(np.float32)


def _run(writer, readers, n_readers: int = 3) -> None:
    """Runs `writer()` in this thread while `n_readers` threads loop `readers(stop)`;
    re-raises the first error of any thread."""
    errors, stop = [], threading.Event()

    def guarded(fn, *args):
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(readers, stop)) for _ in range(n_readers)]
    for t in threads:
        t.start()
    try:
        guarded(writer)
    finally:
        stop.set()
        for t in threads:
            t.join(LIMIT_S)
    assert not any(t.is_alive() for t in threads), "a reader did not finish"
    assert not errors, errors


def _race(model, write, wants) -> None:
    """write(k) alternates the model between the weight sets whose predictions of _x() are
    `wants`, while readers predict: every prediction must be one of them. The writer goes
    on until it has written 200 times and the readers have predicted 1,000 times, or for
    RACE_S seconds (a mix needs a prediction between two layers' writes)."""
    x = _x()
    reads = [0]

    def readers(stop):
        out = np.empty((x.shape[0], 10), np.float32)
        while not stop.is_set():
            model.predict(x, out=out)
            assert any(np.array_equal(out, w) for w in wants), "a prediction mixed two weight sets"
            reads[0] += 1

    def writer():
        start, k = time.monotonic(), 0
        while (k < 200 or reads[0] < 1000) and time.monotonic() - start < RACE_S:
            write(k)
            k += 1

    _run(writer, readers)
    assert reads[0] > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["float32", "pruned"])
def test_set_weights_is_one_transaction(kind, device):
    model = _model(kind, device)
    sets = [model.get_weights(), [w * 0.5 + 0.01 for w in model.get_weights()]]
    wants = []
    for s in sets:
        model.set_weights(s)
        wants.append(model.predict(_x()))
    assert not np.array_equal(wants[0], wants[1])
    _race(model, lambda k: model.set_weights(sets[k % 2]), wants)


@pytest.mark.parametrize("device", DEVICES)
def test_layer_set_weights_is_one_transaction(device):
    # Dense.set_weights writes the kernel and the bias in two executor calls.
    model = _model("float32", device)
    layer = model.layers[1]
    pair = [layer.get_weights(), [w * -2.0 for w in layer.get_weights()]]
    wants = []
    for p in pair:
        layer.set_weights(p)
        wants.append(model.predict(_x()))
    _race(model, lambda k: layer.set_weights(pair[k % 2]), wants)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_load_weights_is_one_transaction(kind, device, tmp_path):
    files, wants = [], []
    for k, scale in enumerate((1.0, 0.5)):
        m = _model(kind, device, scale)
        files.append(tmp_path / f"{k}.cml")
        m.save(files[-1])
        wants.append(m.predict(_x()))
    assert not np.array_equal(wants[0], wants[1])
    model = cm.load(files[0], device=device)
    _race(model, lambda k: model.load_weights(files[(k + 1) % 2]), wants)


@pytest.mark.parametrize("device", DEVICES)
def test_pruning_is_one_transaction(device):
    # magnitude() masks the layers one by one: predictions see none of them pruned or all.
    x = _x()
    for trial in range(4):
        model = _model("float32", device, 1.0 + trial)
        before = model.predict(x)
        seen: list = []

        def reader(stop, model=model, seen=seen):
            out = np.empty((x.shape[0], 10), np.float32)
            while not stop.is_set() or not seen:
                model.predict(x, out=out)
                seen.append(out.copy())

        def writer(model=model):
            cm.prune.magnitude(model, 0.7, measure=False)

        _run(writer, reader)
        after = model.predict(x)
        assert not np.array_equal(before, after)
        mixed = [s for s in seen if not (np.array_equal(s, before) or np.array_equal(s, after))]
        assert not mixed, f"{len(mixed)} of {len(seen)} predictions mixed pruned and unpruned layers"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["float32", "pruned"])
def test_save_writes_one_whole_weight_set(kind, device, tmp_path):
    model = _model(kind, device)
    sets = [model.get_weights(), [w * 0.5 + 0.01 for w in model.get_weights()]]
    held = []  # as the model holds them: a pruned model's masks zero what they prune
    for s in sets:
        model.set_weights(s)
        held.append(model.get_weights())
    stop = threading.Event()
    errors: list = []

    def flipper():
        try:
            k = 0
            while not stop.is_set() or k < 2:
                model.set_weights(sets[k % 2])
                k += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=flipper)
    thread.start()
    try:
        paths = []
        for k in range(40):
            paths.append(tmp_path / f"{k}.cml")
            model.save(paths[-1])
    finally:
        stop.set()
        thread.join(LIMIT_S)
    assert not thread.is_alive() and not errors, errors
    for path in paths:
        saved = cm.load(path).get_weights()
        assert any(all(np.array_equal(a, b) for a, b in zip(saved, h)) for h in held), f"{path} mixes two weight sets"


@pytest.mark.parametrize("device", DEVICES)
def test_save_of_an_int8_model_during_load_weights(device, tmp_path):
    files, wants = [], []
    for k, scale in enumerate((1.0, 0.5)):
        m = _model("int8", device, scale)
        files.append(tmp_path / f"src{k}.cml")
        m.save(files[-1])
        wants.append(m.predict(_x()))
    model = cm.load(files[0], device=device)
    stop = threading.Event()
    errors: list = []

    def flipper():
        try:
            k = 0
            while not stop.is_set() or k < 2:
                model.load_weights(files[(k + 1) % 2])
                k += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=flipper)
    thread.start()
    try:
        paths = []
        for k in range(20):
            paths.append(tmp_path / f"{k}.cml")
            model.save(paths[-1])
    finally:
        stop.set()
        thread.join(LIMIT_S)
    assert not thread.is_alive() and not errors, errors
    for path in paths:
        got = cm.load(path, device=device).predict(_x())
        assert any(np.array_equal(got, w) for w in wants), f"{path} mixes two weight sets"


def test_a_failed_transaction_ends():
    # An error inside a transaction (a write out of range here) leaves no transaction
    # open: predict rebuilds from the model again afterwards.
    model = _model("float32", "cpu")
    x = _x()
    with pytest.raises(IndexError):
        with model._transaction():
            model._net.write_params(0, np.zeros(model._net.num_params + 1, np.float32))
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    np.testing.assert_array_equal(model.predict(x), np.zeros((5, 10), np.float32))
    with pytest.raises(RuntimeError, match="no update is open"):
        model._net.end_update()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_add_and_pop_are_transactions(kind, device):
    # add and pop build a new executor: predict runs the model before the change or after
    # it, never the new executor before its weights, pruning or int8 layers are written.
    model, x = _model(kind, device), _x()
    wants = [model.predict(x)]
    head = model.pop()
    wants.append(model.predict(x))
    model.add(head)
    wants.append(model.predict(x))
    reads = [0]

    def readers(stop):
        while not stop.is_set():
            y = model.predict(x)
            assert any(np.array_equal(y, w) for w in wants), "a prediction ran a half-built model"
            reads[0] += 1

    def writer():
        start, k = time.monotonic(), 0
        while (k < 100 or reads[0] < 500) and time.monotonic() - start < RACE_S:
            model.pop() if k % 2 == 0 else model.add(head)
            k += 1
        if k % 2:
            model.add(head)

    _run(writer, readers)
    assert reads[0] > 0
    np.testing.assert_array_equal(model.predict(x), wants[2])
