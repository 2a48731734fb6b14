"""_core.first_nonfinite, the finite check fit runs over its inputs, against NumPy's
isfinite on every ISA level: sizes at every vector, block and chunk boundary, NaN and
infinities at random positions (the first and last included), and the finite values
nearest to them (FLT_MAX, subnormals, -0.0), which must never be flagged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from customml import _core
from support import VALUE_KINDS, at_alignment, check_guards, make_values, seeds

F32_MAX = float(np.finfo(np.float32).max)


def first_nonfinite_ref(a: np.ndarray) -> int:
    """The flat C-order index of the first NaN or +-inf, or -1 (NumPy's isfinite)."""
    bad = np.flatnonzero(~np.isfinite(a.ravel()))
    return int(bad[0]) if bad.size else -1


# The kernel's boundaries: 8 and 16 lanes, four vectors a step (32, 64), blocks of 1024
# elements; the pool's chunks of 2^16 elements, used from 2^18 elements on.
BOUNDARIES = (
    0,
    1,
    2,
    3,
    7,
    8,
    9,
    15,
    16,
    17,
    31,
    32,
    33,
    63,
    64,
    65,
    1023,
    1024,
    1025,
    2047,
    2048,
    2049,
    (1 << 18) - 1,
    1 << 18,
    (1 << 18) + 1,
    (1 << 18) + (1 << 16) + 5,
)
# Non-finite bit patterns: quiet and signalling NaNs of both signs and payloads, +-inf.
NONFINITE_BITS = (0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x7FBFFFFF, 0x7F800000, 0xFF800000)
# Finite values next to them: must never be flagged.
EDGE_FINITE = np.array(
    [F32_MAX, -F32_MAX, 3.4e38, -3.4e38, 0.0, -0.0, 2.0**-149, -(2.0**-149), 2.0**-126, 1.1754942e-38], np.float32
)

problems = st.tuples(
    st.one_of(st.sampled_from(BOUNDARIES), st.integers(0, 3000)),
    st.sampled_from(VALUE_KINDS + ("edge",)),
    st.integers(0, 3),  # how many non-finite elements
    st.sampled_from(("random", "first", "last", "block_end")),  # where the first one goes
    st.integers(0, 3),  # alignment offset (elements past a 16-byte boundary)
    seeds,
)


def build(problem) -> np.ndarray:
    n, kind, count, where, _, seed = problem
    rng = np.random.default_rng(seed)
    if kind == "edge":
        a = rng.choice(EDGE_FINITE, n).astype(np.float32)
    else:
        a = make_values(rng, (n,), kind, huge=F32_MAX)
    if n == 0 or count == 0:
        return a
    positions = list(rng.integers(0, n, count))
    positions[0] = {"random": positions[0], "first": 0, "last": n - 1, "block_end": min(n - 1, 1023)}[where]
    bits = a.view(np.uint32)
    for p in positions:
        bits[p] = NONFINITE_BITS[int(rng.integers(len(NONFINITE_BITS)))]
    return a


@given(problem=problems)
@example(problem=(0, "normal", 0, "random", 0, 0))
@example(problem=(1, "normal", 1, "first", 1, 0))
@example(problem=(17, "edge", 0, "random", 3, 1))
@example(problem=(1025, "huge", 1, "last", 2, 2))
@example(problem=(1 << 18, "normal", 1, "last", 0, 3))
@example(problem=((1 << 18) + (1 << 16) + 5, "subnormal", 3, "random", 1, 4))
def test_first_nonfinite_matches_numpy(isa, problem):
    a = build(problem)
    buf, view = at_alignment(a, problem[4])  # NaN guards either side: a read past the ends is a wrong answer
    got = _core.first_nonfinite(view)
    assert isinstance(got, int)
    assert got == first_nonfinite_ref(a)
    check_guards(buf, "x")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_first_nonfinite_over_chunks_is_the_first(isa, threads):
    """A large array is checked in chunks on the pool: the lowest index wins whichever
    chunk finishes first, and a non-finite element in any chunk is found."""
    n = (1 << 20) + 77
    a = np.ones(n, np.float32)
    before = _core.get_num_threads()
    _core.set_num_threads(threads)
    try:
        assert _core.first_nonfinite(a) == -1
        for positions in ([n - 1], [5 << 16, 3 << 16], [(1 << 16) - 1, 1 << 16, n - 1], [0, n - 1]):
            a[:] = 1.0
            a[positions] = np.nan
            assert _core.first_nonfinite(a) == min(positions)
        a[:] = 1.0
        a[(7 << 16) + 3] = -np.inf
        assert _core.first_nonfinite(a) == (7 << 16) + 3
    finally:
        _core.set_num_threads(before)


def test_first_nonfinite_index_is_c_order_flat():
    x = np.zeros((5, 7), np.float32)
    x[3, 2] = np.inf
    x[4, 0] = np.nan
    assert _core.first_nonfinite(x) == 3 * 7 + 2
    assert _core.first_nonfinite(np.zeros((0, 4), np.float32)) == -1


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.zeros(8, np.float64),
        lambda: np.zeros(8, np.float16),
        lambda: np.zeros(8, np.int32),
        lambda: np.zeros((4, 6), np.float32)[:, ::2],  # strided
        lambda: np.asfortranarray(np.zeros((4, 6), np.float32)),  # contiguous, but not in C order
        lambda: np.zeros(8, np.dtype(">f4")),  # float32 of the other byte order
    ],
    ids=["float64", "float16", "int32", "strided", "fortran", "big-endian"],
)
def test_first_nonfinite_refuses_what_it_cannot_read_in_place(make):
    with pytest.raises(TypeError, match=r"\[first_nonfinite\] x must be a C-contiguous float32 array"):
        _core.first_nonfinite(make())
