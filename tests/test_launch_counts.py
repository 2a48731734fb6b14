"""Kernel launches and host waits per training step and per predict, counted on
"cuda-emulated" (issue 22). On a GPU each launch costs a few microseconds of CPU time and
each host wait a round trip, more than the whole arithmetic of the README MLP's step at
batch 128 (about 0.1 GFLOP, tens of microseconds on an H100): these counts are what the
first GPU run will show, measured where no GPU is."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from customml import _core

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")

_BATCH = 128

# The launches of one step of the README MLP (784-256-256-10, batch 128) under each loss and
# option: the counts today, so that none grows unnoticed. The dense layers take one launch
# each way (the backward pass's dz, db, dW and dx in one grid), the loss one (loss,
# gradient, the epoch's loss sum and correct count: cuda/loss_epilogue.cuh), the optimizer
# one over each run of trainable layers: 8, the target, for the README step (issue
# 22; 13 before the losses were fused, binary cross-entropy 12, mse 11), the regression
# and confusion statistics included (the loss launch adds them: 9 before); dropout none
# between two dense layers (the one below writes the masked output beside its own, the one
# above masks its dx: 10 before), clipping
# none (the weight-gradient tiles leave their sums of squares, which the update adds before
# it scales the gradients as it reads them: 9 before, 11 before that). A regularizer's
# penalty takes none: its sum is blocks of the loss launch, binary cross-entropy's too (9
# before), its gradient added by the weight gradient's store (so clipping's slots include
# it: 10 before; the update's before that, 11 before that), l1, l2 or both, on one layer or
# every one; in fp16 it keeps its launch. fp16 adds its dynamic loss scaling: the overflow
# norm, whose last block updates the scale (the loss kernel scales its gradient, the
# update unscales: 14 before); QAT the fake quantization of each layer's
# weights and input every step (12 for three layers: each the scales or the range, then
# the codes and their values in one pass, Backend::fake_quantize; 18 before). Probability targets take the
# softmax cross-entropy's one launch too (13 before). A top layer with an activation takes
# none for its derivative: the loss launch writes its dz (LossMetrics::top; 9 before).
_CASES = {
    "softmax_ce+adam": dict(launches=8),
    "softmax_ce+sgd": dict(optimizer=lambda: cm.optimizers.SGD(0.1, momentum=0.9), launches=8),
    "class_weights+smoothing": dict(
        loss=lambda: cm.losses.SoftmaxCrossEntropy(label_smoothing=0.1, class_weights=[1.0] * 9 + [2.0]), launches=8
    ),
    "sample_weight": dict(sample_weight=True, launches=8),
    "dropout": dict(dropout=0.1, launches=8),
    "clipnorm": dict(clipnorm=1.0, launches=8),
    "l2": dict(l2=1e-4, launches=8),
    "f1+confusion": dict(metrics=["accuracy", "f1", "confusion_matrix"], launches=8),
    "binary_ce": dict(loss=lambda: "binary_cross_entropy", classes=2, outputs=1, launches=8),
    "mse": dict(loss=lambda: "mse", classes=0, metrics=["mae", "r2"], launches=8),
    "mse+l2": dict(loss=lambda: "mse", classes=0, metrics=["mae", "r2"], l2=1e-4, launches=8),
    "binary_ce+sigmoid top": dict(loss=lambda: "binary_cross_entropy", classes=2, outputs=1, top="sigmoid", launches=8),
    "mse+tanh top": dict(loss=lambda: "mse", classes=0, metrics=["mae", "r2"], top="tanh", launches=8),
    "mse+gelu top": dict(loss=lambda: "mse", classes=0, metrics=["mae"], top="gelu", launches=8),
    "fp16": dict(precision="fp16", launches=9),
    "qat": dict(qat=True, launches=20),
    "probability targets": dict(soft=True, launches=8),
    "clipnorm+l2": dict(clipnorm=1.0, l2=1e-4, launches=8),
    "binary_ce+l1_l2 on every layer+clipnorm": dict(
        loss=lambda: "binary_cross_entropy",
        classes=2,
        outputs=1,
        l1=1e-5,
        l2=1e-4,
        every=True,
        clipnorm=1.0,
        launches=8,
    ),
}
# The issue's bound, asserted on its own for every case but fp16's and QAT's (which the issue
# leaves out) and those named here with the reason they exceed it, so that a change of the
# table above cannot loosen it.
_README_BOUND = 8
_OVER_BOUND = {"fp16", "qat"}


def _model(case):
    c = _CASES[case]
    outputs = c.get("outputs", 10)
    reg = cm.regularizers.l1_l2(c.get("l1", 0.0), c.get("l2", 0.0)) if "l1" in c or "l2" in c else None
    upper = reg if c.get("every") else None
    layers = [cm.layers.Dense(256, "relu", kernel_regularizer=reg)]
    if "dropout" in c:
        layers.append(cm.layers.Dropout(c["dropout"]))
    layers += [
        cm.layers.Dense(256, "relu", kernel_regularizer=upper),
        cm.layers.Dense(outputs, c.get("top"), kernel_regularizer=upper),
    ]
    model = cm.Sequential(layers, input_dim=784, device="cuda-emulated", seed=0)
    optimizer = c["optimizer"]() if "optimizer" in c else cm.optimizers.Adam(1e-3)
    loss = c["loss"]() if "loss" in c else "softmax_cross_entropy"
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=c.get("metrics", ["accuracy"]),
        clipnorm=c.get("clipnorm"),
        precision=c.get("precision", "fp32"),
    )
    if c.get("qat"):
        # what customml.quantize.qat sets on its copy: weights per channel, static inputs
        for i in range(len(model.layers)):
            model._net.set_fake_quantization(i, True, True, 0.9)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2 * _BATCH, 784)).astype(np.float32)
    classes = c.get("classes", 10)
    if c.get("soft"):
        y = rng.random((2 * _BATCH, outputs)).astype(np.float32)
        y /= y.sum(axis=1, keepdims=True)
    elif classes:
        y = rng.integers(0, classes, 2 * _BATCH).astype(np.int32)
    else:
        y = rng.standard_normal((2 * _BATCH, outputs)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, 2 * _BATCH).astype(np.float32) if c.get("sample_weight") else None
    return model, x, y, w


def _counts(fn):
    launches, waits = _core._emulated_launches(), _core._emulated_host_waits()
    fn()
    return _core._emulated_launches() - launches, _core._emulated_host_waits() - waits


@pytest.mark.parametrize("case", sorted(_CASES))
def test_launches_and_host_waits_per_training_step(case):
    """A fit of two steps against one of one step: the difference is one step's launches
    and host waits, whatever the epoch's start and end cost."""
    model, x, y, w = _model(case)

    def fit(rows):
        def run():
            model.fit(
                x[:rows], y[:rows], epochs=1, batch_size=_BATCH, shuffle=False, verbose=0,
                sample_weight=None if w is None else w[:rows],
            )  # fmt: skip

        return _counts(run)

    fit(_BATCH)  # warm: buffers allocated, the regression shift read
    one = fit(_BATCH)
    two = fit(2 * _BATCH)
    launches, waits = two[0] - one[0], two[1] - one[1]
    assert waits == 0, f"{waits} host waits in a training step"
    bound = _CASES[case]["launches"]
    assert launches <= bound, f"{launches} launches per step, more than the {bound} this case takes"
    if case not in _OVER_BOUND:
        assert launches <= _README_BOUND


def test_a_distillation_step_takes_the_readme_steps_launches():
    """The distillation loss in one launch as the others (13 before: the total weight, the
    loss, its sum, the epoch's sum and the correct count apart); the teacher's logits are
    one predict per fit, outside the step."""
    teacher, x, y, _ = _model("softmax_ce+adam")
    student, _, _, _ = _model("softmax_ce+adam")

    def fit(rows):
        return _counts(lambda: cm.distill(teacher, student, x[:rows], y[:rows], epochs=1, batch_size=_BATCH,
                                          shuffle=False, verbose=0))  # fmt: skip

    fit(_BATCH)
    one, two = fit(_BATCH), fit(2 * _BATCH)
    assert (two[0] - one[0], two[1] - one[1]) == (_README_BOUND, 0)


def test_predict_is_one_launch_per_dense_layer():
    model, x, _, _ = _model("softmax_ce+adam")
    model.predict(x[:_BATCH])  # warm: the plan built
    launches, waits = _counts(lambda: model.predict(x[:_BATCH]))
    assert launches == 3
    # the logits' copy back to the host; predict runs no other read
    assert waits == 1
