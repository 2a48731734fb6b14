"""The staged input batch in 16 bits (docs/decisions.md, CUDA): at bf16 and fp16, where the
first Dense layer's GEMMs are the step's only reader of the batch and read it only through
its 16-bit copy (Trainer::half_input), the host rounds the batch as it gathers it
(cpp/half_round.h, vectorized at each ISA level) and only that copy crosses to the device: 2 bytes a value instead of 4,
and no conversion in layer 1's forward or backward loop. The host's rounding must give the
device's bits, so a model whose first layer reads the copy trains to the bits of one whose
GEMM rounds the float batch as it stages it (an identity Rescaling in front keeps the copy
out: the affine layer's output has none)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import customml as cm
from customml import _core

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")

DEVICE = "cuda-emulated"


def _special_values() -> np.ndarray:
    f32 = np.finfo(np.float32)
    v = [0.0, -0.0, 1.0, -1.0, f32.tiny, f32.smallest_subnormal, f32.max, -f32.max, np.inf, -np.inf, np.nan, -np.nan]
    # fp16: its largest finite (65504), the tie to inf (65520) and either side, its smallest
    # normal and subnormal, half the smallest subnormal (a tie to 0) and just above
    v += [65504.0, 65519.996, 65520.0, 65520.004, 2.0**-14, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0000001, 2.0**-26]
    # ties to even in both formats: odd and even kept bits with exactly half an ulp dropped
    v += [1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 3.0 * 2.0**-20 + 2.0**-25]
    x = np.array(v, dtype=np.float32)
    nan_payloads = np.array([0x7F800001, 0xFF800001, 0x7FC00000, 0x7FBFFFFF, 0x7FFFFFFF], dtype=np.uint32)
    return np.concatenate([x, -x, nan_payloads.view(np.float32)])


@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
def test_host_rounding_gives_the_device_bits(fmt, isa):
    # the host's loop at each ISA level (ElementwiseKernels::round_to_half)
    rng = np.random.default_rng(5)
    # every exponent, random mantissas, and the 16-bit rounding boundaries' neighbourhoods
    bits = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2**16, 10_000, dtype=np.uint32) << 16) | np.uint32(0x8000)
    fp16_ties = (rng.integers(0, 2**19, 10_000, dtype=np.uint32) << 13) | np.uint32(0x1000)
    x = np.concatenate([_special_values(), bits.view(np.float32), ties.view(np.float32), fp16_ties.view(np.float32)])
    host = _core._round_to_half(x, fmt, "host")
    device = _core._round_to_half(x, fmt, DEVICE)
    np.testing.assert_array_equal(host, device)


def _fp16_reference(x: np.ndarray) -> np.ndarray:
    """NumPy's float32 -> float16 (IEEE round to nearest even, subnormals kept, overflow to
    inf), NaN as the quiet NaN of x's sign that cpp/half_round.h documents."""
    with np.errstate(over="ignore", invalid="ignore"):  # the overflow to inf, NaN: what is checked
        bits = x.astype(np.float16).view(np.uint16)
    sign = (x.view(np.uint32) >> 16).astype(np.uint16) & np.uint16(0x8000)
    return np.where(np.isnan(x), sign | np.uint16(0x7E00), bits)


def _bf16_reference(x: np.ndarray) -> np.ndarray:
    """bf16 by the nearer of the two candidates in float64 (ties to the even one): the
    truncated top half and the next one up (2^128 standing for inf); subnormals kept, NaN
    quiet with its top half kept, inf kept."""
    b = x.view(np.uint32).astype(np.uint64)
    lo = (b & 0x7FFFFFFF) >> 16
    hi = lo + 1

    def value(h):
        v = (h << 16).astype(np.uint32).view(np.float32).astype(np.float64)
        return np.where(h == 0x7F80, 2.0**128, v)

    with np.errstate(invalid="ignore"):  # NaN's and inf's candidates: replaced below
        a = np.abs(x.astype(np.float64))
        below, above = a - value(lo), value(hi) - a
        up = (above < below) | ((above == below) & (lo % 2 == 1))
    magnitude = np.where(up, hi, lo)
    magnitude = np.where(np.isinf(x), 0x7F80, magnitude)
    out = ((b >> 16) & 0x8000) | magnitude
    return np.where(np.isnan(x), (b >> 16) | 0x40, out).astype(np.uint16)


# Any float's bits, and those next to each format's rounding boundaries: a tie (half an ulp
# dropped) or one bit either side of it, at any exponent (bf16 drops 16 bits, fp16 13 of a
# normal float32 in its range, more below 2^-14).
_patterns = st.one_of(
    st.integers(0, 2**32 - 1),
    st.builds(lambda hi, d: (hi << 16) + 0x8000 + d, st.integers(0, 2**16 - 1), st.integers(-1, 1)),
    st.builds(lambda hi, d: (hi << 13) + 0x1000 + d, st.integers(0, 2**19 - 1), st.integers(-1, 1)),
)


@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
@given(patterns=st.lists(_patterns, min_size=1, max_size=300))
def test_host_rounding_matches_numpy(fmt, isa, patterns):
    x = (np.array(patterns, dtype=np.uint64) % 2**32).astype(np.uint32).view(np.float32)
    want = _bf16_reference(x) if fmt == "bf16" else _fp16_reference(x)
    np.testing.assert_array_equal(_core._round_to_half(x, fmt, "host"), want)


RNG = np.random.default_rng(16)
X = RNG.standard_normal((38, 24)).astype(np.float32) * 3  # no -0.0: the affine's +0 would differ in sign
X[3, 5] = 2049.0  # a tie in fp16 (ulp 2 there): rounds to even
X[4, 2] = 1e-6  # an fp16 subnormal
X[5, 7] = 1.0 + 2.0**-8  # a tie in bf16
X2 = RNG.standard_normal((32, 24)).astype(np.float32)
Y = RNG.integers(0, 5, 38).astype(np.int32)
EPOCHS, BATCH = 1, 32  # batches of 32 and a last one of 6: the copy must follow each batch's rows


def _layers():
    return [cm.layers.Dense(32, activation="relu"), cm.layers.Dropout(0.0), cm.layers.Dense(16), cm.layers.Dense(5)]


def _fit(layers, precision, rescaled, cuda_graph=False, input_dim=24):
    if rescaled:
        layers.insert(0, cm.layers.Rescaling(1.0))
    model = cm.Sequential(layers, input_dim=input_dim, device=DEVICE, seed=3)
    model.compile(
        optimizer=cm.optimizers.Adam(0.01), loss="softmax_cross_entropy", precision=precision, cuda_graph=cuda_graph
    )
    x = X[:, :input_dim]
    model.fit(x, Y, epochs=1, batch_size=BATCH, seed=1, verbose=0)
    # evaluate stages another batch's floats: a first layer reading the float buffer in the
    # next steps would read those
    model.evaluate(X2[:, :input_dim], Y[: len(X2)], batch_size=BATCH)
    before = _core._emulated_bytes_to_device()
    model.fit(x, Y, epochs=EPOCHS, batch_size=BATCH, seed=2, verbose=0)
    crossed = _core._emulated_bytes_to_device() - before
    return model.get_weights(), model.predict(x, batch_size=BATCH), model.evaluate(x, Y, batch_size=BATCH), crossed


def _assert_same_bits(got, want):
    w_got, p_got, e_got, _ = got
    w_want, p_want, e_want, _ = want
    assert len(w_got) == len(w_want)
    for a, b in zip(w_got, w_want):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(p_got.view(np.uint32), p_want.view(np.uint32))
    assert e_got == e_want


@pytest.mark.parametrize(("precision", "cuda_graph"), [("bf16", False), ("fp16", True), ("bf16", True)])
def test_only_the_16_bit_batch_crosses_and_trains_to_the_rounded_as_staged_bits(precision, cuda_graph):
    got = _fit(_layers(), precision, rescaled=False, cuda_graph=cuda_graph)
    want = _fit(_layers(), precision, rescaled=True, cuda_graph=cuda_graph)
    _assert_same_bits(got, want)
    # the same copies but the input: 2 bytes a value instead of 4
    assert want[3] - got[3] == EPOCHS * X.size * 2


def _half_ld(cols):
    """backend.h's half_ld: a 16-bit copy's rows are cols rounded up to a multiple of 8 apart."""
    return (cols + 7) // 8 * 8


@pytest.mark.parametrize(
    "case",
    [
        "units_not_8",  # the weights' twin (5 wide) padded to 8: the launches copy A and B
        "input_not_8",  # the batch's copy padded from 20 to 24 wide
        "top_dz_not_8",  # one layer: its dW's B, the loss's dz copy (5 wide), padded to 8
        "fp32",  # no 16-bit copies: the floats cross
    ],
)
def test_the_batch_crosses_in_16_bits_whatever_the_widths(case):
    precision = "fp32" if case == "fp32" else "bf16"
    input_dim = 20 if case == "input_not_8" else 24
    layers = {
        "units_not_8": lambda: [cm.layers.Dense(5, activation="relu"), cm.layers.Dense(5)],
        "top_dz_not_8": lambda: [cm.layers.Dense(5)],
    }.get(case, _layers)
    got = _fit(layers(), precision, rescaled=False, input_dim=input_dim)
    want = _fit(layers(), precision, rescaled=True, input_dim=input_dim)
    _assert_same_bits(got, want)
    # the rows of the padded copy, 2 bytes a value, instead of the floats' 4
    saved = 0 if case == "fp32" else EPOCHS * len(X) * (4 * input_dim - 2 * _half_ld(input_dim))
    assert want[3] - got[3] == saved


def _infer(layers, precision, rescaled, cuda_graph=False, input_dim=24):
    """Predictions, evaluate's results and the bytes each call copied to the device: predict
    in batches of 32 and a last one of 6 (twice: the workspace reused), one row,
    and three rows one at a time; evaluate over the same batches."""
    if rescaled:
        layers.insert(0, cm.layers.Rescaling(1.0))
    model = cm.Sequential(layers, input_dim=input_dim, device=DEVICE, seed=3)
    model.compile(loss="softmax_cross_entropy", precision=precision, cuda_graph=cuda_graph)
    x = X[:, :input_dim]
    calls = [
        lambda: model.predict(x, batch_size=BATCH),
        lambda: model.predict(x, batch_size=BATCH),
        lambda: model.predict(x[:1], batch_size=BATCH),
        lambda: model.predict(x[5:8], batch_size=1),
        lambda: model.evaluate(x, Y, batch_size=BATCH),
    ]
    results, crossed = [], []
    for call in calls:
        before = _core._emulated_bytes_to_device()
        results.append(call())
        crossed.append(_core._emulated_bytes_to_device() - before)
    return results, np.array(crossed)


def _assert_same_results(got, want):
    for a, b in zip(got[0][:-1], want[0][:-1]):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    assert got[0][-1] == want[0][-1]


@pytest.mark.parametrize(("precision", "cuda_graph"), [("bf16", False), ("fp16", True)])
def test_predict_and_evaluate_stage_the_16_bit_input_and_give_the_rounded_as_staged_bits(precision, cuda_graph):
    got = _infer(_layers(), precision, rescaled=False, cuda_graph=cuda_graph)
    want = _infer(_layers(), precision, rescaled=True, cuda_graph=cuda_graph)
    _assert_same_results(got, want)
    # the same copies but the input: 2 bytes a value instead of 4
    np.testing.assert_array_equal(want[1] - got[1], np.array([X.size, X.size, 24, 3 * 24, X.size]) * 2)


@pytest.mark.parametrize("case", ["units_not_8", "input_not_8", "fp32"])
def test_inference_stages_the_16_bit_input_whatever_the_widths(case):
    precision = "fp32" if case == "fp32" else "bf16"
    input_dim = 20 if case == "input_not_8" else 24
    layers = (lambda: [cm.layers.Dense(5, activation="relu"), cm.layers.Dense(5)]) if case == "units_not_8" else _layers
    got = _infer(layers(), precision, rescaled=False, input_dim=input_dim)
    want = _infer(layers(), precision, rescaled=True, input_dim=input_dim)
    _assert_same_results(got, want)
    saved = 0 if case == "fp32" else 4 * input_dim - 2 * _half_ld(input_dim)  # a row's bytes
    np.testing.assert_array_equal(want[1] - got[1], np.array([len(X), len(X), 1, 3, len(X)]) * saved)
