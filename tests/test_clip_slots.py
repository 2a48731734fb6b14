"""Global-norm clipping without a launch of its own (issue 22; docs/decisions.md, "Clipping's
norm comes from the weight-gradient tiles"), on cuda-emulated: the backward's weight-gradient
tiles (a GEMV warp each on that path) leave the sums of squares of the dW and db values they
store in slots, and the update adds the slots in slot order before it scales the gradients.

What is checked, against the gradients the step computed (read back: the update scales them
as it reads them, so they are still the backward's):
- each slot is the float64 sum of squares of exactly its tile's elements (so none is skipped,
  taken twice or left from the step before): a slot adds at most T = 64 * 64 exact squares
  (a float32 square is exact in float64) in double, so it errs by at most (T - 1) u of its
  sum, u = 2^-53 (first order; every term is >= 0);
- the slots' sum against the exact (math.fsum) sum of squares of every gradient: S slots
  added in any order after that, at most (T + S) u of it;
- the clipped step against the CPU's clip_by_global_norm and sgd_update on the same
  gradients: both norms are within ~(T + S) u of the exact one (the CPU's sums 8-lane
  partials in double), so each clip factor is within ~1e-12 of the other and g * factor
  rounds to the same float32 or to its neighbour: the weights differ by at most
  lr * spacing(g * factor) + spacing(lr * g * factor) + spacing(w);
- the same slots and weights, bit for bit, under every thread order of the emulator;
- the steps that keep a norm pass of their own (fp16, data parallelism) leave no slots; a
  penalty does not (its gradient is in what dW's store stores, so in the slots: the
  "penalties" shape).

The shapes cross the tiles' edges (63, 64, 65 columns, db's extra row), batch 1 (the top
layer takes the GEMV: 10 outputs, and its input gradient's one row), the GEMV for every
layer (16 outputs or fewer, inputs too where there is an input gradient) and the tensor
cores (bf16)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import customml as cm
from customml import _core, ops
from test_gemm_paths import tiling

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")

_U = 2.0**-53
# cuda/dense.cu's tiling of C (db's row included): test_gemm_paths.tiling's tiles (64 x 64,
# or smaller for a split launch under 132 blocks); the float32 GEMV (every product of a
# launch of at most 4 rows or 16 columns) a warp per column of 4 rows.
_GEMV_ROWS = 4
_LR, _MAX_NORM = 0.25, 1e-3

# (input width, layer widths, batch, precision)
_SHAPES = {
    "tile edges": (65, (64, 63, 17), 70, "fp32"),
    "batch 1": (65, (130, 64, 10), 1, "fp32"),
    "gemv": (20, (12, 7), 9, "fp32"),
    "tensor cores": (65, (64, 65, 10), 70, "bf16"),
    "penalties": (65, (64, 63, 17), 70, "fp32"),
}
# Kernel regularizers on every layer of the "penalties" shape: l1, l2 and both.
_PENALTIES = {"penalties": (cm.regularizers.l1(1e-2), cm.regularizers.l2(2e-2), cm.regularizers.l1_l2(1e-2, 1e-2))}


def _fit(case, steps=2, order=None, **compile_args):
    input_dim, widths, batch, precision = _SHAPES[case]
    regs = _PENALTIES.get(case, (None,) * len(widths))
    layers = [cm.layers.Dense(u, "relu", kernel_regularizer=r) for u, r in zip(widths[:-1], regs)]
    layers.append(cm.layers.Dense(widths[-1], kernel_regularizer=regs[len(widths) - 1]))
    model = cm.Sequential(layers, input_dim=input_dim, device="cuda-emulated", seed=2)
    model.compile(
        optimizer=cm.optimizers.SGD(_LR), loss="softmax_cross_entropy", precision=precision,
        **{"clipnorm": _MAX_NORM, **compile_args},
    )  # fmt: skip
    rng = np.random.default_rng(4)
    x = rng.standard_normal((steps * batch, input_dim)).astype(np.float32)
    y = rng.integers(0, widths[-1], steps * batch).astype(np.int32)
    if order:
        _core._simt_set_thread_order(*order)
    try:
        # the last step's weights before it, then after it
        model.fit(x[: (steps - 1) * batch], y[: (steps - 1) * batch], batch_size=batch, shuffle=False, verbose=0)
        before = [w.copy() for w in model.get_weights()]
        model.fit(x[(steps - 1) * batch :], y[(steps - 1) * batch :], batch_size=batch, shuffle=False, verbose=0)
    finally:
        if order:
            _core._simt_set_thread_order("forward")
    grad = np.empty(model._net.num_params, np.float32)
    model._net.read_gradients(grad)
    return model, before, grad, np.asarray(model._net._read_norm_slots())


def _tiles(c, tile):
    """c (rows, n), db's row last: its slots' elements, in slot order (tile: (rows, columns),
    or None for the GEMV)."""
    rows, n = c.shape
    if tile is None:
        return [c[r : r + _GEMV_ROWS, col] for r in range(0, rows, _GEMV_ROWS) for col in range(n)]
    tr, tc = tile
    return [c[r : r + tr, q : q + tc] for r in range(0, rows, tr) for q in range(0, n, tc)]


def _expected_slots(shape, grad):
    """The slots' elements, top layer first, each layer's C = [dW; db] as the backward
    stores it (dW (in, out) then db (out) in the flat gradient, layer by layer)."""
    input_dim, widths, batch, precision = shape
    ins = (input_dim,) + widths[:-1]
    offsets = np.cumsum([0] + [i * o + o for i, o in zip(ins, widths)])
    slots = []
    for layer in reversed(range(len(widths))):
        i, o = ins[layer], widths[layer]
        c = grad[offsets[layer] : offsets[layer + 1]].reshape(i + 1, o)
        dx = layer > 0  # the lowest layer computes no input gradient
        path, tr, tc, _ = tiling([(i + 1, o, batch)] + ([(batch, i, o)] if dx else []), precision == "fp32")
        slots += _tiles(c, None if path == "gemv" else (tr, tc))
    return slots


def _exact(values):
    return math.fsum(float(v) ** 2 for v in np.asarray(values, np.float64).ravel())


@pytest.mark.parametrize("case", sorted(_SHAPES))
def test_each_slot_holds_its_tiles_sum_of_squares(case):
    shape = _SHAPES[case]
    _, _, grad, slots = _fit(case)
    expected = _expected_slots(shape, grad)
    assert len(slots) == len(expected)
    gemv_slots = sum(t.ndim == 1 for t in expected)
    assert gemv_slots == (len(expected) if case == "gemv" else 10 * 17 if case == "batch 1" else 0)
    for s, (got, tile) in enumerate(zip(slots, expected)):
        want = _exact(tile)
        assert abs(got - want) <= (tile.size - 1) * _U * want, f"slot {s}: {got!r}, its tile's {want!r}"
    total = math.fsum(float(v) for v in grad.astype(np.float64) ** 2)
    bound = (64 * 64 + len(slots)) * _U * total  # a slot's tile is at most 64 x 64
    assert abs(sum(slots) - total) <= bound
    assert np.sqrt(total) > 10 * _MAX_NORM  # the step clipped


@pytest.mark.parametrize("case", sorted(_SHAPES))
def test_the_clipped_step_is_the_cpus_within_a_rounding(case):
    model, before, grad, slots = _fit(case)
    assert len(slots) > 0
    params = np.concatenate([w.ravel() for w in before])
    clipped = grad.copy()
    norm = ops.clip_by_global_norm(clipped, _MAX_NORM, device="cpu")
    assert norm > 10 * _MAX_NORM
    want = params.copy()
    ops.sgd_update(want, clipped, lr=_LR, device="cpu")
    model_params = np.concatenate([w.ravel() for w in model.get_weights()])
    step = np.float32(_LR) * np.abs(clipped)
    tol = np.float32(_LR) * np.spacing(np.abs(clipped)) + np.spacing(step) + np.spacing(np.abs(want))
    err = np.abs(model_params.astype(np.float64) - want)
    assert np.all(err <= tol), f"worst {err.max()} (tolerance there {tol[err.argmax()]})"
    assert np.mean(model_params == want) > 0.99  # mostly the same bits: the factors agree closely


@pytest.mark.parametrize("case", ["tile edges", "batch 1"])
def test_every_thread_order_gives_the_same_slots_and_weights(case):
    runs = []
    for order in (("forward",), ("reverse",), ("shuffled", 1), ("shuffled", 2)):
        model, _, _, slots = _fit(case, order=order)
        runs.append((slots.tobytes(), np.concatenate([w.ravel() for w in model.get_weights()]).tobytes()))
    assert all(r == runs[0] for r in runs[1:])


@pytest.mark.parametrize(
    "args", [dict(precision="fp16"), dict(l2=1e-3, data_parallel=True), dict(data_parallel=True)],
    ids=["fp16", "l2 data parallel", "data parallel"],
)  # fmt: skip
def test_a_step_whose_norm_keeps_its_pass_leaves_no_slots(args):
    """fp16's unscaling comes after the backward, and a data-parallel step sums the ranks'
    gradients between its halves (and adds a penalty's gradient after that sum): their norm
    is global_norm's."""
    input_dim, widths, batch, _ = _SHAPES["tile edges"]
    reg = cm.regularizers.l2(args["l2"]) if "l2" in args else None
    model = cm.Sequential(
        [cm.layers.Dense(widths[0], "relu", kernel_regularizer=reg), cm.layers.Dense(widths[-1])],
        input_dim=input_dim, device="cuda-emulated", seed=2,
    )  # fmt: skip
    model.compile(optimizer=cm.optimizers.SGD(_LR), loss="softmax_cross_entropy", clipnorm=_MAX_NORM,
                  precision=args.get("precision", "fp32"))  # fmt: skip
    rng = np.random.default_rng(4)
    x = rng.standard_normal((batch, input_dim)).astype(np.float32)
    y = rng.integers(0, widths[-1], batch).astype(np.int32)
    model.fit(x, y, batch_size=batch, verbose=0)
    if args.get("data_parallel"):
        assert len(model._net._read_norm_slots()) > 0  # the fit's step took them
        model._net.compute_gradients(x, y, np.arange(batch, dtype=np.int64))
        model._net.apply_gradients(batch)
    assert len(model._net._read_norm_slots()) == 0


def test_a_step_with_more_slots_than_pay_keeps_its_pass():
    """Every update block reads all the slots: above 512 (Trainer::kMaxNormSlots) they would
    cost more than the norm pass's read of the gradients, so the step keeps the pass. One
    layer of 2 outputs from 2100 inputs: the float32 GEMV's warps, 2 x ceil(2101 / 4) = 1052
    slots; the clipped step is still the CPU's within the rounding argued above."""
    model = cm.Sequential([cm.layers.Dense(2)], input_dim=2100, device="cuda-emulated", seed=2)
    model.compile(optimizer=cm.optimizers.SGD(_LR), loss="softmax_cross_entropy", clipnorm=_MAX_NORM)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 2100)).astype(np.float32)
    y = rng.integers(0, 2, 5).astype(np.int32)
    before = np.concatenate([w.ravel() for w in model.get_weights()])
    model.fit(x, y, batch_size=5, verbose=0)
    assert len(model._net._read_norm_slots()) == 0
    grad = np.empty(model._net.num_params, np.float32)
    model._net.read_gradients(grad)
    norm = ops.clip_by_global_norm(grad, _MAX_NORM, device="cpu")
    assert norm > 10 * _MAX_NORM
    ops.sgd_update(before, grad, lr=_LR, device="cpu")
    after = np.concatenate([w.ravel() for w in model.get_weights()])
    step = np.float32(_LR) * np.abs(grad)
    tol = np.float32(_LR) * np.spacing(np.abs(grad)) + np.spacing(step) + np.spacing(np.abs(before))
    assert np.all(np.abs(after.astype(np.float64) - before) <= tol)
