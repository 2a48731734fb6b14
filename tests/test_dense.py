"""dense_forward and dense_backward against tests/reference.py, on every device and
every ISA level of the GEMM family, at sizes around every blocking boundary."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import customml as cm
import reference
from customml import ops
from support import (
    TINY32,
    U32,
    VALUE_KINDS,
    assert_close,
    assert_float32_array,
    assert_same_bits,
    isa_available,
    large_example_once,
    make_values,
    nan_filled,
    seeds,
    sizes,
    use_isa,
)

ACTIVATIONS = reference.ACTIVATIONS

# (batch, in, out, value kind, seed); products capped so one example stays in the
# millisecond range. KC = 256 is crossed by `in` (forward, dx) and by `batch` (dweight).
dense_problems = st.tuples(sizes, sizes, sizes, st.sampled_from(VALUE_KINDS), seeds).filter(
    lambda p: p[0] * p[1] * p[2] <= 1 << 18
)
# Sizes a random draw would make too slow: several MC = 120 row blocks with KC = 256
# crossed, and NC = 1024 crossed with 1025 output columns.
LARGE_PROBLEMS = [(1025, 257, 130, "normal", 1), (13, 257, 1025, "mixed", 2), (3, 5, 1025, "ints", 3)]

# Largest |act'(z)| over all z: |act(z1) - act(z2)| <= L |z1 - z2|, which carries the
# GEMM's error on z through the activation (gelu' peaks at 1.1289 near z = 1.6).
LIPSCHITZ = {"identity": 1.0, "relu": 1.0, "sigmoid": 0.25, "tanh": 1.0, "gelu": 1.13}


def build(problem):
    batch, n_in, n_out, kind, seed = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, (batch, n_in), kind)
    # ints keep the products exact (exact zeros for relu); tiny x tiny underflows every
    # product; otherwise the weight is the usual 1/sqrt(in)-scaled normal.
    w_kind = kind if kind in ("ints", "tiny") else "normal"
    w = make_values(rng, (n_in, n_out), w_kind, scale=1.0 / np.sqrt(n_in))
    b = make_values(rng, (n_out,), kind if kind in ("ints", "tiny", "subnormal", "mixed") else "normal")
    dy = make_values(rng, (batch, n_out), "ints" if kind == "ints" else "normal")
    return x, w, b, dy


def gemm_bound(a, b, c=None):
    """Elementwise bound on |fl32(a @ b (+ c)) - (a @ b (+ c))|.

    A float32 dot product of length K, accumulated in any order with a rounding per
    multiply and per add (or one per FMA), errs by at most gamma_K sum_p |a_ip b_pj|
    (Higham, Accuracy and Stability, eq. 3.5), gamma_K = K u / (1 - K u); the bias add is
    one more rounding. (K + 2) u covers gamma_(K+1) and the float64 reference's own error.
    Products and sums that land in the subnormal range lose up to 2**-150 each,
    absolutely, which no relative bound covers: hence the (K + 1) * 2**-149 term.
    """
    k = a.shape[1]
    mag = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    if c is not None:
        mag = mag + np.abs(c.astype(np.float64))
    return (k + 2) * U32 * mag + (k + 1) * TINY32


def activation_rounding(activation, y_ref, z_ref):
    """Error of the float32 activation itself, evaluated at the kernel's z.

    The epilogue applies cpp/cpu/vmath.h's functions, whose maximum errors against float64
    are stated there and checked in tests/test_vmath.py: sigmoid <= 3 ulp <= 6u |y|
    (an ulp is at most 2u of the value); tanh <= 1.5 ulp <= 3u |y|; gelu <= 0.5 ulp +
    2**-22 |z| <= u |y| + 4u |z| (absolute in |z| where 1 + tanh cancels, z << 0).
    Subnormal results (sigmoid(-100) = 3.7e-44) are quantized to 2**-149.
    """
    y, z = np.abs(y_ref), np.abs(z_ref)
    if activation in ("identity", "relu"):
        return 0.0
    if activation in ("sigmoid", "tanh"):
        return 6 * U32 * y + 2 * TINY32
    return 5 * U32 * y + 4 * U32 * z + 2 * TINY32


def forward_tolerance(activation, x, w, b, y_ref, z_ref):
    err_z = gemm_bound(x, w, b)
    return err_z, LIPSCHITZ[activation] * err_z + activation_rounding(activation, y_ref, z_ref)


def dz_bound(activation, dy, y, z):
    """Bound on the float32 dz = dy * act'(.) of the kernel, from its float32 inputs.

    identity and relu copy or zero dy: exact. sigmoid (dy y)(1 - y): 3 roundings.
    tanh dy (1 - y y): y y errs by u y^2, which 1 - y^2 does not damp (cancellation near
    |y| = 1), then two more roundings. gelu: see gelu_grad_bound.
    """
    dy64, y64 = np.abs(dy.astype(np.float64)), y.astype(np.float64)
    dz = np.abs(reference.activation_backward(activation, dy, y, z))
    if activation in ("identity", "relu"):
        return np.zeros_like(dz)
    if activation == "sigmoid":
        return 3.5 * U32 * dz + 2 * TINY32
    if activation == "tanh":
        return 1.1 * U32 * dy64 * (y64 * y64 + 2 * np.abs(1.0 - y64 * y64)) + 2 * TINY32
    return dy64 * gelu_grad_bound(z) + 1.1 * U32 * dz + 2 * TINY32


def gelu_grad_bound(z):
    """Bound on |gelu_grad_f32(z) - gelu'(z)| for float32 z.

    gelu' = 0.5 (1 + t) + q s with t = tanh(u), s = 1 - t^2, q = 0.5 z c (1 + 3 a z^2).
    t errs by <= 4.25u (see activation_rounding), so 0.5 (1 + t) by <= 3.2u and
    s = 1 - t t by <= 10.5u absolutely (cancellation near |t| = 1), which q multiplies;
    the products forming q s add ~6 roundings. Saturated (|u| > 10: 1 - |t| < 2.1e-9,
    far below half an ulp of 1) tanhf returns exactly +-1, s is exactly 0, and the
    kernel's only error is the dropped q s, which is < |q| * 8.2e-9.
    """
    z = z.astype(np.float64)
    t = np.tanh(reference.gelu_inner(z))
    s = 1.0 - t * t
    q = np.abs(0.5 * z * reference.GELU_C * (1.0 + 3.0 * reference.GELU_A * z * z))
    gg = np.abs(reference.gelu_grad(z))
    saturated = np.abs(reference.gelu_inner(z)) > 10
    return np.where(saturated, q * s + U32, 12 * U32 * q + 6 * U32 * q * s + 5 * U32 * (1.0 + gg))


def backward_tolerances(activation, dy, x, w, y, z):
    """(dx, dweight, dbias) bounds: the dz bound carried through each sum, plus each
    sum's own accumulation bound (gemm_bound's argument) over |dz| + its error."""
    e_dz = dz_bound(activation, dy, y, z)
    dz_abs = np.abs(reference.activation_backward(activation, dy, y, z)) + e_dz
    x64, w64 = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    batch, n_out = dy.shape
    tol_dw = x64.T @ e_dz + (batch + 2) * U32 * (x64.T @ dz_abs) + (batch + 1) * TINY32
    # dbias: a plain row-order float32 sum of dz over the batch
    tol_db = e_dz.sum(axis=0) + (batch + 2) * U32 * dz_abs.sum(axis=0) + (batch + 1) * TINY32
    tol_dx = e_dz @ w64.T + (n_out + 2) * U32 * (dz_abs @ w64.T) + (n_out + 1) * TINY32
    return tol_dx, tol_dw, tol_db


def run_forward(x, w, b, activation, device):
    batch, n_out = x.shape[0], w.shape[1]
    y, z = nan_filled((batch, n_out)), nan_filled((batch, n_out))
    ret = ops.dense_forward(x, w, b, activation=activation, out=y, preact_out=z, device=device)
    assert ret is y
    assert_float32_array(y, (batch, n_out), "out")
    assert_float32_array(z, (batch, n_out), "preact_out")
    return y, z


def run_backward(dy, x, w, y, z, activation, device, need_dx=True):
    batch, n_in = x.shape
    n_out = w.shape[1]
    dx_buf = nan_filled((batch, n_in))
    dw_buf, db_buf = nan_filled((n_in, n_out)), nan_filled((n_out,))
    dx, dw, db = ops.dense_backward(
        dy,
        x,
        w,
        y,
        z=z,
        activation=activation,
        need_dx=need_dx,
        dx_out=dx_buf,
        dweight_out=dw_buf,
        dbias_out=db_buf,
        device=device,
    )
    assert dw is dw_buf and db is db_buf
    if need_dx:
        assert dx is dx_buf
        assert_float32_array(dx, (batch, n_in), "dx")
    else:
        assert dx is None
        assert np.isnan(dx_buf).all(), "dx_out was written although need_dx=False"
    assert_float32_array(dw, (n_in, n_out), "dweight")
    assert_float32_array(db, (n_out,), "dbias")
    return dx, dw, db


# ------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("activation", ACTIVATIONS)
@given(problem=dense_problems)
@example(problem=LARGE_PROBLEMS[0])
@example(problem=LARGE_PROBLEMS[1])
@example(problem=LARGE_PROBLEMS[2])
def test_dense_forward_matches_reference(isa, device, activation, problem):
    large_example_once(problem, LARGE_PROBLEMS, activation, keep=("relu", "gelu"))
    x, w, b, _ = build(problem)
    y, z = run_forward(x, w, b, activation, device)
    y_ref, z_ref = reference.dense_forward(x, w, b, activation=activation)
    err_z, tol_y = forward_tolerance(activation, x, w, b, y_ref, z_ref)
    assert_close(z, z_ref, err_z, "preact_out")
    assert_close(y, y_ref, tol_y, f"out ({activation}, {isa})")
    # Deterministic, and preact_out changes nothing about out.
    again = ops.dense_forward(x, w, b, activation=activation, device=device)
    assert_same_bits(again, y, "out of a second call without preact_out")


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "gelu"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_dense_forward_saturates_huge_preactivations(isa, device, activation, sign):
    # z = +-1e20 (and +-3e38, near float32 max): z^3 overflows in float32 inside gelu,
    # exp(-|z|) underflows; the result must be the finite limit, never NaN or inf.
    x = np.array([[sign * 1e20], [sign * 3e38], [sign * 1e4], [0.0]], np.float32)
    w = np.ones((1, 3), np.float32)
    b = np.zeros(3, np.float32)
    y, z = run_forward(x, w, b, activation, device)
    y_ref, z_ref = reference.dense_forward(x, w, b, activation=activation)
    assert np.isfinite(y).all(), y
    _, tol = forward_tolerance(activation, x, w, b, y_ref, z_ref)
    assert_close(y, y_ref, tol, activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_forward_exact_zero_preactivation(isa, device, activation):
    # x . w + b == 0 exactly (with -0.0 operands): relu's boundary gives exactly 0,
    # and every activation gives act(0) within its rounding.
    x = np.array([[0.0, -0.0, 1.0], [1.0, -1.0, 0.0]], np.float32)
    w = np.array([[1.0, -0.0], [1.0, 2.0], [-0.0, 0.0]], np.float32)
    b = np.array([-0.0, 0.0], np.float32)  # column 0: 0 + -0 + -0 - 0 and 1 - 1 + 0 - 0, both exactly 0
    y, z = run_forward(x, w, b, activation, device)
    assert (z[:, 0] == 0.0).all()
    want = reference.activation_forward(activation, np.zeros(1))[0]
    assert_close(y[:, 0], np.full(2, want), 2 * U32, activation)
    if activation == "relu":
        assert (y == 0.0)[:, 0].all() and (y >= 0.0).all()


def test_dense_forward_batch_zero(isa, device):
    x = np.empty((0, 7), np.float32)
    w = np.ones((7, 5), np.float32)
    b = np.ones(5, np.float32)
    y, z = run_forward(x, w, b, "gelu", device)
    assert y.size == 0 and z.size == 0


# ------------------------------------------------------------------------------ backward


@pytest.mark.parametrize("activation", ACTIVATIONS)
@given(problem=dense_problems, need_dx=st.booleans())
@example(problem=LARGE_PROBLEMS[0], need_dx=True)
@example(problem=LARGE_PROBLEMS[1], need_dx=True)
@example(problem=(257, 3, 17, "normal", 4), need_dx=False)
def test_dense_backward_matches_reference(isa, device, activation, problem, need_dx):
    large_example_once(problem, LARGE_PROBLEMS, activation, keep=("relu", "gelu"))
    x, w, b, dy = build(problem)
    # y and z are what the forward pass hands the backward pass in training
    y, z = run_forward(x, w, b, activation, device)
    dx, dw, db = run_backward(dy, x, w, y, z, activation, device, need_dx)
    dx_ref, dw_ref, db_ref = reference.dense_backward(dy, x, w, y, z=z, activation=activation, need_dx=need_dx)
    tol_dx, tol_dw, tol_db = backward_tolerances(activation, dy, x, w, y, z)
    assert_close(db, db_ref, tol_db, f"dbias ({activation}, {isa})")
    assert_close(dw, dw_ref, tol_dw, f"dweight ({activation}, {isa})")
    if need_dx:
        assert_close(dx, dx_ref, tol_dx, f"dx ({activation}, {isa})")
    # Deterministic; dy, x, weight, y and z are left intact.
    inputs = [a.copy() for a in (dy, x, w, y, z)]
    dx2, dw2, db2 = ops.dense_backward(dy, x, w, y, z=z, activation=activation, need_dx=need_dx, device=device)
    assert_same_bits(dw2, dw, "dweight of a second call")
    assert_same_bits(db2, db, "dbias of a second call")
    if need_dx:
        assert_same_bits(dx2, dx, "dx of a second call")
    for before, after, name in zip(inputs, (dy, x, w, y, z), ("dy", "x", "weight", "y", "z")):
        assert_same_bits(after, before, f"{name} after dense_backward")


@pytest.mark.parametrize("activation", ["identity", "relu", "sigmoid", "tanh"])
def test_dense_backward_needs_no_z_except_for_gelu(device, activation):
    x, w, b, dy = build((5, 7, 3, "normal", 5))
    y, z = run_forward(x, w, b, activation, device)
    _, dw_with, db_with = ops.dense_backward(dy, x, w, y, z=z, activation=activation, device=device)
    _, dw_without, db_without = ops.dense_backward(dy, x, w, y, activation=activation, device=device)
    assert_same_bits(dw_without, dw_with, "dweight without z")
    assert_same_bits(db_without, db_with, "dbias without z")


@pytest.mark.parametrize("activation", ["identity", "gelu"])
def test_dense_backward_batch_zero(isa, device, activation):
    # No rows: dweight and dbias are sums over nothing, so exactly zero (the NaN fill
    # must be overwritten), dx is empty.
    x = np.empty((0, 6), np.float32)
    w = np.ones((6, 4), np.float32)
    e = np.empty((0, 4), np.float32)
    dx, dw, db = run_backward(e, x, w, e, e, activation, device)
    assert dx.shape == (0, 6)
    assert (dw == 0.0).all() and (db == 0.0).all()


@given(problem=dense_problems, start=st.integers(0, 8))
def test_dense_forward_rows_do_not_depend_on_the_batch(isa, device, problem, start):
    # GEMMs of fewer rows than the microkernel's MR skip packing (the small-m path); it
    # sums over k in the same order with the same multiply-add as the tiled path, so a
    # row computed alone, in a small batch or in a large one is bit-identical (predict is
    # batch-invariant).
    x, w, b, _ = build(problem)
    rng = np.random.default_rng(problem[-1])
    x = np.concatenate([x, make_values(rng, (13, x.shape[1]), "normal")])  # >= 14 rows: the tiled path
    full = ops.dense_forward(x, w, b, activation="gelu", device=device)
    for rows in (1, 2, 3, 4, 5, 6, 11, 12, 13):
        part = ops.dense_forward(x[start : start + rows].copy(), w, b, activation="gelu", device=device)
        where = f"rows {start}..{start + rows - 1} alone vs in a batch of {len(x)}"
        assert_same_bits(part, full[start : start + rows], where)


# The small-m path's boundaries per ISA level: MR (the rows below which it runs) and the
# columns one block computes (NR-wide panels, up to 4 per block: 64 with AVX2, 128 with
# AVX-512); k has no blocking there but crosses KC = 256 of the tiled path it must match.
SMALL_M_MR = {"portable": 4, "avx2": 6, "avx512": 12}


@pytest.mark.parametrize("activation", ["relu", "tanh"])  # fused in registers / through the epilogue
@pytest.mark.parametrize("n_out", [1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 257])
@pytest.mark.parametrize("n_in", [1, 2, 255, 256, 257])
def test_dense_forward_small_batches_at_tile_boundaries(isa, n_in, n_out, activation):
    # The same rows through ops.dense_forward (B read row-major, under a mask at the last
    # panel) and through a one-layer network's predict (B pre-packed by the inference
    # plan for this ISA level), each into NaN-filled outputs: both within the GEMM bound
    # of the exact value, and the same bits, since both sum over k in order.
    mr = SMALL_M_MR[isa]
    rng = np.random.default_rng(n_in * 1000 + n_out)
    w = make_values(rng, (n_in, n_out), "normal", scale=1.0 / np.sqrt(n_in))
    b = make_values(rng, (n_out,), "normal")
    model = cm.Sequential([cm.layers.Dense(n_out, activation=activation)], input_dim=n_in, device="cpu")
    model.set_weights([w, b])
    for batch in sorted({1, 2, mr - 1, mr, mr + 1}):
        x = make_values(rng, (batch, n_in), "mixed")
        y, z = run_forward(x, w, b, activation, "cpu")
        y_ref, z_ref = reference.dense_forward(x, w, b, activation=activation)
        tol_z, tol_y = forward_tolerance(activation, x, w, b, y_ref, z_ref)
        where = f"batch {batch}, {n_in} -> {n_out}, {isa}"
        assert_close(z, z_ref, tol_z, f"preact ({where})")
        assert_close(y, y_ref, tol_y, f"out ({where})")
        packed = nan_filled((batch, n_out))
        assert model.predict(x, out=packed) is packed
        assert_same_bits(packed, y, f"packed predict vs dense_forward ({where})")


# ------------------------------------------------------------------------------ NaN and inf


def with_nonfinite(rng, a: np.ndarray, fraction: float) -> np.ndarray:
    """a with about `fraction` of its elements (at least one) replaced by NaN, +inf or -inf."""
    a = a.copy()
    flat = a.reshape(-1)
    pick = rng.random(flat.size) < fraction
    pick[rng.integers(flat.size)] = True
    flat[pick] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), int(pick.sum()))
    return a


@pytest.mark.parametrize("activation", ACTIVATIONS)
@given(problem=st.tuples(sizes, sizes, sizes, seeds).filter(lambda p: p[0] * p[1] * p[2] <= 1 << 16))
@example(problem=(1, 1, 1, 0))
@example(problem=(7, 257, 33, 1))
def test_dense_forward_propagates_nan_and_inf(isa, device, activation, problem):
    # NaN propagates through every activation, as in PyTorch (relu(NaN) = NaN, where a
    # max(z, 0) instruction with the operands one way round gives 0), in the GEMM's
    # epilogues fused in registers, in the generic one and in the pre-packed plan's.
    # Normal weights have no exact zero, so a NaN in a row of x makes the whole row of z
    # NaN, and inf gives +-inf or NaN (inf - inf) exactly where the float64 reference does.
    batch, n_in, n_out, seed = problem
    rng = np.random.default_rng(seed)
    x = with_nonfinite(rng, make_values(rng, (batch, n_in), "normal"), 0.05)
    w = make_values(rng, (n_in, n_out), "normal", scale=1.0 / np.sqrt(n_in))
    b = make_values(rng, (n_out,), "normal")
    if seed % 3 == 0:
        b[rng.integers(n_out)] = np.nan
    y, z = run_forward(x, w, b, activation, device)
    with np.errstate(invalid="ignore"):  # inf - inf and 0 * inf are NaN on purpose here
        y_ref, z_ref = reference.dense_forward(x, w, b, activation=activation)
    for got, want, name in ((z, z_ref, "preact_out"), (y, y_ref, "out")):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{name}: where NaN ({activation}, {isa})")
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=f"{name}: where inf ({activation}, {isa})")
    finite = np.isfinite(x).all(axis=1) & np.isfinite(b).all()
    if finite.any():
        err_z, tol_y = forward_tolerance(activation, x[finite], w, b, y_ref[finite], z_ref[finite])
        assert_close(y[finite], y_ref[finite], tol_y, f"out of the finite rows ({activation}, {isa})")
    if device == "cpu":
        model = cm.Sequential([cm.layers.Dense(n_out, activation=activation)], input_dim=n_in, device="cpu")
        net = model._net  # set_weights refuses a NaN bias, the executor takes it
        net.write_params(net.weight_offsets[0], w.ravel())
        net.write_params(net.bias_offsets[0], b)
        # The same values (NaN where NaN: which NaN an inf - inf or a sum of two NaNs gives
        # depends on the order of the terms, and the packed GEMM's is its own).
        np.testing.assert_array_equal(model.predict(x), y, f"packed predict vs dense_forward ({activation}, {isa})")


def test_dense_backward_relu_passes_dy_where_y_is_nan(isa, device):
    # PyTorch's threshold_backward: dz = 0 only where y <= 0, so a NaN output passes dy on.
    x = np.ones((2, 3), np.float32)
    w = np.ones((3, 2), np.float32)
    y = np.array([[np.nan, 1.0], [0.0, -0.0]], np.float32)
    dy = np.array([[2.0, 3.0], [4.0, 5.0]], np.float32)
    _, _, db = run_backward(dy, x, w, y, None, "relu", device)
    want = reference.activation_backward("relu", dy, y).sum(axis=0)
    np.testing.assert_array_equal(db, np.array([2.0, 3.0], np.float32))
    np.testing.assert_array_equal(db, want.astype(np.float32))


# ------------------------------------------------------------------------------ SIMD vs portable


@given(problem=dense_problems, activation=st.sampled_from(ACTIVATIONS))
@example(problem=LARGE_PROBLEMS[0], activation="gelu")
def test_simd_variants_agree_with_portable(device, problem, activation):
    levels = [lvl for lvl in ("avx2", "avx512") if isa_available(lvl)]
    if not levels:
        pytest.skip("this CPU has no SIMD GEMM variant to compare with the portable one")
    x, w, b, dy = build(problem)
    with use_isa("portable"):
        y_p, z_p = run_forward(x, w, b, activation, device)
        grads_p = run_backward(dy, x, w, y_p, z_p, activation, device)
    y_ref, z_ref = reference.dense_forward(x, w, b, activation=activation)
    _, tol_y = forward_tolerance(activation, x, w, b, y_ref, z_ref)
    # Each variant is within the tolerance of the exact value, so two variants are within
    # twice it of each other. The backward pass reuses the portable y and z so both
    # variants differentiate the same point.
    tols = backward_tolerances(activation, dy, x, w, y_p, z_p)
    for level in levels:
        with use_isa(level) as active:
            assert active == level
            y_s, _ = run_forward(x, w, b, activation, device)
            grads_s = run_backward(dy, x, w, y_p, z_p, activation, device)
        assert_close(y_s, y_p, 2 * tol_y, f"out, {level} vs portable")
        for got, want, tol, name in zip(grads_s, grads_p, tols, ("dx", "dweight", "dbias")):
            assert_close(got, want, 2 * tol, f"{name}, {level} vs portable")


# ------------------------------------------------------------------------------ bad input


def _fwd_args(batch=4, n_in=3, n_out=5):
    return (np.ones((batch, n_in), np.float32), np.ones((n_in, n_out), np.float32), np.ones(n_out, np.float32))


def _bwd_args(batch=4, n_in=3, n_out=5):
    x, w, _ = _fwd_args(batch, n_in, n_out)
    dy = np.ones((batch, n_out), np.float32)
    y = np.ones((batch, n_out), np.float32)
    return dict(dy=dy, x=x, weight=w, y=y)


def _fwd(mutate):
    x, w, b = _fwd_args()
    kw = dict(x=x, weight=w, bias=b)
    mutate(kw)
    return lambda: ops.dense_forward(kw.pop("x"), kw.pop("weight"), kw.pop("bias"), **kw)


def _bwd(mutate):
    kw = _bwd_args()
    mutate(kw)
    return lambda: ops.dense_backward(kw.pop("dy"), kw.pop("x"), kw.pop("weight"), kw.pop("y"), **kw)


def _square_preact_weight(kw):
    # batch == in so that a (batch, out) preact_out can be the weight itself
    kw["x"] = np.ones((3, 3), np.float32)
    kw["preact_out"] = kw["weight"]


def _preact_bias(kw):
    kw["x"] = np.ones((1, 3), np.float32)
    kw["preact_out"] = kw["bias"].reshape(1, 5)


FORWARD_BAD = {
    "x float64": (
        lambda kw: kw.update(x=kw["x"].astype(np.float64)),
        TypeError,
        r"\[dense_forward\] x must be float32",
    ),
    "weight float16": (
        lambda kw: kw.update(weight=kw["weight"].astype(np.float16)),
        TypeError,
        r"\[dense_forward\] weight must be float32",
    ),
    "bias int32": (
        lambda kw: kw.update(bias=kw["bias"].astype(np.int32)),
        TypeError,
        r"\[dense_forward\] bias must be float32",
    ),
    "out float64": (lambda kw: kw.update(out=np.empty((4, 5))), TypeError, r"\[dense_forward\] out must be float32"),
    "preact_out int32": (
        lambda kw: kw.update(preact_out=np.empty((4, 5), np.int32)),
        TypeError,
        r"\[dense_forward\] preact_out must be float32",
    ),
    "x 1-D": (lambda kw: kw.update(x=np.ones(3, np.float32)), ValueError, r"\[dense_forward\] x must be 2-D"),
    "x 3-D": (lambda kw: kw.update(x=np.ones((4, 3, 1), np.float32)), ValueError, r"\[dense_forward\] x must be 2-D"),
    "bias 2-D": (
        lambda kw: kw.update(bias=np.ones((1, 5), np.float32)),
        ValueError,
        r"\[dense_forward\] bias must be 1-D",
    ),
    "x columns": (
        lambda kw: kw.update(x=np.ones((4, 4), np.float32)),
        ValueError,
        r"\[dense_forward\] x has 4 columns but weight has 3 rows",
    ),
    "bias length": (lambda kw: kw.update(bias=np.ones(4, np.float32)), ValueError, r"\[dense_forward\] bias has shape"),
    "out shape": (
        lambda kw: kw.update(out=np.empty((4, 4), np.float32)),
        ValueError,
        r"\[dense_forward\] out has shape",
    ),
    "preact_out shape": (
        lambda kw: kw.update(preact_out=np.empty((3, 5), np.float32)),
        ValueError,
        r"\[dense_forward\] preact_out has shape",
    ),
    "weight 0 columns": (
        lambda kw: kw.update(weight=np.ones((3, 0), np.float32), bias=np.ones(0, np.float32)),
        ValueError,
        r"\[dense_forward\] weight has shape",
    ),
    "x strided": (
        lambda kw: kw.update(x=np.ones((4, 6), np.float32)[:, ::2]),
        ValueError,
        r"\[dense_forward\] x must be C-contiguous",
    ),
    "weight transposed": (
        lambda kw: kw.update(weight=np.ones((5, 3), np.float32).T),
        ValueError,
        r"\[dense_forward\] weight must be C-contiguous",
    ),
    "out transposed": (
        lambda kw: kw.update(out=np.empty((5, 4), np.float32).T),
        ValueError,
        r"\[dense_forward\] out must be C-contiguous",
    ),
    "out is x": (
        lambda kw: (
            kw.update(x=np.ones((4, 3), np.float32), weight=np.ones((3, 3), np.float32), bias=np.ones(3, np.float32))
            or kw.update(out=kw["x"])
        ),
        ValueError,
        r"\[dense_forward\] out shares memory with x",
    ),
    "preact_out is out": (
        lambda kw: kw.update(out=np.empty((4, 5), np.float32)) or kw.update(preact_out=kw["out"]),
        ValueError,
        r"\[dense_forward\] preact_out shares memory with out",
    ),
    # Kernel bug (see the report): preact_out is not checked against weight and bias, so
    # the op silently overwrites its own weight with the pre-activations.
    "preact_out is weight": (
        _square_preact_weight,
        ValueError,
        r"\[dense_forward\] preact_out shares memory with weight",
    ),
    "preact_out is bias": (_preact_bias, ValueError, r"\[dense_forward\] preact_out shares memory with bias"),
    "unknown activation": (lambda kw: kw.update(activation="swish"), ValueError, r"\[dense_forward\] .*activation"),
    "read-only out": (
        lambda kw: kw.update(out=np.empty((4, 5), np.float32)) or kw["out"].setflags(write=False),
        ValueError,
        r"\[dense_forward\] out",
    ),
}


@pytest.mark.parametrize("case", list(FORWARD_BAD))
def test_dense_forward_rejects_bad_input(device, case):
    mutate, exc, match = FORWARD_BAD[case]
    call = _fwd(lambda kw: (mutate(kw), kw.setdefault("device", device)))
    with pytest.raises(exc, match=match):
        call()


def _z(kw, z):
    kw["z"] = z
    kw.setdefault("activation", "gelu")


BACKWARD_BAD = {
    "dy float64": (
        lambda kw: kw.update(dy=kw["dy"].astype(np.float64)),
        TypeError,
        r"\[dense_backward\] dy must be float32",
    ),
    "y int32": (lambda kw: kw.update(y=kw["y"].astype(np.int32)), TypeError, r"\[dense_backward\] y must be float32"),
    "dweight float64": (
        lambda kw: kw.update(dweight_out=np.empty((3, 5))),
        TypeError,
        r"\[dense_backward\] dweight must be float32",
    ),
    "dx float64": (lambda kw: kw.update(dx_out=np.empty((4, 3))), TypeError, r"\[dense_backward\] dx must be float32"),
    "z float64": (lambda kw: _z(kw, np.ones((4, 5))), TypeError, r"\[dense_backward\] z must be float32"),
    "dy shape": (lambda kw: kw.update(dy=np.ones((4, 4), np.float32)), ValueError, r"\[dense_backward\] dy has shape"),
    "y shape": (lambda kw: kw.update(y=np.ones((3, 5), np.float32)), ValueError, r"\[dense_backward\] y has shape"),
    "x 1-D": (lambda kw: kw.update(x=np.ones(3, np.float32)), ValueError, r"\[dense_backward\] x must be 2-D"),
    "x columns": (
        lambda kw: kw.update(x=np.ones((4, 2), np.float32)),
        ValueError,
        r"\[dense_backward\] x has 2 columns but weight has 3 rows",
    ),
    "z shape": (lambda kw: _z(kw, np.ones((4, 4), np.float32)), ValueError, r"\[dense_backward\] z has shape"),
    "dbias shape": (
        lambda kw: kw.update(dbias_out=np.empty(4, np.float32)),
        ValueError,
        r"\[dense_backward\] dbias has shape",
    ),
    "dx shape": (
        lambda kw: kw.update(dx_out=np.empty((4, 4), np.float32)),
        ValueError,
        r"\[dense_backward\] dx has shape",
    ),
    "gelu without z": (
        lambda kw: kw.update(activation="gelu"),
        ValueError,
        r"\[dense_backward\] activation 'gelu' needs the pre-activation z",
    ),
    "dy strided": (
        lambda kw: kw.update(dy=np.ones((4, 10), np.float32)[:, ::2]),
        ValueError,
        r"\[dense_backward\] dy must be C-contiguous",
    ),
    "z transposed": (
        lambda kw: _z(kw, np.ones((5, 4), np.float32).T),
        ValueError,
        r"\[dense_backward\] z must be C-contiguous",
    ),
    "dweight transposed": (
        lambda kw: kw.update(dweight_out=np.empty((5, 3), np.float32).T),
        ValueError,
        r"\[dense_backward\] dweight must be C-contiguous",
    ),
    "dx is dy": (
        lambda kw: (
            kw.update(x=np.ones((4, 5), np.float32), weight=np.ones((5, 5), np.float32)) or kw.update(dx_out=kw["dy"])
        ),
        ValueError,
        r"\[dense_backward\] dx shares memory with dy",
    ),
    "dweight is weight": (
        lambda kw: kw.update(dweight_out=kw["weight"]),
        ValueError,
        r"\[dense_backward\] dweight shares memory with weight",
    ),
    "dbias inside dweight": (
        lambda kw: kw.update(dweight_out=np.empty((3, 5), np.float32)) or kw.update(dbias_out=kw["dweight_out"][1]),
        ValueError,
        r"\[dense_backward\] dweight shares memory with dbias",
    ),
    "dx is z": (
        lambda kw: (
            _z(kw, np.ones((4, 3), np.float32))
            or kw.update(
                weight=np.ones((3, 3), np.float32),
                dy=np.ones((4, 3), np.float32),
                y=np.ones((4, 3), np.float32),
                dx_out=kw["z"],
            )
        ),
        ValueError,
        r"\[dense_backward\] dx shares memory with z",
    ),
}


@pytest.mark.parametrize("case", list(BACKWARD_BAD))
def test_dense_backward_rejects_bad_input(device, case):
    mutate, exc, match = BACKWARD_BAD[case]
    call = _bwd(lambda kw: (mutate(kw), kw.setdefault("device", device)))
    with pytest.raises(exc, match=match):
        call()


def test_dense_rejects_unknown_device():
    x, w, b = _fwd_args()
    with pytest.raises(ValueError, match="device must be"):
        ops.dense_forward(x, w, b, device="tpu")


def _misaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data starts 4 bytes past a 16-byte boundary, so
    kernels that use 16-byte vector loads must fall back for it."""
    buf = np.empty(a.size + 8, np.float32)
    start = (-(buf.ctypes.data // 4) + 1) % 4  # first element index at 16-byte offset 4
    out = buf[start : start + a.size].reshape(a.shape)
    out[...] = a
    assert out.flags.c_contiguous and out.ctypes.data % 16 == 4
    return out


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "misaligned"])
def test_dense_operands_at_any_alignment(device, aligned):
    """Row strides that are multiples of 4 floats, with the data 16-byte aligned or not:
    the device GEMM loads 16 bytes at a time only where that is legal."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((67, 36)).astype(np.float32)
    w = rng.standard_normal((36, 68)).astype(np.float32)
    b = rng.standard_normal(68).astype(np.float32)
    dy = rng.standard_normal((67, 68)).astype(np.float32)
    if not aligned:
        x, w, dy = _misaligned(x), _misaligned(w), _misaligned(dy)
    y, z = run_forward(x, w, b, "gelu", device)
    y_ref, z_ref = reference.dense_forward(x, w, b, activation="gelu")
    err_z, tol_y = forward_tolerance("gelu", x, w, b, y_ref, z_ref)
    assert_close(z, z_ref, err_z, "preact_out")
    assert_close(y, y_ref, tol_y, "out")
    dx, dw, db = run_backward(dy, x, w, y, z, "gelu", device)
    ref = reference.dense_backward(dy, x, w, y, z=z, activation="gelu")
    tols = backward_tolerances("gelu", dy, x, w, y, z)
    for got, want, tol, name in zip((dx, dw, db), ref, tols, ("dx", "dweight", "dbias")):
        assert_close(got, want, tol, name)


# Unit roundoff of each tensor-core format: its operands are rounded to nearest with
# 10 (tf32, fp16) or 7 (bf16) explicit mantissa bits; fp16 also has a narrower exponent.
TENSOR_CORE_U = {"tf32": 2.0**-11, "bf16": 2.0**-8, "fp16": 2.0**-11}


@pytest.mark.parametrize("precision", list(TENSOR_CORE_U))
@pytest.mark.parametrize("shape", [(1, 1, 1), (17, 33, 65), (70, 37, 90), (130, 300, 17), (96, 80, 72)])
def test_dense_tensor_core_precisions(device, precision, shape):
    batch, n_in, n_out = shape
    rng = np.random.default_rng(batch * 1000 + n_in)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    dy = rng.standard_normal((batch, n_out)).astype(np.float32)
    if device == "cpu":
        with pytest.raises(ValueError, match=rf"\[dense_forward\] precision '{precision}' is not supported"):
            ops.dense_forward(x, w, b, precision=precision, device=device)
        return
    u = TENSOR_CORE_U[precision]
    # Each operand is rounded once (relative error <= u; these normal-scale values are far
    # from fp16's overflow and subnormal ranges), so each product is off by at most
    # (2u + u^2)|x||w|; the float32 sum adds (K + 2) u32 of the sum of |terms|.
    x64, w64 = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    tol_y = (2 * u + u * u + (n_in + 2) * U32) * (x64 @ w64 + np.abs(b))
    y = nan_filled((batch, n_out))
    ops.dense_forward(x, w, b, out=y, precision=precision, device=device)
    assert_float32_array(y, (batch, n_out), "out")
    assert_close(y, x.astype(np.float64) @ w + b, tol_y, f"out ({precision})")
    if n_in >= 33:  # the operands really were rounded: the result is not float32's
        assert not np.array_equal(y, ops.dense_forward(x, w, b, device=device))
    dx, dw, db = ops.dense_backward(dy, x, w, y, precision=precision, device=device)
    dy64 = np.abs(dy.astype(np.float64))
    assert_close(dw, x.T.astype(np.float64) @ dy, (2 * u + u * u + (batch + 2) * U32) * (x64.T @ dy64), "dweight")
    assert_close(dx, dy.astype(np.float64) @ w.T, (2 * u + u * u + (n_out + 2) * U32) * (dy64 @ w64.T), "dx")
    # the bias gradient is a plain float32 column sum in every precision
    assert_close(db, dy.astype(np.float64).sum(axis=0), (batch + 1) * U32 * dy64.sum(axis=0), "dbias")


@pytest.mark.parametrize("precision", list(TENSOR_CORE_U))
def test_dense_tensor_core_precisions_propagate_nan(device, precision):
    """A NaN operand makes exactly its row or column of the product NaN in every precision:
    the 16-bit and tf32 conversions keep NaN (a signalling one too), and so do the tensor-core
    products."""
    if device == "cpu":
        pytest.skip("the cpu runs fp32 only (test_dense_tensor_core_precisions checks its error)")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((70, 37)).astype(np.float32)
    w = rng.standard_normal((37, 90)).astype(np.float32)
    b = rng.standard_normal(90).astype(np.float32)
    dy = rng.standard_normal((70, 90)).astype(np.float32)
    w[20, 5], dy[2, 4] = np.nan, np.nan
    # A NaN whose payload is in the low 13 bits alone, which tf32 drops: it must not read as inf.
    x.view(np.uint32)[3, 11] = 0x7F800001
    y = nan_filled((70, 90))
    ops.dense_forward(x, w, b, out=y, precision=precision, device=device)
    want = np.zeros((70, 90), bool)
    want[3, :] = want[:, 5] = True
    np.testing.assert_array_equal(np.isnan(y), want)
    w[20, 5] = 0.5
    dx, dw, db = ops.dense_backward(dy, x, w, y, precision=precision, device=device)
    want_dx, want_dw = np.zeros((70, 37), bool), np.zeros((37, 90), bool)
    want_dx[2, :] = True  # dy's NaN row through w
    want_dw[:, 4] = want_dw[11, :] = True  # x's NaN column (of x^T) and dy's NaN column
    np.testing.assert_array_equal(np.isnan(dx), want_dx)
    np.testing.assert_array_equal(np.isnan(dw), want_dw)
    np.testing.assert_array_equal(np.isnan(db), np.arange(90) == 4)


def test_unknown_precision_is_rejected(device):
    x, w, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"\[dense_forward\] precision must be fp32, tf32, bf16 or fp16"):
        ops.dense_forward(x, w, b, precision="fp8", device=device)
