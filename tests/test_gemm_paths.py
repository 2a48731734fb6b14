"""The CUDA dense kernels' paths (issue 22), on cuda-emulated against NumPy. Float32:
the warp-per-column GEMV (C of at most 4 rows or 16 columns), the tiled GEMM split along k
(fewer tiles than an H100's 132 SMs: each block sums one part, the tile's last block to
arrive adds the parts) and the tiled GEMM unsplit (each thread adds its parts in
registers). All three sum in the parts order of cuda/dense.cuh (k in at most 32 parts of
a multiple of 16, each summed from zero in k order, the parts added left to right), so a
row's bits depend neither on the batch it came in nor on the path, the grid or which
block finished first (the emulator runs the blocks last first under the reverse order).

Against the previous kernel (one serial sum over all k) the order differs once k > 16; the
bound does not: any order of a K-term float32 sum errs by at most gamma_K sum |a_i b_i|
(tests/test_dense.py's gemm_bound, which these tests apply unchanged), so the two orders
differ by at most twice that. Splitting into parts lowers the worst case to
gamma_(K/P + P) (P parts), so the new order is never worse.

The tensor-core kernel (tf32, bf16, fp16) sums its mma chains in the same parts order,
split along k under the same rule (it has no GEMV path): its bits are not the float32
kernels' (its operands are rounded), but they too depend neither on the batch nor on the
split nor on which block finished first, and its bias gradient, summed in float from dz in
the parts order, is the float32 kernels' bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import customml
import reference
from customml import _core, ops
from support import VALUE_KINDS, assert_close, assert_same_bits, make_values, nan_filled
from test_dense import TENSOR_CORE_U, backward_tolerances, build, forward_tolerance, run_backward, run_forward

pytestmark = pytest.mark.skipif(
    not customml.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF"
)

# cuda/dense.cu's choice, mirrored so that each test knows which path it reaches.
COVER_BLOCKS, MAX_PARTIAL_TILES, GEMV_ROWS, GEMV_COLUMNS = 132, 512, 4, 16


def part_depth(k):
    return max(1, math.ceil(math.ceil(k / 32) / 16)) * 16


def tiling(problems, gemv=True):
    """(path, tile rows, tile columns, blocks) of a launch of problems [(rows, n, k)]."""
    if gemv and all(rows <= GEMV_ROWS or n <= GEMV_COLUMNS for rows, n, _ in problems):
        return "gemv", 0, 0, 0
    parts = [math.ceil(k / part_depth(k)) for _, _, k in problems]

    def of(tr, tc):
        tiles = [math.ceil(rows / tr) * math.ceil(n / tc) for rows, n, _ in problems]
        split = sum(tiles) < COVER_BLOCKS and sum(t * p for t, p in zip(tiles, parts)) <= MAX_PARTIAL_TILES
        split = split and max(parts) > 1
        blocks = sum(t * p for t, p in zip(tiles, parts)) if split else sum(tiles)
        return ("split" if split else "tiled"), tr, tc, blocks

    best = of(64, 64)
    if best[3] >= COVER_BLOCKS:
        return best
    for tr in (64, 32, 16):
        for tc in (64, 32, 16, 8):
            t = of(tr, tc)
            if t[0] != "split":
                continue
            covers, best_covers = t[3] >= COVER_BLOCKS, best[3] >= COVER_BLOCKS
            if (not best_covers or t[3] < best[3]) if covers else (not best_covers and t[3] > best[3]):
                best = t
    return best


def path(rows, n, k, gemv=True):
    return tiling([(rows, n, k)], gemv)[0]


# k at the slice (16) and part boundaries: 32 parts of 16 up to 512, of 32 beyond.
DEPTHS = (1, 15, 16, 17, 31, 33, 255, 511, 512, 513, 1000, 1025)
WIDTHS = (17, 63, 64, 65, 130)


def orders(*names):
    for name in names:
        _core._simt_set_thread_order(name, 7)
        yield name
    _core._simt_set_thread_order("forward")


@given(
    k=st.sampled_from(DEPTHS),
    n=st.sampled_from(WIDTHS),
    kind=st.sampled_from(VALUE_KINDS),
    start=st.integers(0, 60),
    seed=st.integers(0, 2**16),
)
def test_every_path_gives_a_row_the_same_bits(k, n, kind, start, seed):
    # A batch of at least 132 tiles (unsplit; interior tiles of aligned operands load
    # without checks), 70 rows (split where k has 2+ parts) and 1 to 4 rows (GEMV) of the
    # same x: the same bits, within the GEMM bound, under the forward and reverse orders.
    rows = 64 * math.ceil(COVER_BLOCKS / math.ceil(n / 64))
    assert path(rows, n, k) == "tiled" and path(3, n, k) == "gemv"
    x, w, b, _ = build((rows, k, n, kind, seed))
    for order in orders("forward", "reverse"):
        y, z = run_forward(x, w, b, "tanh", "cuda-emulated")
        y_ref, z_ref = reference.dense_forward(x, w, b, activation="tanh")
        tol_z, tol_y = forward_tolerance("tanh", x, w, b, y_ref, z_ref)
        assert_close(z, z_ref, tol_z, f"preact, {rows} rows ({order})")
        assert_close(y, y_ref, tol_y, f"out, {rows} rows ({order})")
        # x one float off 16-byte alignment: every tile takes the checked loads
        shifted = np.empty(x.size + 1, np.float32)[1:].reshape(x.shape)
        shifted[...] = x
        y_checked, _ = run_forward(shifted, w, b, "tanh", "cuda-emulated")
        assert_same_bits(y_checked, y, f"out with x misaligned ({order})")
        for m in (1, 2, 4, 70):
            part, zp = run_forward(x[start : start + m].copy(), w, b, "tanh", "cuda-emulated")
            where = f"rows {start}..{start + m - 1} through the {path(m, n, k)} path vs in {rows} rows ({order})"
            assert_same_bits(zp, z[start : start + m], "preact of " + where)
            assert_same_bits(part, y[start : start + m], where)


# The README MLP's layers at batch 128 and 1 (every backward path: dW split, dx split,
# dx by the GEMV, dW of 10 columns by the GEMV), and one with k past 512.
BACKWARD_SHAPES = [(128, 784, 256), (128, 256, 256), (128, 256, 10), (1, 784, 256), (3, 256, 10), (96, 1030, 70)]


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("shape", BACKWARD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_backward_bits_do_not_depend_on_the_order_blocks_finish(shape, activation):
    # Split-K's sums are added by whichever block of a tile arrives last: the result must
    # not depend on which, nor on what ran before (the arrival counters reset themselves).
    batch, n_in, n_out = shape
    x, w, b, dy = build((batch, n_in, n_out, "mixed", batch + n_in))
    results = []
    for order in orders("forward", "reverse", "shuffled"):
        y, z = run_forward(x, w, b, activation, "cuda-emulated")
        for _ in range(2):
            results.append((order, run_backward(dy, x, w, y, z, activation, "cuda-emulated")))
    dx, dw, db = results[0][1]
    tol_dx, tol_dw, tol_db = backward_tolerances(activation, dy, x, w, y, z)
    dx_ref, dw_ref, db_ref = reference.dense_backward(dy, x, w, y, z=z, activation=activation)
    assert_close(dx, dx_ref, tol_dx, "dx")
    assert_close(dw, dw_ref, tol_dw, "dweight")
    assert_close(db, db_ref, tol_db, "dbias")
    for order, (dx2, dw2, db2) in results[1:]:
        assert_same_bits(dx2, dx, f"dx ({order})")
        assert_same_bits(dw2, dw, f"dweight ({order})")
        assert_same_bits(db2, db, f"dbias ({order})")


def test_split_gemms_of_different_shapes_in_turn_share_the_workspace():
    # Two split shapes alternating (different tile and part counts, one workspace): each
    # keeps its bits, so no launch sees another's partial sums or arrival counts.
    rng = np.random.default_rng(5)
    cases = []
    for rows, k, n in [(128, 784, 256), (70, 100, 200), (128, 256, 256)]:
        assert path(rows, n, k) == "split"
        x = make_values(rng, (rows, k), "normal")
        w = make_values(rng, (k, n), "normal", scale=1 / np.sqrt(k))
        b = make_values(rng, (n,), "normal")
        cases.append((x, w, b, ops.dense_forward(x, w, b, device="cuda-emulated")))
    for x, w, b, first in cases[::-1] + cases:
        out = nan_filled(first.shape)
        ops.dense_forward(x, w, b, out=out, device="cuda-emulated")
        assert_same_bits(out, first, f"{x.shape} x {w.shape} again")


@pytest.mark.parametrize("precision", ["tf32", "bf16"])  # fp16 takes bf16's code but the conversion
def test_tensor_core_rows_do_not_depend_on_the_batch_or_the_split(precision):
    # A batch of at least 132 tiles (unsplit: each block adds its parts in shared memory),
    # 70 rows and 1 row (split, the blocks' parts added by the tile's last block) of the
    # same x: the same bits under the forward and reverse orders, within the tensor-core
    # bound of tests/test_dense.py. k = 100: 7 parts of 16, the last one 4 deep.
    k, n = 100, 130
    rows = 64 * math.ceil(COVER_BLOCKS / math.ceil(n / 64))
    assert path(rows, n, k, gemv=False) == "tiled" and path(70, n, k, gemv=False) == "split"
    x, w, b, _ = build((rows, k, n, "normal", 11))
    y = nan_filled((rows, n))
    ops.dense_forward(x, w, b, out=y, precision=precision, device="cuda-emulated")
    u = TENSOR_CORE_U[precision]
    x64, w64 = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    tol = (2 * u + u * u + (k + 2) * 2.0**-24) * (x64 @ w64 + np.abs(b))
    assert_close(y, x.astype(np.float64) @ w + b, tol, f"out ({precision})")
    for order in orders("forward", "reverse"):
        for start, m in ((5, 70), (77, 1)):
            part = nan_filled((m, n))
            ops.dense_forward(x[start : start + m].copy(), w, b, out=part, precision=precision, device="cuda-emulated")
            assert_same_bits(part, y[start : start + m], f"{precision}: rows {start}.. of {m} vs in {rows} ({order})")


# dW split (128 x 256: 8 parts of 16) and unsplit (32 x 700 -> 780: 143 tiles, 2 parts in a
# block); db's row in a tile of its own (in = 256) and inside one (in = 700).
@pytest.mark.parametrize(
    "shape, precision", [((128, 256, 256), "tf32"), ((32, 700, 780), "bf16"), ((3, 256, 10), "fp16")], ids=str
)
def test_tensor_core_backward_is_deterministic_and_db_is_float32s(shape, precision):
    batch, n_in, n_out = shape
    x, w, b, dy = build((batch, n_in, n_out, "normal", n_in))
    y, z = run_forward(x, w, b, "relu", "cuda-emulated")
    _, _, db32 = run_backward(dy, x, w, y, z, "relu", "cuda-emulated")
    results = []
    for order in orders("forward", "reverse", "shuffled"):
        got = ops.dense_backward(dy, x, w, y, z=z, activation="relu", precision=precision, device="cuda-emulated")
        results.append((order, got))
    dx, dw, db = results[0][1]
    assert_same_bits(db, db32, f"dbias ({precision}) vs float32's")
    u = TENSOR_CORE_U[precision]
    dz = np.where(z > 0, dy, 0).astype(np.float64)
    assert_close(
        dw,
        x.T.astype(np.float64) @ dz,
        (2 * u + u * u + (batch + 2) * 2.0**-24) * (np.abs(x.T) @ np.abs(dz)),
        "dweight",
    )
    for order, (dx2, dw2, db2) in results[1:]:
        assert_same_bits(dx2, dx, f"dx ({precision}, {order})")
        assert_same_bits(dw2, dw, f"dweight ({precision}, {order})")
        assert_same_bits(db2, db, f"dbias ({precision}, {order})")


def tiled_64(problems, rows, gemv):
    """The smallest rows >= rows (a multiple of 64, the batch) at which the launch of
    problems(rows) takes 64 x 64 tiles."""
    rows = 64 * math.ceil(rows / 64)
    while tiling(problems(rows), gemv)[1:3] != (64, 64):
        rows += 64
    return rows


# Split launches below 132 blocks of 64 x 64 take smaller tiles (cuda/dense.cu's
# choose_tiling): each tile shape at its edges +-1 (rows 15 / 17 / 31 / 33 / 63 / 65, columns
# 9 / 17 / 31 / 33) and at batch 1.
SMALL_TILES = [
    ((17, 17, 100), "fp32", (16, 8)),
    ((33, 33, 256), "fp32", (16, 16)),
    ((63, 33, 513), "fp32", (16, 32)),
    ((129, 31, 256), "fp32", (16, 64)),
    ((65, 17, 256), "fp32", (32, 8)),
    ((129, 63, 100), "fp32", (32, 16)),
    ((15, 257, 256), "fp32", (64, 32)),
    ((1, 9, 100), "bf16", (64, 8)),
    ((17, 9, 100), "bf16", (16, 8)),
    ((33, 63, 256), "bf16", (16, 16)),
    ((63, 31, 513), "bf16", (32, 8)),
    ((1, 257, 256), "bf16", (64, 32)),
]


@pytest.mark.parametrize("shape, precision, tile", SMALL_TILES, ids=str)
def test_small_tiles_give_a_row_the_same_bits(shape, precision, tile):
    # The rows of a launch on small tiles against the same rows in a batch on 64 x 64 tiles
    # (each block keeps, stores and sums only its tile's elements: a missed one stays NaN, a
    # part summed from another tile's slot or out of order changes bits), forward and
    # reverse block orders; within the GEMM bound of NumPy.
    rows, n, k = shape
    gemv = precision == "fp32"
    assert tiling([shape], gemv)[1:3] == tile
    big = tiled_64(lambda r: [(r, n, k)], rows + 3, gemv)
    x, w, b, _ = build((big, k, n, "normal", rows * n + k))
    kwargs = {"precision": precision, "device": "cuda-emulated"}
    y = nan_filled((big, n))
    ops.dense_forward(x, w, b, activation="tanh", out=y, **kwargs)
    if precision == "fp32":
        y_ref, z_ref = reference.dense_forward(x, w, b, activation="tanh")
        assert_close(y, y_ref, forward_tolerance("tanh", x, w, b, y_ref, z_ref)[1], f"out, {big} rows")
    for order in orders("forward", "reverse"):
        part = nan_filled((rows, n))
        ops.dense_forward(x[3 : 3 + rows].copy(), w, b, activation="tanh", out=part, **kwargs)
        assert_same_bits(part, y[3 : 3 + rows], f"rows 3.. on {tile} tiles vs in {big} on 64 x 64 ({order})")


# Backward launches on small tiles (the README MLP's L3 at batch 128 and L2 at batch 1, dW
# alone, and edges +-1): dW and db against a wider layer's first columns and dx against a
# larger batch's first rows, both on 64 x 64 tiles.
SMALL_BACKWARD = [
    ((128, 256, 10), True, (32, 16)),
    ((1, 256, 256), True, (16, 64)),
    ((100, 127, 129), False, (32, 32)),
    ((17, 65, 9), True, (16, 8)),
]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("shape, need_dx, tile", SMALL_BACKWARD, ids=str)
def test_small_tiles_give_backward_the_same_bits(shape, need_dx, tile, precision):
    batch, n_in, n_out = shape

    def pair(batch, n_out):
        return [(n_in + 1, n_out, batch)] + ([(batch, n_in, n_out)] if need_dx else [])

    assert tiling(pair(batch, n_out), False)[1:3] == tile
    if precision == "fp32" and tiling(pair(batch, n_out))[0] == "gemv":
        pytest.skip("the float32 launch takes the GEMV")
    wide = tiled_64(lambda c: pair(batch, c), n_out + 1, precision == "fp32")
    tall = tiled_64(lambda r: pair(r, n_out), batch + 1, precision == "fp32")
    x, w, b, dy = build((tall, n_in, wide, "normal", n_in + wide))
    kwargs = {"activation": "relu", "need_dx": need_dx, "precision": precision, "device": "cuda-emulated"}

    def backward(x, w, dy):
        y, z = run_forward(x, w, b[: w.shape[1]], "relu", "cuda-emulated")
        return ops.dense_backward(dy, x, w, y, z=z, **kwargs)

    got = backward(x[:batch].copy(), w[:, :n_out].copy(), dy[:batch, :n_out].copy())
    _, dw, db = backward(x[:batch].copy(), w, dy[:batch].copy())
    assert_same_bits(got[1], dw[:, :n_out], f"dweight on {tile} tiles vs {wide} columns")
    assert_same_bits(got[2], db[:n_out], f"dbias on {tile} tiles vs {wide} columns")
    if need_dx:
        dx, _, _ = backward(x, w[:, :n_out].copy(), dy[:, :n_out].copy())
        assert_same_bits(got[0], dx[:batch], f"dx on {tile} tiles vs a batch of {tall}")
