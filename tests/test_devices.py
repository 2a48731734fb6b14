"""Which devices the suite runs on, why CUDA tests did not run where they did not, and a
model's device checked when the model is made."""

from __future__ import annotations

import numpy as np
import pytest

import customml
from customml import _core, ops


def test_cuda_tests_ran_or_say_why():
    # The device fixture generates "cuda" only where CUDA is available; this test is the
    # visible record (in -ra's skip summary) of why GPU tests did not run.
    if not _core.cuda_available():
        pytest.skip(f"CUDA tests did not run: {_core.cuda_unavailable_reason()}")
    assert customml.build_info()["cuda_compiled"] is True
    assert _core.cuda_unavailable_reason() == ""


def test_cuda_unavailable_reason_is_consistent():
    reason = _core.cuda_unavailable_reason()
    assert isinstance(reason, str)
    assert (reason == "") == _core.cuda_available()
    if not customml.build_info()["cuda_compiled"]:
        assert not _core.cuda_available()


def test_unavailable_cuda_device_is_a_clear_error():
    if _core.cuda_available():
        pytest.skip("CUDA is available here; the unavailable path cannot be exercised")
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        ops.dense_forward(x, np.ones((3, 4), np.float32), np.ones(4, np.float32), device="cuda")
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        ops.mse(x, x.copy(), device="cuda")


def test_device_fixture_runs_a_kernel(device):
    # every generated device computes something right (a smoke test for the fixture)
    loss, grad = ops.mse(np.array([1.0, 3.0], np.float32), np.array([0.0, 0.0], np.float32), device=device)
    assert loss == 5.0
    assert grad.tolist() == [1.0, 3.0]


def test_cuda_unavailable_here():
    if customml.build_info()["cuda_compiled"]:
        pytest.skip("this build has the CUDA backend")
    assert customml.cuda.is_available() is False
    reason = customml.cuda.unavailable_reason()
    assert isinstance(reason, str) and reason.strip()


def test_cuda_device_rejected_with_the_reason():
    if customml.cuda.is_available():
        pytest.skip("a GPU is available")
    reason = customml.cuda.unavailable_reason()
    with pytest.raises(ValueError) as info:
        customml.Sequential([customml.layers.Dense(2)], input_dim=3, device="cuda")
    assert reason in str(info.value)


def test_other_devices_rejected():
    with pytest.raises(ValueError, match="tpu"):
        customml.Sequential([customml.layers.Dense(2)], input_dim=3, device="tpu")
    with pytest.raises(TypeError, match="device"):
        customml.Sequential([customml.layers.Dense(2)], input_dim=3, device=0)
    model = customml.Sequential([customml.layers.Dense(2)], input_dim=3, device="cpu")
    assert model.device == "cpu"


@pytest.mark.parametrize("device", ["tpu", "cuda"])
def test_device_validated_at_construction_without_input_dim(device):
    """A model that cannot run on its device should say so when it is created, not at
    the first fit/predict (possibly after loading data for minutes)."""
    if device == "cuda" and customml.cuda.is_available():
        pytest.skip("a GPU is available")
    with pytest.raises(ValueError, match=device):
        customml.Sequential([customml.layers.Dense(2)], device=device)


def test_failed_construction_leaves_the_layers_reusable():
    """Trying a device and falling back to another with the same layer objects is a
    natural pattern; a constructor that raised must not have claimed the layers."""
    layers = [customml.layers.Dense(4, activation="relu"), customml.layers.Dense(2)]
    with pytest.raises(ValueError):
        customml.Sequential(layers, input_dim=3, device="tpu")
    model = customml.Sequential(layers, input_dim=3, device="cpu")
    assert model.predict(np.ones((1, 3), np.float32)).shape == (1, 2)
