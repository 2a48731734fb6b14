"""dropout against tests/reference.py (bit-exact: the mask is integer arithmetic and the
kept values one float32 multiply), and the reference's Philox4x32-10 against published
known answers and NumPy's own Philox.

About numpy.random.Philox: it is Philox4x64-10 (64-bit words, its own multipliers and
Weyl constants), not 4x32, so no counter/key layout makes it produce our 4x32 stream.
What it does share is the round structure (mulhilo of words 0 and 2, the output order
(hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0), the key bumped after every round). So the
cross-check is a chain: one width-generic Philox written with Python integers is
checked (a) at width 64 against numpy.random.Philox, whose counter is four little-endian
uint64 words incremented *before* each block is generated (the first block of
Philox(counter=c) is Philox4x64-10(c + 1)), and (b) at width 32 against Random123's
known-answer vectors; the vectorized uint64 reference must then agree with it at width 32.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import (
    U32,
    VALUE_KINDS,
    assert_float32_array,
    assert_same_bits,
    make_values,
    nan_filled,
    seeds,
    sizes,
)

# Philox constants per word width: multipliers, then Weyl key increments.
PHILOX_CONSTANTS = {
    32: ((0xD2511F53, 0xCD9E8D57), (0x9E3779B9, 0xBB67AE85)),
    64: ((0xD2E7470EE14C6C93, 0xCA5A826395121157), (0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B)),
}


def philox_generic(ctr, key, width, rounds=10):
    """Philox4xW-R on Python integers: ctr 4 words, key 2 words."""
    mask = (1 << width) - 1
    (m0, m1), (w0, w1) = PHILOX_CONSTANTS[width]
    c, k = list(ctr), list(key)
    for _ in range(rounds):
        p0, p1 = m0 * c[0], m1 * c[2]
        c = [(p1 >> width) ^ c[1] ^ k[0], p1 & mask, (p0 >> width) ^ c[3] ^ k[1], p0 & mask]
        k = [(k[0] + w0) & mask, (k[1] + w1) & mask]
    return c


# Random123 tests/kat_vectors, philox4x32 10: (counter, key, output)
PHILOX4X32_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("ctr,key,want", PHILOX4X32_KAT)
def test_philox4x32_known_answers(ctr, key, want):
    assert tuple(philox_generic(ctr, key, 32)) == want
    # the reference's layout: counter = (block lo, block hi, stream lo, stream hi), key = (seed lo, seed hi)
    block = ctr[0] | ctr[1] << 32
    stream = ctr[2] | ctr[3] << 32
    seed = key[0] | key[1] << 32
    assert tuple(int(v) for v in reference.philox4x32_10(seed, stream, [block])[0]) == want


def test_dropout_kernel_reproduces_the_zero_known_answer(isa, device):
    # Counter (0, 0, 0, 0) and key (0, 0) are block 0 of seed 0, stream 0: elements 0..3.
    # Element j is kept iff u_j >= rate, so rate = u_j keeps it and the next float32 up
    # drops it: that pins the top 24 bits of each lane of the kernel's Philox directly.
    for lane, bits in enumerate(PHILOX4X32_KAT[0][2]):
        u = (bits >> 8) * 2.0**-24
        kept = ops.dropout(np.ones(4, np.float32), rate=u, seed=0, stream=0, device=device)
        dropped = ops.dropout(np.ones(4, np.float32), rate=u + 2.0**-24, seed=0, stream=0, device=device)
        assert kept[lane] != 0 and dropped[lane] == 0, (lane, hex(bits))


@given(
    counter=st.lists(st.integers(0, 2**64 - 2), min_size=4, max_size=4),
    key=st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=2),
)
def test_philox_round_structure_matches_numpy_philox4x64(counter, key):
    bitgen = np.random.Philox(counter=np.array(counter, np.uint64), key=np.array(key, np.uint64))
    raw = [int(v) for v in bitgen.random_raw(4)]
    first = [counter[0] + 1] + counter[1:]  # NumPy increments word 0 before generating
    assert raw == philox_generic(first, key, 64)


@given(
    seed=st.integers(0, 2**64 - 1),
    stream=st.integers(0, 2**64 - 1),
    blocks=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=8),
)
def test_reference_philox_matches_generic(seed, stream, blocks):
    got = reference.philox4x32_10(seed, stream, blocks)
    assert got.dtype == np.uint32 and got.shape == (len(blocks), 4)
    for row, block in zip(got, blocks):
        ctr = (block & 0xFFFFFFFF, block >> 32, stream & 0xFFFFFFFF, stream >> 32)
        assert [int(v) for v in row] == philox_generic(ctr, (seed & 0xFFFFFFFF, seed >> 32), 32)


# ------------------------------------------------------------------------------ dropout

rates = st.one_of(
    st.sampled_from([0.0, 0.1, 0.5, 0.9, float(np.nextafter(np.float32(1), np.float32(0)))]),
    st.floats(0.0, 1.0, exclude_max=True, width=32),
)
u64 = st.one_of(st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**64 - 1]), st.integers(0, 2**64 - 1))

# (shape, value kind, seed of the values); sizes not multiples of 4 exercise the tail block.
dropout_problems = st.tuples(
    st.lists(sizes, min_size=1, max_size=3).filter(lambda s: np.prod(s) <= 1 << 16),
    st.sampled_from(VALUE_KINDS + ("nonfinite",)),
    seeds,
)


def values_of(problem):
    shape, kind, seed = problem
    rng = np.random.default_rng(seed)
    if kind == "nonfinite":  # a dropped NaN or inf must become 0, a kept one stays
        x = make_values(rng, shape, "normal")
        pick = rng.random(x.size) < 0.3
        x.reshape(-1)[pick] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), int(pick.sum()))
        return x
    return make_values(rng, shape, kind)


@given(problem=dropout_problems, rate=rates, seed=u64, stream=u64)
@example(problem=([4097], "normal", 1), rate=0.5, seed=0, stream=0)
@example(problem=([3, 5, 7], "mixed", 2), rate=0.25, seed=2**64 - 1, stream=2**32)
def test_dropout_matches_reference(isa, device, problem, rate, seed, stream):
    x = values_of(problem)
    x_before = x.copy()
    out = nan_filled(x.shape)
    ret = ops.dropout(x, rate=rate, seed=seed, stream=stream, out=out, device=device)
    assert ret is out
    assert_float32_array(out, x.shape, "out")
    want = reference.dropout(x, rate=rate, seed=seed, stream=stream)
    # Bit-exact: the mask is integer arithmetic, the kept value one float32 multiply,
    # a dropped one +0.0.
    assert_same_bits(out, want, f"dropout(rate={rate}, seed={seed}, stream={stream})")
    assert_same_bits(x, x_before, "x after dropout")
    again = ops.dropout(x, rate=rate, seed=seed, stream=stream, device=device)
    assert_same_bits(again, out, "a second call")
    # In place (out is x) gives the same result.
    ops.dropout(x, rate=rate, seed=seed, stream=stream, out=x, device=device)
    assert_same_bits(x, out, "in place")


def test_dropout_rate_zero_is_identity(isa, device):
    x = make_values(np.random.default_rng(1), (7, 9), "mixed")
    assert_same_bits(ops.dropout(x, rate=0.0, seed=3, stream=4, device=device), x, "rate 0")


def test_dropout_mask_depends_on_index_not_length(isa, device):
    # Element i's draw is Philox(seed, stream, i // 4)[i % 4]: a prefix of a longer call
    # is the shorter call, and the backward pass (the same call on dy) drops the same
    # elements as the forward pass.
    x = np.ones(1001, np.float32)
    full = ops.dropout(x, rate=0.3, seed=11, stream=12, device=device)
    for n in (1, 2, 3, 5, 999):
        assert_same_bits(
            ops.dropout(x[:n].copy(), rate=0.3, seed=11, stream=12, device=device), full[:n], f"prefix {n}"
        )
    dy = np.full(1001, -2.0, np.float32)
    dx = ops.dropout(dy, rate=0.3, seed=11, stream=12, device=device)
    assert ((dx == 0) == (full == 0)).all()


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_keep_fraction(isa, device, rate):
    # A sanity check of the reference itself, independent of Philox's bits: the kept
    # fraction is 1 - rate within 6 binomial standard deviations (fails ~1e-9 of the time
    # for a correct generator; the seed is fixed, so it is deterministic).
    n = 200_003
    y = ops.dropout(np.ones(n, np.float32), rate=rate, seed=123, stream=7, device=device)
    kept = np.count_nonzero(y)
    sd = np.sqrt(n * rate * (1 - rate))
    assert abs(kept - n * (1 - rate)) <= 6 * sd
    scale = np.float32(1) / (np.float32(1) - np.float32(rate))
    assert (y[y != 0] == scale).all()


def test_dropout_streams_and_seeds_differ(device):
    x = np.ones(4096, np.float32)
    base = ops.dropout(x, rate=0.5, seed=1, stream=0, device=device)
    for seed, stream in [(2, 0), (1, 1), (1, 2**32), (2**32 + 1, 0)]:
        other = ops.dropout(x, rate=0.5, seed=seed, stream=stream, device=device)
        assert (other != base).mean() > 0.4, (seed, stream)


def _call(device, **over):
    kw = dict(x=np.ones((4, 3), np.float32), rate=0.5, seed=1, stream=2, device=device)
    kw.update(over)
    return lambda: ops.dropout(kw.pop("x"), **kw)


BAD = {
    "x float64": (dict(x=np.ones((4, 3))), TypeError, r"\[dropout\] x must be float32"),
    "out float16": (dict(out=np.ones((4, 3), np.float16)), TypeError, r"\[dropout\] out must be float32"),
    "out shape": (dict(out=np.ones((3, 4), np.float32)), ValueError, r"\[dropout\] out has shape"),
    "x strided": (dict(x=np.ones((4, 6), np.float32)[:, ::2]), ValueError, r"\[dropout\] x must be C-contiguous"),
    "out transposed": (dict(out=np.ones((3, 4), np.float32).T), ValueError, r"\[dropout\] out must be C-contiguous"),
    "rate 1": (dict(rate=1.0), ValueError, r"\[dropout\] rate must be in \[0, 1\)"),
    "rate above 1": (dict(rate=1.5), ValueError, r"\[dropout\] rate"),
    "rate negative": (dict(rate=-0.1), ValueError, r"\[dropout\] rate"),
    "rate NaN": (dict(rate=float("nan")), ValueError, r"\[dropout\] rate"),
    # a rate just below 1 in float64 rounds to 1.0 in float32: still rejected
    "rate rounds to 1": (dict(rate=1.0 - 1e-9), ValueError, r"\[dropout\] rate"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_dropout_rejects_bad_input(device, case):
    over, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        _call(device, **over)()


def test_dropout_rejects_partial_overlap(device):
    buf = np.ones(10, np.float32)
    with pytest.raises(ValueError, match=r"\[dropout\] out shares memory with x"):
        ops.dropout(buf[:-1], rate=0.5, seed=1, stream=2, out=buf[1:], device=device)


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_dropout_rejects_seed_outside_uint64(device, seed):
    with pytest.raises(TypeError):
        ops.dropout(np.ones(3, np.float32), rate=0.5, seed=seed, stream=0, device=device)


def test_dropout_op_statistics():
    n = 100_000
    x = np.full(n, 3.0, np.float32)
    for rate in (0.1, 0.3, 0.7):
        y = ops.dropout(x, rate=rate, seed=5, stream=2)
        assert y.shape == (n,) and y.dtype == np.float32
        kept = y != 0
        sd = np.sqrt(rate * (1 - rate) / n)
        assert abs((~kept).mean() - rate) < 5 * sd, rate
        for lane in range(4):  # each Philox output word is used
            sd_lane = np.sqrt(rate * (1 - rate) / (n / 4))
            assert abs((~kept[lane::4]).mean() - rate) < 5 * sd_lane, (rate, lane)
        # x * float32(1 / (1 - rate)): two roundings
        np.testing.assert_allclose(y[kept], 3.0 / (1.0 - rate), rtol=4 * U32)
    np.testing.assert_array_equal(ops.dropout(x, rate=0.0, seed=5, stream=2), x)
    a = ops.dropout(x, rate=0.5, seed=5, stream=2)
    np.testing.assert_array_equal(a, ops.dropout(x, rate=0.5, seed=5, stream=2))
    assert not np.array_equal(a, ops.dropout(x, rate=0.5, seed=5, stream=3))
    assert not np.array_equal(a, ops.dropout(x, rate=0.5, seed=6, stream=2))


@given(
    problem=dropout_problems,
    rate=rates,
    seed=u64,
    first=st.one_of(st.integers(0, 70), st.sampled_from([2**32 * 4 - 3, 2**62 + 1])),
)
@example(problem=([4097], "normal", 1), rate=0.5, seed=0, first=1)
@example(problem=([3], "normal", 2), rate=0.5, seed=5, first=2)
def test_dropout_first_places_x_in_a_longer_mask(isa, device, problem, rate, seed, first):
    # Data-parallel training: rank r's rows are rows [r B, (r + 1) B) of the global batch,
    # and its masks must be the one-process masks of those rows (first = r B width), at
    # any alignment of first to the Philox block of 4 (the SIMD path's unaligned head)
    # and across a carry into the block counter's high word.
    x = values_of(problem).reshape(-1)
    stream = 7
    out = ops.dropout(x, rate=rate, seed=seed, stream=stream, first=first, device=device)
    uniform = reference.philox4x32_10(
        seed, stream, np.arange(first // 4, (first + x.size + 3) // 4 + 1, dtype=np.uint64)
    )
    bits = uniform.reshape(-1)[first % 4 : first % 4 + x.size]
    rate32 = np.float32(rate)
    keep = (bits >> np.uint32(8)).astype(np.float64) * 2.0**-24 >= float(rate32)
    with np.errstate(invalid="ignore", over="ignore"):
        want = np.where(keep, x * (np.float32(1.0) / (np.float32(1.0) - rate32)), np.float32(0.0)).astype(np.float32)
    assert_same_bits(out, want, f"dropout(first={first})")
    if first <= 70:
        longer = np.concatenate([np.ones(first, np.float32), x])
        full = ops.dropout(longer, rate=rate, seed=seed, stream=stream, device=device)
        assert_same_bits(out, full[first:], f"a suffix of a longer call, first={first}")
