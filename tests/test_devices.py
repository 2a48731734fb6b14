"""Which devices the suite runs on, and why CUDA tests did not run where they did not."""

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
