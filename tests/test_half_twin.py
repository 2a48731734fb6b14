"""The weights' 16-bit twin (docs/decisions.md, CUDA): at bf16 and fp16 the tensor-core
GEMMs read the kernels from a copy rounded to 16 bits, kept beside the float32 master by
every write to the weights. A twin left stale by some route would make training and
prediction multiply by the old weights; each route here changes the weights of a model
already compiled at a 16-bit precision, and the next training step and prediction must
give the bits of a model compiled fresh with the same weights (whose twin is made at
compile)."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")

DEVICE = "cuda-emulated"
RNG = np.random.default_rng(22)
X = RNG.standard_normal((40, 24)).astype(np.float32)
Y = RNG.integers(0, 5, 40)


def _model(precision, seed=0):
    model = cm.Sequential(
        [cm.layers.Dense(32, activation="relu"), cm.layers.Dense(5)], input_dim=24, device=DEVICE, seed=seed
    )
    # plain SGD: no optimizer state, so a fresh model's next step is the same step
    model.compile(optimizer=cm.optimizers.SGD(0.5), loss="softmax_cross_entropy", precision=precision)
    return model


def _step(model):
    """One training step over the whole batch, then the weights and a prediction."""
    model.fit(X, Y, epochs=1, batch_size=len(X), shuffle=False, verbose=0)
    return model.get_weights(), model.predict(X)


def _fresh_step(weights, precision, masks=None):
    model = _model(precision, seed=1)
    model.set_weights(weights)
    if masks:
        for i, keep in masks.items():
            cm.prune._set_mask(model, i, keep)
    return _step(model)


def _assert_same_bits(got, want):
    (w_got, p_got), (w_want, p_want) = got, want
    for a, b in zip(w_got, w_want):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(p_got.view(np.uint32), p_want.view(np.uint32))


def _other_weights(model):
    return [(w * -1.5 + 0.25).astype(np.float32) for w in model.get_weights()]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_set_weights_refreshes_the_twin(precision):
    model = _model(precision)
    _step(model)
    weights = _other_weights(model)
    model.set_weights(weights)
    _assert_same_bits(_step(model), _fresh_step(weights, precision))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_the_update_writes_the_twin(precision):
    model = _model(precision)
    _step(model)
    weights = model.get_weights()  # as the first step's update left them
    _assert_same_bits(_step(model), _fresh_step(weights, precision))


def test_load_weights_refreshes_the_twin(tmp_path):
    source = _model("bf16", seed=3)
    source.save(tmp_path / "m.cmz")
    model = _model("bf16")
    _step(model)
    model.load_weights(tmp_path / "m.cmz")
    _assert_same_bits(_step(model), _fresh_step(source.get_weights(), "bf16"))


def test_pruning_refreshes_the_twin():
    model = _model("bf16")
    _step(model)
    cm.prune.magnitude(model, 0.5, measure=False)
    masks = {i: model.get_weights()[2 * k] != 0 for k, i in enumerate((0, 1))}
    weights = model.get_weights()
    _assert_same_bits(_step(model), _fresh_step(weights, "bf16", masks))
    # the masked update zeroes the pruned weights after each step: the twin follows
    weights = model.get_weights()
    _assert_same_bits(_step(model), _fresh_step(weights, "bf16", masks))


def test_the_plan_keeps_a_16_bit_copy_only_at_16_bit_precisions():
    model = _model("fp32")
    model.predict(X)
    fp32 = model._net.inference_bytes
    model.compile(optimizer=cm.optimizers.SGD(0.5), loss="softmax_cross_entropy", precision="bf16")
    model.predict(X)
    # 2 bytes a parameter, their span rounded up to 8 values (965 -> 968), then the 5-wide
    # kernel's 32 rows padded to 8 (backend.h's half_ld), where the tensor cores copy them
    assert model.count_params() == 965
    assert model._net.inference_bytes == fp32 + 2 * (968 + 32 * 8)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_predict_with_16_bit_activations_gives_the_layer_by_layer_bits(precision):
    """The inference plan's Dense layers write their outputs' 16-bit copies, which the next
    Dense layer (dropout between: the identity) copies instead of rounding the float output
    as staged: the same bits as cm.ops.dense_forward layer by layer, which has no copies. A
    stale or missing copy changes them (dropping the plan's write failed both cases)."""
    x = RNG.standard_normal((70, 24)).astype(np.float32) * 3
    x[3, 5] = 2049.0  # a tie in fp16 (ulp 2 there): rounds to even
    x[4, 2] = 1e-6  # an fp16 subnormal
    layers = [cm.layers.Dense(32, activation="relu"), cm.layers.Dropout(0.3), cm.layers.Dense(16, activation="tanh")]
    model = cm.Sequential(layers + [cm.layers.Dense(5)], input_dim=24, device=DEVICE, seed=4)
    model.compile(loss="softmax_cross_entropy", precision=precision)
    got = model.predict(x, batch_size=32)
    weights = model.get_weights()
    for start in range(0, len(x), 32):
        a = x[start : start + 32]
        for i, act in enumerate(["relu", "tanh", "identity"]):
            a = cm.ops.dense_forward(
                a, weights[2 * i], weights[2 * i + 1], activation=act, device=DEVICE, precision=precision
            )
        np.testing.assert_array_equal(got[start : start + 32].view(np.uint32), np.asarray(a).view(np.uint32))
