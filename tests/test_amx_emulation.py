"""The host model of the AMX tile instructions (cpp/cpu/amx_tiles.h), instruction by instruction
against NumPy: LDTILECFG's checks (palette, rows and colsb limits, unused tiles, reserved bytes),
TILELOADD / TILESTORED of partial tiles (rows x colsb only), TILEZERO, TILERELEASE, TDPBUSD
(u8 x s8 in groups of 4, int32 wrapping around) and TDPBF16PS (bf16 pairs into float32) at every
K up to 64 bytes, and the shape checks of the products (colsb not a multiple of 4, mismatched
rows or columns). The gemm_s8 kernel built on it is tested in tests/test_gemm_s8.py
("amx_emulated"), bit for bit against the other levels.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
from customml import _core
from support import U32, assert_close, seeds


def config(tiles, palette=1, start_row=0, reserved=0, extra=None) -> bytes:
    """The 64-byte LDTILECFG operand: tiles {index: (rows, colsb)}."""
    b = bytearray(64)
    b[0], b[1], b[2] = palette, start_row, reserved
    for t, (rows, colsb) in {**tiles, **(extra or {})}.items():
        struct.pack_into("<H", b, 16 + 2 * t, colsb)
        b[48 + t] = rows
    return bytes(b)


def tiles(seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (16, 64), dtype=np.uint8) for _ in range(3)]


@given(rows=st.integers(1, 16), colsb=st.integers(1, 64), seed=seeds)
def test_load_and_store_move_rows_by_colsb_bytes(rows, colsb, seed):
    c, a, b = tiles(seed)
    out = _core._amx_run(config({0: (rows, colsb)}), "load", c, a, b)
    want = b.copy()
    want[:rows, :colsb] = c[:rows, :colsb]
    np.testing.assert_array_equal(out, want)


@given(rows=st.integers(1, 16), colsb=st.integers(1, 64), seed=seeds)
def test_tilezero(rows, colsb, seed):
    c, a, b = tiles(seed)
    out = _core._amx_run(config({0: (rows, colsb)}), "tilezero", c, a, b)
    want = b.copy()
    want[:rows, :colsb] = 0
    np.testing.assert_array_equal(out, want)


@given(m=st.integers(1, 16), k=st.integers(1, 16), n=st.integers(1, 16), seed=seeds, extremes=st.booleans())
def test_tdpbusd(m, k, n, seed, extremes):
    """dst[i, j] += sum over groups g < k of sum_t u8 a[i, 4 g + t] * s8 b[g, 4 j + t], wrapping
    in int32 (extremes: accumulators near the int32 limits, the largest products)."""
    rng = np.random.default_rng(seed)
    c, a, b = tiles(seed)
    if extremes:
        a = rng.choice(np.array([0, 255], np.uint8), (16, 64))
        b = rng.choice(np.array([0x80, 0x7F], np.uint8), (16, 64))
        c = rng.choice(np.array([2**31 - 5, -(2**31) + 5], np.int32), (16, 16)).view(np.uint8)
    out = _core._amx_run(config({0: (m, 4 * n), 1: (m, 4 * k), 2: (k, 4 * n)}), "tdpbusd", c, a, b)
    acc = c.view(np.int32)[:m, :n].astype(np.int64)
    av = a[:m, : 4 * k].astype(np.int64).reshape(m, k, 4)
    bv = b[:k, : 4 * n].view(np.int8).astype(np.int64).reshape(k, n, 4)
    acc = acc + np.einsum("mgt,gnt->mn", av, bv)
    want = b.copy()
    want[:m, : 4 * n] = ((acc + 2**31) % 2**32 - 2**31).astype(np.int32).view(np.uint8).reshape(m, 4 * n)
    np.testing.assert_array_equal(out, want)


@given(m=st.integers(1, 16), k=st.integers(1, 16), n=st.integers(1, 16), seed=seeds)
def test_tdpbf16ps(m, k, n, seed):
    """dst[i, j] += sum over pairs g < k of a[i, 2 g + t] b[g, 2 j + t] (bf16, t = 0 then 1), each
    add one float32 rounding of an exact product (or a flush below 2**-126): within 2 k u S +
    2 k 2**-126 of the float64 sum (S = |dst| + sum |products|)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((16, 16)).astype(np.float32)
    a_vals = reference.to_bf16(rng.standard_normal((16, 32)).astype(np.float32))
    b_vals = reference.to_bf16(rng.standard_normal((16, 32)).astype(np.float32))
    out = _core._amx_run(
        config({0: (m, 4 * n), 1: (m, 4 * k), 2: (k, 4 * n)}),
        "tdpbf16ps",
        c.view(np.uint8),
        a_vals.view(np.uint8),
        b_vals.view(np.uint8).copy(),
    )
    got = out.view(np.float32)
    xa = reference.bf16_to_float(a_vals[:m, : 2 * k]).astype(np.float64).reshape(m, k, 2)
    xb = reference.bf16_to_float(b_vals[:k, : 2 * n]).astype(np.float64).reshape(k, n, 2)
    prods = np.einsum("mgt,gnt->mn", xa, xb)
    want = c[:m, :n].astype(np.float64) + prods
    s = np.abs(c[:m, :n]) + np.einsum("mgt,gnt->mn", np.abs(xa), np.abs(xb))
    assert_close(got[:m, :n], want, 1.01 * 2 * k * (U32 * s + 2.0**-126), "tdpbf16ps")
    # Outside dst's rows x colsb the stored image keeps what was there.
    np.testing.assert_array_equal(out[m:], b_vals.view(np.uint8)[m:])


FULL = {0: (16, 64), 1: (16, 64), 2: (16, 64)}


@pytest.mark.parametrize(
    "cfg, op, match",
    [
        (config(FULL, palette=2), "load", "palette 2 is not supported"),
        (config(FULL, start_row=1), "load", "start_row must be 0"),
        (config(FULL, reserved=1), "load", "reserved configuration bytes must be zero"),
        (config({0: (17, 64)}), "load", "at most 16 rows of 64 bytes"),
        (config({0: (16, 68)}), "load", "at most 16 rows of 64 bytes"),
        (config({0: (16, 0)}), "load", "only one is zero"),
        (config({0: (16, 64)}, extra={8: (1, 4)}), "load", "tile 8 does not exist"),
        (config({}), "load", "which the configuration leaves unused"),
        (config(FULL, palette=0), "load", "without a tile configuration"),
        (config(FULL), "release", "without a tile configuration"),
        (config({0: (16, 6), 1: (16, 64), 2: (16, 6)}), "tdpbusd", "colsb must be a multiple of 4"),
        (config({0: (16, 64), 1: (16, 62), 2: (16, 64)}), "tdpbf16ps", "colsb must be a multiple of 4"),
        (config({0: (8, 64), 1: (16, 64), 2: (16, 64)}), "tdpbusd", "different rows"),
        (config({0: (16, 64), 1: (16, 32), 2: (16, 64)}), "tdpbusd", "a's colsb / 4 is not b's rows"),
        (config({0: (16, 32), 1: (16, 64), 2: (16, 64)}), "tdpbf16ps", "dst and b have different colsb"),
        (config({0: (16, 64), 1: (16, 64)}), "tdpbusd", "leaves unused"),
    ],
)
def test_bad_configurations_fault(cfg, op, match):
    c, a, b = tiles(0)
    with pytest.raises(ValueError, match=r"\[amx emulation\] .*" + match):
        _core._amx_run(cfg, op, c, a, b)
    # A fault leaves no configuration behind that a later, valid program would see.
    np.testing.assert_array_equal(_core._amx_run(config({0: (16, 64)}), "load", c, a, b), c)


def test_palette_0_releases():
    c, a, b = tiles(1)
    np.testing.assert_array_equal(_core._amx_run(config(FULL), "load", c, a, b), c)
