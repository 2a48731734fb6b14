"""The host SIMT emulator's primitives (cuda/simt/), each through a test kernel of
cuda/simt/selftest.cpp, compared with what the CUDA programming guide specifies; and every
kernel family of cuda/ under every thread order, bit for bit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import customml
from customml import _core, ops

pytestmark = pytest.mark.skipif(
    not customml.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF"
)

ORDERS = ("forward", "reverse", "shuffled")


@pytest.fixture(params=ORDERS)
def order(request):
    _core._simt_set_thread_order(request.param, 12345)
    yield request.param
    _core._simt_set_thread_order("forward")


def run(name, values, grid, block, width):
    out = np.array(_core._simt_selftest(name, list(map(float, values)), grid, block))
    return out.reshape(-1, width) if width > 1 else out


def test_every_thread_sees_its_coordinates(order):
    grid, block = (3, 2, 2), (5, 3, 2)
    got = run("indices", [], grid, block, 6)
    want = [
        (tx, ty, tz, bx, by, bz)
        for bz in range(2)
        for by in range(2)
        for bx in range(3)
        for tz in range(2)
        for ty in range(3)
        for tx in range(5)
    ]
    assert got.shape == (len(want), 6)
    np.testing.assert_array_equal(got, np.array(want, dtype=np.float64))


def test_syncthreads_is_a_real_barrier(order):
    x = np.arange(3 * 96, dtype=np.float64)
    got = run("reverse", x, (3, 1, 1), (96, 1, 1), 1)
    want = x.reshape(3, 96)[:, ::-1].ravel()
    np.testing.assert_array_equal(got, want)


def test_a_missing_barrier_computes_a_wrong_result():
    """Without __syncthreads, a thread reads its partner's shared slot before the partner
    wrote it. Resumed in forward order, threads 0-15 of each block run to completion
    before their partners 16-31 start, so they read uninitialized shared memory (NaN);
    in reverse order it is the other half. The two orders disagree, which is what the
    emulated test runs compare."""
    x = np.arange(64, dtype=np.float64)
    want = x.reshape(2, 32)[:, ::-1].ravel()
    try:
        _core._simt_set_thread_order("forward")
        forward = run("reverse_missing_barrier", x, (2, 1, 1), (32, 1, 1), 1).reshape(2, 32)
        _core._simt_set_thread_order("reverse")
        reverse = run("reverse_missing_barrier", x, (2, 1, 1), (32, 1, 1), 1).reshape(2, 32)
    finally:
        _core._simt_set_thread_order("forward")
    want = want.reshape(2, 32)
    assert np.isnan(forward[:, :16]).all() and np.array_equal(forward[:, 16:], want[:, 16:])
    assert np.isnan(reverse[:, 16:]).all() and np.array_equal(reverse[:, :16], want[:, :16])


def test_warp_shuffles(order):
    n = 96  # three warps
    x = np.arange(n, dtype=np.float64) * 1.5 - 7
    got = run("shuffle", x, (1, 1, 1), (n, 1, 1), 6)
    lane = np.arange(n) % 32
    base = np.arange(n) - lane
    want = np.empty((n, 6))
    want[:, 0] = x[base + (lane + 3) % 32]
    want[:, 1] = np.where(lane + 5 < 32, x[np.minimum(np.arange(n) + 5, n - 1)], x)
    want[:, 2] = np.where(lane >= 2, x[np.maximum(np.arange(n) - 2, 0)], x)
    want[:, 3] = x[base + (lane ^ 9)]
    want[:, 4] = x[base + (lane & ~7) + 1]  # width 8: lane 1 of each group of 8
    want[:, 5] = np.where((lane % 16) + 3 < 16, x[np.minimum(np.arange(n) + 3, n - 1)], x)
    np.testing.assert_array_equal(got, want)


def test_warp_votes(order):
    n = 64
    rng = np.random.default_rng(3)
    x = rng.choice([-1.0, 1.0], n)
    x[32:] = 1.0  # the second warp all true
    got = run("vote", x, (1, 1, 1), (n, 1, 1), 3)
    for w in range(2):
        bits = sum(1 << lane for lane in range(32) if x[w * 32 + lane] > 0)
        rows = got[w * 32 : (w + 1) * 32]
        np.testing.assert_array_equal(rows[:, 0], bits)
        np.testing.assert_array_equal(rows[:, 1], float(bits != 0))
        np.testing.assert_array_equal(rows[:, 2], float(bits == 0xFFFFFFFF))


def test_votes_of_a_partial_warp_count_absent_lanes_as_false():
    got = run("vote", np.ones(40), (1, 1, 1), (40, 1, 1), 3)
    np.testing.assert_array_equal(got[32:, 0], 0xFF)  # lanes 0-7 of the second warp exist
    np.testing.assert_array_equal(got[32:, 2], 0.0)  # not all 32 lanes voted true


def test_a_shuffle_from_a_lane_that_took_no_part_is_refused(order):
    """On the GPU a shuffle that reads an absent lane (past the end of a partial warp) gets
    an undefined value: the emulator refuses it, where votes over the same warp are
    defined (absent lanes vote false, above)."""
    with pytest.raises(RuntimeError, match=r"warp 1 shuffled from lane ([89]|[1-3][0-9]), which took no part"):
        run("shuffle", np.arange(40), (1, 1, 1), (40, 1, 1), 6)
    run("shuffle", np.arange(64), (1, 1, 1), (64, 1, 1), 6)  # whole warps: every source took part


@pytest.mark.parametrize(
    ("offset", "ldm", "error"),
    [(0, 24, None), (16, 24, None), (8, 24, "not 256-bit aligned"), (0, 12, "ldm 12 is not a multiple of 8")],
)
def test_wmma_memory_rules_are_checked(offset, ldm, error):
    """wmma loads and stores need a 256-bit aligned pointer and a leading dimension of a
    multiple of 16 bytes; the GPU would not say so, only compute something else."""
    if error is None:
        assert run("wmma_rules", [offset, ldm], (1, 1, 1), (32, 1, 1), 1)[0] == 1.0
    else:
        with pytest.raises(RuntimeError, match=error):
            run("wmma_rules", [offset, ldm], (1, 1, 1), (32, 1, 1), 1)


def test_static_shared_memory_is_poisoned_at_each_block_start(order):
    """Uninitialized on the GPU: each block reads all bits set (NaN), never the previous
    block's values, which the emulator's one copy per OS thread would otherwise hold."""
    got = run("static_shared", np.arange(3 * 64), (3, 1, 1), (64, 1, 1), 1)
    assert np.isnan(got).all()


def test_every_static_shared_declaration_is_poisoned():
    """The emulator poisons a static __shared__ variable where the kernel says so:
    CUSTOMML_POISON_SHARED(name) after each declaration in cuda/*.cuh."""
    # (extern __shared__ is dynamic shared memory, which the emulator poisons before each block)
    declaration = re.compile(r"(?<!extern )__shared__\s+(?:__align__\(\d+\)\s+)?[\w:<>, ]+?\s+(\w+)\s*(?:\[[^;]*\])?;")
    missing = []
    for path in sorted((Path(__file__).resolve().parent.parent / "cuda").glob("*.cuh")):
        text = path.read_text()
        for m in declaration.finditer(text):
            if f"CUSTOMML_POISON_SHARED({m.group(1)});" not in text[m.end() : m.end() + 400]:
                missing.append(f"{path.name}: {m.group(1)}")
    assert not missing


def test_syncwarp_orders_shared_memory_within_a_warp(order):
    x = np.arange(64, dtype=np.float64)
    got = run("syncwarp", x, (1, 1, 1), (64, 1, 1), 1)
    lane = np.arange(64) % 32
    np.testing.assert_array_equal(got, x[np.arange(64) - lane + (lane + 1) % 32])


def test_atomics(order):
    x = np.arange(2 * 96, dtype=np.float64) - 50
    total, maximum, cas_winners = run("atomics", x, (2, 1, 1), (96, 1, 1), 1)
    assert total == x.sum()
    assert maximum == x.max()
    assert cas_winners == 1  # exactly one thread swaps the 0 out


def test_blocks_run_last_first_under_the_reverse_order(order):
    # A kernel whose result depends on which block runs or finishes first (split-K's
    # last-arriving block) meets both ends of the grid.
    got = run("block_order", [], (3, 2, 2), (4, 2, 1), 1)
    ids = np.arange(12, dtype=np.float64)
    np.testing.assert_array_equal(got, ids[::-1] if order == "reverse" else ids)


def test_dp4a():
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (32, 4))
    b = rng.integers(-128, 128, (32, 4))
    c = rng.integers(-1000, 1000, 32)

    def pack(v):
        return int(sum((int(byte) & 0xFF) << (8 * i) for i, byte in enumerate(v)))

    values = [v for i in range(32) for v in (pack(a[i]), pack(b[i]), c[i])]
    got = run("dp4a", values, (1, 1, 1), (32, 1, 1), 1)
    np.testing.assert_array_equal(got, (a * b).sum(axis=1) + c)


@pytest.mark.parametrize("kind", ["s8", "u8"])
def test_wmma_int8_fragments_are_exact(order, kind):
    """d = a b + c through 16x16x16 8-bit fragments with int accumulators: exact integer
    products and sums, b loaded col-major, and an accumulator that wraps around in int32
    (as the s32 accumulation of the instruction without .satfinite) instead of saturating."""
    rng = np.random.default_rng(7)
    lo, hi = (-128, 128) if kind == "s8" else (0, 256)
    a = rng.integers(lo, hi, (16, 16))
    b = rng.integers(lo, hi, (16, 16))
    extreme = -128 if kind == "s8" else 255  # the largest product, 2^14 or 255^2
    a[0], b[:, 0] = extreme, extreme
    c = rng.integers(-(2**20), 2**20, (16, 16))
    c[0, 0] = 2**31 - 1  # 2^31 - 1 + a[0] . b[:, 0] > 2^31 - 1 wraps to a negative sum
    c[1, 1] = -(2**31)
    values = np.concatenate([a.ravel(), b.T.ravel(), c.ravel()])
    got = run(f"wmma_{kind}", values, (1, 1, 1), (32, 1, 1), 1).reshape(16, 16)
    want = (a @ b + c + 2**31) % 2**32 - 2**31
    assert got[0, 0] < 0  # wrapped
    np.testing.assert_array_equal(got, want)


def _async_copy(mode, n=64):
    x = np.arange(5 * n, dtype=np.float64) + 1.0
    return x, run("async_copy" + mode, x, (1, 1, 1), (n, 1, 1), 11)


def test_async_copies_land_at_their_wait(order):
    """cp.async (cuda/simt/async_copy.h): a 16-byte copy (the last thread's reading 8 bytes,
    zero-filled after) lands by wait_group 1, which leaves the newer group's 4-byte copy
    pending (NaN until wait_group 0); after the barrier each thread reads its neighbour's."""
    n = 64
    x, got = _async_copy("", n)
    wide = x[: 4 * n].reshape(n, 4).copy()
    wide[-1, 2:] = 0.0  # src-size 8 of 16: zero-filled
    narrow = x[4 * n :]
    np.testing.assert_array_equal(got[:, :4], wide)
    assert np.isnan(got[:, 4]).all()  # its group was still pending: not performed
    np.testing.assert_array_equal(got[:, 5], narrow)
    np.testing.assert_array_equal(got[:, 6:10], np.roll(wide, -1, axis=0))
    np.testing.assert_array_equal(got[:, 10], np.roll(narrow, -1))


def test_reading_an_async_copy_too_early_reads_wrong_values():
    """Read before its own wait, a destination is NaN under every order; another thread's,
    read after that thread's wait but without the barrier, is NaN (not yet issued) or right
    depending on the thread order, so the emulated orders disagree as a GPU's timing would."""
    _, got = _async_copy("_read_before_wait")
    assert np.isnan(got[:, :4]).all()
    try:
        results = {}
        for order in ("forward", "reverse"):
            _core._simt_set_thread_order(order)
            x, results[order] = _async_copy("_no_barrier")
    finally:
        _core._simt_set_thread_order("forward")
    assert np.isnan(results["forward"][:-1, 6:]).all()  # the next thread has not run yet
    np.testing.assert_array_equal(results["reverse"][:-1, 10], x[4 * 64 + 1 :])  # it has


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("_uncommitted", "waits with cp.async copies issued but not committed"),
        ("_pending_at_exit", "exited with 2 cp.async copies not waited for"),
        ("_misaligned_source", "of 16 bytes is not 16-byte aligned .destination 0, source 4"),
        ("_misaligned_destination", "of 16 bytes is not 16-byte aligned .destination 4, source 0"),
        ("_source_too_long", "reads 8 source bytes, more than its 4"),
    ],
)
def test_async_copy_misuse_is_refused(mode, error):
    """What the PTX ISA forbids or leaves undefined fails the launch, naming it."""
    with pytest.raises(RuntimeError, match=error):
        _async_copy(mode)
    _async_copy("")  # the emulator is usable afterwards


def test_a_deadlock_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match=r"deadlock.*16 threads wait at __syncthreads"):
        run("deadlock", [], (1, 1, 1), (64, 1, 1), 1)
    # the emulator is usable afterwards
    np.testing.assert_array_equal(run("reverse", np.arange(32.0), (1, 1, 1), (32, 1, 1), 1), np.arange(32.0)[::-1])


def test_bad_launch_configurations():
    with pytest.raises(ValueError, match="1 to 1024 threads"):
        run("indices", [], (1, 1, 1), (1025, 1, 1), 6)
    with pytest.raises(ValueError, match="1 to 1024 threads"):
        run("indices", [], (1, 1, 1), (0, 1, 1), 6)
    with pytest.raises(ValueError, match="thread order"):
        _core._simt_set_thread_order("sideways")


def _round_bf16(x):
    """float32 -> bfloat16 (round to nearest even; NaN stays NaN) -> float32, in NumPy."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), rounded)


def _round_tf32(x):
    """float32 -> tf32 (10 explicit mantissa bits, ties away from zero, as cvt.rna) -> float32;
    inf and NaN pass through."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(x), rounded, x)


def _round_f16(x):
    """float32 -> IEEE binary16 (NumPy's cast: nearest even, subnormals, inf past 65520)."""
    with np.errstate(over="ignore"):  # the overflow to inf is the rule under test
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


ROUNDINGS = {"f16": _round_f16, "bf16": _round_bf16, "tf32": _round_tf32}


def _conversion_inputs():
    """Values around every rounding rule: ties at the kept bit's both parities, fp16's
    largest finite value and its rounding edge to inf, its normal/subnormal boundary and
    the smallest subnormals, bf16's and tf32's carries into the exponent, inf, NaN, signs."""
    rng = np.random.default_rng(8)
    specials = np.array(
        [
            0.0,
            -0.0,
            1.0,
            -1.0,
            65504.0,
            65519.99,
            65520.0,
            -65520.0,
            1e6,
            6.1035156e-05,
            6.097555e-05,
            5.9604645e-08,
            2.9802322e-08,
            2.9802326e-08,
            8.940697e-08,
            1e-10,
            1.0 + 2.0**-11,
            1.0 + 3 * 2.0**-11,
            1.0 + 2.0**-8,
            1.0 + 3 * 2.0**-8,
            3.4e38,
            -3.4e38,
            np.inf,
            -np.inf,
            np.nan,
            1.9999999,
            255.99999,
        ],
        np.float32,
    )
    bits = rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    normal = rng.standard_normal(2000).astype(np.float32) * np.float32(1000.0) ** rng.uniform(-3, 3, 2000).astype(
        np.float32
    )
    values = np.concatenate([specials, bits, normal])
    return values[~np.isnan(values) | (np.arange(values.size) < specials.size)]


@pytest.mark.parametrize("kind", ["f16", "bf16", "tf32"])
def test_half_and_tf32_conversions_round_as_the_device(kind):
    """__float2half (round to nearest even, subnormals, overflow to inf), __float2bfloat16
    (nearest even) and __float_to_tf32 (nearest, ties away) against NumPy; NaN stays NaN."""
    x = _conversion_inputs()
    got = np.array(_core._simt_selftest(f"to_{kind}", list(map(float, x)), (1, 1, 1), (1, 1, 1)), np.float32)
    want = ROUNDINGS[kind](x)
    assert got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


@pytest.mark.parametrize("kind", ["f16", "bf16", "tf32"])
def test_wmma_float_fragments(order, kind):
    """d = a b + c through 16x16 fragments of the reduced-precision types and a float
    accumulator: the operands rounded to the type (products of two such operands are exact
    in float32: at most 2 x 11 significant bits), summed in float32 along k in order from
    c, which is the emulator's specification. A real tensor core may add in another order
    and round differently (docs/performance.md: verified only on a GPU); the GEMM tests'
    tolerances allow for any order."""
    rng = np.random.default_rng(9)
    a = rng.standard_normal((16, 16)).astype(np.float32)
    b = rng.standard_normal((16, 16)).astype(np.float32)
    c = rng.standard_normal((16, 16)).astype(np.float32)
    values = np.concatenate([a.ravel(), b.ravel(), c.ravel()])
    got = np.array(run(f"wmma_{kind}", values, (1, 1, 1), (32, 1, 1), 1), np.float32).reshape(16, 16)
    ra, rb = ROUNDINGS[kind](a), ROUNDINGS[kind](b)
    want = c.copy()
    for k in range(16):
        want += ra[:, k : k + 1] * rb[k : k + 1, :]  # float32 products (exact) and sums, k in order
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, c + a @ b)  # the operands really were rounded


@pytest.mark.parametrize("trans", [False, True], ids=["plain", "trans"])
def test_ldmatrix_gives_each_lane_its_ptx_fragment(order, trans):
    """ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16 as the PTX ISA lays it out: lanes
    8i..8i+7 give the row addresses of matrix i; lane l receives in register i row l/4,
    elements 2(l%4) and 2(l%4)+1 of matrix i, the first in the low half; with .trans the
    matrix is transposed first (rows 2(l%4) and 2(l%4)+1 of column l/4). Each element in
    shared memory holds its own index."""
    name = "ldmatrix_trans" if trans else "ldmatrix"
    got = run(name, [0], (1, 1, 1), (32, 1, 1), 8).reshape(32, 4, 2)
    lane, i, h = np.arange(32)[:, None, None], np.arange(4)[None, :, None], np.arange(2)[None, None, :]
    if trans:
        want = (8 * i + 2 * (lane % 4) + h) * 8 + lane // 4
    else:
        want = (8 * i + lane // 4) * 8 + 2 * (lane % 4) + h
    np.testing.assert_array_equal(got, want)
    # 16 bytes on, every row is still aligned: each row starts 8 elements later
    np.testing.assert_array_equal(run(name, [16], (1, 1, 1), (32, 1, 1), 8).reshape(32, 4, 2), want + 8)


def test_warp_matrix_instructions_refuse_misuse():
    """What the GPU answers with wrong results or a fault, the emulator refuses: a row
    address that is not 16-byte aligned, a warp of fewer than 32 lanes (the instructions are
    .aligned), and lanes of one warp at different matrix instructions."""
    with pytest.raises(RuntimeError, match="not 16-byte aligned"):
        run("ldmatrix", [8], (1, 1, 1), (32, 1, 1), 8)
    with pytest.raises(RuntimeError, match="not every lane takes part"):
        run("ldmatrix_trans", [0], (1, 1, 1), (16, 1, 1), 8)
    values = np.ones(16 * 16 + 16 * 8 + 128)
    with pytest.raises(RuntimeError, match="not every lane takes part"):
        run("mma_bf16", values, (1, 1, 1), (24, 1, 1), 1)
    with pytest.raises(RuntimeError, match="one warp-wide instruction at a time"):
        run("mma_diverge", [16], (1, 1, 1), (32, 1, 1), 1)
    assert (run("mma_diverge", [32], (1, 1, 1), (32, 1, 1), 1) == 1).all()  # all lanes at ldmatrix: fine


def _truncate_tf32(x):
    """What GPUs are observed to read of a tf32 operand (its layout is implementation-defined
    in the PTX ISA): the top 19 bits of the float32 register."""
    return (np.asarray(x, np.float32).view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


@pytest.mark.parametrize("kind", ["f16", "bf16", "tf32"])
def test_mma_sync_fragments(order, kind):
    """mma.sync.aligned.m16n8k16 (f16, bf16) / m16n8k8 (tf32), f32 accumulators, with each
    lane's A, B and C registers taken from the matrices by the PTX ISA's fragment layout
    (cuda/simt/mma.h): d = c + the exact products added in k order in float32, the
    emulator's specification (a GPU may add in another order: the GEMM tests bound rather
    than match). A kernel with two of A's registers exchanged gets a wrong d."""
    depth = 8 if kind == "tf32" else 16
    rng = np.random.default_rng(21)
    a = rng.standard_normal((16, depth)).astype(np.float32)
    b = rng.standard_normal((depth, 8)).astype(np.float32)
    c = rng.standard_normal((16, 8)).astype(np.float32)
    values = np.concatenate([a.ravel(), b.ravel(), c.ravel()])
    got = np.array(run(f"mma_{kind}", values, (1, 1, 1), (32, 1, 1), 1), np.float32).reshape(16, 8)
    rounding = _truncate_tf32 if kind == "tf32" else ROUNDINGS[kind]
    ra, rb = rounding(a), rounding(b)
    want = c.copy()
    for k in range(depth):
        want += ra[:, k : k + 1] * rb[k : k + 1, :]
    np.testing.assert_array_equal(got, want)
    if kind == "tf32":  # the operands' low bits were dropped, not rounded
        rounded = c.copy()
        for k in range(depth):
            rounded += _round_tf32(a[:, k : k + 1]) * _round_tf32(b[k : k + 1, :])
        assert not np.array_equal(got, rounded)
    swapped = np.array(run(f"mma_{kind}_swapped", values, (1, 1, 1), (32, 1, 1), 1), np.float32).reshape(16, 8)
    assert np.abs(swapped - want).max() > 0.1


def _every_kernel_family(seed=11):
    """Every op family once on cuda-emulated, at sizes that cross the kernels' tiles and
    blocks (GEMM tiles of 64 and slices of 16, more than one reduction block, a warp and a
    block per softmax row); returns all outputs as one byte string."""
    d = "cuda-emulated"
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    outs = []
    x, w, b = f32(70, 37), f32(37, 90) * 0.2, f32(90)
    for precision in ("fp32", "tf32", "bf16", "fp16"):
        z = np.empty((70, 90), np.float32)
        y = ops.dense_forward(x, w, b, activation="gelu", preact_out=z, precision=precision, device=d)
        outs += [y, z, *ops.dense_backward(f32(70, 90), x, w, y, z=z, activation="gelu", precision=precision, device=d)]
    for classes in (10, 1025):
        logits, labels = f32(40, classes) * 3, rng.integers(0, classes, 40).astype(np.int32)
        loss, grad = ops.softmax_cross_entropy(logits, labels, label_smoothing=0.1, device=d)
        outs += [np.float64(loss), grad, np.int64(ops.count_correct(logits, labels, device=d))]
        outs.append(ops.confusion_matrix_update(np.zeros((classes, classes), np.int64), logits, labels, device=d))
    pred, target = f32(300, 120), f32(300, 120)
    for op in (ops.binary_cross_entropy_with_logits, ops.mse):
        loss, grad = op(pred, target, device=d)
        outs += [np.float64(loss), grad]
    outs.append(ops.regression_stats_update(np.zeros((4, 120)), pred, target, np.zeros(120), device=d))
    outs.append(ops.dropout(f32(40001), rate=0.3, seed=5, stream=1, device=d))
    n = 40001
    p, g, v = f32(n), f32(n), f32(n)
    ops.sgd_update(p, g, v, lr=0.1, momentum=0.9, weight_decay=0.01, no_decay=[(3, 900)], device=d)
    outs += [p, v]
    p, g, m, v2, vmax = f32(n), f32(n), f32(n), np.abs(f32(n)), np.abs(f32(n))
    ops.adam_update(p, g, m, v2, vmax, lr=1e-2, step=4, weight_decay=0.1, decoupled=True, no_decay=[(7, 31)], device=d)
    outs += [p, m, v2, vmax]
    g = f32(n)
    outs += [np.float64(ops.clip_by_global_norm(g, 1.0, device=d)), g]
    g = f32(n)
    outs += [np.float64(ops.l1_l2_penalty(f32(n), l1=0.01, l2=0.02, grad=g, device=d)), g]
    scale, zero = np.array([0.02], np.float32), np.array([128], np.int32)
    q = ops.quantize(f32(70, 40), scale, zero, device=d)
    outs += [q, ops.dequantize(q, scale, zero, device=d)]
    outs += list(ops.quantize_rows_dynamic(f32(33, 40), device=d))
    ws8 = rng.integers(-127, 128, (40, 70)).astype(np.int8)
    w_scale = (rng.random(70) * 0.01 + 1e-3).astype(np.float32)
    for rows in (1, 5, 70):  # the kernels for one row, a few (dp4a) and many (tensor cores)
        outs.append(
            ops.gemm_s8(
                q[:rows],
                ops.gemm_s8_pack(ws8, device=d),
                scale,
                zero,
                w_scale,
                bias=f32(70),
                activation="relu",
                device=d,
            )
        )
    ws = f32(64, 33) * (rng.random((64, 33)) < 0.2)
    xs = f32(70, 64)
    outs.append(ops.sparse_dense_forward(xs, *ops.csr_from_dense(ws), f32(33), activation="relu", device=d))
    outs.append(ops.sparse_dense_forward(xs[:1], *ops.csr_from_dense(ws), f32(33), device=d))
    outs.append(ops.nm_dense_forward(xs, *ops.nm_from_dense(ws), f32(33), device=d))
    outs.append(ops.feature_affine(f32(70, 13), f32(13), f32(13), device=d))
    return b"".join(np.ascontiguousarray(o).tobytes() for o in outs)


def test_every_kernel_family_gives_the_same_bits_under_every_thread_order():
    """The per-op tests run each emulated kernel under forward and reverse orders against
    the reference within a tolerance; this compares the orders with each other, bit for
    bit, for every kernel family at once: a race inside a block that stayed within a
    tolerance (a partial sum read one barrier early, say) would still show here."""
    results = {}
    try:
        for order in ORDERS:
            _core._simt_set_thread_order(order, 2024)
            results[order] = _every_kernel_family()
    finally:
        _core._simt_set_thread_order("forward")
    assert results["forward"] == results["reverse"] == results["shuffled"]
    assert results["forward"] != _every_kernel_family(seed=12)  # the bytes depend on the inputs
