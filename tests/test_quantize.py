"""quantize, dequantize and quantize_rows_dynamic against tests/reference.py on every
device: the codes exactly (the quotient x / scale is a correctly rounded float32 division
and the rounding half to even is exact, so every device must give the reference's codes),
dequantized values exactly (one float32 rounding of an exact product), per tensor, row and
column, at odd and vector-width sizes, with ties, extremes and signed zeros, and every bad
argument rejected with a message naming it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import _core, ops
from support import TINY32, VALUE_KINDS, assert_same_bits, make_values, seeds, sizes

AXES = ("tensor", "row", "column")
QTYPES = ("uint8", "int8")
# Scale families: ordinary, tiny (x / scale saturates), huge (everything rounds to the
# zero point), a power of two (quotients exact, so ties are hit), and subnormal.
SCALE_KINDS = ("normal", "tiny", "huge", "pow2", "subnormal")


def make_scale(rng, n, kind):
    if kind == "normal":
        s = 10.0 ** rng.uniform(-3, 0, n)
    elif kind == "tiny":
        s = 10.0 ** rng.uniform(-30, -20, n)
    elif kind == "huge":
        s = 10.0 ** rng.uniform(20, 30, n)
    elif kind == "pow2":
        s = 2.0 ** rng.integers(-8, 3, n).astype(np.float64)
    else:
        s = rng.integers(1, 1000, n) * TINY32
    return s.astype(np.float32)


def axis_len(axis, rows, cols):
    return 1 if axis == "tensor" else rows if axis == "row" else cols


def codes_twice(run, shape, dtype):
    """Runs ``run(out)`` into two buffers pre-filled with different codes (an integer output
    has no NaN): an element the kernel forgets to write differs between them."""
    lo, hi = reference.QCODES[dtype]
    outs = []
    for fill in (lo, hi):
        out = np.full(shape, fill, dtype)
        assert run(out) is out
        outs.append(out)
    assert outs[0].dtype == np.dtype(dtype) and outs[0].shape == tuple(shape)
    np.testing.assert_array_equal(outs[0], outs[1], err_msg="elements left unwritten")
    return outs[0]


quant_problems = st.tuples(
    sizes,
    sizes,
    st.sampled_from(QTYPES),
    st.sampled_from(AXES),
    st.sampled_from(VALUE_KINDS),
    st.sampled_from(SCALE_KINDS),
    st.booleans(),
    seeds,
)


def build(problem):
    rows, cols, qtype, axis, kind, scale_kind, with_zero, seed = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, (rows, cols), kind)
    n = axis_len(axis, rows, cols)
    scale = make_scale(rng, n, scale_kind)
    lo, hi = reference.QCODES[qtype]
    zero = rng.integers(lo, hi + 1, n).astype(np.int32) if with_zero else None
    return x, scale, zero


@given(problem=quant_problems)
@example(problem=(1, 1, "uint8", "tensor", "normal", "normal", True, 0))
@example(problem=(257, 1025, "int8", "column", "mixed", "pow2", True, 1))
@example(problem=(1025, 33, "uint8", "row", "huge", "normal", True, 2))
def test_quantize_matches_reference(device, isa, problem):
    x, scale, zero = build(problem)
    qtype, axis = problem[2], problem[3]
    q = codes_twice(
        lambda out: ops.quantize(x, scale, zero, dtype=qtype, axis=axis, out=out, device=device), x.shape, qtype
    )
    np.testing.assert_array_equal(q, reference.quantize(x, scale, zero, dtype=qtype, axis=axis))


@given(problem=quant_problems)
@example(problem=(257, 1025, "int8", "column", "normal", "normal", True, 1))
def test_dequantize_matches_reference(device, problem):
    x, scale, zero = build(problem)
    qtype, axis = problem[2], problem[3]
    rng = np.random.default_rng(problem[-1])
    lo, hi = reference.QCODES[qtype]
    q = rng.integers(lo, hi + 1, x.shape).astype(qtype)
    out = np.full(x.shape, np.nan, np.float32)
    assert ops.dequantize(q, scale, zero, axis=axis, out=out, device=device) is out
    assert out.dtype == np.float32 and out.shape == x.shape
    # Exact: the product is exact in float64 and the op rounds it once to float32.
    want = reference.dequantize(q, scale, zero, axis=axis).astype(np.float32)
    np.testing.assert_array_equal(out, want)


@given(problem=quant_problems)
@example(problem=(257, 1025, "int8", "column", "mixed", "pow2", True, 1))
@example(problem=(33, 1025, "uint8", "tensor", "huge", "normal", True, 2))
@example(problem=(1025, 3, "uint8", "row", "normal", "tiny", False, 3))
def test_fake_quantize_is_quantize_then_dequantize(device, problem):
    """QAT's fake quantization (Backend::fake_quantize, one launch on the CUDA devices where
    the ops take two) gives the bits of quantize then dequantize on the same device."""
    x, scale, zero = build(problem)
    qtype, axis = problem[2], problem[3]
    y = _core._fake_quantize(x, scale, zero, qtype, axis, device)
    q = ops.quantize(x, scale, zero, dtype=qtype, axis=axis, out=np.zeros(x.shape, qtype), device=device)
    want = ops.dequantize(q, scale, zero, axis=axis, out=np.full(x.shape, np.nan, np.float32), device=device)
    assert_same_bits(y, want, "fake-quantized")


@pytest.mark.parametrize("qtype", QTYPES)
def test_ties_round_half_to_even(device, isa, qtype):
    # scale 0.25: x / scale = j + 0.5 exactly, both signs, past both ends of the range.
    lo, hi = reference.QCODES[qtype]
    halves = np.arange(-300, 300) + 0.5
    x = (halves * 0.25).astype(np.float32).reshape(1, -1)
    q = ops.quantize(x, np.array([0.25], np.float32), dtype=qtype, device=device)
    want = np.clip(np.rint(halves), lo, hi)  # numpy's rint is half to even
    np.testing.assert_array_equal(q[0].astype(np.int64), want)
    assert q[0, 300] == 0 and q[0, 301] == 2 and q[0, 302] == 2 and q[0, 303] == 4  # 0.5, 1.5, 2.5, 3.5


@pytest.mark.parametrize("qtype", QTYPES)
def test_extremes(device, isa, qtype):
    lo, hi = reference.QCODES[qtype]
    big = np.finfo(np.float32).max
    x = np.array([[0.0, -0.0, big, -big, 1e-45, -1e-45, 126.5, 127.5, -127.5, 255.5, 254.5, -0.5]], np.float32)
    for zero in (None, np.array([lo], np.int32), np.array([hi], np.int32)):
        q = ops.quantize(x, np.array([1.0], np.float32), zero, dtype=qtype, device=device)
        np.testing.assert_array_equal(q, reference.quantize(x, np.array([1.0], np.float32), zero, dtype=qtype))
    q = ops.quantize(x, np.array([1.0], np.float32), dtype=qtype, device=device)
    assert q[0, 2] == hi and q[0, 3] == lo and q[0, 0] == 0 and q[0, 1] == 0


@given(rows=sizes, cols=sizes, kind=st.sampled_from(VALUE_KINDS + ("positive", "negative", "zeros")), seed=seeds)
@example(rows=3, cols=1025, kind="mixed", seed=0)
@example(rows=1025, cols=17, kind="normal", seed=1)
def test_quantize_rows_dynamic_matches_reference(device, isa, rows, cols, kind, seed):
    rng = np.random.default_rng(seed)
    if kind in ("positive", "negative"):
        x = np.abs(make_values(rng, (rows, cols), "normal")) * (1 if kind == "positive" else -1)
    elif kind == "zeros":
        x = np.zeros((rows, cols), np.float32)
    else:
        x = make_values(rng, (rows, cols), kind)
    outs = []
    for fill in (0, 255):
        q, scale, zero = (
            np.full((rows, cols), fill, np.uint8),
            np.full(rows, np.nan, np.float32),
            np.full(rows, -1, np.int32),
        )
        got = ops.quantize_rows_dynamic(x, out=q, scale_out=scale, zero_out=zero, device=device)
        assert got[0] is q and got[1] is scale and got[2] is zero
        outs.append(got)
    np.testing.assert_array_equal(outs[0][0], outs[1][0], err_msg="elements left unwritten")
    q_ref, scale_ref, zero_ref = reference.quantize_rows_dynamic(x)
    np.testing.assert_array_equal(outs[0][1], scale_ref)
    np.testing.assert_array_equal(outs[0][2], zero_ref)
    np.testing.assert_array_equal(outs[0][0], q_ref)
    q, scale, zero = outs[0]
    # 0 is exactly representable (its code is the zero point), and every value within half
    # a step (plus the rounding of scale and of the quotient) of its dequantized code. A
    # subnormal scale carries an absolute rounding error of up to TINY32 / 2, which the
    # dequantization multiplies by |q - zero| (up to 255).
    back = reference.dequantize(q, scale, zero, axis="row")
    steps = np.abs(q.astype(np.int32) - zero[:, None])
    assert (np.abs(back - x) <= 0.5 * scale[:, None] * (1 + 1e-5) + TINY32 + 0.5 * TINY32 * steps).all()
    if kind == "positive":
        assert (zero == 0).all()
    if kind == "negative" and cols > 0:
        assert (zero == 255).all()
    if kind == "zeros":
        assert (scale == 1).all() and (zero == 0).all() and (q == 0).all()


def test_round_trip_within_half_a_step(device):
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (33, 47)).astype(np.float32)
    scale = (np.abs(x).max(axis=0) / 127).astype(np.float32)
    q = ops.quantize(x, scale, dtype="int8", axis="column", device=device)
    back = ops.dequantize(q, scale, axis="column", device=device)
    # half a step, plus one rounding of the quotient and one of the product
    assert (np.abs(back - x) <= scale * (0.5 + 1e-6) + 2**-24 * np.abs(x)).all()


# ------------------------------------------------------------------------------ bad input

X = np.ones((3, 4), np.float32)
S1 = np.array([0.1], np.float32)


def _x_with(i, j, v):
    x = X.copy()
    x[i, j] = v
    return x


BAD = {
    "nan in x": (
        lambda d: ops.quantize(_x_with(1, 2, np.nan), S1, device=d),
        ValueError,
        r"\[quantize\] x\[1, 2\] is nan",
    ),
    "inf in x": (
        lambda d: ops.quantize(_x_with(2, 0, np.inf), S1, device=d),
        ValueError,
        r"\[quantize\] x\[2, 0\] is inf",
    ),
    "zero scale": (
        lambda d: ops.quantize(X, np.array([0.0], np.float32), device=d),
        ValueError,
        r"\[quantize\] scale\[0\] is 0; scales must be positive",
    ),
    "negative scale": (
        lambda d: ops.quantize(X, np.array([0.1, -1, 1, 1], np.float32), axis="column", device=d),
        ValueError,
        r"\[quantize\] scale\[1\] is -1",
    ),
    "nan scale": (
        lambda d: ops.dequantize(np.zeros((3, 4), np.uint8), np.array([np.nan], np.float32), device=d),
        ValueError,
        r"\[dequantize\] scale\[0\] is nan",
    ),
    "scale length": (
        lambda d: ops.quantize(X, np.ones(4, np.float32), axis="row", device=d),
        ValueError,
        r"\[quantize\] scale has shape \(4,\), expected \(3,\) for axis 'row'",
    ),
    "scale dtype": (lambda d: ops.quantize(X, np.ones(1), device=d), TypeError, r"\[quantize\] scale must be float32"),
    "zero dtype": (
        lambda d: ops.quantize(X, S1, np.zeros(1, np.int64), device=d),
        TypeError,
        r"\[quantize\] zero must be int32",
    ),
    "zero range u8": (
        lambda d: ops.quantize(X, S1, np.array([256], np.int32), device=d),
        ValueError,
        r"\[quantize\] zero\[0\] = 256 is outside \[0, 255\]",
    ),
    "zero range i8": (
        lambda d: ops.quantize(X, S1, np.array([-128], np.int32), dtype="int8", device=d),
        ValueError,
        r"\[quantize\] zero\[0\] = -128 is outside \[-127, 127\]",
    ),
    "zero shape": (
        lambda d: ops.quantize(X, S1, np.zeros(2, np.int32), device=d),
        ValueError,
        r"\[quantize\] zero has shape \(2,\) but scale has shape \(1,\)",
    ),
    "x dtype": (
        lambda d: ops.quantize(X.astype(np.float64), S1, device=d),
        TypeError,
        r"\[quantize\] x must be float32",
    ),
    "out dtype": (
        lambda d: ops.quantize(X, S1, out=np.zeros((3, 4), np.int32), device=d),
        TypeError,
        r"\[quantize\] out must be int8 or uint8, got int32",
    ),
    "out shape": (
        lambda d: ops.quantize(X, S1, out=np.zeros((4, 3), np.uint8), device=d),
        ValueError,
        r"\[quantize\] out has shape \(4, 3\) but x has shape \(3, 4\)",
    ),
    "x 1-D": (lambda d: ops.quantize(np.ones(4, np.float32), S1, device=d), ValueError, r"\[quantize\] x must be 2-D"),
    "x strided": (
        lambda d: ops.quantize(np.ones((3, 8), np.float32)[:, ::2], S1, device=d),
        ValueError,
        r"\[quantize\] x must be C-contiguous",
    ),
    "bad axis": (
        lambda d: ops.quantize(X, S1, axis="channel", device=d),
        ValueError,
        r"\[quantize\] axis must be 'tensor', 'row' or 'column', got 'channel'",
    ),
    "q dtype": (
        lambda d: ops.dequantize(X, S1, device=d),
        TypeError,
        r"\[dequantize\] q must be int8 or uint8, got float32",
    ),
    "dequantize out dtype": (
        lambda d: ops.dequantize(np.zeros((3, 4), np.int8), S1, out=np.zeros((3, 4)), device=d),
        TypeError,
        r"\[dequantize\] out must be float32",
    ),
    "dynamic nan": (
        lambda d: ops.quantize_rows_dynamic(_x_with(0, 3, -np.inf), device=d),
        ValueError,
        r"\[quantize_rows_dynamic\] x\[0, 3\] is -inf",
    ),
    "dynamic range": (
        lambda d: ops.quantize_rows_dynamic(np.array([[3e38, -3e38]], np.float32), device=d),
        ValueError,
        r"\[quantize_rows_dynamic\] row 0 of x spans .* wider than the float32 range",
    ),
    "dynamic scale_out": (
        lambda d: ops.quantize_rows_dynamic(X, scale_out=np.zeros(4, np.float32), device=d),
        ValueError,
        r"\[quantize_rows_dynamic\] scale_out has shape \(4,\), expected \(3,\)",
    ),
    "dynamic zero_out dtype": (
        lambda d: ops.quantize_rows_dynamic(X, zero_out=np.zeros(3, np.float32), device=d),
        TypeError,
        r"\[quantize_rows_dynamic\] zero_out must be int32",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_rejected_with_a_message_naming_the_argument(device, case):
    call, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        call(device)


def test_out_sharing_memory_with_x_is_rejected(device):
    buf = np.zeros(48, np.uint8)
    x = buf.view(np.float32).reshape(3, 4)
    with pytest.raises(ValueError, match=r"\[quantize\] out shares memory with x"):
        ops.quantize(x, S1, out=buf[:12].reshape(3, 4), device=device)


_GUARDED = r"""
import ctypes, mmap, sys
import numpy as np
from customml import ops

PAGE = mmap.PAGESIZE
keep = []

def guarded(values):
    # values copied to the end of a page whose next page is PROT_NONE: a read past the end faults.
    mm = mmap.mmap(-1, 2 * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + PAGE), ctypes.c_size_t(PAGE), 0) == 0
    a = np.frombuffer(mm, values.dtype, count=values.size, offset=PAGE - values.nbytes)
    a[:] = values
    keep.append(mm)
    return a

rows, cols = 5, 3  # 15 elements: the last run of four has one past the end, in row `rows`
x = np.linspace(-2, 2, rows * cols, dtype=np.float32).reshape(rows, cols)
scale = guarded(np.full(rows, 0.05, np.float32))
zero = guarded(np.arange(rows, dtype=np.int32))
for device in sys.argv[1:]:
    q = ops.quantize(x, scale, zero, dtype="int8", axis="row", device=device)
    back = ops.dequantize(q, scale, zero, axis="row", device=device)
    assert np.abs(back - x).max() <= 0.025 + 1e-6, device
print("ok")
"""


def test_row_scales_are_not_read_past_their_end():
    # The emulated CUDA kernels took the scale and zero of the lanes past the end of the
    # array too (row index `rows`), one element past each: found by the ASan stage, here
    # made a fault by a guarded page after the scales, so it fails without a sanitizer.
    import subprocess
    import sys

    from customml import _core

    devices = ["cpu"] + (["cuda-emulated"] if _core.build_info()["simt_emulation"] else [])
    run = subprocess.run([sys.executable, "-c", _GUARDED, *devices], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (run.returncode, run.stderr[-2000:])
