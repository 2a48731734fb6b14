"""The model API end to end on "cuda-emulated": the executor drives the CUDA kernels
(through the host SIMT emulator) and must train, evaluate and predict as on "cpu"."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from customml import _core
from model_reference import forward_bound
from support import U32

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")


def _dense_layers(model):
    """The Dense layers' (kernel, bias) pairs and activations: predict runs no Dropout."""
    dense = [layer for layer in model.layers if isinstance(layer, cm.layers.Dense)]
    return [tuple(layer.get_weights()) for layer in dense], [layer.activation for layer in dense]


def _pair(layers_fn, input_dim, seed=7):
    """The same architecture and initial weights on cpu and on cuda-emulated."""
    cpu = cm.Sequential(layers_fn(), input_dim=input_dim, device="cpu", seed=seed)
    emu = cm.Sequential(layers_fn(), input_dim=input_dim, device="cuda-emulated", seed=seed)
    return cpu, emu


CONFIGS = {
    "relu-adam-ce": (
        lambda: [cm.layers.Dense(33, activation="relu"), cm.layers.Dense(5)],
        lambda: cm.optimizers.Adam(1e-2, weight_decay=1e-3),
        "softmax_cross_entropy",
    ),
    "gelu-adamw-amsgrad-clip": (
        lambda: [cm.layers.Dense(17, activation="gelu"), cm.layers.Dense(5)],
        lambda: cm.optimizers.AdamW(1e-2, amsgrad=True, clipnorm=0.5),
        cm.losses.SoftmaxCrossEntropy(label_smoothing=0.1, class_weights=[1, 2, 1, 0.5, 1]),
    ),
    "tanh-dropout-sgd-nesterov": (
        lambda: [cm.layers.Dense(40, activation="tanh"), cm.layers.Dropout(0.3), cm.layers.Dense(5)],
        lambda: cm.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        "softmax_cross_entropy",
    ),
    "sigmoid-bce": (
        lambda: [cm.layers.Dense(9, activation="sigmoid"), cm.layers.Dense(1)],
        lambda: cm.optimizers.Adam(1e-2),
        "binary_cross_entropy",
    ),
    "relu-mse": (
        lambda: [cm.layers.Dense(12, activation="relu"), cm.layers.Dense(3)],
        lambda: cm.optimizers.SGD(0.05),
        "mse",
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_matches_the_cpu(name):
    layers_fn, opt_fn, loss = CONFIGS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, 11)).astype(np.float32)
    if loss == "mse":
        y = rng.standard_normal((150, 3)).astype(np.float32)
    elif loss == "binary_cross_entropy":
        y = (x[:, 0] > 0).astype(np.int32)
    else:
        y = rng.integers(0, 5, 150)
    cpu, emu = _pair(layers_fn, 11)
    metrics = ["accuracy"] if loss != "mse" else []
    for model in (cpu, emu):
        model.compile(optimizer=opt_fn(), loss=loss, metrics=metrics)
    h_cpu = cpu.fit(x, y, epochs=3, batch_size=32, seed=1, verbose=0)
    h_emu = emu.fit(x, y, epochs=3, batch_size=32, seed=1, verbose=0)
    # The devices sum products in different orders (blocked FMA on the CPU, one product
    # at a time on the device), so each step differs by float32 rounding (~1e-7
    # relative); 15 steps of these optimizers keep that far below 1e-4 of the weights'
    # scale, while a wrong kernel (a missed decay, a wrong mask) moves them by 1e-2 or more.
    for w_cpu, w_emu in zip(cpu.get_weights(), emu.get_weights()):
        assert w_emu.shape == w_cpu.shape and w_emu.dtype == np.float32
        np.testing.assert_allclose(w_emu, w_cpu, rtol=0, atol=1e-4 * max(1.0, np.abs(w_cpu).max()))
    for key in h_cpu.history:
        np.testing.assert_allclose(h_emu.history[key], h_cpu.history[key], rtol=1e-4, atol=1e-6)
    # Each device's predict is its own weights' float64 forward to within gamma_N A, N = 11
    # inputs + at most 40 hidden units + 10 for the bias additions and the activation
    # (tests/model_reference.py), whatever order each device sums in; the two float64
    # forwards differ by what training left between the weights. So the outputs differ by
    # at most that difference plus both rounding bounds: at most 2e-4 here (A <= 26), where
    # they differ by under 1e-6 and a wrong kernel moves them by 1e-2 or more.
    (want_cpu, a_cpu), (want_emu, a_emu) = (forward_bound(x, *_dense_layers(m)) for m in (cpu, emu))
    gamma = 61 * U32 / (1 - 61 * U32)
    np.testing.assert_array_less(
        np.abs(emu.predict(x) - cpu.predict(x)), np.abs(want_emu - want_cpu) + gamma * (a_cpu + a_emu)
    )
    ev_cpu, ev_emu = cpu.evaluate(x, y), emu.evaluate(x, y)
    assert ev_cpu.keys() == ev_emu.keys()
    for k in ev_cpu:
        assert ev_emu[k] == pytest.approx(ev_cpu[k], rel=1e-4, abs=1e-6)


def test_thread_orders_agree_bit_for_bit():
    """The kernels have no data race a scheduling order could expose: a whole training
    run gives identical bits under forward, reverse and shuffled orders."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((70, 6)).astype(np.float32)
    y = rng.integers(0, 4, 70)
    results = []
    try:
        for order in ("forward", "reverse", "shuffled"):
            _core._simt_set_thread_order(order, 99)
            model = cm.Sequential(
                [cm.layers.Dense(20, activation="gelu"), cm.layers.Dropout(0.2), cm.layers.Dense(4)],
                input_dim=6,
                device="cuda-emulated",
                seed=3,
            )
            model.compile(optimizer=cm.optimizers.Adam(1e-2, clipnorm=1.0), loss="softmax_cross_entropy")
            model.fit(x, y, epochs=2, batch_size=16, verbose=0)
            results.append(np.concatenate([w.ravel() for w in model.get_weights()]))
    finally:
        _core._simt_set_thread_order("forward")
    assert results[0].tobytes() == results[1].tobytes() == results[2].tobytes()


def test_digits_trains_on_the_emulated_device():
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("digits")
    model = cm.Sequential(
        [cm.layers.Dense(64, activation="relu"), cm.layers.Dropout(0.1), cm.layers.Dense(10)],
        input_dim=64,
        device="cuda-emulated",
        seed=0,
    )
    model.compile(optimizer=cm.optimizers.Adam(3e-3), loss="softmax_cross_entropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)
    # 5 epochs of this model reach about 0.94-0.95 (the CPU's figure, too); chance is 0.1.
    assert model.evaluate(x_test, y_test)["accuracy"] >= 0.9
    probs = model.predict_proba(x_test[:7])
    assert probs.shape == (7, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_predict_into_a_buffer_on_the_emulated_device():
    model = cm.Sequential(
        [cm.layers.Dense(8, activation="relu"), cm.layers.Dense(3)], input_dim=5, device="cuda-emulated", seed=0
    )
    x = np.random.default_rng(2).standard_normal((9, 5)).astype(np.float32)
    out = np.full((9, 3), np.nan, np.float32)
    assert model.predict(x, out=out) is out
    w1, b1, w2, b2 = model.get_weights()
    want = np.maximum(x.astype(np.float64) @ w1 + b1, 0) @ w2 + b2
    # float32 products summed over 5 and 8 terms: a few ulps of the largest partial sums
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_warm_training_and_inference_allocate_no_device_memory(precision):
    """The executor's device buffers grow to the largest batch once and are reused, so a
    warm fit, evaluate or predict asks the device for no memory at all: on "cuda" no
    cudaMalloc, not even a call into the caching allocator. cuda-emulated takes the same
    path (its buffers are device buffers to the executor) and counts its allocations."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((70, 6)).astype(np.float32)
    y = rng.integers(0, 4, 70)
    model = cm.Sequential(
        [cm.layers.Dense(20, activation="gelu"), cm.layers.Dropout(0.2), cm.layers.Dense(4)],
        input_dim=6,
        device="cuda-emulated",
        seed=3,
    )
    model.compile(
        optimizer=cm.optimizers.AdamW(1e-2, clipnorm=1.0),
        loss=cm.losses.SoftmaxCrossEntropy(label_smoothing=0.1, class_weights=[1, 2, 1, 1]),
        metrics=["accuracy", "f1"],
        precision=precision,
    )
    # batches of 16 and a last one of 6: the warm-up sees every shape the later calls use
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.evaluate(x, y, batch_size=16)
    model.predict(x, batch_size=16)
    before = _core._emulated_allocations()
    step = model._net.step
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.evaluate(x, y, batch_size=16)
    model.predict(x, batch_size=16)
    assert model._net.step > step  # the steps really ran
    assert _core._emulated_allocations() == before


_CLASSIFICATION = [m for m in cm.metrics.NAMES if m in cm.metrics.CLASSIFICATION and "binary" not in m]
# Every loss, class and sample weights, clipping, L1/L2, a schedule and every metric; fp16
# (its overflow check reads the norm) and QAT (its ranges are computed on the host) still
# read the device once a step, and are not here.
_HOST_WAIT_CASES = {
    "softmax_ce": dict(
        layers=lambda: [cm.layers.Dense(16, "relu"), cm.layers.Dropout(0.1), cm.layers.Dense(3)],
        loss=cm.losses.SoftmaxCrossEntropy(label_smoothing=0.1, class_weights=[1.0, 2.0, 0.5]),
        optimizer=cm.optimizers.AdamW(1e-2, weight_decay=1e-3, amsgrad=True),
        classes=3,
        metrics=_CLASSIFICATION,
        clipnorm=0.5,
        sample_weight=True,
    ),
    "binary_ce": dict(
        layers=lambda: [
            cm.layers.Dense(8, "gelu", kernel_regularizer=cm.regularizers.l1_l2(1e-3, 1e-3)),
            cm.layers.Dense(1),
        ],
        loss="binary_cross_entropy",
        optimizer=cm.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        classes=2,
        metrics=["accuracy", "f1", "precision_binary", "confusion_matrix", "roc_auc"],
        schedule=True,
    ),
    # fp16: the overflow check, the step count (Adam's bias correction, the dropout
    # streams) and the loss scale live on the device. At a scale of 1024 no step overflows;
    # at 2^40 the scaled gradients overflow fp16 and steps are skipped, on the device too.
    "fp16": dict(
        layers=lambda: [
            cm.layers.Dense(16, "relu", kernel_regularizer=cm.regularizers.l2(1e-3)),
            cm.layers.Dropout(0.1),
            cm.layers.Dense(3),
        ],
        loss="softmax_cross_entropy",
        optimizer="adam",
        classes=3,
        metrics=["accuracy"],
        precision="fp16",
        loss_scale=1024.0,
    ),
    "fp16_overflow": dict(
        layers=lambda: [cm.layers.Dense(16, "relu"), cm.layers.Dense(3)],
        loss="softmax_cross_entropy",
        optimizer=cm.optimizers.SGD(0.05, momentum=0.9),
        classes=3,
        metrics=["accuracy"],
        precision="fp16",
        loss_scale=2.0**40,
    ),
    # Quantization-aware training: the weight scales and the moving input ranges are
    # computed on the device (per column in one layer, per tensor in the other).
    "qat": dict(
        layers=lambda: [cm.layers.Dense(16, "relu"), cm.layers.Dense(3)],
        loss="softmax_cross_entropy",
        optimizer="adam",
        classes=3,
        metrics=["accuracy"],
        qat=True,
    ),
    "mse": dict(
        layers=lambda: [
            cm.layers.Normalization(np.zeros(5), np.ones(5)),
            cm.layers.Dense(8, "tanh"),
            cm.layers.Dense(2, kernel_regularizer=cm.regularizers.l2(1e-3)),
        ],
        loss="mse",
        optimizer="adam",
        classes=0,
        metrics=["mae", "rmse", "r2"],
        sample_weight=True,
        clipnorm=1.0,
    ),
}


@pytest.mark.parametrize("case", sorted(_HOST_WAIT_CASES))
def test_a_training_step_makes_the_host_wait_for_nothing(case, capsys):
    """On "cuda" every copy to the host and every synchronization stalls the host until the
    device has caught up, which costs more than a small MLP's whole step: the loss, the
    counts and every metric's statistics stay on the device and are read once an epoch
    (under fit's default verbose=1, progress bar included). cuda-emulated counts those waits:
    a fit of 8 steps an epoch makes exactly as many as one of 2 steps."""
    c = _HOST_WAIT_CASES[case]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = (
        rng.standard_normal((64, 2)).astype(np.float32)
        if not c["classes"]
        else rng.integers(0, c["classes"], 64).astype(np.int32)
    )
    sample_weight = rng.uniform(0.5, 2.0, 64).astype(np.float32) if c.get("sample_weight") else None
    optimizer = c["optimizer"]
    if c.get("schedule"):
        optimizer = cm.optimizers.SGD(cm.schedules.CosineDecay(0.05, decay_steps=100), momentum=0.9)
    model = cm.Sequential(c["layers"](), input_dim=5, device="cuda-emulated", seed=1)
    model.compile(
        optimizer=optimizer,
        loss=c["loss"],
        metrics=c["metrics"],
        clipnorm=c.get("clipnorm"),
        precision=c.get("precision", "fp32"),
    )
    if c.get("qat"):
        for layer, per_channel in ((0, True), (1, False)):
            model._net.set_fake_quantization(layer, per_channel, True, 0.9)

    def host_waits(batch_size):
        if "loss_scale" in c:
            model._net.set_loss_scale(c["loss_scale"], 0)
        before = _core._emulated_host_waits()
        steps = model._net.step
        model.fit(x, y, epochs=2, batch_size=batch_size, sample_weight=sample_weight, verbose=1)
        ran, batches = model._net.step - steps, 2 * 64 // batch_size
        if c.get("loss_scale", 0) > 2.0**20:
            assert ran < batches  # overflowing steps were skipped
        else:
            assert ran == batches  # every step ran
        return _core._emulated_host_waits() - before

    host_waits(8)  # warm: every buffer at its largest
    few, many = host_waits(32), host_waits(8)
    assert many == few, f"{many - few} more host waits for 12 more steps"
    assert few <= 2 * 8, f"{few} host waits in 2 epochs: more than the epoch-end reads"
    assert "Epoch 2/2" in capsys.readouterr().err  # the progress bar ran
