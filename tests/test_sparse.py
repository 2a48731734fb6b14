"""The sparse op family (sparse_dense_forward over CSR, nm_dense_forward over N:M) against
tests/reference.py on every device and every ISA level, at sparsities 0 to 100%, with
empty outputs, around every tile of the kernels; then the NumPy format helpers
(csr_from_dense, nm_from_dense) and malformed input.

Tolerance of the products
-------------------------
Each output is a float32 sum of at most `in` products (the nonzeros of its column) plus
the bias, computed in an order that differs from the float64 reference and between the
kernels (sequential, interleaved streams, vector lanes with a horizontal sum). Higham's
bound gamma_K sum |x w| holds for every summation order, so the dense layer's bound
(test_dense.forward_tolerance, with K = in >= the column's nonzeros; the zeros of W add
nothing to sum |x w|) covers every kernel, the activation's rounding included.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import customml as cm
import reference
from customml import ops
from support import (
    VALUE_KINDS,
    assert_close,
    assert_float32_array,
    assert_same_bits,
    large_example_once,
    make_values,
    nan_filled,
    seeds,
    sizes,
)
from test_dense import forward_tolerance

ACTIVATIONS = reference.ACTIVATIONS
SPARSITIES = (0.0, 0.5, 0.9, 0.99, 1.0)

# The kernels' boundaries: batch tiles of 64 rows (transposed into 16- or 8-lane
# vectors; AVX2 N:M in halves of 32), the CSR gather path below 3 rows, the N:M permute
# path up to 15 rows (a tile's remainder too: 79 = 64 + 15), outputs in vectors of 16 / 8,
# N:M blocks of 4 outputs, thread splits in 16-column panels.
BATCHES = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 79, 80, 129)
batches = st.one_of(st.sampled_from(BATCHES), st.integers(1, 40))
# (batch, in, out, sparsity, value kind, empty outputs, seed), products capped so one
# example stays in the millisecond range.
csr_problems = st.tuples(
    batches, sizes, sizes, st.sampled_from(SPARSITIES), st.sampled_from(VALUE_KINDS), st.booleans(), seeds
).filter(lambda p: p[0] * p[1] * p[2] <= 1 << 18)
# Large enough to use both threads (>= 2^18 multiply-adds) and every path at once.
LARGE_CSR = [
    (130, 784, 256, 0.9, "normal", False, 1),
    (200, 257, 1025, 0.5, "mixed", True, 2),
    (1, 784, 256, 0.9, "normal", True, 3),
]
NM_SHAPES = ((2, 4), (1, 4), (4, 8), (1, 1), (3, 5), (2, 16), (8, 16), (2, 20), (1, 256))
nm_problems = st.tuples(
    batches, sizes, sizes, st.sampled_from(NM_SHAPES), st.sampled_from(VALUE_KINDS), st.booleans(), seeds
).filter(lambda p: p[0] * p[1] * p[2] <= 1 << 18)
LARGE_NM = [
    (130, 784, 256, (2, 4), "normal", False, 1),
    (3, 1023, 513, (2, 4), "mixed", True, 2),
    (66, 257, 100, (2, 20), "normal", False, 3),
]


def build_dense(problem):
    """x (batch, in), a dense kernel w (in, out) with the drawn fraction of zeros (and
    some all-zero columns when asked), bias (out,)."""
    batch, n_in, n_out, sparsity, kind, empty, seed = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, (batch, n_in), kind)
    w_kind = kind if kind in ("ints", "tiny") else "normal"
    w = make_values(rng, (n_in, n_out), w_kind, scale=1.0 / np.sqrt(n_in))
    w[rng.random((n_in, n_out)) < sparsity] = 0.0
    if empty:
        w[:, rng.random(n_out) < 0.3] = 0.0
    b = make_values(rng, (n_out,), kind if kind in ("ints", "tiny", "subnormal", "mixed") else "normal")
    return x, w, b


def run_csr(x, csr, b, activation, device, packed=False):
    """The product through the raw CSR (checked per call) or, with ``packed``, through
    ``sparse_pack`` (on the CPU with AVX-512: the gather-free layout, for up to 8 rows)."""
    y = nan_filled((x.shape[0], len(csr[0]) - 1))
    if packed:
        weight = ops.sparse_pack(*csr, x.shape[1], device=device)
        assert weight.shape == (x.shape[1], len(csr[0]) - 1) and weight.nnz == len(csr[1])
        ret = ops.sparse_dense_forward(x, weight, bias=b, activation=activation, out=y, device=device)
    else:
        ret = ops.sparse_dense_forward(x, *csr, b, activation=activation, out=y, device=device)
    assert ret is y
    assert_float32_array(y, (x.shape[0], len(csr[0]) - 1), "out")
    return y


def check_against_reference(y, x, w_dense, b, activation, name):
    bias = np.zeros(w_dense.shape[1], np.float32) if b is None else b
    y_ref, z_ref = reference.dense_forward(x, w_dense, bias, activation=activation)
    _, tol = forward_tolerance(activation, x, w_dense, bias, y_ref, z_ref)
    assert_close(y, y_ref, tol, name)


# --------------------------------------------------------------------------------- CSR


@pytest.mark.parametrize("activation", ACTIVATIONS)
@given(problem=csr_problems)
@example(problem=LARGE_CSR[0])
@example(problem=LARGE_CSR[1])
@example(problem=LARGE_CSR[2])
@pytest.mark.parametrize("packed", [False, True], ids=["raw", "packed"])
def test_sparse_dense_forward_matches_reference(isa, device, activation, packed, problem):
    large_example_once(problem, LARGE_CSR, activation, keep=("relu", "gelu"))
    x, w, b = build_dense(problem)
    csr = ops.csr_from_dense(w)
    y = run_csr(x, csr, b, activation, device, packed)
    w_csr = reference.csr_to_dense(*csr, x.shape[1])
    check_against_reference(y, x, w_csr, b, activation, f"out ({activation}, {isa}, {problem[3]:.0%} sparse)")
    assert_same_bits(run_csr(x, csr, b, activation, device, packed), y, "out of a second call")


@pytest.mark.parametrize("packed", [False, True], ids=["raw", "packed"])
@pytest.mark.parametrize("activation", ["identity", "relu", "sigmoid", "gelu"])
@pytest.mark.parametrize("batch", [1, 2, 3, 8, 17, 64, 65])
def test_empty_outputs_get_bias_and_activation(isa, device, activation, batch, packed):
    # 100% sparse: no nonzeros at all, and a column emptied inside a sparse matrix.
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 33)).astype(np.float32)
    b = np.array([-0.0, 0.0, 1.5, -2.0, 3e38, -1e-30, 7.0, -7.0, 0.25] * 2, np.float32)
    empty = (np.zeros(1, np.int32).repeat(19), np.zeros(0, np.int32), np.zeros(0, np.float32))
    y = run_csr(x, empty, b[:18], activation, device, packed)
    want = reference.activation_forward(activation, np.broadcast_to(b[:18].astype(np.float64), y.shape))
    _, tol = forward_tolerance(activation, x, np.zeros((33, 18), np.float32), b[:18], want, want)
    assert_close(y, want, tol, "all outputs empty")
    if activation == "relu":  # relu(-0) is +0, as the dense epilogue
        assert not np.signbit(y).any()
    w = (rng.standard_normal((33, 18)) * (rng.random((33, 18)) < 0.2)).astype(np.float32)
    w[:, 5] = 0.0
    y = run_csr(x, ops.csr_from_dense(w), b[:18], activation, device, packed)
    check_against_reference(y, x, w, b[:18], activation, "one empty output")


@pytest.mark.parametrize("packed", [False, True], ids=["raw", "packed"])
@pytest.mark.parametrize("batch", [1, 2, 3, 70])
def test_sparse_dense_forward_without_bias(isa, device, batch, packed):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((batch, 40)).astype(np.float32)
    w = (rng.standard_normal((40, 21)) * (rng.random((40, 21)) < 0.3)).astype(np.float32)
    y = run_csr(x, ops.csr_from_dense(w), None, "tanh", device, packed)
    check_against_reference(y, x, w, None, "tanh", "no bias")


def test_sparse_products_do_not_depend_on_the_thread_count(isa):
    # Each output element is computed by one task with a fixed sum order. The packed
    # product at 2 rows of a 1023 x 1025 half-dense weight (>= 2^18 multiply-adds) splits
    # its 9 groups of outputs over the threads.
    x, w, b = build_dense(LARGE_CSR[1])
    csr = ops.csr_from_dense(w)
    values, index = ops.nm_from_dense(w)
    x_big, w_big, b_big = build_dense((2, 1023, 1025, 0.5, "normal", True, 4))
    packed = ops.sparse_pack(*ops.csr_from_dense(w_big), 1023)
    before = cm.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            cm.set_num_threads(threads)
            results.append(
                (
                    ops.sparse_dense_forward(x, *csr, b, activation="relu"),
                    ops.nm_dense_forward(x, values, index, b, activation="relu"),
                    ops.sparse_dense_forward(x_big, packed, bias=b_big, activation="relu"),
                )
            )
    finally:
        cm.set_num_threads(before)
    for csr_y, nm_y, packed_y in results[1:]:
        assert_same_bits(csr_y, results[0][0], "CSR out")
        assert_same_bits(nm_y, results[0][1], "N:M out")
        assert_same_bits(packed_y, results[0][2], "packed CSR out")
    check_against_reference(results[0][2], x_big, w_big, b_big, "relu", "packed CSR out")


@pytest.mark.parametrize("batch", [1, 2, 5, 9])
def test_packed_product_skips_inputs_no_weight_reads(isa, device, batch):
    # The packed layout pads each step to the longest output of its group; the padding's
    # lanes are masked, so an inf or NaN in an input column that no nonzero reads stays
    # out of every output, as with the CSR (a padded 0 * inf would be NaN).
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 70)).astype(np.float32)
    w = (rng.standard_normal((70, 40)) * (rng.random((70, 40)) < 0.3)).astype(np.float32)
    w[[0, 5, 33, 69], :] = 0.0
    x_bad = x.copy()
    x_bad[:, [0, 33]] = np.inf
    x_bad[:, [5, 69]] = np.nan
    csr = ops.csr_from_dense(w)
    y = run_csr(x_bad, csr, None, "identity", device, packed=True)
    check_against_reference(y, x, w, None, "identity", "out with unread inf / NaN inputs")
    assert_same_bits(y, run_csr(x, csr, None, "identity", device, packed=True), "out")


@pytest.mark.skipif(
    "sparse_dense_packed" not in cm.build_info()["kernels"],
    reason="no packed sparse kernel at this ISA level (it needs AVX-512)",
)
def test_packed_layout_fills_its_lanes():
    # What the serving rule relies on (a layout at least half full serves every batch):
    # 2:4 fills every lane (each output's k-th nonzero lies in the same 4 inputs for all
    # outputs, so every step takes one from each), and 90% random sparsity more than half
    # of them (a step's window starts at the input the group's furthest-behind output needs
    # next). A lane is 5.125 bytes (a value, a position byte, a mask bit), and the 64-byte
    # header, the steps' bases and the alignment only add to them, so lanes are at most
    # (bytes - 64) / 5.125: 2:4 must fill 99% of that bound (its bases and alignment are
    # about 0.6% of the bytes).
    rng = np.random.default_rng(0)
    w = rng.standard_normal((784, 256)).astype(np.float32)
    keep_24 = (rng.random((196, 4, 256)).argsort(axis=1).argsort(axis=1) < 2).reshape(784, 256)
    packed_24 = ops.sparse_pack(*ops.csr_from_dense(w * keep_24), 784)
    packed_90 = ops.sparse_pack(*ops.csr_from_dense(w * (rng.random(w.shape) < 0.1)), 784)
    for packed, least in ((packed_24, 0.99), (packed_90, 0.5)):
        lanes_at_most = (packed.packed_nbytes - 64) / 5.125
        assert packed.nnz >= least * lanes_at_most, (packed, packed.packed_nbytes)


def test_packed_weight_is_a_copy_checked_once(device):
    # sparse_pack checks the structure and copies the arrays: changing them afterwards
    # reaches neither the checks nor the product.
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((50, 30)) * (rng.random((50, 30)) < 0.2)).astype(np.float32)
    x = rng.standard_normal((3, 50)).astype(np.float32)
    offsets, index, values = ops.csr_from_dense(w)
    packed = ops.sparse_pack(offsets, index, values, 50, device=device)
    want = ops.sparse_dense_forward(x, packed, device=device)
    index[:] = 10**6
    values[:] = np.nan
    assert_same_bits(ops.sparse_dense_forward(x, packed, device=device), want, "out after the arrays changed")
    assert packed.device == device and "PackedCsr(in=50, out=30" in repr(packed)


def test_csr_from_dense_round_trips():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((37, 19)) * (rng.random((37, 19)) < 0.3)).astype(np.float32)
    w[:, 3] = 0.0
    w[4, 7] = -0.0
    offsets, index, values = ops.csr_from_dense(w)
    assert offsets.dtype == np.int32 and index.dtype == np.int32 and values.dtype == np.float32
    assert offsets.shape == (20,) and offsets[0] == 0 and offsets[-1] == np.count_nonzero(w) == len(index)
    assert offsets[4] == offsets[3]  # the empty column
    for j in range(19):
        assert (np.diff(index[offsets[j] : offsets[j + 1]]) > 0).all()
    assert_same_bits(
        reference.csr_to_dense(offsets, index, values, 37).astype(np.float32), np.where(w == 0, 0, w), "round trip"
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("fmt", ["csr", "packed", "nm"])
@pytest.mark.parametrize("batch", [1, 3, 9, 40])
def test_sparse_products_propagate_nan_through_the_weights_they_have(isa, device, fmt, activation, batch):
    # A NaN in input column c reaches exactly the outputs j with a stored weight w[c, j]
    # (a sparse product has no term for a pruned one), through every activation: relu(NaN)
    # is NaN, which max(z, 0) with the operands one way round is not.
    rng = np.random.default_rng(batch)
    n_in, n_out = 24, 40
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    if fmt == "nm":
        values, index = ops.nm_from_dense(w, 2, 4)
        w = reference.nm_to_dense(values, index, n_in, n=2, m=4).astype(np.float32)
    else:
        w[rng.random(w.shape) < 0.7] = 0.0
    b = rng.standard_normal(n_out).astype(np.float32)
    col = 5
    x[batch // 2, col] = np.nan
    if fmt == "nm":
        y = ops.nm_dense_forward(x, values, index, b, n=2, m=4, activation=activation, device=device)
    else:
        y = run_csr(x, ops.csr_from_dense(w), b, activation, device, packed=fmt == "packed")
    want_nan = np.zeros(y.shape, bool)
    want_nan[batch // 2] = w[col] != 0
    assert want_nan.any()
    np.testing.assert_array_equal(np.isnan(y), want_nan, err_msg=f"where NaN ({fmt}, {activation}, {isa})")


# --------------------------------------------------------------------------------- N:M


def nm_format(problem):
    batch, n_in, n_out, (n, m), kind, empty, seed = problem
    x, w, b = build_dense((batch, n_in, n_out, 0.0, kind, empty, seed))
    values, index = ops.nm_from_dense(w, n, m)
    return x, values, index, b, n, m


@pytest.mark.parametrize("activation", ACTIVATIONS)
@given(problem=nm_problems)
@example(problem=LARGE_NM[0])
@example(problem=LARGE_NM[1])
@example(problem=LARGE_NM[2])
def test_nm_dense_forward_matches_reference(isa, device, activation, problem):
    large_example_once(problem, LARGE_NM, activation, keep=("relu", "gelu"))
    x, values, index, b, n, m = nm_format(problem)
    y = nan_filled((x.shape[0], values.shape[1]))
    ret = ops.nm_dense_forward(x, values, index, b, n=n, m=m, activation=activation, out=y, device=device)
    assert ret is y
    assert_float32_array(y, (x.shape[0], values.shape[1]), "out")
    w = reference.nm_to_dense(values, index, x.shape[1], n=n, m=m)
    check_against_reference(y, x, w.astype(np.float32), b, activation, f"out ({activation}, {isa}, {n}:{m})")
    again = ops.nm_dense_forward(x, values, index, b, n=n, m=m, activation=activation, device=device)
    assert_same_bits(again, y, "out of a second call")


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_nm_dense_forward_sums_repeated_slots_and_skips_unused_ones(isa, device, batch):
    # A hand-made format: a slot repeated within a group adds up; unused slots (value 0)
    # point at any row of their group; no bias.
    rng = np.random.default_rng(batch)
    n_in, n_out = 10, 18  # 3 groups of 4, the last one 2 rows short
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    values = rng.standard_normal((6, n_out)).astype(np.float32)
    index = rng.integers(0, 4, (6, n_out)).astype(np.uint8)
    index[4:] = rng.integers(0, 2, (2, n_out))
    index[1] = index[0]
    values[3, ::3] = 0.0
    y = ops.nm_dense_forward(x, values, index, None, activation="identity", device=device)
    w = reference.nm_to_dense(values, index, n_in, n=2, m=4)
    check_against_reference(y, x, w.astype(np.float32), None, "identity", "hand-made N:M")


def brute_force_nm(w, n, m):
    """nm_from_dense by loops: per column and group, the n largest |w| (ties: lower row)."""
    groups = -(-w.shape[0] // m)
    values = np.zeros((groups * n, w.shape[1]), np.float32)
    index = np.zeros((groups * n, w.shape[1]), np.uint8)
    for j in range(w.shape[1]):
        for g in range(groups):
            rows = list(range(g * m, min(g * m + m, w.shape[0])))
            kept = sorted(sorted(rows, key=lambda r: (-abs(float(w[r, j])), r))[:n])
            for s, r in enumerate(kept):
                values[g * n + s, j] = w[r, j]
                index[g * n + s, j] = r - g * m
    return values, index


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 5), (4, 4), (1, 1)])
@pytest.mark.parametrize("n_in", [1, 3, 4, 9, 22])
def test_nm_from_dense_keeps_the_largest_per_group(n, m, n_in):
    rng = np.random.default_rng(n_in)
    w = rng.integers(-2, 3, (n_in, 7)).astype(np.float32)  # many ties of magnitude
    values, index = ops.nm_from_dense(w, n, m)
    want_values, want_index = brute_force_nm(w, n, m)
    assert values.dtype == np.float32 and index.dtype == np.uint8
    assert_same_bits(values, want_values, "values")
    np.testing.assert_array_equal(index, want_index)


def test_nm_from_dense_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n <= m"):
        ops.nm_from_dense(np.ones((4, 2), np.float32), 3, 2)
    with pytest.raises(ValueError, match="2-D"):
        ops.nm_from_dense(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="2-D"):
        ops.csr_from_dense(np.ones(4, np.float32))


# ---------------------------------------------------------------------------- bad input


def _csr_kwargs():
    x = np.ones((4, 6), np.float32)
    offsets = np.array([0, 2, 2, 5], np.int32)
    index = np.array([1, 4, 0, 2, 5], np.int32)
    return dict(
        x=x,
        offsets=offsets,
        index=index,
        values=np.ones(5, np.float32),
        bias=np.ones(3, np.float32),
        out=np.empty((4, 3), np.float32),
    )


def _set(key, value):
    return lambda kw: kw.update({key: value})


def _set_at(key, pos, value):
    return lambda kw: kw[key].__setitem__(pos, value)


CSR_BAD = {
    "x float64": (_set("x", np.ones((4, 6))), TypeError, r"\[sparse_dense_forward\] x must be float32"),
    "offsets int64": (
        lambda kw: kw.update(offsets=kw["offsets"].astype(np.int64)),
        TypeError,
        r"offsets must be int32",
    ),
    "index uint8": (lambda kw: kw.update(index=kw["index"].astype(np.uint8)), TypeError, r"index must be int32"),
    "values float16": (
        lambda kw: kw.update(values=kw["values"].astype(np.float16)),
        TypeError,
        r"values must be float32",
    ),
    "bias int32": (lambda kw: kw.update(bias=kw["bias"].astype(np.int32)), TypeError, r"bias must be float32"),
    "out float64": (_set("out", np.empty((4, 3))), TypeError, r"out must be float32"),
    "x 1-D": (_set("x", np.ones(6, np.float32)), ValueError, r"x must be 2-D"),
    "x no columns": (_set("x", np.ones((4, 0), np.float32)), ValueError, r"x has 0 columns"),
    "offsets 2-D": (lambda kw: kw.update(offsets=kw["offsets"].reshape(2, 2)), ValueError, r"offsets must be 1-D"),
    "offsets one entry": (_set("offsets", np.zeros(1, np.int32)), ValueError, r"offsets has 1 entries"),
    "offsets not from 0": (_set_at("offsets", 0, 1), ValueError, r"offsets\[0\] = 1"),
    "offsets decrease": (_set_at("offsets", 2, 1), ValueError, r"offsets decrease at 2"),
    "offsets end": (_set_at("offsets", 3, 4), ValueError, r"offsets\[3\] = 4 but index and values have 5"),
    "offsets past nnz": (_set_at("offsets", 1, 9), ValueError, r"offsets decrease at 2"),
    "index negative": (_set_at("index", 2, -1), ValueError, r"index\[2\] = -1 is outside \[0, 6\)"),
    "index too large": (_set_at("index", 4, 6), ValueError, r"index\[4\] = 6 is outside \[0, 6\)"),
    "index repeated": (_set_at("index", 3, 0), ValueError, r"index\[3\] = 0 follows 0 in output 2"),
    "index descending": (_set_at("index", 1, 0), ValueError, r"index\[1\] = 0 follows 1 in output 0"),
    "values length": (_set("values", np.ones(4, np.float32)), ValueError, r"values has shape \(4,\) but index"),
    "bias length": (_set("bias", np.ones(4, np.float32)), ValueError, r"bias has shape"),
    "out shape": (_set("out", np.empty((4, 4), np.float32)), ValueError, r"out has shape"),
    "out is x": (
        lambda kw: kw.update(x=np.ones((4, 3), np.float32)) or kw.update(out=kw["x"]),
        ValueError,
        r"out shares memory with x",
    ),
    "x strided": (_set("x", np.ones((4, 12), np.float32)[:, ::2]), ValueError, r"x must be C-contiguous"),
    "unknown activation": (_set("activation", "swish"), ValueError, r"\[sparse_dense_forward\] .*activation"),
}


# The structure's faults, which sparse_pack finds once as the raw product does per call.
CSR_STRUCTURE_BAD = [c for c in CSR_BAD if c.startswith(("offsets", "index", "values"))]


@pytest.mark.parametrize("case", CSR_STRUCTURE_BAD)
def test_sparse_pack_rejects_bad_structure(device, case):
    kw = _csr_kwargs()
    mutate, exc, match = CSR_BAD[case]
    mutate(kw)
    with pytest.raises(exc, match=match.replace("sparse_dense_forward", "sparse_pack")):
        ops.sparse_pack(kw["offsets"], kw["index"], kw["values"], 6, device=device)


PACKED_BAD = {
    "x columns": (
        dict(x=np.ones((4, 7), np.float32)),
        ValueError,
        r"\[sparse_dense_forward\] x has 7 columns but the weight has 6 inputs",
    ),
    "x float64": (dict(x=np.ones((4, 6))), TypeError, r"x must be float32"),
    "out shape": (dict(out=np.empty((4, 4), np.float32)), ValueError, r"out has shape"),
    "bias length": (dict(bias=np.ones(4, np.float32)), ValueError, r"bias has shape"),
    "index given": (dict(index=np.zeros(5, np.int32)), ValueError, r"index and values must be None"),
}


@pytest.mark.parametrize("case", list(PACKED_BAD))
def test_packed_sparse_dense_forward_rejects_bad_input(device, case):
    kw = _csr_kwargs()
    packed = ops.sparse_pack(kw.pop("offsets"), kw.pop("index"), kw.pop("values"), 6, device=device)
    change, exc, match = PACKED_BAD[case]
    kw.update(change)
    x = kw.pop("x")
    with pytest.raises(exc, match=match):
        ops.sparse_dense_forward(x, packed, device=device, **kw)


def test_sparse_pack_rejects_bad_in_features():
    kw = _csr_kwargs()
    with pytest.raises(ValueError, match=r"\[sparse_pack\] in_features must be >= 1, got 0"):
        ops.sparse_pack(kw["offsets"], kw["index"], kw["values"], 0)
    with pytest.raises(ValueError, match=r"index\[4\] = 5 is outside \[0, 5\)"):
        ops.sparse_pack(kw["offsets"], kw["index"], kw["values"], 5)


@pytest.mark.parametrize("case", list(CSR_BAD))
def test_sparse_dense_forward_rejects_bad_input(device, case):
    kw = _csr_kwargs()
    mutate, exc, match = CSR_BAD[case]
    mutate(kw)
    x = kw.pop("x")
    args = (kw.pop("offsets"), kw.pop("index"), kw.pop("values"), kw.pop("bias"))
    with pytest.raises(exc, match=match):
        ops.sparse_dense_forward(x, *args, device=device, **kw)


def _nm_kwargs():
    x = np.ones((3, 6), np.float32)  # 2:4 -> 2 groups (4 + 2 rows) -> 4 slots
    index = np.array([[0, 1], [3, 2], [0, 1], [1, 0]], np.uint8)
    return dict(
        x=x,
        values=np.ones((4, 2), np.float32),
        index=index,
        bias=np.ones(2, np.float32),
        out=np.empty((3, 2), np.float32),
    )


NM_BAD = {
    "x float64": (_set("x", np.ones((3, 6))), TypeError, r"\[nm_dense_forward\] x must be float32"),
    "values float64": (_set("values", np.ones((4, 2))), TypeError, r"values must be float32"),
    "index int32": (lambda kw: kw.update(index=kw["index"].astype(np.int32)), TypeError, r"index must be uint8"),
    "values rows": (
        _set("values", np.ones((6, 2), np.float32)),
        ValueError,
        r"values has 6 rows, expected ceil\(in / m\) n = 4",
    ),
    "index shape": (_set("index", np.zeros((4, 3), np.uint8)), ValueError, r"index has shape"),
    "index past group": (_set_at("index", (1, 0), 4), ValueError, r"index\[1, 0\] = 4 is outside its group of 4"),
    "index past short group": (_set_at("index", (3, 1), 2), ValueError, r"index\[3, 1\] = 2 is outside its group of 2"),
    "n > m": (_set("n", 5), ValueError, r"n must be in \[1, m = 4\]"),
    "n zero": (_set("n", 0), ValueError, r"n must be in"),
    "m too large": (_set("m", 300), ValueError, r"m must be in \[1, 256\]"),
    "out shape": (_set("out", np.empty((3, 3), np.float32)), ValueError, r"out has shape"),
    "bias length": (_set("bias", np.ones(3, np.float32)), ValueError, r"bias has shape"),
    "out is values": (
        lambda kw: (
            kw.update(values=np.ones((4, 2), np.float32), x=np.ones((4, 6), np.float32)) or kw.update(out=kw["values"])
        ),
        ValueError,
        r"out shares memory with values",
    ),
}


@pytest.mark.parametrize("case", list(NM_BAD))
def test_nm_dense_forward_rejects_bad_input(device, case):
    kw = _nm_kwargs()
    mutate, exc, match = NM_BAD[case]
    mutate(kw)
    args = (kw.pop("x"), kw.pop("values"), kw.pop("index"), kw.pop("bias"))
    with pytest.raises(exc, match=match):
        ops.nm_dense_forward(*args, device=device, **kw)
