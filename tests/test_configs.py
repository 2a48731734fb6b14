"""The configuration structs of customml._core (LayerSpec, LossConfig, SgdConfig,
AdamConfig, OptimizerConfig, MetricStats): their defaults are the C++ ones, a wrong
kind or type is refused where the struct is built, and Network takes them whole,
checking their values in compile as it always has."""

from __future__ import annotations

import numpy as np
import pytest

from customml import _core


def _net(device="cpu", units=3):
    return _core.Network(
        4,
        [
            _core.LayerSpec("affine", scale=[1.0] * 4, shift=[0.0] * 4),
            _core.LayerSpec("dense", units=8, activation="relu", l2=1e-4),
            _core.LayerSpec("dropout", rate=0.25),
            _core.LayerSpec("dense", units=units, trainable=True),
        ],
        device,
    )


def test_defaults_are_the_cpp_structs():
    # float32 fields: compared as float32, the value C++ holds
    sgd = _core.SgdConfig()
    assert (sgd.lr, sgd.momentum, sgd.nesterov, sgd.weight_decay) == (np.float32(0.01), 0.0, False, 0.0)
    adam = _core.AdamConfig()
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps) == tuple(np.float32(v) for v in (1e-3, 0.9, 0.999, 1e-8))
    assert (adam.weight_decay, adam.decoupled, adam.amsgrad, adam.step) == (0.0, False, False, 1)
    loss = _core.LossConfig("softmax_cross_entropy")
    assert (loss.kind, loss.label_smoothing, loss.class_weights) == ("softmax_cross_entropy", 0.0, [])
    layer = _core.LayerSpec("dense")
    assert (layer.kind, layer.units, layer.activation, layer.trainable, layer.l1, layer.l2) == (
        "dense",
        0,
        "identity",
        True,
        0.0,
        0.0,
    )
    stats = _core.MetricStats()
    assert (stats.confusion, stats.regression, stats.scores) == (False, False, False)


def test_fields_round_trip():
    layer = _core.LayerSpec("dense", units=5, activation="linear", l1=0.5, trainable=False)
    assert (layer.units, layer.activation, layer.l1, layer.trainable) == (5, "identity", 0.5, False)
    affine = _core.LayerSpec("affine", scale=[2.0, 0.5], shift=[-1.0, 1.0])
    assert (affine.kind, affine.scale, affine.shift) == ("affine", [2.0, 0.5], [-1.0, 1.0])
    loss = _core.LossConfig("softmax_cross_entropy", label_smoothing=0.25, class_weights=[1.0, 2.0])
    assert (loss.label_smoothing, loss.class_weights) == (0.25, [1.0, 2.0])
    adam = _core.AdamConfig(lr=0.5, beta1=0.5, amsgrad=True, decoupled=True, weight_decay=0.25, step=7)
    assert (adam.lr, adam.beta1, adam.amsgrad, adam.decoupled, adam.weight_decay, adam.step) == (
        0.5,
        0.5,
        True,
        True,
        0.25,
        7,
    )
    stats = _core.MetricStats(confusion=True, scores=True)
    assert (stats.confusion, stats.regression, stats.scores) == (True, False, True)


def test_optimizer_kind_is_the_update_type():
    sgd = _core.OptimizerConfig(_core.SgdConfig(lr=0.5, momentum=0.75, nesterov=True), clip_norm=2.0)
    assert (sgd.kind, sgd.clip_norm) == ("sgd", 2.0)
    assert isinstance(sgd.update, _core.SgdConfig) and (sgd.update.lr, sgd.update.momentum) == (0.5, 0.75)
    adam = _core.OptimizerConfig(_core.AdamConfig(lr=0.25))
    assert (adam.kind, adam.clip_norm) == ("adam", 0.0)
    assert isinstance(adam.update, _core.AdamConfig) and adam.update.lr == 0.25
    for bad in (None, "adam", {"lr": 0.1}, _core.MetricStats()):
        with pytest.raises(TypeError):
            _core.OptimizerConfig(bad)


def test_unknown_names_are_value_errors():
    with pytest.raises(ValueError, match="unknown layer kind 'conv'"):
        _core.LayerSpec("conv")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        _core.LayerSpec("dense", units=2, activation="swish")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        _core.LossConfig("hinge")


def test_configs_are_keyword_only():
    with pytest.raises(TypeError):
        _core.AdamConfig(0.1)
    with pytest.raises(TypeError):
        _core.LayerSpec("dense", 4)


def test_network_takes_the_structs():
    net = _net()
    assert (net.input_dim, net.output_dim, net.num_params) == (4, 3, 4 * 8 + 8 + 8 * 3 + 3)
    assert net.weight_offsets == [-1, 0, -1, 40] and net.bias_offsets == [-1, 32, -1, 64]
    assert not net.compiled
    net.compile(
        _core.LossConfig("softmax_cross_entropy"),
        _core.OptimizerConfig(_core.AdamConfig(lr=0.01, amsgrad=True), clip_norm=1.0),
    )
    assert net.compiled and net.precision == "fp32" and net.state_slots == 3
    assert net.learning_rate == np.float32(0.01)
    net.compile(
        _core.LossConfig("softmax_cross_entropy"),
        _core.OptimizerConfig(_core.SgdConfig(momentum=0.5)),
        precision="fp32",
    )
    assert net.state_slots == 1 and net.learning_rate == np.float32(0.01)
    net.set_metric_stats(_core.MetricStats(confusion=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = rng.integers(0, 3, 16).astype(np.int32)
    assert net.train_batch(x, y, np.arange(16, dtype=np.int64)) is None  # the loss stays on the device
    loss_sum, _, count = net.metrics()
    assert np.isfinite(loss_sum) and count == 16 and net.step == 1
    assert net.confusion_matrix().sum() == 16


def test_compile_checks_the_values_as_before():
    net = _net()
    with pytest.raises(ValueError, match=r"^\[compile\] lr must be >= 0"):
        net.compile(_core.LossConfig("mse"), _core.OptimizerConfig(_core.SgdConfig(lr=-1.0)))
    with pytest.raises(ValueError, match=r"^\[compile\] beta1 must be in \[0, 1\)"):
        net.compile(_core.LossConfig("mse"), _core.OptimizerConfig(_core.AdamConfig(beta1=1.5)))
    with pytest.raises(ValueError, match=r"^\[compile\] class_weights has 2 entries but the model has 3 classes"):
        net.compile(
            _core.LossConfig("softmax_cross_entropy", class_weights=[1.0, 1.0]),
            _core.OptimizerConfig(_core.AdamConfig()),
        )
    with pytest.raises(ValueError, match=r"^\[compile\] precision must be fp32"):
        net.compile(_core.LossConfig("mse"), _core.OptimizerConfig(_core.AdamConfig()), precision="fp8")
    with pytest.raises(ValueError, match=r"^\[Network\] layer 0: units must be >= 1, got 0"):
        _core.Network(4, [_core.LayerSpec("dense")])
    for loss, optimizer in (
        (None, _core.OptimizerConfig(_core.AdamConfig())),
        (_core.LossConfig("mse"), _core.AdamConfig()),
    ):
        with pytest.raises(TypeError):
            net.compile(loss, optimizer)
    assert not net.compiled
    with pytest.raises(TypeError):
        net.set_metric_stats(None)
