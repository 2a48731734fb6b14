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

import math

import numpy as np
import pytest

import customml as cm
import reference
from customml import _core
from support import U32, assert_close, sass_report_module
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

ACTIVATIONS = ["identity", "relu", "sigmoid", "tanh", "gelu"]


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


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_the_forward_through_wgmma_equals_sm80_where_the_sums_are_exact(hopper, precision, activation):
    """x small integers, w and b small multiples of 1/64 (exact in both formats, products
    exact, every partial sum a multiple of 1/64 under 2^12: exact in float32 in any order),
    so the two paths must agree bit for bit on everything the epilogue stores: preact, out
    through each activation (z about unit scale, where each one bends) and out's 16-bit
    copy, at the 128-row tile's edge +1 and 8 columns short of the 256-column tile's."""
    m, k, n = 129, 296, 248
    rng = np.random.default_rng(len(activation) + len(precision))
    x = rng.integers(-3, 4, (m, k)).astype(np.float32)
    w = (rng.integers(-3, 4, (k, n)) / 64).astype(np.float32)
    b = (rng.integers(-32, 33, n) / 64).astype(np.float32)
    *got, issued = forward(x, w, b, activation, precision)
    assert issued == wgmmas(m, n, k), "gemm() did not take the wgmma kernel"
    _core._emulated_set_sm90(False, 132)
    *want, issued = forward(x, w, b, activation, precision)
    assert issued == 0
    for name, g, e in zip(("out", "preact", "out's copy"), got, want):
        bits = np.uint32 if g.dtype == np.float32 else np.uint16
        np.testing.assert_array_equal(g.view(bits), e.view(bits), err_msg=f"{name} ({precision}, {activation})")


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


@pytest.mark.parametrize(
    "shape",
    [(4096, 4096, 4096), (1536, 2560, 256), (1536, 2816, 256), (4096, 4096, 248), (128, 256, 784), (4096, 4100, 4096)],
)
def test_the_sass_report_mirrors_the_dispatch(shape):
    """bench/sass_report.py's estimates name the kernel gemm() takes on an H100 by its own
    copy of wgmma_path's rule: the two must agree (a forward product with 16-bit copies)."""
    m, n, k = shape
    taken = _core._simt_selftest("sm90_path", [1, 2, m, n, k, 0], [1, 1, 1], [1, 1, 1])[0] == 1.0
    assert sass_report_module().wgmma_path([shape], a16=True) == taken


# The backward on wgmma: dense_backward's pair (dW = x^T dz with db, dx = dz W^T through the
# layer below's derivative) in one launch of gemm_wgmma_kernel<T, true>, where both products
# fit: 16-bit copies of x and dz (and the weights' twin), each k (the batch for dW, the
# layer's width for dx) at least the ring's 256. Shapes (batch, in, out): dx's rows at the
# 128-row tile's edge +1, dW's rows (in, and db's row) at the edge +8 and -8 and exactly one
# tile (db's row alone in a second tile row), columns at the 256-column tile's edge +8, k
# past a whole slice and ring (264) or exactly at it.
BACKWARD = [(257, 136, 264), (256, 128, 256), (256, 120, 256)]


def backward_wgmmas(batch, n_in, n_out):
    """What the pair issues: dW's tiles over its in rows (a tile of db's row alone
    multiplies nothing), dx's over the batch."""
    dw = math.ceil(n_in / BM) * math.ceil(n_out / BN) * math.ceil(batch / BK)
    dx = math.ceil(batch / BM) * math.ceil(n_in / BN) * math.ceil(n_out / BK)
    return (dw + dx) * (BK // 16) * WARPGROUPS


def backward(shape, below, precision, seed, integers=False):
    """_dense_backward_below's (dz below, dW, db, dz below's 16-bit copy, norm slots) and
    the wgmmas it issued, with the 16-bit copies of dz and x (as a training step has them
    from the layers' stores) and what they were made from. integers: operands small
    integers (exact in both formats), so that every float32 sum is exact in any order."""
    batch, n_in, n_out = shape
    rng = np.random.default_rng(seed)
    if integers:
        dz = rng.integers(-3, 4, (batch, n_out)).astype(np.float32)
        x = rng.integers(-3, 4, (batch, n_in)).astype(np.float32)
        w = rng.integers(-3, 4, (n_in, n_out)).astype(np.float32)
    else:
        dz = rng.standard_normal((batch, n_out)).astype(np.float32)
        x = rng.standard_normal((batch, n_in)).astype(np.float32)
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_out)).astype(np.float32)
    z = rng.standard_normal((batch, n_in)).astype(np.float32) * 2
    z.flat[::7] = 0.0
    z.flat[1::11] = -0.0
    y = reference.activation_forward(below, z).astype(np.float32)
    dz16, x16 = to_16(dz, precision), to_16(x, precision)
    before = _core._emulated_wgmmas()
    out = _core._dense_backward_below(dz, x, w, below, y, z if below == "gelu" else None, precision, dz16, x16, DEVICE)
    return out, _core._emulated_wgmmas() - before, (dz, x, w, y, z)


def from_16(bits, precision):
    if precision == "fp16":
        return bits.view(np.float16).astype(np.float64)
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def tiles_of(a, rows, cols):
    """a's tiles, row-major, as the slots are numbered."""
    return [a[r : r + rows, c : c + cols] for r in range(0, a.shape[0], rows) for c in range(0, a.shape[1], cols)]


@pytest.mark.parametrize("below", ACTIVATIONS)
def test_the_backward_through_wgmma_equals_sm80_where_the_sums_are_exact(hopper, below):
    """Small-integer operands make every sum exact whatever its order, so the two paths
    must agree bit for bit on everything they store: dx through each derivative of the
    layer below, its 16-bit copy, dW and db; and each slot is its 128 x 256 tile's sum of
    squares (dW's rows and db's row), exactly."""
    shape = BACKWARD[0] if below in ("identity", "gelu") else BACKWARD[1]
    got, issued, _ = backward(shape, below, "bf16", seed=len(below), integers=True)
    assert issued == backward_wgmmas(*shape), "the backward did not take the wgmma kernel"
    _core._emulated_set_sm90(False, 132)
    want, issued, _ = backward(shape, below, "bf16", seed=len(below), integers=True)
    assert issued == 0
    for name, g, w in zip(("dz below", "dW", "db", "dz below's copy"), got[:4], want[:4]):
        bits = np.uint32 if g.dtype == np.float32 else np.uint16
        np.testing.assert_array_equal(g.view(bits), w.view(bits), err_msg=name)
    stored = np.vstack([got[1], got[2][None, :]]).astype(np.float64)
    want_slots = [float((t**2).sum()) for t in tiles_of(stored, BM, BN)]
    # as many slots as the sm_80 tiles (the trainer counts them by shape), the rest zeros
    assert len(got[4]) == len(want[4]) > len(want_slots)
    np.testing.assert_array_equal(got[4], want_slots + [0.0] * (len(got[4]) - len(want_slots)))


@pytest.mark.parametrize(("precision", "shape"), [("bf16", BACKWARD[2]), ("fp16", BACKWARD[0])])
def test_the_backward_through_wgmma_matches_numpy(hopper, precision, shape):
    """Normal values: dx and dW against float64 products of the 16-bit copies the kernel
    reads (exact in float32), within the float32 sum's (K + 2) u32 of the sum of |terms|
    (any order); db is summed in float from dz in the parts order, as gemm_tc_kernel does,
    so its bits are sm_80's."""
    batch, n_in, n_out = shape
    (dx, dw, db, dx16, _), issued, (dz, x, w, _, _) = backward(shape, "identity", precision, seed=n_in)
    assert issued == backward_wgmmas(*shape)
    dz16, x16, w16 = (from_16(to_16(a, precision), precision) for a in (dz, x, w))
    assert_close(dx, dz16 @ w16.T, (n_out + 2) * U32 * (np.abs(dz16) @ np.abs(w16.T)), f"dx ({precision})")
    np.testing.assert_array_equal(dx16, to_16(dx, precision))
    assert_close(dw, x16.T @ dz16, (batch + 2) * U32 * (np.abs(x16.T) @ np.abs(dz16)), f"dW ({precision})")
    _core._emulated_set_sm90(False, 132)
    (_, _, db_sm80, _, _), issued, _ = backward(shape, "identity", precision, seed=n_in)
    assert issued == 0
    np.testing.assert_array_equal(db.view(np.uint32), db_sm80.view(np.uint32))


def test_the_backward_through_wgmma_does_not_depend_on_the_thread_order(hopper):
    runs = []
    for _ in orders("forward", "reverse", "shuffled"):
        out, issued, _ = backward(BACKWARD[2], "gelu", "bf16", seed=9)
        assert issued == backward_wgmmas(*BACKWARD[2])
        runs.append(out)
    for out in runs[1:]:
        for got, want in zip(out, runs[0]):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "layer", [(4096, 4096, 4096), (256, 2048, 4096), (248, 4096, 4096), (4096, 4100, 4096), (512, 1024, 1024)]
)
def test_the_sass_report_mirrors_the_backward_dispatch(layer):
    """The same for the backward's pair of a layer (batch, in, out) with 16-bit x and dz."""
    batch, n_in, n_out = layer
    taken = _core._simt_selftest("sm90_backward_path", [1, 2, batch, n_in, n_out], [1, 1, 1], [1, 1, 1])[0] == 1.0
    pair = [(n_in + 1, n_out, batch), (batch, n_in, n_out)]
    assert sass_report_module().wgmma_path(pair, a16=True, backward=True) == taken


def test_a_frozen_layers_dx_alone_takes_wgmma(hopper):
    """A frozen layer's backward is dx alone (no dW: the pair's first problem empty): the
    middle layer of this MLP, dz (BATCH x 256) W^T (256 x 256), takes the kernel in its
    backward, beside the forward products of the layers above the first; the weights stay
    within the summation-order bound of sm_80's (as the test above argues it)."""

    def run():
        model = cm.Sequential(
            [cm.layers.Dense(256, activation="relu"), cm.layers.Dense(256, activation="tanh"), cm.layers.Dense(16)],
            input_dim=24,
            device=DEVICE,
            seed=1,
        )
        model.layers[1].trainable = False
        model.compile(optimizer=cm.optimizers.SGD(0.1), loss="softmax_cross_entropy", precision="bf16")
        before = _core._emulated_wgmmas()
        model.fit(X[:BATCH], Y[:BATCH], epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
        return model.get_weights(), _core._emulated_wgmmas() - before

    got, issued = run()
    # layers 2 and 3 forward, layer 2's dx: one 128 x 256 tile each
    assert issued == wgmmas(BATCH, 256, 256) + wgmmas(BATCH, 16, 256) + wgmmas(BATCH, 256, 256)
    _core._emulated_set_sm90(False, 132)
    want, issued = run()
    assert issued == 0
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
