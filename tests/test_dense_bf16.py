"""dense_forward_bf16 and to_bf16 against tests/reference.py, on every CPU ISA level of the bf16
GEMM (portable, AVX2 and AVX-512 converting the weights on the fly, AVX512-BF16's
vdpbf16ps, AMX-BF16's tdpbf16ps on the hardware where present and on the tile emulation), at sizes around every tile: rows around MR = 4 / 6 and the converted row chunk,
columns around the 16-column panel and the 64-column tile, depths odd and even (a pair of k
is one vdpbf16ps step) and around the 16-pair block the weights are padded to.

Every variant sums the same exact products in the same order with the same rounding
(cpp/cpu/gemm_bf16.h), so the levels are compared bit for bit with the portable one (the
specification), NaN, inf, overflow and the flush to zero included; the reference comparison
is within the bound argued in ``bound``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import customml
import reference
from customml import _core, ops
from support import (
    U32,
    VALUE_KINDS,
    active_isa,
    assert_close,
    assert_float32_array,
    assert_same_bits,
    isa_available,
    make_values,
    nan_filled,
    seeds,
)
from test_dense import LIPSCHITZ, activation_rounding

ACTIVATIONS = reference.ACTIVATIONS
# The level each variant runs at, and its name there (AVX512-BF16 runs at avx512_vnni).
BF16_LEVELS = {
    "portable": "bf16_gemm__portable_4x16",
    "avx2": "bf16_gemm__avx2_4x16",
    "avx512": "bf16_gemm__avx512_4x64",
    "avx512_vnni": "bf16_gemm__avx512bf16_6x64",
}
MIN_NORMAL = 2.0**-126


def levels():
    """The bf16 levels this CPU runs (avx512_vnni only with AVX512-BF16)."""
    out = [lvl for lvl in BF16_LEVELS if isa_available(lvl)]
    if "avx512_vnni" in out and "avx512_bf16" not in customml.build_info()["cpu_features"]:
        out.remove("avx512_vnni")
    return out


# The AMX-BF16 tile kernel adds each pair's even product first (tdpbf16ps), so it is checked
# against the reference within the bound, not bit for bit: on the tile instructions ("amx",
# where the CPU has them) and on their host model ("amx_emulated", any CPU).
AMX_VARIANTS = {"amx": "bf16_gemm__amx_16x64", "amx_emulated": "bf16_gemm__amxemu_16x64"}


@pytest.fixture(params=list(BF16_LEVELS) + list(AMX_VARIANTS))
def bf16_isa(request):
    """Caps the kernels at one ISA level for the test; skips when the CPU lacks it."""
    wanted = request.param
    if wanted == "amx_emulated":
        assert _core._set_amx_emulation(True)
        try:
            yield wanted
        finally:
            _core._set_amx_emulation(False)
        return
    if wanted == "amx":
        if not (isa_available("amx") and "amx_bf16" in customml.build_info()["cpu_features"]):
            pytest.skip("this CPU lacks AMX-BF16")
        original = active_isa()
        _core._set_isa("amx")
        try:
            yield wanted
        finally:
            _core._set_isa(original)
        return
    if wanted not in levels():
        pytest.skip(f"this CPU lacks the bf16 variant of {wanted}")
    original = active_isa()
    _core._set_isa(wanted)
    try:
        yield wanted
    finally:
        _core._set_isa(original)


def test_kernel_variant_is_reported(bf16_isa):
    assert customml.build_info()["kernels"]["gemm_bf16"] == {**BF16_LEVELS, **AMX_VARIANTS}[bf16_isa]


M_SIZES = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 11, 12, 13]), st.integers(1, 30))
N_SIZES = st.one_of(st.sampled_from([1, 15, 16, 17, 63, 64, 65, 129]), st.integers(1, 80))
K_SIZES = st.one_of(st.sampled_from([1, 2, 3, 31, 32, 33, 63, 64, 65]), st.integers(1, 100))
# Weights: never "huge", so that no product of two values overflows float32 where the float64
# reference would not (overflow is compared between levels, below); "mixed" with 1e10.
W_KINDS = ("normal", "ints", "tiny", "subnormal", "mixed")
problems = st.tuples(
    M_SIZES, K_SIZES, N_SIZES, st.sampled_from(VALUE_KINDS), st.sampled_from(W_KINDS), st.booleans(), seeds
)
# The batch-1 README layer; several column blocks and threads; two converted row chunks.
LARGE = [
    (1, 784, 256, "normal", "normal", True, 1),
    (64, 512, 1100, "wide", "normal", True, 2),
    (250, 300, 70, "mixed", "mixed", False, 3),
]


def build(problem):
    m, k, n, x_kind, w_kind, with_bias, seed = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, (m, k), x_kind)
    w = ops.to_bf16(make_values(rng, (k, n), w_kind, scale=1 / np.sqrt(k), huge=1e10))
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    return x, w, bias


def bound(activation, x, w, bias, y_ref):
    """Bound on |out - reference|.

    The kernel adds the 2P exact products of each output (P = ceil(k / 2) pairs) one at a
    time, each add one rounding (relative u) of a partial sum at most S = sum |x_i w_i| in
    size, or a flush to zero of one below 2**-126: |acc - sum| <= 2P u S + 2P 2**-126 (to
    first order; 1.01 covers the rest). The bias add rounds once more, u (S + |b|). The
    activation carries that through its Lipschitz constant, then rounds itself."""
    k = x.shape[1]
    two_p = 2 * ((k + 1) // 2)
    xb = np.abs(reference.bf16_to_float(reference.to_bf16(x)).astype(np.float64))
    s = xb @ np.abs(reference.bf16_to_float(w).astype(np.float64))
    b = 0.0 if bias is None else np.abs(bias.astype(np.float64))
    err_z = 1.01 * (two_p * U32 * s + U32 * (s + b)) + two_p * MIN_NORMAL
    with np.errstate(invalid="ignore"):
        return LIPSCHITZ[activation] * err_z + activation_rounding(activation, y_ref, y_ref)


def run(x, w, bias, activation="identity", device="cpu"):
    out = nan_filled((x.shape[0], w.shape[1]))
    ret = ops.dense_forward_bf16(x, w, bias, activation=activation, out=out, device=device)
    assert ret is out
    assert_float32_array(out, (x.shape[0], w.shape[1]), "out")
    return out


@pytest.mark.parametrize("activation", ACTIVATIONS)
@given(problem=problems)
@example(problem=LARGE[0])
@example(problem=LARGE[1])
def test_matches_reference(bf16_isa, activation, problem):
    x, w, bias = build(problem)
    got = run(x, w, bias, activation)
    want = reference.dense_forward_bf16(x, w, bias, activation=activation)
    assert_close(got, want, bound(activation, x, w, bias, want), f"out ({activation}, {bf16_isa})")


ALL_KINDS = VALUE_KINDS + ("nan",)


@given(
    problem=st.tuples(
        M_SIZES, K_SIZES, N_SIZES, st.sampled_from(ALL_KINDS), st.sampled_from(ALL_KINDS), st.booleans(), seeds
    ),
    activation=st.sampled_from(["identity", "relu"]),
)
@example(problem=LARGE[2], activation="relu")
@example(problem=(5, 33, 70, "huge", "huge", True, 7), activation="identity")
@example(problem=(3, 64, 17, "tiny", "tiny", False, 8), activation="identity")
def test_levels_agree_bit_for_bit(problem, activation):
    """Every level gives the portable level's bits: the same sums in the same order, overflow
    to inf, NaN, tiny products flushed to zero and signed zeros included. (sigmoid, tanh and
    gelu are cpp/cpu/vmath.h's at each level, within its bounds but not bit for bit: the
    reference test covers them.)"""
    m, k, n, x_kind, w_kind, with_bias, seed = problem
    rng = np.random.default_rng(seed)

    def values(shape, kind, scale=1.0):
        if kind == "nan":
            v = make_values(rng, shape, "normal", scale=scale)
            v[rng.random(shape) < 0.2] = np.nan
            return v
        return make_values(rng, shape, kind, scale=scale)

    x = values((m, k), x_kind)
    w = ops.to_bf16(values((k, n), w_kind, 1 / np.sqrt(k)))
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    outs = {}
    original = active_isa()
    try:
        for level in levels():
            _core._set_isa(level)
            outs[level] = run(x, w, bias, activation)
    finally:
        _core._set_isa(original)
    for level, out in outs.items():
        assert_same_bits(out, outs["portable"], f"{level} vs portable ({activation})")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nan_propagates(bf16_isa, activation):
    """A NaN input makes its row NaN, a NaN weight its column, through every activation
    (relu included: relu(NaN) = NaN, as in PyTorch); inf - inf is NaN."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 40)).astype(np.float32)
    w32 = rng.standard_normal((40, 20)).astype(np.float32)
    x[2, 7] = np.nan
    w32[3, 11] = np.nan
    out = run(x, ops.to_bf16(w32), np.zeros(20, np.float32), activation)
    nan = np.zeros(out.shape, bool)
    nan[2, :] = True
    nan[:, 11] = True
    np.testing.assert_array_equal(np.isnan(out), nan)
    x2 = np.ones((1, 2), np.float32)
    w2 = ops.to_bf16(np.array([[np.inf], [-np.inf]], np.float32))
    assert np.isnan(run(x2, w2, None, activation)).all()


def test_to_bf16_rounds_as_the_instruction():
    """Nearest even at ties, carries into the exponent, the largest finite values to inf,
    denormals to signed zero, NaN quieted (payload's upper half kept), -0 and inf kept."""
    specials = np.array(
        [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 3.4028235e38, -3.4028235e38, 1.17549435e-38, 1e-40, -1e-45],
        np.float32,
    )
    bits = np.array(
        [
            0x3F808000,  # tie, even below: down
            0x3F818000,  # tie, odd below: up
            0x3F808001,  # above the tie: up
            0x3FFF8000,  # tie that carries into the exponent
            0x7F800001,  # signalling NaN: quieted
            0xFFC12345,  # negative quiet NaN
            0x7F7F8000,  # tie at the top: rounds to inf
        ],
        np.uint32,
    ).view(np.float32)
    rng = np.random.default_rng(5)
    random = rng.integers(0, 2**32, 10000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    for x in (specials, bits, random, random.reshape(100, 100)):
        got = ops.to_bf16(x)
        assert got.dtype == np.uint16 and got.shape == x.shape
        np.testing.assert_array_equal(got, reference.to_bf16(x))
    np.testing.assert_array_equal(
        ops.to_bf16(bits), np.array([0x3F80, 0x3F82, 0x3F81, 0x4000, 0x7FC0, 0xFFC1, 0x7F80], np.uint16)
    )
    np.testing.assert_array_equal(ops.to_bf16(specials)[-3:], np.array([0x0080, 0x0000, 0x8000], np.uint16))


def test_rows_do_not_depend_on_the_batch(bf16_isa):
    """A row's result is the same bits alone (batch 1, the GEMV path) as within a batch."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((13, 300)).astype(np.float32)
    w = ops.to_bf16(rng.standard_normal((300, 70)).astype(np.float32))
    bias = rng.standard_normal(70).astype(np.float32)
    whole = run(x, w, bias, "relu")
    for i in (0, 5, 12):
        assert_same_bits(run(x[i : i + 1], w, bias, "relu"), whole[i : i + 1], f"row {i}")


def test_bad_input_names_the_argument():
    x = np.ones((2, 3), np.float32)
    w = ops.to_bf16(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match=r"\[dense_forward_bf16\] weight"):
        ops.dense_forward_bf16(x, np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"\[dense_forward_bf16\] x has 2 columns but weight has 3 rows"):
        ops.dense_forward_bf16(np.ones((2, 2), np.float32), w)
    with pytest.raises(ValueError, match=r"\[dense_forward_bf16\] bias has shape \(3,\), expected \(4,\)"):
        ops.dense_forward_bf16(x, w, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"\[dense_forward_bf16\] unknown activation .softplus."):
        ops.dense_forward_bf16(x, w, activation="softplus")
    with pytest.raises(TypeError, match=r"\[to_bf16\] x must be a C-contiguous float32 array"):
        ops.to_bf16(np.ones(3))


@pytest.mark.skipif(not _core.build_info()["simt_emulation"], reason="built without the SIMT emulation")
def test_cuda_emulated_refuses_bf16():
    """The CUDA-model devices have no bf16 Dense product: a clear error, nothing run."""
    x = np.ones((2, 3), np.float32)
    w = ops.to_bf16(np.ones((3, 4), np.float32))
    with pytest.raises(
        ValueError, match=r"\[dense_forward_bf16\] bf16 weights are not supported on device 'cuda-emulated'"
    ):
        ops.dense_forward_bf16(x, w, device="cuda-emulated")
