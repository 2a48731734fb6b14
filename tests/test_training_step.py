"""The training step against NumPy, the main correctness test of the executor: each fit step
(forward, loss, backward, clipping, optimizer update) of every optimizer, loss and
activation is compared with the float64 reference in tests/model_reference.py, within
error bounds derived there rather than guessed, on every device of the ``device`` fixture
(cuda-emulated under two thread orders included). Also: mini-batches as successive steps.

The central test is ``test_training_step_matches_numpy``."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from model_reference import AdamRef, SgdRef, check_steps, make_model, random_biases, sigmoid64, step_data

_OPTIMIZER_CASES = {
    # id: (optimizer as compiled, reference, steps)
    "sgd": (lambda: cm.optimizers.SGD(0.5), lambda: SgdRef(0.5), 2),
    "sgd-name": (lambda: "sgd", lambda: SgdRef(0.01), 1),
    "sgd-l2": (lambda: cm.optimizers.SGD(0.5, weight_decay=0.1), lambda: SgdRef(0.5, weight_decay=0.1), 2),
    "sgd-momentum": (lambda: cm.optimizers.SGD(0.1, momentum=0.9), lambda: SgdRef(0.1, momentum=0.9), 3),
    "sgd-nesterov-l2": (
        lambda: cm.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.05),
        lambda: SgdRef(0.1, momentum=0.9, nesterov=True, weight_decay=0.05),
        3,
    ),
    "adam": (lambda: cm.optimizers.Adam(1e-2), lambda: AdamRef(1e-2), 2),
    "adam-name": (lambda: "adam", lambda: AdamRef(), 1),
    "adam-l2": (lambda: cm.optimizers.Adam(1e-2, weight_decay=0.3), lambda: AdamRef(1e-2, weight_decay=0.3), 2),
    "adam-eps": (
        lambda: cm.optimizers.Adam(1e-2, beta_1=0.8, beta_2=0.9, epsilon=1e-2),
        lambda: AdamRef(1e-2, beta_1=0.8, beta_2=0.9, epsilon=1e-2),
        2,
    ),
    "adam-amsgrad": (
        lambda: cm.optimizers.Adam(1e-2, beta_2=0.5, amsgrad=True),
        lambda: AdamRef(1e-2, beta_2=0.5, amsgrad=True),
        3,
    ),
    "adamw": (
        lambda: cm.optimizers.AdamW(1e-2, weight_decay=0.5),
        lambda: AdamRef(1e-2, weight_decay=0.5, decoupled=True),
        2,
    ),
    "adamw-name": (lambda: "adamw", lambda: AdamRef(weight_decay=0.01, decoupled=True), 2),
    "adamw-amsgrad": (
        lambda: cm.optimizers.AdamW(1e-2, beta_2=0.5, weight_decay=0.2, amsgrad=True),
        lambda: AdamRef(1e-2, beta_2=0.5, weight_decay=0.2, amsgrad=True, decoupled=True),
        3,
    ),
}


@pytest.mark.parametrize("case", sorted(_OPTIMIZER_CASES))
def test_training_step_matches_numpy(case, device):
    """5 -> 7 relu -> 3, softmax cross-entropy, one whole-data batch per fit call."""
    make_opt, make_ref, steps = _OPTIMIZER_CASES[case]
    x, y = step_data("softmax_cross_entropy")
    model = make_model(seed=3, device=device)
    random_biases(model, np.random.default_rng(5))
    model.compile(optimizer=make_opt(), loss="softmax_cross_entropy", metrics=["accuracy"])
    check_steps(model, x, y, ["relu", None], "softmax_cross_entropy", make_ref(), steps)


@pytest.mark.parametrize(
    "opt, ref",
    [
        (lambda: cm.optimizers.SGD(0.5, clipnorm=0.05), lambda: SgdRef(0.5)),
        (lambda: cm.optimizers.SGD(0.2, momentum=0.5, clipnorm=0.05), lambda: SgdRef(0.2, momentum=0.5)),
        (lambda: cm.optimizers.Adam(1e-2, clipnorm=0.05), lambda: AdamRef(1e-2)),
    ],
    ids=["sgd", "sgd-momentum", "adam"],
)
def test_clipnorm_clips_the_global_norm(opt, ref, device):
    x, y = step_data("softmax_cross_entropy")
    model = make_model(seed=3, device=device)
    random_biases(model, np.random.default_rng(5))
    model.compile(optimizer=opt(), loss="softmax_cross_entropy")
    check_steps(model, x, y, ["relu", None], "softmax_cross_entropy", ref(), 2, clipnorm=0.05)


def test_clipnorm_above_the_norm_changes_nothing():
    x, y = step_data("softmax_cross_entropy")
    a, b = make_model(seed=3), make_model(seed=3)
    a.compile(optimizer=cm.optimizers.SGD(0.5, clipnorm=1e6), loss="softmax_cross_entropy")
    b.compile(optimizer=cm.optimizers.SGD(0.5), loss="softmax_cross_entropy")
    for m in (a, b):
        m.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)  # the same float32 operations: bit for bit


@pytest.mark.parametrize("act", ["identity", "tanh", "sigmoid", "gelu"])
def test_training_step_other_activations(act, device):
    x, y = step_data("softmax_cross_entropy")
    model = make_model(acts=(act, None), seed=4, device=device)
    random_biases(model, np.random.default_rng(6))
    model.compile(optimizer=cm.optimizers.SGD(0.5, momentum=0.5), loss="softmax_cross_entropy")
    check_steps(model, x, y, [act, None], "softmax_cross_entropy", SgdRef(0.5, momentum=0.5), 2)


def test_training_step_deeper_model_with_wide_layers(device):
    """Three dense layers, widths across the GEMM tiles (NR 16/32, MR 4/6/12), batch 13."""
    x, y = step_data("softmax_cross_entropy", n=13, input_dim=19, out=5, seed=7)
    model = make_model(widths=(33, 17, 5), acts=("tanh", "relu", None), input_dim=19, seed=8, device=device)
    random_biases(model, np.random.default_rng(9))
    model.compile(optimizer=cm.optimizers.Adam(1e-2, weight_decay=0.1), loss="softmax_cross_entropy")
    check_steps(model, x, y, ["tanh", "relu", None], "softmax_cross_entropy", AdamRef(1e-2, weight_decay=0.1), 2)


@pytest.mark.parametrize("smoothing, weights", [(0.1, None), (0.0, [1.0, 3.0, 0.5]), (0.2, [0.0, 2.0, 1.0])])
def test_training_step_label_smoothing_and_class_weights(smoothing, weights, device):
    x, y = step_data("softmax_cross_entropy")
    model = make_model(seed=3, device=device)
    random_biases(model, np.random.default_rng(5))
    loss = cm.losses.SoftmaxCrossEntropy(label_smoothing=smoothing, class_weights=weights)
    model.compile(optimizer=cm.optimizers.SGD(0.5), loss=loss, metrics=["accuracy"])
    check_steps(
        model,
        x,
        y,
        ["relu", None],
        "softmax_cross_entropy",
        SgdRef(0.5),
        2,
        label_smoothing=smoothing,
        class_weights=weights,
    )


@pytest.mark.parametrize(
    "opt, ref",
    [
        (lambda: cm.optimizers.SGD(0.5), lambda: SgdRef(0.5)),
        (lambda: cm.optimizers.Adam(1e-2, weight_decay=0.1), lambda: AdamRef(1e-2, weight_decay=0.1)),
    ],
    ids=["sgd", "adam-l2"],
)
def test_training_step_binary_cross_entropy(opt, ref, device):
    x, y = step_data("binary_cross_entropy")
    model = make_model(widths=(7, 1), seed=3, device=device)
    random_biases(model, np.random.default_rng(5))
    model.compile(optimizer=opt(), loss="binary_cross_entropy", metrics=["accuracy"])
    check_steps(model, x, y, ["relu", None], "binary_cross_entropy", ref(), 2)


@pytest.mark.parametrize("out, one_d", [(2, False), (1, False), (1, True)])
def test_training_step_mse(out, one_d, device):
    x, y = step_data("mse", out=out)
    if one_d:
        y = y[:, 0].copy()
    model = make_model(widths=(7, out), seed=3, device=device)
    random_biases(model, np.random.default_rng(5))
    model.compile(optimizer=cm.optimizers.AdamW(1e-2, weight_decay=0.3), loss="mse")
    check_steps(model, x, y, ["relu", None], "mse", AdamRef(1e-2, weight_decay=0.3, decoupled=True), 2)


def test_mse_sigmoid_output_layer(device):
    """An activation on the last layer is part of the prediction, and of the gradient."""
    x, y = step_data("mse", out=2)
    y = sigmoid64(y).astype(np.float32)
    model = make_model(widths=(7, 2), acts=("relu", "sigmoid"), seed=3, device=device)
    model.compile(optimizer=cm.optimizers.SGD(1.0), loss="mse")
    check_steps(model, x, y, ["relu", "sigmoid"], "mse", SgdRef(1.0), 2)


def test_minibatches_equal_successive_steps():
    """fit with batch_size 6 over 16 rows (batches 6, 6, 4; no shuffle) is, bit for bit,
    three one-batch fits on those slices: same operations on the same rows."""
    x, y = step_data("softmax_cross_entropy")
    a, b = make_model(seed=3), make_model(seed=3)
    for m in (a, b):
        m.compile(optimizer=cm.optimizers.Adam(1e-2, amsgrad=True), loss="softmax_cross_entropy")
    a.fit(x, y, epochs=1, batch_size=6, shuffle=False, verbose=0)
    for s in (slice(0, 6), slice(6, 12), slice(12, 16)):
        b.fit(x[s], y[s], epochs=1, batch_size=16, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
