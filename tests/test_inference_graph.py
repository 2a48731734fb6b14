"""predict's device graphs (Network::forward_replayed, docs/decisions.md, CUDA): on devices
that record graphs, each inference workspace runs a batch-row count's first pass directly,
records the second and replays it from then on. cuda-emulated records and replays for real
(cuda/emulated_backend.cpp), so these tests check on the CPU what a GPU does: a replay gives
the bits of the direct pass, graphs are dropped when a larger batch may have moved the
workspace's buffers or a rebuilt plan (new precision, weights, formats) moved or changed
what they read, the 16-bit staged input replays too, and threads predicting at once each
replay their own workspace's graphs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import customml as cm
from customml import _core

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")

DEVICE = "cuda-emulated"
_IN, _ROWS, _BATCH = 24, 70, 32  # two full batches and a partial one of 6 rows


def _model(precision="fp32", seed=3):
    # widths that are multiples of 8, so that bf16 / fp16 plans stage the input in 16 bits
    layers = [cm.layers.Dense(48, "relu"), cm.layers.Dropout(0.2), cm.layers.Dense(32, "gelu"), cm.layers.Dense(10)]
    model = cm.Sequential(layers, input_dim=_IN, device=DEVICE, seed=seed)
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", precision=precision)
    return model


def _x(rows=_ROWS, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, _IN)).astype(np.float32)


def _counted(call):
    """call's result, and the graphs cuda-emulated recorded and replayed during it."""
    recorded, replayed = _core._emulated_graph_recordings(), _core._emulated_graph_replays()
    out = call()
    return out, (_core._emulated_graph_recordings() - recorded, _core._emulated_graph_replays() - replayed)


def _bits(a):
    return a.view(np.uint32)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_row_count_is_recorded_once_and_replays_the_direct_passes_bits(precision):
    model = _model(precision)
    x = _x()
    first, n1 = _counted(lambda: model.predict(x, batch_size=_BATCH))
    second, n2 = _counted(lambda: model.predict(x, batch_size=_BATCH))
    third, n3 = _counted(lambda: model.predict(x, batch_size=_BATCH))
    # Batches of 32, 32 and 6 rows. First call: 32 direct, 32 recorded and replayed, 6
    # direct; second: 32 replayed, 6 recorded and replayed; then replays only.
    assert (n1, n2, n3) == ((1, 1), (1, 3), (0, 3))
    assert first.shape == (_ROWS, 10) and first.dtype == np.float32
    assert np.isfinite(first).all()
    # rows 0-31 and 64-69 ran directly in the first call and replayed in the others
    np.testing.assert_array_equal(_bits(second), _bits(first))
    np.testing.assert_array_equal(_bits(third), _bits(first))
    # one row, one row at a time: a row count of its own, recorded and replayed alike
    one = [_counted(lambda: model.predict(x[5:8], batch_size=1)) for _ in range(2)]
    assert [n for _, n in one] == [(1, 2), (0, 3)]
    np.testing.assert_array_equal(_bits(one[1][0]), _bits(one[0][0]))


def test_an_int8_plan_replays_its_direct_passes_bits():
    # quantized activations ping-pong between the workspace's int8 buffers: in the graph too
    model = _model()
    x = _x()
    qmodel = cm.quantize.int8(model, calibration=x)
    runs = [_counted(lambda: qmodel.predict(x, batch_size=_BATCH)) for _ in range(3)]
    assert [n for _, n in runs] == [(1, 1), (1, 3), (0, 3)]
    for out, _ in runs[1:]:
        np.testing.assert_array_equal(_bits(out), _bits(runs[0][0]))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_the_16_bit_staged_input_is_what_the_replays_read(precision):
    model = _model(precision)
    x = _x()
    model.predict(x, batch_size=_BATCH)  # every row count recorded or warm
    before = _core._emulated_bytes_to_device()
    replayed, counts = _counted(lambda: model.predict(x, batch_size=_BATCH))
    assert counts == (1, 3)
    assert _core._emulated_bytes_to_device() - before == x.size * 2  # only the 16-bit input crossed
    # another input through the same graphs: its own predictions, a direct pass's bits
    y = _x(seed=1)
    fresh = _model(precision)
    np.testing.assert_array_equal(
        _bits(model.predict(y, batch_size=_BATCH)), _bits(fresh.predict(y, batch_size=_BATCH))
    )
    assert not np.array_equal(replayed, model.predict(y, batch_size=_BATCH))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_larger_batch_drops_the_graphs_its_buffers_may_have_moved_under(precision):
    """Graphs recorded at 8 rows hold the addresses of the 8-row buffers; a batch of 32
    grows (reallocates) them, so the 8-row graph must be recorded again, not replayed on
    memory given back (it would read the old input and write the old output)."""
    model = _model(precision)
    small, large = _x(8, seed=2), _x(40, seed=3)
    for _ in range(2):
        model.predict(small, batch_size=8)  # 8 rows: direct, then recorded and replayed
    got, counts = _counted(lambda: model.predict(large, batch_size=32))  # 32 and 8 rows, both direct
    assert counts == (0, 0)
    want = _model(precision).predict(large, batch_size=32)
    np.testing.assert_array_equal(_bits(got), _bits(want))
    got, counts = _counted(lambda: model.predict(large, batch_size=32))
    assert counts == (2, 2)
    np.testing.assert_array_equal(_bits(got), _bits(want))


def _set_weights(model, x):
    w, b = model.layers[2].get_weights()
    model.layers[2].set_weights([w * 0.5, b + 0.25])


def _fit(model, x):
    model.fit(x, np.arange(len(x), dtype=np.int32) % 10, epochs=1, batch_size=16, verbose=0)


def _prune(model, x):
    cm.prune.magnitude(model, 0.5, measure=False)
    model._net.set_sparse_format(0, "csr", 2**62)  # the first layer runs sparse: a plan of other kernels


def _bf16(model, x):
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", precision="bf16")


@pytest.mark.parametrize("change", [_set_weights, _fit, _prune, _bf16], ids=lambda f: f.__name__[1:])
def test_a_rebuilt_plan_drops_the_graphs_of_the_one_before(change):
    """A graph holds the kernels and buffers of the plan it was recorded for: after a weight
    change (set_weights, fit, pruning into a sparse format) or a new precision the plan is
    rebuilt, and every workspace's graphs are dropped and recorded anew (a bf16 plan's
    input is staged in 16 bits elsewhere, and its products are other kernels)."""
    model = _model()
    x = _x()
    for _ in range(2):
        model.predict(x, batch_size=_BATCH)  # every row count recorded
    change(model, x)
    got, counts = _counted(lambda: model.predict(x, batch_size=_BATCH))
    assert counts == (1, 1)  # as a new workspace's first call: nothing replayed from before
    twin = _model("bf16" if change is _bf16 else "fp32")
    twin.set_weights(model.get_weights())
    if change is _prune:
        _prune(twin, x)
    np.testing.assert_array_equal(_bits(got), _bits(twin.predict(x, batch_size=_BATCH)))


def test_threads_predicting_at_once_replay_their_own_workspaces_graphs():
    model = _model()
    inputs = [_x(rows, seed=rows) for rows in (1, 5, 32, 70)]
    serial = [model.predict(x, batch_size=_BATCH) for x in inputs]
    replays = _core._emulated_graph_replays()
    errors, results = [], {}
    barrier = threading.Barrier(6)

    def worker(k):
        try:
            barrier.wait()
            results[k] = [(j, model.predict(inputs[j], batch_size=_BATCH)) for j in [(k + i) % 4 for i in range(12)]]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k, outs in results.items():
        for j, out in outs:
            np.testing.assert_array_equal(_bits(out), _bits(serial[j]), err_msg=f"thread {k}, input {j}")
    # Which pooled workspace a call takes varies from run to run, and so does how often
    # each is warmed and recorded; that some calls replayed is certain.
    assert _core._emulated_graph_replays() > replays


def test_the_first_predict_of_a_process_is_recorded_from_its_second_pass():
    """A row count's first pass runs directly, so what the device does once (the split-K
    GEMMs' workspace, allocated at its first use) never lands in a capture, which would
    refuse it and turn the model's graphs off: in a fresh process, predict's very first
    products still end up replayed."""
    code = (
        "import numpy as np, customml as cm\n"
        "from customml import _core\n"
        f"m = cm.Sequential([cm.layers.Dense(48, 'relu'), cm.layers.Dense(10)], input_dim={_IN}, device='{DEVICE}')\n"
        f"x = np.ones((32, {_IN}), np.float32)\n"
        "for _ in range(3):\n"
        "    m.predict(x, batch_size=32)\n"
        "print(_core._emulated_graph_recordings(), _core._emulated_graph_replays())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=True)
    assert out.stdout.split() == ["1", "2"]
