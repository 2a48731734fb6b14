"""The emulator's sm_90 primitives (cuda/simt/tma.h, cuda/simt/wgmma.h) through the test
kernels of cuda/simt/selftest_sm90.cpp: wgmma's accumulator layout and shared-memory
descriptors in every canonical layout and swizzle, against layouts written here from the
PTX ISA's description; mbarrier phases and transaction counts; the TMA's tiled load with
its swizzle and zero fill; both together as a Hopper GEMM uses them; and the misuse each
refuses or turns into wrong results."""

from __future__ import annotations

import numpy as np
import pytest

import customml
from customml import _core

pytestmark = pytest.mark.skipif(
    not customml.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF"
)

SWIZZLE_CODE = {0: 0, 128: 1, 64: 2, 32: 3}  # the descriptor's bits 62-63
POISON = 0xFFFFFFFF


@pytest.fixture(params=["forward", "reverse", "shuffled"])
def order(request):
    _core._simt_set_thread_order(request.param, 777)
    yield request.param
    _core._simt_set_thread_order("forward")


def run(name, values, block=128):
    return np.array(_core._simt_selftest(name, list(map(float, values)), (1, 1, 1), (block, 1, 1)))


def accumulator_position(n):
    """(row, column) of each thread's registers of a 64 x n wgmma accumulator: thread t of
    the warpgroup (warp w = t // 32, g = lane // 4, q = lane % 4), register 4i + 2h + e holds
    row 16w + g + 8h, column 8i + 2q + e."""
    t = np.arange(128)[:, None]
    j = np.arange(n // 2)[None, :]
    rows = 16 * (t // 32) + (t % 32) // 4 + 8 * ((j // 2) % 2)
    cols = 8 * (j // 4) + 2 * (t % 4) + j % 2
    return rows, cols


def operand_address(start, leading, stride, swizzle, mn_major, mn, k, element):
    """The shared-memory byte address of element (mn, k) in a canonical layout: K-major rows
    of 16 bytes (8-row core matrices, `stride` apart, the second 16 bytes of k `leading` on)
    or, swizzled, of the pattern's width; MN-major rows of 16 bytes of mn per k (core
    matrices `stride` apart along mn, 8-k groups `leading` apart) or, swizzled, the pattern's
    width of mn per k, wider mn `leading` apart and 8-k groups `stride` apart. Then the
    swizzle: bits [4, 4+B) XOR bits [7, 7+B)."""
    span = swizzle or 16
    if not mn_major:
        kb = k * element
        if swizzle == 0:
            at = start + (mn % 8) * 16 + (mn // 8) * stride + (kb // 16) * leading + kb % 16
        else:
            at = start + (mn % 8) * span + (mn // 8) * stride + kb
    else:
        mb = mn * element
        if swizzle == 0:
            at = start + (mb // 16) * stride + (k % 8) * 16 + (k // 8) * leading + mb % 16
        else:
            at = start + mb % span + (mb // span) * leading + (k % 8) * span + (k // 8) * stride
    if swizzle:
        at ^= ((at >> 7) & (span // 16 - 1)) << 4
    return at


def layout_for(rows, swizzle, mn_major, element, base, k_offset):
    """(start, leading, stride) of a compact canonical layout for a rows x (32 bytes of k)
    operand at `base` (k_offset: bytes into a swizzled pattern's row, as a k loop advances)."""
    span = swizzle or 16
    if not mn_major:
        if swizzle == 0:
            return base, 8 * 16 * rows // 8, 128
        return base + k_offset, 16, 8 * span
    mn_bytes = rows * element
    if swizzle == 0:
        return base, 128 * (mn_bytes // 16), 128
    blocks = max(1, mn_bytes // span)
    return base, 8 * span, 8 * span * blocks


def bits_of(x, kind):
    x = np.asarray(x, np.float32)
    if kind == "tf32":
        return x.view(np.uint32).astype(np.uint64)
    if kind == "f16":
        return x.astype(np.float16).view(np.uint16).astype(np.uint64)
    return (x.view(np.uint32) >> 16).astype(np.uint64)  # exact in bf16 by construction


def wgmma_case(kind, n, trans_a, trans_b, swizzle, rng, k_offset=0, mode=0, accumulate=True):
    element = 4 if kind == "tf32" else 2
    depth = 32 // element
    # Small multiples of 1/4: exact in every format, their products and sums exact in float32,
    # so D does not depend on the order of the sum.
    a = rng.integers(-8, 9, (64, depth)).astype(np.float32) / 4
    b = rng.integers(-8, 9, (n, depth)).astype(np.float32) / 4
    c = rng.integers(-8, 9, (64, n)).astype(np.float32)
    image = np.full(40960, 0xFF, np.uint8)  # unwritten bytes read as NaN
    layouts = []
    for matrix, base, mn_major in ((a, 0, trans_a), (b, 16384, trans_b)):
        start, leading, stride = layout_for(matrix.shape[0], swizzle, mn_major, element, base, k_offset)
        bits = bits_of(matrix, kind)
        if kind == "tf32":  # low mantissa bits the tensor core does not read (cuda/simt/mma.h)
            bits |= rng.integers(0, 1 << 13, bits.shape).astype(np.uint64)
        seen = set()
        for mn in range(matrix.shape[0]):
            for k in range(depth):
                at = operand_address(start, leading, stride, swizzle, mn_major, mn, k, element)
                assert at not in seen and at + element <= image.size
                seen.add(at)
                image[at : at + element] = np.frombuffer(int(bits[mn, k]).to_bytes(element, "little"), np.uint8)
        layouts += [start, leading, stride, SWIZZLE_CODE[swizzle]]
    rows, cols = accumulator_position(n)
    head = [int(trans_a), int(trans_b), *layouts, int(accumulate), mode]
    values = np.concatenate([head, c[rows, cols].ravel(), image.view(np.uint32)])
    want = a @ b.T + (c if accumulate else 0)
    return values, want, c


def run_wgmma(kind, n, values, block=128):
    return run(f"sm90_wgmma_{kind}_n{n}", values, block).reshape(-1, n // 2)


@pytest.mark.parametrize("swizzle", [0, 32, 64, 128])
@pytest.mark.parametrize(("trans_a", "trans_b"), [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("n", [8, 64])
def test_wgmma_bf16_reads_every_canonical_layout(order, n, trans_a, trans_b, swizzle):
    """m64nNk16 bf16 with A and B K-major or MN-major in every swizzle: D = C + A B^T in
    the accumulator layout."""
    rng = np.random.default_rng(n + 2 * trans_a + 4 * trans_b + swizzle)
    k_offset = 32 if swizzle >= 64 else 0  # a k step into the pattern's row
    values, want, _ = wgmma_case("bf16", n, trans_a, trans_b, swizzle, rng, k_offset)
    got = run_wgmma("bf16", n, values)
    rows, cols = accumulator_position(n)
    np.testing.assert_array_equal(got, want[rows, cols])


@pytest.mark.parametrize(("kind", "trans_b", "swizzle"), [("f16", True, 64), ("f16", False, 0), ("tf32", False, 128)])
def test_wgmma_f16_and_tf32(kind, trans_b, swizzle):
    """f16 (either major) and tf32 (K-major only; the low 13 bits of each operand ignored)."""
    rng = np.random.default_rng(5)
    values, want, _ = wgmma_case(kind, 64, False, trans_b, swizzle, rng)
    rows, cols = accumulator_position(64)
    np.testing.assert_array_equal(run_wgmma(kind, 64, values), want[rows, cols])


def test_wgmma_without_accumulate_and_chained():
    """scale-d 0 ignores the registers' old values; two wgmmas in flight into the same
    registers chain (D = C + 2 A B)."""
    rng = np.random.default_rng(8)
    rows, cols = accumulator_position(64)
    values, want, c = wgmma_case("bf16", 64, False, False, 128, rng, accumulate=False)
    np.testing.assert_array_equal(run_wgmma("bf16", 64, values), want[rows, cols])
    values, want, c = wgmma_case("bf16", 64, False, False, 128, rng, mode=1)
    np.testing.assert_array_equal(run_wgmma("bf16", 64, values), (2 * (want - c) + c)[rows, cols])


def test_a_wrong_descriptor_gives_wrong_results():
    """The operands laid out with 128-byte swizzle but described without it (or with the
    64-byte one) read other elements: the emulator really applies the descriptor."""
    rng = np.random.default_rng(9)
    values, want, _ = wgmma_case("bf16", 64, False, False, 128, rng)
    rows, cols = accumulator_position(64)
    for code in (0, 2):
        wrong = values.copy()
        wrong[5] = wrong[9] = code
        got = run_wgmma("bf16", 64, wrong)
        assert not np.array_equal(got, want[rows, cols])


@pytest.mark.parametrize(
    ("mode", "block", "error"),
    [
        (2, 128, "no wgmma.fence"),
        (4, 128, "not committed"),
        (5, 128, "exited with 1 wgmma.mma_async not waited for"),
        (6, 128, "wrote accumulator registers"),
        (7, 128, "differs from what another thread of warpgroup 0"),
        (8, 128, "the thread wrote them meanwhile"),  # d *= 2 between two chained wgmmas
        (9, 128, "written after the last wgmma.fence"),
        (10, 128, "operand shared memory changed while the wgmma was in flight"),
        (11, 128, "written by generic stores with no fence.proxy.async since"),
        (0, 96, "warpgroup is partial"),
    ],
)
def test_wgmma_misuse_is_refused(mode, block, error):
    values, _, _ = wgmma_case("bf16", 8, False, False, 0, np.random.default_rng(1), mode=mode)
    if block != 128:
        values = np.concatenate([values[:12], values[12 : 12 + block * 4], values[12 + 128 * 4 :]])
    with pytest.raises(RuntimeError, match=error):
        run_wgmma("bf16", 8, values, block)


@pytest.mark.parametrize(("swizzle", "skip"), [(128, 128), (128, 896), (64, 256), (32, 128)])
def test_a_swizzled_start_off_the_pattern_repeat_is_refused(swizzle, skip):
    """With base offset 0, a swizzled operand's start may step k inside a pattern row
    (address bits 4-6, the test above) but not rows into the pattern (bits 7 up to its
    repeat): the GPU would swizzle relative to the repeat, not to the address."""
    values, _, _ = wgmma_case("bf16", 8, False, False, swizzle, np.random.default_rng(3))
    values[2] += skip  # A's start
    with pytest.raises(RuntimeError, match=f"not on its swizzle pattern's {8 * swizzle}-byte repeat"):
        run_wgmma("bf16", 8, values)


def _sw128(at):
    return at ^ (((at >> 7) & 7) << 4)


def _cutlass_tile(rows, mn_major):
    """Byte offsets of a rows x 64 (k) bf16 tile built from CUTLASS's 128-byte swizzle atoms
    (cute's GMMA::Layout_K_SW128_Atom / Layout_MN_SW128_Atom tiled over the tile): K-major,
    rows of 64 k (128 bytes), 8-row atoms 1024 bytes apart; MN-major, 64 mn (128 bytes) per
    k, 8-k atoms 1024 bytes apart, 64-mn blocks 64 k x 128 bytes = 8192 apart."""
    mn = np.arange(rows)[:, None]
    k = np.arange(64)[None, :]
    if mn_major:
        return _sw128((mn % 64) * 2 + (k % 8) * 128 + (k // 8) * 1024 + (mn // 64) * 8192)
    return _sw128((mn % 8) * 128 + (mn // 8) * 1024 + k * 2)


@pytest.mark.parametrize("step", [0, 3])
@pytest.mark.parametrize(("trans_a", "trans_b"), [(False, False), (False, True), (True, True)])
def test_descriptors_as_cutlass_builds_them(trans_a, trans_b, step):
    """The descriptor values CUTLASS's make_gmma_desc gives for those tiles (m64n128k16, bf16,
    k step `step` of 4): K-major SW128: SBO 1024, LBO 16 (unused), start + 32 bytes per k
    step; MN-major SW128: SBO 1024 (the next 8 k), LBO 8192 (the next 64 mn), start + 2048
    per k step. B's 128 columns span two 64-mn blocks, so an MN-major B reads through LBO."""
    rng = np.random.default_rng(10 + step)
    n = 128
    a = rng.integers(-8, 9, (64, 64)).astype(np.float32) / 4
    b = rng.integers(-8, 9, (n, 64)).astype(np.float32) / 4
    c = rng.integers(-8, 9, (64, n)).astype(np.float32)
    image = np.full(40960, 0xFF, np.uint8)
    head = [int(trans_a), int(trans_b)]
    for matrix, base, mn_major in ((a, 0, trans_a), (b, 16384, trans_b)):
        at = base + _cutlass_tile(matrix.shape[0], mn_major)
        bits = bits_of(matrix, "bf16")
        image[at] = bits & 0xFF
        image[at + 1] = bits >> 8
        head += [base + 2048 * step, 8192, 1024, 1] if mn_major else [base + 32 * step, 16, 1024, 1]
    rows, cols = accumulator_position(n)
    values = np.concatenate([head, [1, 0], c[rows, cols].ravel(), image.view(np.uint32)])
    ks = slice(16 * step, 16 * step + 16)
    want = a[:, ks] @ b[:, ks].T + c
    np.testing.assert_array_equal(run_wgmma("bf16", n, values), want[rows, cols])


def test_reading_accumulators_before_the_wait_reads_nan():
    values, _, _ = wgmma_case("bf16", 8, False, False, 0, np.random.default_rng(2), mode=3)
    assert np.isnan(run_wgmma("bf16", 8, values)).all()


def _swizzled_box(matrix, row, column, box_rows, box_columns, swizzle):
    """The bytes a TMA load leaves in shared memory: the box (zeros outside the matrix),
    each row the box's width (or the swizzle's), 16-byte chunks XOR-swizzled by address."""
    rows, cols = matrix.shape
    box = np.zeros((box_rows, box_columns), matrix.dtype)
    for r in range(box_rows):
        for col in range(box_columns):
            gr, gc = row + r, column + col
            if 0 <= gr < rows and 0 <= gc < cols:
                box[r, col] = matrix[gr, gc]
    linear = box.view(np.uint8).reshape(-1)
    if not swizzle:
        return linear
    out = np.empty_like(linear)
    for at in range(linear.size):
        out[at ^ (((at >> 7) & (swizzle // 16 - 1)) << 4)] = linear[at]
    return out


def _tma(matrix, box_rows, box_columns, swizzle, column, row, mode=0, dst=1024):
    rows, cols = matrix.shape
    head = [rows, cols, matrix.dtype.itemsize, box_rows, box_columns, swizzle, column, row, dst, mode]
    words = np.ascontiguousarray(matrix).view(np.uint32).ravel()
    return run("sm90_tma", np.concatenate([head, words])).astype(np.uint64)


@pytest.mark.parametrize(
    ("dtype", "box", "swizzle", "at"),
    [
        (np.float32, (8, 8), 32, (0, 0)),
        (np.float32, (16, 16), 64, (20, 13)),  # past the bottom and right edges
        (np.float16, (8, 64), 128, (-3, -5)),  # negative coordinates: zeros before the edge
        (np.float32, (5, 12), 0, (1, 30)),
    ],
)
def test_tma_load_lands_swizzled_with_zero_fill(order, dtype, box, swizzle, at):
    rng = np.random.default_rng(4)
    matrix = (rng.standard_normal((24, 40)) + 3).astype(dtype)
    row, column = at
    got = _tma(matrix, *box, swizzle, column, row)
    want = _swizzled_box(matrix, row, column, *box, swizzle).view(np.uint32)
    np.testing.assert_array_equal(got, want)


def test_an_mbarrier_runs_phase_after_phase():
    """The same barrier for a second load: its second phase (parity 1) completes when the
    second box lands."""
    matrix = np.arange(24 * 40, dtype=np.float32).reshape(24, 40)
    got = _tma(matrix, 8, 8, 32, 3, 2, mode=1)
    np.testing.assert_array_equal(got, _swizzled_box(matrix, 3, 11, 8, 8, 32).view(np.uint32))


@pytest.mark.parametrize("mode", [2, 3], ids=["read_before_wait", "wrong_parity"])
def test_reading_a_tma_box_before_its_phase_completes_reads_nan(mode):
    """Before the wait, or after a wait for the parity of the phase before (which returns
    at once, as on the GPU), the destination holds NaN."""
    matrix = np.ones((24, 40), np.float32)
    got = _tma(matrix, 8, 8, 32, 0, 0, mode=mode)
    assert (got == POISON).all()


@pytest.mark.parametrize(
    ("mode", "dst", "error"),
    [
        (4, 1024, "exited with 1 tensor copies in flight"),  # no expect_tx: the phase completed early
        (5, 1024, "deadlock.*128 at an mbarrier wait"),  # expected more bytes than arrive
        (6, 1024, "transaction count went negative"),
        (7, 1024, "holds no mbarrier"),
        (0, 1024 + 128, "not 256-byte aligned"),  # a 32-byte swizzle's pattern repeats every 256 bytes
    ],
)
def test_tma_and_mbarrier_misuse_is_refused(mode, dst, error):
    matrix = np.ones((24, 40), np.float32)
    with pytest.raises(RuntimeError, match=error):
        _tma(matrix, 8, 8, 32, 0, 0, mode=mode, dst=dst)


def test_tensor_maps_refuse_what_the_driver_refuses():
    with pytest.raises(ValueError, match="row stride must be a multiple of 16"):
        _tma(np.ones((24, 30), np.float16), 8, 8, 0, 0, 0)
    with pytest.raises(ValueError, match="box's rows must be a multiple of 16 bytes"):
        _tma(np.ones((24, 40), np.float32), 8, 6, 0, 0, 0)
    with pytest.raises(ValueError, match="swizzle's width"):
        _tma(np.ones((24, 40), np.float32), 8, 16, 128, 0, 0)


@pytest.mark.parametrize(("kind", "mn"), [("bf16", False), ("bf16", True), ("tf32", False)])
def _tma_wgmma(kind, mn, mode=0, seed=6):
    """A (64 x k) and B by TMA into 128-byte swizzled stages, then wgmma along k (the
    selftest's modes: 0 right, 1 the mbarrier wait after the wgmmas, 2 the stage refilled
    while they are in flight, 3 right, the stage loaded again after a __syncthreads); D and the operands as the GPU reads them."""
    rng = np.random.default_rng(seed)
    element = 4 if kind == "tf32" else 2
    depth = 128 // element
    a = rng.standard_normal((64, depth)).astype(np.float32)
    b = rng.standard_normal((depth, 64)).astype(np.float32)  # k x n
    if kind == "bf16":
        a = (a.view(np.uint32) & 0xFFFF0000).view(np.float32)
        b = (b.view(np.uint32) & 0xFFFF0000).view(np.float32)
        store = lambda x: (x.view(np.uint32) >> 16).astype(np.uint16)  # noqa: E731
        ra, rb = a, b
    else:
        store = lambda x: x  # noqa: E731
        ra = (a.view(np.uint32) & 0xFFFFE000).view(np.float32)
        rb = (b.view(np.uint32) & 0xFFFFE000).view(np.float32)
    b_stored = store(b) if mn else store(np.ascontiguousarray(b.T))
    words = np.concatenate([np.ascontiguousarray(store(a)).view(np.uint32).ravel(), b_stored.view(np.uint32).ravel()])
    name = f"sm90_tma_wgmma_{kind}" + ("_mn" if mn else "")
    got = run(name, np.concatenate([[depth, 64, mode], words])).reshape(64, 64).astype(np.float32)
    return got, ra, rb


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        (1, "operand shared memory changed while the wgmma was in flight"),
        (2, "overwrites shared bytes 1024 to 9216 that thread 0's wgmma number 0 reads"),
    ],
    ids=["mbarrier_wait_after_the_wgmma", "stage_refilled_in_flight"],
)
def test_operands_changing_under_a_wgmma_in_flight_are_refused(mode, error):
    """wgmma reads its shared operands any time between issue and the wait_group covering
    it: a TMA that lands in between is refused at the wait, not computed with whichever
    contents the emulator happened to read; a refill that starts in between, at its issue."""
    with pytest.raises(RuntimeError, match=error):
        _tma_wgmma("bf16", True, mode)


@pytest.mark.parametrize(("kind", "mn"), [("bf16", False), ("bf16", True), ("tf32", False)])
def test_tma_then_wgmma_computes_the_product(order, kind, mn):
    """A (64 x k) and B by TMA into 128-byte swizzled stages, then wgmma along k in 32-byte
    steps (the descriptor's start advanced inside the pattern's row, or by 8-k groups for an
    MN-major B): D = A B, each element summed in k order in float32."""
    got, ra, rb = _tma_wgmma(kind, mn)
    depth = ra.shape[1]
    want = np.zeros((64, 64), np.float32)
    for k in range(depth):
        want += ra[:, k : k + 1] * rb[k : k + 1, :]
    np.testing.assert_array_equal(got, want)


def _to_16(x, f16):
    x = np.asarray(x, np.float32)
    if f16:
        return x.astype(np.float16).astype(np.float64)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return rounded.view(np.float32).astype(np.float64)


ACTIVATIONS = {
    0: lambda v: v,
    1: lambda v: np.maximum(v, 0),
    2: lambda v: 1 / (1 + np.exp(-v)),
    4: lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3))),
}


def _wgmma_gemm(m, n, k, act=0, bias=True, preact=True, f16=False, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    head = [m, n, k, act, int(bias), int(preact), int(f16)]
    out = run("sm90_gemm", np.concatenate([head, x.ravel(), w.ravel(), b]), block=1)
    c = out[: m * n].reshape(m, n)
    z = out[m * n :].reshape(m, n) if preact else None
    xa, wa = _to_16(x, f16), _to_16(w, f16)
    want_z = xa @ wa + (b if bias else 0)
    # The operands are the rounded 16-bit values (the kernel reads nothing else); their
    # products are exact in float32 and summed in float32 (any order on the GPU): at most
    # k roundings of 2^-24 relative to the sum of |products|, plus the bias's addition.
    bound = (k + 2) * 2.0**-24 * (np.abs(xa) @ np.abs(wa) + (np.abs(b) if bias else 0)) + 1e-30
    return c, z, want_z, bound


@pytest.mark.parametrize(
    ("m", "n", "k"),
    [(128, 128, 256), (1, 8, 8), (129, 120, 64), (127, 136, 200), (65, 264, 520)],
    ids=["one_tile", "tiny", "row_edge", "edges", "ring_wraps"],
)
def test_wgmma_gemm_matches_numpy(m, n, k):
    """gemm_wgmma_kernel (TMA ring, wgmma, store_c's epilogue) on bf16 operands: tile edges
    +-1, k across the ring of stages more than once (the mbarriers' parity flips); C's
    elements all written (NaN before)."""
    c, z, want_z, bound = _wgmma_gemm(m, n, k)
    assert np.all(np.abs(z - want_z) <= bound)
    assert np.all(np.abs(c - want_z) <= bound)  # identity


@pytest.mark.parametrize("act", [1, 2, 4], ids=["relu", "sigmoid", "gelu"])
def test_wgmma_gemm_epilogue(order, act):
    """Bias, preact and activation as gemm_tc_kernel's epilogue; fp16 for one activation.
    The activations' slopes are at most 1.13 (gelu), so the preact's bound carries over."""
    c, z, want_z, bound = _wgmma_gemm(130, 72, 96, act=act, f16=act == 2, seed=act)
    assert np.all(np.abs(z - want_z) <= bound)
    assert np.all(np.abs(c - ACTIVATIONS[act](want_z)) <= 1.13 * bound + 1e-7)


@pytest.mark.parametrize(
    ("sm90", "precision", "shape", "offset", "taken"),
    [
        (True, 2, (4096, 4096, 4096), 0, True),
        (True, 3, (1536, 2816, 256), 0, True),  # 12 x 11 = 132 tiles of 128 x 256: one wave
        (False, 2, (4096, 4096, 4096), 0, False),  # not a Hopper: the sm_80 kernel
        (True, 1, (4096, 4096, 4096), 0, False),  # tf32: wgmma's tf32 needs a K-major B, W is N-major
        (True, 2, (1536, 2560, 256), 0, False),  # 120 tiles: fewer than the SMs
        (True, 2, (4096, 4096, 248), 0, False),  # k short of the ring of stages
        (True, 2, (128, 256, 784), 0, False),  # the README MLP's first layer: 2 tiles
        (True, 2, (4096, 4100, 4096), 0, True),  # W's twin's rows padded to 4104 (half_ld): the TMA takes them
        (True, 2, (4096, 4096, 4096), 4, False),  # operands not 16-byte aligned
    ],
)
def test_the_wgmma_kernel_is_chosen_where_it_pays_off(sm90, precision, shape, offset, taken):
    """cuda/gemm_wgmma.cuh's wgmma_path, which gemm() asks first: Hopper, bf16 / fp16,
    operands the TMA takes, at least a wave of tiles and k for the ring; else sm_80's."""
    assert run("sm90_path", [int(sm90), precision, *shape, offset], block=1)[0] == float(taken)


def _ring(mode, slices=5, seed=8):
    """The selftest's warp-specialized ring (a producer warpgroup, one consumer warpgroup,
    2 stages with full and empty mbarriers): D = A B over k = 64 slices, A (64 x k) and B
    (k x 64) bf16; D and the float32 sum in k order."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((64, 64 * slices)).astype(np.float32)
    b = rng.standard_normal((64 * slices, 64)).astype(np.float32)
    a = (a.view(np.uint32) & 0xFFFF0000).view(np.float32)
    b = (b.view(np.uint32) & 0xFFFF0000).view(np.float32)
    store = lambda x: np.ascontiguousarray((x.view(np.uint32) >> 16).astype(np.uint16)).view(np.uint32).ravel()  # noqa: E731
    got = run("sm90_ring", np.concatenate([[slices, mode], store(a), store(b)]), block=256)
    want = np.zeros((64, 64), np.float32)
    for k in range(64 * slices):
        want += a[:, k : k + 1] * b[k : k + 1, :]
    return got.reshape(64, 64).astype(np.float32), want


def test_a_stage_reloaded_after_a_barrier_is_ordered(order):
    """The same stage loaded again once every thread's wait_group is behind a __syncthreads
    (the barrier tells the issuing thread that the others' wgmmas completed): accepted, D
    as before (the order check's other side: a copy after a block-wide barrier)."""
    got, ra, rb = _tma_wgmma("bf16", True, 3)
    want = np.zeros((64, 64), np.float32)
    for k in range(ra.shape[1]):
        want += ra[:, k : k + 1] * rb[k : k + 1, :]
    np.testing.assert_array_equal(got, want)


def test_a_producer_waiting_on_the_wrong_parity_deadlocks(order):
    """A fresh empty barrier has completed only the phase "before" its first (parity 1): a
    producer that waits for parity 0 on its first pass waits for consumers that wait for
    it, which the GPU hangs on and the emulator reports."""
    with pytest.raises(RuntimeError, match="deadlock"):
        _ring(3)


def test_a_warp_specialized_ring_computes_the_product(order):
    """An elected producer thread refills each stage after the consumers' arrivals on its
    empty mbarrier complete a phase (the first pass waiting for parity 1, which a fresh
    barrier has completed), 5 slices through 2 stages: D = A B exactly as the k-order sum."""
    got, want = _ring(0)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", [1, 2], ids=["release_before_the_wait_group", "release_of_the_slice_in_flight"])
def test_a_stage_refilled_before_its_consumers_released_it_is_refused(order, mode):
    """A tensor copy into a stage must be ordered after every wgmma reading it (the reader's
    wait_group, its arrive, the producer's wait on that phase). A consumer that arrives
    before its wait_group leaves no trace in the results here (the emulator completes the
    wgmma at the wait, before the producer runs): refused at the copy's issue, naming the
    reader; so is a release of the slice still in flight (which the operands' check at the
    wait catches too). A refill with no wait at all arrives twice in a full barrier's phase,
    refused as such (test_tma_and_mbarrier_misuse_is_refused's kind)."""
    with pytest.raises(RuntimeError, match=r"overwrites shared bytes \d+ to \d+ that thread \d+'s wgmma number"):
        _ring(mode)


def test_setmaxnreg_moves_registers_from_the_producer_to_the_consumers(order):
    """384 threads start with 168 registers each; the producer warpgroup's .dec to 40 frees
    what the consumers' .inc to 232 takes (under the reverse order the consumers ask first
    and wait for the pool)."""
    assert run("sm90_setmaxnreg", [0], block=384).tolist() == [1.0] * 384


@pytest.mark.parametrize(
    ("mode", "block", "error"),
    [
        (1, 384, "deadlock.*setmaxnreg.inc"),
        (2, 384, "236 registers .24 to 256 in steps of 8"),
        (3, 384, "differs from warpgroup 1's setmaxnreg number 0"),
        (4, 384, "to fewer registers .160. than the warp holds .168"),
        (5, 384, "to more registers .176. than the warp holds .168"),
        (0, 320, "its warpgroup is partial"),
    ],
    ids=["more_than_the_pool", "odd_count", "warps_differ", "inc_below", "dec_above", "partial_warpgroup"],
)
def test_setmaxnreg_misuse_is_refused(order, mode, block, error):
    """What the GPU would hang on (an .inc the pool can never give: 256 x 72 > 128 x 128) or
    leave undefined (a count off the 8-register steps, warps of one warpgroup asking
    differently, .inc below or .dec above what the warp holds, a partial warpgroup)."""
    with pytest.raises(RuntimeError, match=error):
        run("sm90_setmaxnreg", [mode], block=block)


def test_elect_one_sync_elects_one_lane_a_warp(order):
    """One lane of each warp (a partial last one too), which one left open: the first in the
    thread order, so a kernel that assumes lane 0 meets lane 31 under the reverse order."""
    got = run("sm90_elect", [], block=80)
    warps = [got[0:32], got[32:64], got[64:80]]
    assert [w.sum() for w in warps] == [1, 1, 1]
    lanes = [int(w.argmax()) for w in warps]
    if order == "forward":
        assert lanes == [0, 0, 0]
    elif order == "reverse":
        assert lanes == [31, 31, 15]
