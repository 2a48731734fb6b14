"""compile(precision=...): tensor-core GEMMs in training (tf32, bf16, fp16 with dynamic loss
scaling) on the devices that have them, and a clear error elsewhere."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import customml as cm

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")

DEVICES = ["cuda-emulated"] + (["cuda"] if cm.cuda.is_available() else [])


def _model(device, seed=0):
    return cm.Sequential(
        [cm.layers.Dense(64, activation="relu"), cm.layers.Dense(10)], input_dim=64, device=device, seed=seed
    )


def test_cpu_rejects_tensor_core_precisions():
    model = _model("cpu")
    for precision in ("tf32", "bf16", "fp16"):
        with pytest.raises(ValueError, match=rf"\[compile\] precision '{precision}' is not supported on device 'cpu'"):
            model.compile(optimizer="adam", loss="softmax_cross_entropy", precision=precision)
    with pytest.raises(ValueError, match=r"\[compile\] precision must be one of fp32, tf32, bf16, fp16"):
        model.compile(optimizer="adam", precision="fp64")


@functools.cache
def _digits_run(device, precision):
    """Test accuracy and first weights after 5 epochs on digits. The fp32 run is the same
    bits for every precision it is compared with (same model, seed, data and device), so a
    worker trains it once per device rather than once per precision (CI time)."""
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("digits")
    model = _model(device)
    model.compile(
        optimizer=cm.optimizers.Adam(3e-3), loss="softmax_cross_entropy", metrics=["accuracy"], precision=precision
    )
    model.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)
    weights = model.get_weights()[0]
    weights.flags.writeable = False  # shared between tests
    return model.evaluate(x_test, y_test)["accuracy"], weights


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp16"])
def test_training_in_reduced_precision_learns_like_fp32(device, precision):
    results = {p: _digits_run(device, p) for p in ("fp32", precision)}
    # The products' operands are rounded to 10 (tf32, fp16) or 7 (bf16) mantissa bits, so
    # the weights drift from the fp32 run's; the model still learns as well: 5 epochs
    # reach about 0.94-0.95 here in every precision, chance is 0.1.
    assert not np.array_equal(results["fp32"][1], results[precision][1])
    assert results[precision][0] >= 0.9
    assert abs(results[precision][0] - results["fp32"][0]) <= 0.03


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_loss_scaling_skips_overflowing_steps(device):
    """Inputs of a few hundred saturate the softmax, so with one sample per batch the
    logits' gradient is +-1; times the initial scale 65536 it exceeds fp16's largest value
    (65504) when the backward GEMMs round their operands, so the first step overflows: it
    is skipped (no update, the step count stays) and the scale halves; then steps go
    through, each overflow halving the scale again."""
    rng = np.random.default_rng(0)
    x = (rng.random((8, 64)) * 300).astype(np.float32)
    y = rng.integers(0, 10, 8)
    model = _model(device)
    model.compile(optimizer="sgd", loss="softmax_cross_entropy", precision="fp16")
    before = model.get_weights()
    assert model._net.loss_scale == 65536.0
    model.fit(x[:1], y[:1], epochs=1, batch_size=1, shuffle=False, verbose=0)
    assert model._net.step == 0 and model._net.loss_scale == 32768.0
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    model.fit(x, y, epochs=1, batch_size=1, shuffle=False, verbose=0)
    skipped = int(np.log2(32768.0 / model._net.loss_scale))
    assert model._net.loss_scale == 32768.0 / 2**skipped  # only halvings: no 2000 good steps yet
    assert model._net.step == 8 - skipped and model._net.step >= 1
    assert any(not np.array_equal(w0, w1) for w0, w1 in zip(before, model.get_weights()))


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_loss_scale_doubles_after_2000_good_steps(device):
    """The other half of dynamic loss scaling: 2000 steps in a row without an overflow
    double the scale and restart the count (torch's GradScaler growth_interval). The
    count is set to 1998 so that the test takes three steps, not 2000; inputs in [0, 1)
    keep the scaled gradients far from fp16's range at a scale of 1024."""
    rng = np.random.default_rng(2)
    x = rng.random((3, 64)).astype(np.float32)
    y = rng.integers(0, 10, 3)
    model, twin = _model(device), _model(device)
    model.compile(optimizer="sgd", loss="softmax_cross_entropy", precision="fp16")
    twin.compile(optimizer="sgd", loss="softmax_cross_entropy")
    model._net.set_loss_scale(1024.0, 1998)
    before = model.get_weights()
    for m in (model, twin):
        m.fit(x[:1], y[:1], epochs=1, batch_size=1, shuffle=False, verbose=0)
    assert (model._net.step, model._net.loss_scale, model._net.loss_scale_good_steps) == (1, 1024.0, 1999)
    # The scale is divided out before the update: the step is fp32's up to the operands'
    # fp16 rounding (2^-11 relative per product, summed over 64 or 10 terms), where a
    # scale left in would make it 1024 times larger.
    for w0, w_half, w_full in zip(before, model.get_weights(), twin.get_weights()):
        step_half, step_full = w_half.astype(np.float64) - w0, w_full.astype(np.float64) - w0
        assert np.abs(step_full).max() > 0
        np.testing.assert_allclose(step_half, step_full, rtol=0, atol=0.02 * np.abs(step_full).max())
    model.fit(x[1:2], y[1:2], epochs=1, batch_size=1, shuffle=False, verbose=0)
    assert (model._net.step, model._net.loss_scale, model._net.loss_scale_good_steps) == (2, 2048.0, 0)
    model.fit(x[2:], y[2:], epochs=1, batch_size=1, shuffle=False, verbose=0)
    assert (model._net.step, model._net.loss_scale, model._net.loss_scale_good_steps) == (3, 2048.0, 1)
    with pytest.raises(ValueError, match="good steps in"):
        model._net.set_loss_scale(1024.0, 2000)


@pytest.mark.parametrize("device", DEVICES)
def test_precision_and_loss_scale_resume_from_a_file(device, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((64, 64)).astype(np.float32)
    y = rng.integers(0, 10, 64)

    def fresh():
        model = _model(device, seed=4)
        model.compile(optimizer="adam", loss="softmax_cross_entropy", precision="fp16")
        return model

    straight = fresh()
    straight.fit(x, y, epochs=4, batch_size=16, verbose=0)
    first = fresh()
    first.fit(x, y, epochs=2, batch_size=16, verbose=0)
    first.save(tmp_path / "ckpt.cml", include_optimizer=True)
    resumed = cm.load(tmp_path / "ckpt.cml", device=device)
    assert resumed._precision == "fp16"
    assert resumed._net.loss_scale == first._net.loss_scale
    assert resumed._net.loss_scale_good_steps == first._net.loss_scale_good_steps
    resumed.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        assert a.tobytes() == b.tobytes()
    # an fp32 model's file has no precision entry (format version 1 exactly as before)
    plain = _model(device)
    plain.compile(optimizer="adam", loss="softmax_cross_entropy")
    plain.save(tmp_path / "plain.cml")
    assert cm.load(tmp_path / "plain.cml")._precision == "fp32"
