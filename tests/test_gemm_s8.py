"""gemm_s8 (and gemm_s8_pack) against tests/reference.py on every device and every CPU ISA
level of the int8 GEMM (portable, AVX2, AVX-512 VNNI), at sizes around every tile: rows
around MR = 4 / 6, columns around the 16-column panel and the 64-column tile, depths that
are not multiples of the 4-deep group (A's rows staged with padding; read in place
otherwise), row counts around the A chunk, the batch-1 row, a depth at the int32 limit.

The int32 output is exact on every level and device (integer sums, no overflow for
k <= kGemmS8MaxK), so it is compared for equality; the float32 output within a bound
argued below; the uint8 output exactly, except where the float64 reference lies within
that bound of a rounding boundary, where either neighbour is right.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import customml
import reference
from customml import _core, ops
from support import (
    TINY32,
    U32,
    active_isa,
    assert_close,
    assert_float32_array,
    isa_available,
    large_example_once,
    nan_filled,
    seeds,
    skip_above_portable_off_cpu,
)
from test_dense import LIPSCHITZ, activation_rounding

ACTIVATIONS = reference.ACTIVATIONS
K_MAX = 66000  # kGemmS8MaxK in cpp/backend.h


@pytest.fixture(params=["portable", "avx2", "avx512_vnni", "amx", "amx_emulated"])
def s8_isa(request):
    """Caps the kernels at one ISA level (the int8 GEMM's three variants) for the test;
    skips when the CPU lacks it. "amx_emulated" runs the AMX tile kernel on the host model
    of the tile instructions (cpu/amx_tiles.h), on any CPU."""
    wanted = request.param
    if wanted == "amx_emulated":
        if "device" in request.fixturenames and request.getfixturevalue("device") != "cpu":
            pytest.skip("the AMX emulation is a CPU kernel: the other devices run their own")
        assert _core._set_amx_emulation(True)
        try:
            assert customml.build_info()["kernels"]["gemm_s8"] == "s8_gemm__amxemu_16x64"
            yield wanted
        finally:
            _core._set_amx_emulation(False)
        return
    skip_above_portable_off_cpu(request, wanted)
    if not isa_available(wanted):
        pytest.skip(f"this CPU lacks {wanted} (it supports up to {_core.build_info()['isa_detected']})")
    original = active_isa()
    _core._set_isa(wanted)
    try:
        yield wanted
    finally:
        _core._set_isa(original)


# Rows around MR (4 portable, 6 AVX2 / VNNI); columns around the panel (16) and the VNNI
# tile (64); depths around the 4-deep group and 64.
M_SIZES = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 11, 12, 13]), st.integers(1, 30))
N_SIZES = st.one_of(st.sampled_from([1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129]), st.integers(1, 80))
K_SIZES = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 63, 64, 65, 255, 256, 257]), st.integers(1, 100))
# Value families: uniform codes; the extremes only (a in {0, 255}, w in {-127, 127}, the
# largest products); sparse (mostly zero codes, exact zeros for relu).
VALUES = ("uniform", "extremes", "sparse")

s8_problems = st.tuples(M_SIZES, K_SIZES, N_SIZES, st.sampled_from(VALUES), st.booleans(), st.booleans(), seeds)
# The batch-1 layer; several column blocks; a call big enough for several threads; two A row
# chunks (240 rows); deep k, where a chunk is 12 rows (cpp/cpu/gemm_s8.h, s8_row_chunk).
LARGE = [
    (1, 784, 256, "uniform", True, True, 1),
    (130, 257, 1030, "extremes", True, False, 2),
    (64, 512, 300, "uniform", False, True, 3),
    (250, 65, 70, "uniform", True, True, 4),
    (25, 30001, 17, "extremes", True, True, 5),
]


def build(problem):
    m, k, n, values, a_per_row, w_per_channel, seed = problem
    rng = np.random.default_rng(seed)
    if values == "extremes":
        a = rng.choice(np.array([0, 255], np.uint8), (m, k))
        w = rng.choice(np.array([-127, 127], np.int8), (k, n))
        a_zero = rng.choice(np.array([0, 255], np.int32), m if a_per_row else 1)
    else:
        a = rng.integers(0, 256, (m, k)).astype(np.uint8)
        w = rng.integers(-127, 128, (k, n)).astype(np.int8)
        if values == "sparse":
            a[rng.random((m, k)) < 0.7] = 0
            w[rng.random((k, n)) < 0.7] = 0
        a_zero = rng.integers(0, 256, m if a_per_row else 1).astype(np.int32)
    a_scale = (10.0 ** rng.uniform(-3, 0, a_zero.shape)).astype(np.float32)
    w_scale = (10.0 ** rng.uniform(-3, -1, n if w_per_channel else 1)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    return a, w, a_scale, a_zero, w_scale, bias


def f32_bound(activation, a, w, a_scale, a_zero, w_scale, bias, y_ref, z_ref):
    """Bound on |out - reference| for the float32 output.

    The kernel rounds a_scale * w_scale (1), the exact int32 sum v to float32 (1), their
    product (1) and the bias add (1): with each rounding relative u, the pre-activation errs
    by at most 4u (|a_scale w_scale v| + |bias|) (to first order; 4.01 covers the rest),
    plus an absolute 2**-149 per rounding for products in the subnormal range. The
    activation carries that through its Lipschitz constant, then rounds itself
    (test_dense.activation_rounding, the bounds of cpp/cpu/vmath.h).
    """
    v = reference.gemm_s8(a, w, None, a_zero, None, out_dtype="int32").astype(np.float64)
    s = a_scale.astype(np.float64).reshape(-1, 1) * w_scale.astype(np.float64).reshape(1, -1)
    err_z = 4.01 * U32 * (np.abs(s * v) + (0 if bias is None else np.abs(bias.astype(np.float64)))) + 4 * TINY32
    return LIPSCHITZ[activation] * err_z + activation_rounding(activation, y_ref, z_ref)


def run(a, weight, a_scale, a_zero, w_scale, out, device, **kw):
    ret = ops.gemm_s8(a, weight, a_scale, a_zero, w_scale, out=out, device=device, **kw)
    assert ret is out
    return out


def i32_twice(a, weight, a_zero, device):
    """The int32 output into buffers pre-filled with two different values (an integer
    output has no NaN): an element left unwritten differs between them."""
    m, n = a.shape[0], (weight.n if isinstance(weight, _core.PackedS8) else weight.shape[1])
    outs = [
        run(a, weight, None, a_zero, None, np.full((m, n), fill, np.int32), device, out_dtype="int32")
        for fill in (np.iinfo(np.int32).min, np.iinfo(np.int32).max)
    ]
    assert outs[0].dtype == np.int32 and outs[0].shape == (m, n)
    np.testing.assert_array_equal(outs[0], outs[1], err_msg="elements left unwritten")
    return outs[0]


@given(problem=s8_problems)
@example(problem=LARGE[0])
@example(problem=LARGE[1])
@example(problem=LARGE[2])
@example(problem=LARGE[3])
@example(problem=LARGE[4])
def test_int32_out_is_exact(s8_isa, device, problem):
    a, w, _, a_zero, _, _ = build(problem)
    want = reference.gemm_s8(a, w, None, a_zero, None, out_dtype="int32")
    packed = ops.gemm_s8_pack(w, device=device)
    assert (packed.k, packed.n) == w.shape
    np.testing.assert_array_equal(i32_twice(a, packed, a_zero, device), want)
    # Raw weights are packed for the call: the same sums.
    np.testing.assert_array_equal(i32_twice(a, w, a_zero, device), want)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@given(problem=s8_problems)
@example(problem=LARGE[0])
@example(problem=LARGE[1])
def test_float32_out_matches_reference(s8_isa, device, activation, problem):
    large_example_once(problem, LARGE, activation, keep=("relu", "gelu"))
    a, w, a_scale, a_zero, w_scale, bias = build(problem)
    packed = ops.gemm_s8_pack(w, device=device)
    for b in (bias, None):
        out = run(
            a,
            packed,
            a_scale,
            a_zero,
            w_scale,
            nan_filled((a.shape[0], w.shape[1])),
            device,
            bias=b,
            activation=activation,
        )
        assert_float32_array(out, (a.shape[0], w.shape[1]), "out")
        z_ref = reference.gemm_s8(a, w, a_scale, a_zero, w_scale, bias=b)
        y_ref = reference.activation_forward(activation, z_ref)
        tol = f32_bound(activation, a, w, a_scale, a_zero, w_scale, b, y_ref, z_ref)
        assert_close(out, y_ref, tol, f"out ({activation}, {s8_isa}, bias {b is not None})")


@pytest.mark.parametrize("activation", ["identity", "relu", "sigmoid"])
@given(problem=s8_problems, out_zero=st.sampled_from([0, 1, 128, 255]))
@example(problem=LARGE[1], out_zero=128)
def test_uint8_out_requantizes(s8_isa, device, activation, problem, out_zero):
    large_example_once(problem, LARGE, activation, keep=("relu", "sigmoid"))
    a, w, a_scale, a_zero, w_scale, bias = build(problem)
    m, n = a.shape[0], w.shape[1]
    packed = ops.gemm_s8_pack(w, device=device)
    z_ref = reference.gemm_s8(a, w, a_scale, a_zero, w_scale, bias=bias)
    y_ref = reference.activation_forward(activation, z_ref)
    # An output scale that spreads the results over the whole code range (and clips some).
    out_scale = float(np.float32(max(float(np.abs(y_ref).max()), 1e-6) / 100.0))
    outs = [
        run(
            a,
            packed,
            a_scale,
            a_zero,
            w_scale,
            np.full((m, n), fill, np.uint8),
            device,
            bias=bias,
            activation=activation,
            out_scale=out_scale,
            out_zero=out_zero,
        )
        for fill in (0, 255)
    ]
    assert outs[0].dtype == np.uint8 and outs[0].shape == (m, n)
    np.testing.assert_array_equal(outs[0], outs[1], err_msg="elements left unwritten")
    got = outs[0].astype(np.int64)
    want = reference.gemm_s8(
        a,
        w,
        a_scale,
        a_zero,
        w_scale,
        bias=bias,
        activation=activation,
        out_dtype="uint8",
        out_scale=out_scale,
        out_zero=out_zero,
    ).astype(np.int64)
    # The kernel's float32 y / out_scale errs by its y error over out_scale plus the
    # division's rounding; only where that reaches a half-integer may the code differ, by 1.
    t = y_ref / out_scale
    err = f32_bound(activation, a, w, a_scale, a_zero, w_scale, bias, y_ref, z_ref) / out_scale + 2 * U32 * np.abs(t)
    near_tie = np.abs(t - np.floor(t) - 0.5) <= err
    assert (got[~near_tie] == want[~near_tie]).all(), "a uint8 code away from a rounding boundary differs"
    assert (np.abs(got - want) <= 1).all()


# Row counts around the A chunk of s8_row_chunk (240 rows at these depths), with a depth
# that the VNNI and portable tiles read in place (64) and one whose rows are staged with
# zero padding to whole 4-byte groups (65).
@pytest.mark.parametrize("k", [64, 65])
@pytest.mark.parametrize("m", [239, 240, 241, 481])
def test_row_chunks_in_place_and_staged(s8_isa, device, m, k):
    a, w, _, a_zero, _, _ = build((m, k, 70, "uniform", True, True, m + k))
    want = reference.gemm_s8(a, w, None, a_zero, None, out_dtype="int32")
    np.testing.assert_array_equal(i32_twice(a, ops.gemm_s8_pack(w, device=device), a_zero, device), want)


def _before_a_guard_page(rows, cols):
    """A uint8 (rows, cols) array that ends where an inaccessible page begins, so that a
    kernel reading past A's last byte faults instead of silently reading a neighbour."""
    page = mmap.PAGESIZE
    size = rows * cols
    span = (size + page - 1) // page * page
    mem = mmap.mmap(-1, span + page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(ctypes.c_void_p(base + span), page, 0) != 0:  # PROT_NONE
        pytest.skip(f"mprotect failed: {os.strerror(ctypes.get_errno())}")
    return np.frombuffer(mem, np.uint8, count=size, offset=span - size).reshape(rows, cols), mem


@pytest.mark.skipif(sys.platform != "linux", reason="needs mmap + mprotect (Linux)")
@pytest.mark.parametrize("k", [1, 63, 64, 65, 66, 67])
def test_a_is_not_read_past_its_end(s8_isa, k):
    # A's rows are read in place when k is a multiple of 4 and staged otherwise; neither
    # may touch a byte after A's last (the weights' padding covers a group's tail).
    rng = np.random.default_rng(k)
    m = 7
    a, mem = _before_a_guard_page(m, k)
    a[...] = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-127, 128, (k, 40)).astype(np.int8)
    a_zero = np.array([5], np.int32)
    want = reference.gemm_s8(np.array(a), w, None, a_zero, None, out_dtype="int32")
    np.testing.assert_array_equal(i32_twice(a, ops.gemm_s8_pack(w), a_zero, "cpu"), want)
    del a
    mem.close()


def test_depth_at_the_int32_limit(s8_isa, device):
    # 255 * 127 * 66000 = 2 137 410 000, just below 2^31: the extreme sums and their
    # zero-point corrections (a_zero 255 with a = 0: -255 colsum) must be exact.
    k = K_MAX
    a = np.full((3, k), 255, np.uint8)
    a[1] = 0
    a[2, ::2] = 0
    w = np.full((k, 17), 127, np.int8)
    w[:, 1] = -127
    w[::3, 2] = -127
    a_zero = np.array([0, 255, 128], np.int32)
    got = i32_twice(a, ops.gemm_s8_pack(w, device=device), a_zero, device)
    np.testing.assert_array_equal(got, reference.gemm_s8(a, w, None, a_zero, None, out_dtype="int32"))
    assert got[0, 0] == 255 * 127 * k and got[1, 0] == -255 * 127 * k


def test_packed_weights_survive_an_isa_change(device):
    # One layout for every variant: pack under one ceiling, multiply under each of the others.
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (13, 99)).astype(np.uint8)
    w = rng.integers(-127, 128, (99, 70)).astype(np.int8)
    a_zero = np.array([17], np.int32)
    want = reference.gemm_s8(a, w, None, a_zero, None, out_dtype="int32")
    levels = [lv for lv in ("portable", "avx2", "avx512_vnni") if isa_available(lv)]
    original = active_isa()
    try:
        for pack_level in levels:
            _core._set_isa(pack_level)
            packed = ops.gemm_s8_pack(w, device=device)
            for call_level in levels:
                _core._set_isa(call_level)
                np.testing.assert_array_equal(i32_twice(a, packed, a_zero, device), want)
    finally:
        _core._set_isa(original)


def test_result_does_not_depend_on_the_thread_count(s8_isa, device):
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (96, 700)).astype(np.uint8)
    w = rng.integers(-127, 128, (700, 333)).astype(np.int8)
    a_scale, a_zero = np.array([0.02], np.float32), np.array([9], np.int32)
    w_scale = (rng.uniform(0.001, 0.01, 333)).astype(np.float32)
    packed = ops.gemm_s8_pack(w, device=device)
    threads = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        one = ops.gemm_s8(a, packed, a_scale, a_zero, w_scale, activation="gelu", device=device)
        _core.set_num_threads(4)
        four = ops.gemm_s8(a, packed, a_scale, a_zero, w_scale, activation="gelu", device=device)
    finally:
        _core.set_num_threads(threads)
    assert one.tobytes() == four.tobytes()


def test_kernel_variant_is_reported(s8_isa):
    name = _core.build_info()["kernels"]["gemm_s8"]
    assert (
        name
        == {
            "portable": "s8_gemm__portable_4x16",
            "avx2": "s8_gemm__avx2_6x16",
            "avx512_vnni": "s8_gemm__avx512vnni_6x64",
            "amx": "s8_gemm__amx_16x64",
            "amx_emulated": "s8_gemm__amxemu_16x64",
        }[s8_isa]
    )


# ------------------------------------------------------------------------------ bad input

A = np.zeros((2, 3), np.uint8)
W = np.zeros((3, 4), np.int8)
AZ, AS, WS = np.zeros(1, np.int32), np.ones(1, np.float32), np.ones(1, np.float32)


def _w_with(i, j, v):
    w = W.copy()
    w[i, j] = v
    return w


def _gemm(d, a=A, w=W, a_scale=AS, a_zero=AZ, w_scale=WS, **kw):
    return ops.gemm_s8(a, w, a_scale, a_zero, w_scale, device=d, **kw)


BAD = {
    "weight -128": (
        lambda d: ops.gemm_s8_pack(_w_with(2, 1, -128), device=d),
        ValueError,
        r"\[gemm_s8_pack\] weight\[2, 1\] = -128 is outside \[-127, 127\]",
    ),
    "weight too deep": (
        lambda d: ops.gemm_s8_pack(np.zeros((K_MAX + 1, 1), np.int8), device=d),
        ValueError,
        r"\[gemm_s8_pack\] weight has 66001 rows, more than 66000",
    ),
    "weight empty": (
        lambda d: ops.gemm_s8_pack(np.zeros((0, 4), np.int8), device=d),
        ValueError,
        r"\[gemm_s8_pack\] weight has shape \(0, 4\); both sizes must be >= 1",
    ),
    "weight dtype": (
        lambda d: ops.gemm_s8_pack(W.astype(np.uint8), device=d),
        TypeError,
        r"\[gemm_s8_pack\] weight must be int8, got uint8",
    ),
    "a dtype": (lambda d: _gemm(d, a=A.astype(np.int8)), TypeError, r"\[gemm_s8\] a must be uint8, got int8"),
    "a columns": (
        lambda d: _gemm(d, a=np.zeros((2, 5), np.uint8)),
        ValueError,
        r"\[gemm_s8\] a has 5 columns but weight has 3 rows",
    ),
    "a_zero range": (
        lambda d: _gemm(d, a_zero=np.array([256], np.int32)),
        ValueError,
        r"\[gemm_s8\] a_zero\[0\] = 256 is outside \[0, 255\]",
    ),
    "a_zero shape": (
        lambda d: _gemm(d, a_zero=np.zeros(3, np.int32)),
        ValueError,
        r"\[gemm_s8\] a_zero has shape \(3,\), expected \(1,\) or \(2,\)",
    ),
    "a_scale shape": (
        lambda d: _gemm(d, a_scale=np.ones(2, np.float32)),
        ValueError,
        r"\[gemm_s8\] a_scale has shape \(2,\) but a_zero has shape \(1,\)",
    ),
    "w_scale shape": (
        lambda d: _gemm(d, w_scale=np.ones(3, np.float32)),
        ValueError,
        r"\[gemm_s8\] w_scale has shape \(3,\), expected \(1,\) or \(4,\)",
    ),
    "w_scale zero": (
        lambda d: _gemm(d, w_scale=np.array([1, 0, 1, 1], np.float32)),
        ValueError,
        r"\[gemm_s8\] w_scale\[1\] is 0; scales must be positive and finite",
    ),
    "a_scale inf": (
        lambda d: _gemm(d, a_scale=np.array([np.inf], np.float32)),
        ValueError,
        r"\[gemm_s8\] a_scale\[0\] is inf",
    ),
    "a_scale missing": (lambda d: _gemm(d, a_scale=None), ValueError, r"\[gemm_s8\] a_scale is required"),
    "bias nan": (
        lambda d: _gemm(d, bias=np.array([0, 0, np.nan, 0], np.float32)),
        ValueError,
        r"\[gemm_s8\] bias\[2\] is nan",
    ),
    "bias shape": (
        lambda d: _gemm(d, bias=np.zeros(3, np.float32)),
        ValueError,
        r"\[gemm_s8\] bias has shape \(3,\), expected \(4,\)",
    ),
    "out dtype": (
        lambda d: _gemm(d, out=np.zeros((2, 4), np.float64)),
        TypeError,
        r"\[gemm_s8\] out must be float32, uint8 or int32, got float64",
    ),
    "out shape": (
        lambda d: _gemm(d, out=np.zeros((4, 2), np.float32)),
        ValueError,
        r"\[gemm_s8\] out has shape \(4, 2\), expected \(2, 4\)",
    ),
    "i32 with scales": (
        lambda d: _gemm(d, out_dtype="int32"),
        ValueError,
        r"\[gemm_s8\] a_scale was given but an int32 out receives the unscaled sums",
    ),
    "i32 with activation": (
        lambda d: _gemm(d, a_scale=None, w_scale=None, out_dtype="int32", activation="relu"),
        ValueError,
        r"\[gemm_s8\] activation 'relu' was given but an int32 out",
    ),
    "u8 without out_scale": (
        lambda d: _gemm(d, out_dtype="uint8"),
        ValueError,
        r"\[gemm_s8\] out_scale and out_zero are required for a uint8 out",
    ),
    "u8 out_zero range": (
        lambda d: _gemm(d, out_dtype="uint8", out_scale=0.1, out_zero=300),
        ValueError,
        r"\[gemm_s8\] out_zero = 300 is outside \[0, 255\]",
    ),
    "u8 out_scale": (
        lambda d: _gemm(d, out_dtype="uint8", out_scale=-1.0, out_zero=0),
        ValueError,
        r"\[gemm_s8\] out_scale is -1; scales must be positive and finite",
    ),
    "f32 with out_scale": (
        lambda d: _gemm(d, out_scale=0.5, out_zero=0),
        ValueError,
        r"\[gemm_s8\] out_scale and out_zero apply to a uint8 out only",
    ),
    "bad activation": (lambda d: _gemm(d, activation="swish"), ValueError, r"\[gemm_s8\] unknown activation 'swish'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_rejected_with_a_message_naming_the_argument(device, case):
    call, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        call(device)


def test_out_sharing_memory_with_a_is_rejected(device):
    buf = np.zeros(32, np.uint8)
    with pytest.raises(ValueError, match=r"\[gemm_s8\] out shares memory with a"):
        _gemm(device, a=buf[:6].reshape(2, 3), out=buf[:8].reshape(2, 4), a_scale=None, w_scale=None, out_dtype="uint8")


def test_packed_weights_on_another_device_are_rejected():
    if not _core.build_info()["simt_emulation"]:
        pytest.skip("needs a second device (cuda-emulated)")
    packed = ops.gemm_s8_pack(W, device="cpu")
    with pytest.raises(ValueError, match=r"\[gemm_s8\] weight is packed for cpu but a is on cuda-emulated"):
        _gemm("cuda-emulated", w=packed)


# The CUDA backend multiplies on tensor cores (wmma) when m >= 32 and n >= 32, with a warp
# per output column when m <= 4, and with its tiled __dp4a kernel otherwise
# (cuda/gemm_s8.cu; docs/decisions.md): shapes on every side of that rule, with depths
# around the 16- and 32-byte slices of k, so that the emulated device runs all three
# kernels (on the CPU they are more tile-boundary shapes).
CUDA_PATH_SHAPES = [
    (1, 33, 64, "uniform"),
    (4, 100, 70, "extremes"),
    (2, 16, 9, "sparse"),  # warp per column
    (5, 33, 64, "uniform"),
    (31, 17, 65, "extremes"),
    (64, 64, 31, "sparse"),  # dp4a tiles
    (32, 16, 32, "uniform"),
    (33, 31, 33, "extremes"),
    (64, 65, 64, "uniform"),
    (65, 1, 97, "sparse"),
    (96, 48, 40, "extremes"),  # wmma
]


@pytest.mark.parametrize("m,k,n,values", CUDA_PATH_SHAPES)
def test_every_cuda_kernel_matches_reference(device, m, k, n, values):
    a, w, a_scale, a_zero, w_scale, bias = build((m, k, n, values, True, True, 1000 * m + 10 * k + n))
    packed = ops.gemm_s8_pack(w, device=device)
    want = reference.gemm_s8(a, w, None, a_zero, None, out_dtype="int32")
    np.testing.assert_array_equal(i32_twice(a, packed, a_zero, device), want)
    # a one byte off alignment: the kernels read it byte by byte instead of in 4-byte groups.
    buf = np.empty(a.size + 1, np.uint8)
    shifted = buf[1:].reshape(a.shape)
    shifted[...] = a
    np.testing.assert_array_equal(i32_twice(shifted, packed, a_zero, device), want)
    out = run(a, packed, a_scale, a_zero, w_scale, nan_filled((m, n)), device, bias=bias, activation="relu")
    assert_float32_array(out, (m, n), "out")
    z_ref = reference.gemm_s8(a, w, a_scale, a_zero, w_scale, bias=bias)
    y_ref = reference.activation_forward("relu", z_ref)
    assert_close(out, y_ref, f32_bound("relu", a, w, a_scale, a_zero, w_scale, bias, y_ref, z_ref), "out")
