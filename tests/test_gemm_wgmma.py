"""The sm_90a GEMM (cuda/gemm_wgmma.cuh: TMA + wgmma) as gemm() reaches it on a Hopper, end
to end on cuda-emulated. A private hook (`_core._emulated_set_sm90`) makes the emulated
device choose as compute capability 9.0 with sm_90a code does, and lowers the one-wave
threshold (132 tiles of 128 x 256) so that a product of a few tiles takes the path: the
emulator runs the kernel's 384 threads a tile (a producer warpgroup, two consumers).

Every test that means to reach the kernel counts the wgmma.mma_async the emulator's
warpgroups issued (`_core._emulated_wgmmas`): exactly 2 warpgroups x 4 (k = 64 a slice in
m64n256k16 steps) per slice per tile, so a dispatch that silently fell back to the sm_80
kernel (gemm_tc_kernel) fails, and so would a grid or a slice count off by one.

Tolerance, as tests/test_dense.py's tensor-core test argues it: each operand is rounded to
the format once (relative error <= u), so each product is off by at most (2u + u^2)|x||w|,
and the float32 sum adds (K + 2) u32 of the sum of |terms| (its order differs from
gemm_tc_kernel's, so the bits may too; the bound holds for any order)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import customml as cm
import reference
from customml import _core
from support import U32, assert_close
from test_dense import LIPSCHITZ, TENSOR_CORE_U, activation_rounding

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")

DEVICE = "cuda-emulated"
# gemm_wgmma_kernel's tile, k slice and ring (cuda/gemm_wgmma.cuh), and wgmma_path's k floor
BM, BN, BK, STAGES, WARPGROUPS = 128, 256, 64, 4, 2


def wgmmas(m, n, k):
    """The wgmma.mma_async one product issues on the wgmma path (per warpgroup)."""
    return math.ceil(m / BM) * math.ceil(n / BN) * math.ceil(k / BK) * (BK // 16) * WARPGROUPS


@pytest.fixture
def hopper():
    """cuda-emulated chooses as an H100 with sm_90a code, from one tile on; restored after."""
    before = _core._emulated_set_sm90(True, 1)
    try:
        yield
    finally:
        _core._emulated_set_sm90(*before)


def orders(*names):
    for name in names:
        _core._simt_set_thread_order(name, 11)
        yield name
    _core._simt_set_thread_order("forward")


def problem(m, k, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    return x, w, b


def forward(x, w, b, activation, precision, half_x=True):
    """(y, z, y's 16-bit bits, wgmmas issued) of Backend::dense_forward with 16-bit copies."""
    before = _core._emulated_wgmmas()
    y, z, y16 = _core._dense_forward_half(x, w, b, activation, precision, half_x, DEVICE)
    return y, z, y16, _core._emulated_wgmmas() - before


def to_16(y, precision):
    """y rounded to the format to nearest even, as bits (the epilogue's c16)."""
    if precision == "fp16":
        return y.astype(np.float16).view(np.uint16)
    bits = y.view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


# (m, k, n) and the epilogue's activation: rows at the 128-row tile's edges +-1 (the TMA's
# zero fill and store_c's row checks), columns at the 256-column tile's edges +-8 and inside
# its last 64-column box (136: the last box all past the edge, zero-filled) (W's rows
# must be a multiple of 16 bytes for the TMA), k a multiple of 8 but not of the 64-deep
# slice nor of the 256-deep ring (264, 296: a last slice partly zero-filled, the ring wraps).
CASES = [
    ((1, 256, 8), "identity"),
    ((127, 264, 264), "relu"),
    ((128, 256, 128), "gelu"),
    ((129, 296, 248), "gelu"),
    ((65, 256, 136), "relu"),
]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize(("shape", "activation"), CASES)
def test_dense_forward_through_wgmma_matches_numpy(hopper, precision, activation, shape):
    m, k, n = shape
    x, w, b = problem(m, k, n, seed=m * 7 + k + n)
    y, z, y16, issued = forward(x, w, b, activation, precision)
    assert issued == wgmmas(m, n, k), "gemm() did not take the wgmma kernel (or ran another grid)"
    u = TENSOR_CORE_U[precision]
    x64, w64 = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    err_z = (2 * u + u * u + (k + 2) * U32) * (x64 @ w64 + np.abs(b))
    y_ref, z_ref = reference.dense_forward(x, w, b, activation=activation)
    tol_y = LIPSCHITZ[activation] * err_z + activation_rounding(activation, y_ref, z_ref)
    assert_close(z, z_ref, err_z, f"preact ({precision}, wgmma)")
    assert_close(y, y_ref, tol_y, f"out ({precision}, wgmma)")
    # the epilogue's 16-bit copy of y (the next layer's A) is y rounded to the format
    np.testing.assert_array_equal(y16, to_16(y, precision))


def test_wgmma_bits_do_not_depend_on_the_thread_order(hopper):
    m, k, n = 129, 264, 8
    x, w, b = problem(m, k, n, seed=3)
    runs = []
    for _ in orders("forward", "reverse", "shuffled"):
        y, _, y16, issued = forward(x, w, b, "gelu", "bf16")
        assert issued == wgmmas(m, n, k)
        runs.append((y, y16))
    for y, y16 in runs[1:]:
        np.testing.assert_array_equal(y.view(np.uint32), runs[0][0].view(np.uint32))
        np.testing.assert_array_equal(y16, runs[0][1])


def test_without_a_16_bit_input_the_sm80_kernel_runs(hopper):
    """A training step's first Dense layer reads the staged float32 batch (no 16-bit copy
    of A): wgmma_path refuses it and gemm_tc_kernel rounds A as it stages it, giving the
    bits it gives off a Hopper."""
    x, w, b = problem(129, 256, 128, seed=4)
    y, _, _, issued = forward(x, w, b, "relu", "bf16", half_x=False)
    assert issued == 0
    _core._emulated_set_sm90(False, 132)
    y_sm80, _, _, _ = forward(x, w, b, "relu", "bf16", half_x=False)
    np.testing.assert_array_equal(y.view(np.uint32), y_sm80.view(np.uint32))


def test_below_the_wave_threshold_the_sm80_kernel_runs():
    """At the GPU's threshold (132 tiles) a 2-tile product stays on gemm_tc_kernel even on a
    Hopper; the hook's lowered threshold is what makes the other tests reach the kernel."""
    before = _core._emulated_set_sm90(True, 132)
    try:
        x, w, b = problem(129, 256, 128, seed=5)
        assert forward(x, w, b, "identity", "bf16")[3] == 0
    finally:
        _core._emulated_set_sm90(*before)


# A 2-layer MLP whose second layer takes the wgmma path in training: its A is the first
# layer's 16-bit output (c16), its B the kernel's twin (offset 24 x 256 + 256 elements:
# 16-byte aligned), k = 256, n = 16 (a multiple of 8). The first layer (k = 24) is below the
# ring's depth, so what it reads does not decide the count.
X = np.random.default_rng(22).standard_normal((80, 24)).astype(np.float32)
Y = np.random.default_rng(23).integers(0, 16, 80)
BATCH = 40


def fit(precision, seed=0):
    model = cm.Sequential(
        [cm.layers.Dense(256, activation="relu"), cm.layers.Dense(16)], input_dim=24, device=DEVICE, seed=seed
    )
    model.compile(optimizer=cm.optimizers.SGD(0.1), loss="softmax_cross_entropy", precision=precision)
    before = _core._emulated_wgmmas()
    model.fit(X, Y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    return model.get_weights(), _core._emulated_wgmmas() - before


def test_training_takes_wgmma_from_the_second_layer_and_stays_close_to_sm80(hopper):
    got, issued = fit("bf16")
    # one forward product a step through the kernel: layer 2's (BATCH x 256) . (256 x 16)
    assert issued == (len(X) // BATCH) * wgmmas(BATCH, 16, 256)
    for _ in orders("reverse", "shuffled"):
        again, _ = fit("bf16")
        for a, b in zip(again, got):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    _core._emulated_set_sm90(False, 132)
    want, issued = fit("bf16")
    assert issued == 0
    # The two paths multiply the same 16-bit operands (products exact in float32) and
    # differ in the float32 sum's order only: logits apart by at most 2 (K + 2) u32 of the
    # sum of |terms|, about 1e-4 relative here; two SGD steps of 0.1 move the weights by
    # 0.1 x the gradient's change, far below 1e-5 of their unit scale.
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def _sass_report():
    spec = importlib.util.spec_from_file_location("sass_report", Path(__file__).parents[1] / "bench" / "sass_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("sass_report", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "shape",
    [(4096, 4096, 4096), (1536, 2560, 256), (1536, 2816, 256), (4096, 4096, 248), (128, 256, 784), (4096, 4100, 4096)],
)
def test_the_sass_report_mirrors_the_dispatch(shape):
    """bench/sass_report.py's estimates name the kernel gemm() takes on an H100 by its own
    copy of wgmma_path's rule: the two must agree (a forward product with 16-bit copies)."""
    m, n, k = shape
    taken = _core._simt_selftest("sm90_path", [1, 2, m, n, k, 0], [1, 1, 1], [1, 1, 1])[0] == 1.0
    assert _sass_report().wgmma_path([shape], a16=True) == taken
