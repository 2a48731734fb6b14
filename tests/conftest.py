"""Hypothesis profiles and the fixtures every test file shares: ``device`` (each
available device) and ``isa`` (each CPU ISA level the GEMM family has a variant for)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from customml import _core
from device_arrays import bridged_ops
from support import ISA_ORDER, active_isa, skip_above_portable_off_cpu

# The isa fixture is function-scoped but holds no per-example state (an ISA ceiling that
# stays put for the whole test), so hypothesis need not reset it between examples.
_shared = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# ci: the same examples every run (derandomize), a capped count so the suite stays
# within its time budget on a 2-core runner, and the reproduction blob printed on failure.
settings.register_profile("ci", derandomize=True, max_examples=25, print_blob=True, **_shared)
settings.register_profile("dev", max_examples=60, **_shared)
# sanitizer: .ci/run's AddressSanitizer stage, where every call is several times slower;
# the explicit examples (tile boundaries, large sizes) still all run.
settings.register_profile("sanitizer", derandomize=True, max_examples=5, print_blob=True, **_shared)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# "cuda-emulated" runs the CUDA kernels on the host SIMT emulator, under two thread
# orders (forward and reverse: a missing barrier makes them disagree with the reference);
# "cuda" is generated only where it can run, and tests/test_devices.py reports why not.
# The tests hand the ops NumPy arrays, which "cuda" refuses: on "cuda" customml.ops is
# bridged to device arrays and back (tests/device_arrays.py); CUSTOMML_TEST_BRIDGE=1
# bridges "cuda-emulated" too, to check the bridge without a GPU.
DEVICES = (
    ["cpu"]
    + (["cuda-emulated:forward", "cuda-emulated:reverse"] if _core.build_info()["simt_emulation"] else [])
    + (["cuda"] if _core.cuda_available() else [])
)


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch) -> str:
    name, _, order = request.param.partition(":")
    if name == "cuda" or (name == "cuda-emulated" and os.environ.get("CUSTOMML_TEST_BRIDGE") == "1"):
        bridged_ops(monkeypatch, name)
    if not order:
        yield name
        return
    _core._simt_set_thread_order(order)
    try:
        yield name
    finally:
        _core._simt_set_thread_order("forward")


@pytest.fixture(params=["portable", "avx2", "avx512"])
def isa(request):
    """Caps the kernels at one ISA level for the test and restores the original level
    afterwards; skips when the CPU lacks the level (a lower one would run instead)."""
    wanted = request.param
    skip_above_portable_off_cpu(request, wanted)
    original = active_isa()
    active = _core._set_isa(wanted)
    try:
        if ISA_ORDER.index(active) < ISA_ORDER.index(wanted):
            pytest.skip(f"this CPU lacks {wanted} (it supports up to {active})")
        yield active
    finally:
        _core._set_isa(original)
