"""The training step as one recorded device graph (compile(cuda_graph=True), issue 22):
batches staged through pinned, double-buffered host memory, the step recorded once and
replayed while its shape and configuration stay. On "cuda-emulated" the graph is real
logic (cuda/emulated_backend.cpp): launches, copies and fills are recorded and replayed
in order, and what a graph cannot hold is refused. A replayed fit must give the bits of an
unrecorded one, whatever the option; the capture test also runs on a GPU
(bench/gpu_check.sh)."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from customml import _core

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")

_ROWS, _BATCH = 200, 64  # 3 full batches and a short one per epoch
# The devices that record graphs: the capture tests run on a GPU too (bench/gpu_check.sh's
# tests stage selects "cuda and not emulated").
GRAPH_DEVICES = ["cuda-emulated"] + (["cuda"] if _core.cuda_available() else [])


def _lr_scheduler():
    return cm.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)


# Each case exercises what a replay must reproduce: the device's step count (dropout
# streams, Adam's bias correction), fp16's device state, QAT's moving input range, the
# regression metrics' per-epoch shift, masks, sample weights, a learning rate that changes
# (per epoch or per step: read from device memory, never recorded again), clipping, penalties and probability targets (staged like a teacher's logits).
_CASES = {
    "adam": {},
    "dropout": dict(dropout=0.3),
    "fp16": dict(precision="fp16"),
    "sgd+dropout+clip+l2+weights": dict(
        optimizer=lambda: cm.optimizers.SGD(0.05, momentum=0.9), dropout=0.2, clipnorm=0.5, l2=1e-3, sample_weight=True
    ),
    "clip": dict(clipnorm=0.05),  # the norm from the backward's slots (no penalty, fp32)
    "qat": dict(qat=True),
    "mse+r2": dict(loss="mse", metrics=["mae", "r2"]),
    "binary+f1": dict(loss="binary_cross_entropy", metrics=["accuracy", "f1", "confusion_matrix"]),
    "pruned": dict(prune=0.5),
    "lr_schedule": dict(callbacks=_lr_scheduler),
    "cosine decay per step": dict(optimizer=lambda: cm.optimizers.Adam(cm.schedules.CosineDecay(1e-2, 12))),
    "probability targets": dict(soft=True),
}


def _fit(device, case, graph):
    c = _CASES[case]
    loss = c.get("loss", "softmax_cross_entropy")
    outputs = 1 if loss == "binary_cross_entropy" else 4 if loss == "mse" else 10
    reg = cm.regularizers.l2(c["l2"]) if "l2" in c else None
    layers = [cm.layers.Dense(48, "relu", kernel_regularizer=reg)]
    if "dropout" in c:
        layers.append(cm.layers.Dropout(c["dropout"]))
    layers += [cm.layers.Dense(32, "gelu"), cm.layers.Dense(outputs)]
    model = cm.Sequential(layers, input_dim=24, device=device, seed=3)
    optimizer = c["optimizer"]() if "optimizer" in c else cm.optimizers.Adam(1e-2)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=c.get("metrics", ["accuracy"]),
        clipnorm=c.get("clipnorm"),
        precision=c.get("precision", "fp32"),
        cuda_graph=graph,
    )
    if c.get("qat"):
        for i in range(len(model.layers)):
            if isinstance(model.layers[i], cm.layers.Dense):
                model._net.set_fake_quantization(i, True, True, 0.9)
    if "prune" in c:
        cm.prune.magnitude(model, c["prune"], measure=False)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((_ROWS, 24)).astype(np.float32)
    if loss == "mse":
        y = rng.standard_normal((_ROWS, outputs)).astype(np.float32)
    elif c.get("soft"):
        y = rng.random((_ROWS, outputs)).astype(np.float32)
        y /= y.sum(axis=1, keepdims=True)
    else:
        y = rng.integers(0, 2 if outputs == 1 else outputs, _ROWS).astype(np.int32)
    w = rng.uniform(0.5, 2.0, _ROWS).astype(np.float32) if c.get("sample_weight") else None
    callbacks = [c["callbacks"]()] if "callbacks" in c else None
    history = model.fit(x, y, epochs=3, batch_size=_BATCH, sample_weight=w, verbose=0, callbacks=callbacks)
    return model, history.history, model._net.cuda_graph_replays


def _same_bits(a, b):
    return all(p.dtype == q.dtype and p.tobytes() == q.tobytes() for p, q in zip(a, b))


@pytest.mark.parametrize("case", sorted(_CASES))
def test_replayed_steps_give_the_bits_of_unrecorded_ones(case):
    _check_replays_against_unrecorded("cuda-emulated", case)


@pytest.mark.parametrize("device", GRAPH_DEVICES)
def test_replayed_steps_give_the_bits_of_unrecorded_ones_on(device):
    """The case a GPU checks: SGD (an update that does not read the step count, whose Adam
    bias correction a GPU computes on the device in a graph and on the host without one,
    a rounding apart), with dropout (the device's step count picks the masks), clipping, a
    penalty and sample weights."""
    _check_replays_against_unrecorded(device, "sgd+dropout+clip+l2+weights")


def _check_replays_against_unrecorded(device, case):
    plain, plain_history, _ = _fit(device, case, graph=False)
    graphed, graphed_history, replays = _fit(device, case, graph=True)
    assert graphed._net.cuda_graph and not plain._net.cuda_graph
    assert _same_bits(plain.get_weights(), graphed.get_weights())
    np.testing.assert_equal(graphed_history, plain_history)
    assert plain._net.step == graphed._net.step == 12
    # 12 steps: the first of each key runs directly, the next records; the short last batch
    # of an epoch has a key of its own (and, after the first epoch, a graph of its own).
    # A new epoch's first regression targets run directly.
    minimum = {"mse+r2": 3}.get(case, 7)
    assert replays >= minimum, f"{replays} replays in 12 steps"


def test_a_replayed_step_is_one_graph_launch_of_the_same_kernels():
    model, _, _ = _fit("cuda-emulated", "adam", graph=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * _BATCH, 24)).astype(np.float32)
    y = rng.integers(0, 10, 2 * _BATCH).astype(np.int32)

    def counts(rows):
        before = (_core._emulated_launches(), _core._emulated_host_waits(), _core._emulated_graph_replays())
        model.fit(x[:rows], y[:rows], epochs=1, batch_size=_BATCH, shuffle=False, verbose=0)
        after = (_core._emulated_launches(), _core._emulated_host_waits(), _core._emulated_graph_replays())
        return [a - b for a, b in zip(after, before)]

    counts(_BATCH)
    one, two = counts(_BATCH), counts(2 * _BATCH)
    launches, waits, replays = (t - o for t, o in zip(two, one))
    assert (launches, waits, replays) == (8, 0, 1)


@pytest.mark.parametrize("device", GRAPH_DEVICES)
def test_a_recorded_copy_reads_the_pinned_memory_at_each_replay(device):
    before, after = _core._record_graph_around("pinned_copy", device)
    assert (before, after) == (0.0, 2.0)  # nothing ran at the recording; the replay read the new value


@pytest.mark.parametrize(
    "op, what",
    [
        ("pageable_copy", "a copy from pageable host memory"),
        ("copy_to_host", "a copy to the host"),
        ("synchronize", "synchronize"),
        ("allocate", "a device allocation"),
        ("wait_event", "waiting for an event"),
        ("nested", "a capture inside a capture"),
    ],
)
@pytest.mark.parametrize("device", GRAPH_DEVICES)
def test_what_a_graph_cannot_hold_is_refused_while_recording(device, op, what):
    with pytest.raises(RuntimeError, match=r"\[cuda graph\] " + what):
        _core._record_graph_around(op, device)


def test_cuda_graph_needs_a_device_with_graphs_and_no_roc_auc():
    model = cm.Sequential([cm.layers.Dense(4)], input_dim=3, device="cpu", seed=0)
    with pytest.raises(ValueError, match="cuda_graph needs a device"):
        model.compile(optimizer="adam", loss="softmax_cross_entropy", cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph must be True or False"):
        model.compile(optimizer="adam", loss="softmax_cross_entropy", cuda_graph="yes")
    model = cm.Sequential([cm.layers.Dense(4)], input_dim=3, device="cuda-emulated", seed=0)
    model.compile(optimizer="adam", loss="softmax_cross_entropy", metrics=["roc_auc"], cuda_graph=True)
    x = np.zeros((8, 3), np.float32)
    with pytest.raises(ValueError, match="roc_auc"):
        model.fit(x, np.zeros(8, np.int32), verbose=0)


def test_the_two_halves_of_a_step_take_the_hosts_step_count_after_graphed_steps():
    """Data-parallel training calls compute_gradients and apply_gradients, never recorded:
    after graphed steps they must read the host's step count (Adam's bias correction), not
    the device copy the last graphed step left."""
    runs = []
    for graph in (False, True):
        model, _, _ = _fit("cuda-emulated", "adam", graph=graph)
        rng = np.random.default_rng(9)
        x = rng.standard_normal((_BATCH, 24)).astype(np.float32)
        y = rng.integers(0, 10, _BATCH).astype(np.int32)
        for _ in range(2):
            model._net.compute_gradients(x, y, np.arange(_BATCH, dtype=np.int64))
            model._net.apply_gradients(_BATCH)
        runs.append(model.get_weights())
    assert _same_bits(*runs)


def test_a_schedule_records_once_and_replays():
    """A learning rate changing every step is read from device memory by the recorded step:
    one recording per pinned slot, every other full batch a replay, bit for bit the
    unrecorded fit (before: the rate was part of the graph, so no step was ever replayed)."""
    case = "cosine decay per step"
    plain, _, _ = _fit("cuda-emulated", case, graph=False)
    graphed, _, replays = _fit("cuda-emulated", case, graph=True)
    assert plain.learning_rate != 1e-2 and plain.learning_rate == graphed.learning_rate
    assert _same_bits(plain.get_weights(), graphed.get_weights())
    # 12 steps, 3 full batches and a short one per epoch: the full batches record at steps
    # 2 and 3 (one per slot) and replay from then on; the short batch, whose previous step
    # has another key, always runs directly
    assert (graphed._net.cuda_graph_recordings, replays) == (2, 8)


def _graphed_student(device="cuda-emulated"):
    model = cm.Sequential([cm.layers.Dense(16, "relu"), cm.layers.Dense(4)], input_dim=24, device=device, seed=1)
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", cuda_graph=True)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((96, 24)).astype(np.float32)
    y = rng.integers(0, 4, 96).astype(np.int32)
    return model, x, y


def test_distill_keeps_the_students_cuda_graph():
    teacher, x, y = _graphed_student()
    teacher.fit(x, y, epochs=1, batch_size=32, verbose=0)
    student, _, _ = _graphed_student()
    cm.distill(teacher, student, x, y, epochs=1, batch_size=32, verbose=0)
    assert student._net.cuda_graph and student._net.cuda_graph_replays > 0


def test_qat_keeps_cuda_graph(monkeypatch):
    copies = []  # the fine-tuned copy qat makes (predict's graphs would count in the global replays)
    copy = cm.quantize._copy
    monkeypatch.setattr(cm.quantize, "_copy", lambda model: copies.append(copy(model)) or copies[-1])
    model, x, y = _graphed_student()
    cm.quantize.qat(model, x, y, epochs=2, batch_size=32, calibration=x[:32])
    assert copies[0]._net.cuda_graph_replays > 0


def test_structured_pruning_keeps_cuda_graph():
    model, x, y = _graphed_student()
    smaller = cm.prune.structured(model, 0.25, measure=False)
    assert smaller._net.cuda_graph
    smaller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert smaller._net.cuda_graph_replays > 0


def test_the_cli_trains_with_cuda_graph(monkeypatch):
    from customml import cli

    replays = []  # each fit's replayed steps (predict's graphs would count in the global replays)
    fit = cm.Sequential.fit

    def counting_fit(self, *args, **kwargs):
        history = fit(self, *args, **kwargs)
        replays.append(self._net.cuda_graph_replays)
        return history

    monkeypatch.setattr(cm.Sequential, "fit", counting_fit)
    args = ["train", "--dataset", "iris", "--epochs", "2", "--hidden", "8", "--device", "cuda-emulated"]
    assert cli.main([*args, "--prune-sparsity", "0", "--no-quantize", "--cuda-graph", "--quiet"]) == 0
    # the cosine schedule changes the rate every step: replayed all the same
    assert replays and replays[0] >= 4
