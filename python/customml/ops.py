"""Kernel-level functions: thin wrappers over ``customml._core``.

Each takes arrays (C-contiguous, of the dtype named in its docstring; nothing is
converted, so a wrong dtype or layout is an error rather than a hidden copy), allocates
outputs the caller did not pass with ``out=``/``grad_out=``, and runs on ``device``:
NumPy arrays (and anything else in host memory: customml.Array, PyTorch CPU tensors,
any object with ``__dlpack__``) on "cpu" and "cuda-emulated"; GPU arrays (customml.Array,
CuPy, PyTorch CUDA tensors: anything with ``__dlpack__`` or ``__cuda_array_interface__``)
on "cuda", all zero-copy. Outputs the caller does not pass are NumPy arrays on the host
devices and customml.Array on "cuda" (``torch.from_dlpack(out)`` or
``cupy.from_dlpack(out)`` view them without a copy). Optimizer updates modify their
buffers in place.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from . import _core

__all__ = [
    "dense_forward",
    "dense_backward",
    "softmax_cross_entropy",
    "distillation_loss",
    "binary_cross_entropy_with_logits",
    "mse",
    "count_correct",
    "confusion_matrix_update",
    "regression_stats_update",
    "dropout",
    "sgd_update",
    "adam_update",
    "clip_by_global_norm",
    "l1_l2_penalty",
    "quantize",
    "dequantize",
    "quantize_rows_dynamic",
    "symmetric_scales",
    "observe_range",
    "gemm_s8_pack",
    "gemm_s8",
    "to_bf16",
    "dense_forward_bf16",
    "apply_mask",
    "sparse_dense_forward",
    "sparse_pack",
    "nm_dense_forward",
    "csr_from_dense",
    "nm_from_dense",
    "softmax",
    "sigmoid",
    "feature_affine",
]


def _empty(shape, device: str, dtype=np.float32):
    """An uninitialized output (float32 unless ``dtype`` says otherwise) on ``device``: a
    customml.Array on "cuda", NumPy elsewhere."""
    if device == "cuda" or device.startswith("cuda:"):
        _core.check_device(device)  # says why CUDA is unavailable before anything else
        return _core.array_empty(shape, np.dtype(dtype), device)
    return np.empty(shape, dtype=dtype)


def _shape2(a, name: str, op: str) -> tuple:
    shape = np.shape(a)
    if len(shape) != 2:
        raise ValueError(f"[{op}] {name} must be 2-D, got shape {shape}")
    return shape


def dense_forward(
    x,
    weight,
    bias,
    *,
    activation: str = "identity",
    out=None,
    preact_out=None,
    device: str = "cpu",
    precision: str = "fp32",
):
    """``activation(x @ weight + bias)``: x (batch, in), weight (in, out), bias (out,), float32.

    ``preact_out`` (batch, out), when given, receives ``x @ weight + bias`` (what
    ``dense_backward`` needs for gelu). ``precision`` "tf32", "bf16" or "fp16" rounds the
    operands of the products to that format on CUDA tensor cores (accumulating in
    float32); "fp32" (the default) everywhere. Returns ``out``.
    """
    if out is None:
        batch = _shape2(x, "x", "dense_forward")[0]
        cols = _shape2(weight, "weight", "dense_forward")[1]
        out = _empty((batch, cols), device)
    _core.dense_forward(out, x, weight, bias, activation, preact_out, device, precision)
    return out


def dense_backward(
    dy,
    x,
    weight,
    y,
    *,
    z=None,
    activation: str = "identity",
    need_dx: bool = True,
    dx_out=None,
    dweight_out=None,
    dbias_out=None,
    device: str = "cpu",
    precision: str = "fp32",
):
    """Gradients of ``dense_forward``: returns ``(dx, dweight, dbias)`` (dx is None when
    ``need_dx`` is False). dy, y: (batch, out); x: (batch, in); weight: (in, out); z: the
    pre-activation, required for gelu; ``precision`` as in ``dense_forward``."""
    batch, inp = _shape2(x, "x", "dense_backward")
    outp = _shape2(weight, "weight", "dense_backward")[1]
    if need_dx and dx_out is None:
        dx_out = _empty((batch, inp), device)
    if dweight_out is None:
        dweight_out = _empty((inp, outp), device)
    if dbias_out is None:
        dbias_out = _empty((outp,), device)
    dx = dx_out if need_dx else None
    _core.dense_backward(dx, dweight_out, dbias_out, dy, x, weight, y, z, activation, device, precision)
    return dx, dweight_out, dbias_out


def softmax_cross_entropy(
    logits,
    labels,
    *,
    class_weights=None,
    label_smoothing: float = 0.0,
    row_weights=None,
    need_grad: bool = True,
    grad_out=None,
    device: str = "cpu",
) -> Tuple[float, Optional[np.ndarray]]:
    """Weighted mean softmax cross-entropy of logits (batch, classes) float32 against
    labels (batch,) int32, and its gradient w.r.t. the logits.

    With smoothing eps the target is ``(1 - eps) * onehot + eps / classes``; with class
    weights c and row weights r (float32, one per row) the mean is ``sum_i w_i l_i / sum_i w_i``
    with ``w_i = c[y_i] r_i``. Returns ``(loss, grad)``.

    ``labels`` may instead be soft labels: a float32 matrix of target distributions q of
    the logits' shape (label distributions, mixup), as Keras' CategoricalCrossentropy and
    PyTorch's probability targets take: ``l_i = -sum_c q_ic log softmax(logits_i)_c`` (a
    target of 0 adds 0), gradient ``w_i / W (sum_c q_ic softmax(logits_i) - q_i)``; only
    row weights apply then.
    """
    if need_grad and grad_out is None:
        grad_out = _empty(np.shape(logits), device)
    grad = grad_out if need_grad else None
    # A matrix of anything but integers is soft labels (int32 (batch, 1) stays the labels'
    # shape error); any array type: NumPy, CuPy, torch and customml.Array all name it so.
    if len(getattr(labels, "shape", np.shape(labels))) == 2 and "int" not in str(getattr(labels, "dtype", "")):
        if class_weights is not None or label_smoothing:
            raise ValueError(
                "[softmax_cross_entropy] class_weights and label_smoothing apply to int32 labels, not to soft labels "
                "(a target matrix): weight or smooth the targets themselves"
            )
        return _core.softmax_cross_entropy_soft(grad, logits, labels, device, row_weights), grad
    loss = _core.softmax_cross_entropy(grad, logits, labels, class_weights, label_smoothing, device, row_weights)
    return loss, grad


def distillation_loss(
    student_logits,
    teacher_logits,
    labels,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    row_weights=None,
    need_grad: bool = True,
    grad_out=None,
    device: str = "cpu",
) -> Tuple[float, Optional[np.ndarray]]:
    """Knowledge distillation's loss (Hinton, Vinyals and Dean 2015) and its gradient
    w.r.t. the student's logits, fused in one kernel: per row
    ``alpha T^2 KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) CE(softmax(student), label)``
    with ``T = temperature`` (>= 0.05) and ``alpha`` in [0, 1]; the weighted mean over
    rows as softmax_cross_entropy's. student_logits, teacher_logits: (batch, classes)
    float32; labels: (batch,) int32 (not read when alpha is 1). Returns ``(loss, grad)``.
    """
    if need_grad and grad_out is None:
        grad_out = _empty(np.shape(student_logits), device)
    grad = grad_out if need_grad else None
    loss = _core.distillation_loss(
        grad, student_logits, teacher_logits, labels, temperature, alpha, device, row_weights
    )
    return loss, grad


def binary_cross_entropy_with_logits(
    logits, targets, *, row_weights=None, need_grad: bool = True, grad_out=None, device: str = "cpu"
) -> Tuple[float, Optional[np.ndarray]]:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against targets in [0, 1] (same
    shape, float32), and its gradient. ``row_weights`` (float32, one per first-axis row)
    weight each row's terms: ``sum_ij w_i l_ij / (cols sum_i w_i)``. Returns ``(loss, grad)``."""
    if need_grad and grad_out is None:
        grad_out = _empty(np.shape(logits), device)
    grad = grad_out if need_grad else None
    return _core.binary_cross_entropy_with_logits(grad, logits, targets, device, row_weights), grad


def mse(
    pred, target, *, row_weights=None, need_grad: bool = True, grad_out=None, device: str = "cpu"
) -> Tuple[float, Optional[np.ndarray]]:
    """Mean squared error over all elements (same shape, float32) and its gradient;
    ``row_weights`` as in binary_cross_entropy_with_logits. Returns ``(loss, grad)``."""
    if need_grad and grad_out is None:
        grad_out = _empty(np.shape(pred), device)
    grad = grad_out if need_grad else None
    return _core.mse(grad, pred, target, device, row_weights), grad


def count_correct(logits, labels, *, device: str = "cpu") -> int:
    """Rows of logits (batch, classes) float32 whose first maximal entry is the int32
    label; with one column, rows where ``(logit > 0) == (label != 0)``."""
    return _core.count_correct(logits, labels, device)


def confusion_matrix_update(counts, logits, labels, *, device: str = "cpu"):
    """Adds one count per row of logits (batch, k) float32 at ``counts[label,
    prediction]`` (int64 (classes, classes), rows = true labels, updated in place and
    returned); the prediction is the first maximal logit, or ``logit > 0`` when k == 1
    (classes = 2)."""
    _core.confusion_matrix_update(counts, logits, labels, device)
    return counts


def regression_stats_update(stats, pred, target, shift, *, device: str = "cpu"):
    """Adds per output column of pred, target (batch, outputs) float32 the sums of
    ``|pred - target|``, ``(pred - target)**2``, ``target - shift`` and
    ``(target - shift)**2`` (shift: (outputs,) float64, a typical target, so that the
    variance does not cancel) to the float64 rows of stats (4, outputs), in place;
    returns stats."""
    _core.regression_stats_update(stats, pred, target, shift, device)
    return stats


def dropout(x, *, rate: float, seed: int, stream: int, out=None, device: str = "cpu", first: int = 0):
    """Inverted dropout of float32 x: ``x / (1 - rate)`` where the Philox4x32-10 draw for
    (seed, stream, first + element index) is ``>= rate``, else 0. The same call on the
    gradient is the backward pass. ``out`` may be ``x`` (in place). ``first`` places x in
    a longer mask: dropout of ``x[k:]`` with ``first=k`` is ``dropout(x)[k:]``."""
    if out is None:
        out = _empty(np.shape(x), device)
    _core.dropout(out, x, rate, seed, stream, device, first)
    return out


def sgd_update(
    param,
    grad,
    velocity=None,
    *,
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    no_decay: Sequence[Tuple[int, int]] = (),
    device: str = "cpu",
) -> None:
    """One SGD step in place over flat float32 buffers, as ``torch.optim.SGD``
    (dampening 0). ``no_decay`` lists sorted, disjoint ``[begin, end)`` ranges of the
    flat index that take no weight decay."""
    _core.sgd_update(
        param,
        grad,
        velocity,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        no_decay=list(no_decay),
        device=device,
    )


def adam_update(
    param,
    grad,
    m,
    v,
    vmax=None,
    *,
    lr: float,
    step: int,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = False,
    amsgrad: bool = False,
    no_decay: Sequence[Tuple[int, int]] = (),
    device: str = "cpu",
) -> None:
    """One Adam step (AdamW with ``decoupled=True``) in place, as ``torch.optim.Adam`` /
    ``AdamW``. ``step`` counts updates including this one (1 on the first)."""
    _core.adam_update(
        param,
        grad,
        m,
        v,
        vmax,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        decoupled=decoupled,
        amsgrad=amsgrad,
        step=step,
        no_decay=list(no_decay),
        device=device,
    )


def clip_by_global_norm(grad, max_norm: float, *, device: str = "cpu") -> float:
    """Scales float32 grad in place by ``max_norm / (norm + 1e-6)`` when that is below 1
    (as ``torch.nn.utils.clip_grad_norm_``); returns the norm before scaling."""
    return _core.clip_by_global_norm(grad, max_norm, device)


def l1_l2_penalty(param, *, l1: float = 0.0, l2: float = 0.0, grad=None, device: str = "cpu") -> float:
    """Keras' l1_l2 penalty of float32 ``param``: returns ``l1 * sum|param| + l2 * sum param^2``
    and, when ``grad`` (same shape) is given, adds ``l1 * sign(param) + 2 * l2 * param`` to it
    in place (sign(0) = 0)."""
    return _core.l1_l2_penalty(grad, param, l1, l2, device)


def quantize(x, scale, zero=None, *, dtype: str = "uint8", axis: str = "tensor", out=None, device: str = "cpu"):
    """Codes of float32 x (rows, cols): ``clip(rint(x / scale) + zero)`` as ``dtype``
    "uint8" ([0, 255]) or "int8" ([-127, 127], symmetric), half to even as ONNX
    QuantizeLinear. scale (float32) and zero (int32, optional: 0) are (1,) for ``axis``
    "tensor", (rows,) for "row", (cols,) for "column". Returns ``out``."""
    if out is None:
        out = _empty(_shape2(x, "x", "quantize"), device, np.dtype(dtype))
    _core.quantize(out, x, scale, zero, axis, device)
    return out


def dequantize(q, scale, zero=None, *, axis: str = "tensor", out=None, device: str = "cpu"):
    """float32 ``scale * (q - zero)`` of int8 / uint8 codes q (rows, cols), scale and zero
    per ``axis`` as in ``quantize``. Returns ``out``."""
    if out is None:
        out = _empty(_shape2(q, "q", "dequantize"), device)
    _core.dequantize(out, q, scale, zero, axis, device)
    return out


def quantize_rows_dynamic(x, *, out=None, scale_out=None, zero_out=None, device: str = "cpu"):
    """Per-row dynamic uint8 quantization of float32 x (rows, cols): each row's range
    [min(0, min), max(0, max)] onto [0, 255]. Returns ``(q, scale, zero)``: uint8 (rows,
    cols), float32 (rows,), int32 (rows,)."""
    rows, cols = _shape2(x, "x", "quantize_rows_dynamic")
    out = _empty((rows, cols), device, np.uint8) if out is None else out
    scale_out = _empty((rows,), device) if scale_out is None else scale_out
    zero_out = _empty((rows,), device, np.int32) if zero_out is None else zero_out
    _core.quantize_rows_dynamic(out, scale_out, zero_out, x, device)
    return out, scale_out, zero_out


def symmetric_scales(w, *, axis: str = "column", out=None, device: str = "cpu"):
    """Symmetric int8 scales of float32 weights w (rows, cols): ``max |w| / 127`` per
    column ((cols,), ``axis="column"``) or over the tensor ((1,), ``axis="tensor"``), 1
    where that maximum is 0 (its codes are 0 anyway); NaN is left out of the maximum.
    Returns ``out`` (float32)."""
    rows, cols = _shape2(w, "w", "symmetric_scales")
    if out is None:
        out = _empty((cols if axis == "column" else 1,), device)
    _core.symmetric_scales(out, w, axis, device)
    return out


def observe_range(
    x, range, *, momentum: float, first: bool = False, scale_out=None, zero_out=None, device: str = "cpu"
):
    """Quantization-aware training's moving input range. ``range`` is float64 (2,) (lo,
    hi), updated in place: set to the range of float32 x (rows, cols) widened to contain 0
    when ``first``, else ``momentum * range + (1 - momentum) * that``; NaN is left out.
    Returns its asymmetric uint8 encoding ``(scale, zero)``, float32 (1,) and int32 (1,):
    scale = (hi - lo) / 255, zero = the code of 0 (scale 1, zero 0 for an empty range)."""
    _shape2(x, "x", "observe_range")
    scale_out = _empty((1,), device) if scale_out is None else scale_out
    zero_out = _empty((1,), device, np.int32) if zero_out is None else zero_out
    _core.observe_range(range, scale_out, zero_out, x, momentum, first, device)
    return scale_out, zero_out


def to_bf16(x) -> np.ndarray:
    """float32 -> bfloat16 bits as uint16 (NumPy has no bfloat16), same shape: rounded to
    nearest even, denormals to a zero of their sign, NaN kept NaN (quiet), as the
    VCVTNEPS2BF16 instruction rounds. ``x`` must be a C-contiguous float32 array."""
    return _core.to_bf16(x)


def dense_forward_bf16(x, weight, bias=None, *, activation: str = "identity", out=None, device: str = "cpu"):
    """``activation(bf16(x) @ weight + bias)`` with bfloat16 weights: x (batch, in) float32,
    rounded to bfloat16 as ``to_bf16`` rounds; weight (in, out) bfloat16 bits (uint16, from
    ``to_bf16``); bias (out,) float32 or None. The products are exact and accumulated in
    float32 as the vdpbf16ps instruction does (each pair of k, odd element first, one
    rounding each, results below 2**-126 flushed to zero), on the CPU; other devices refuse.
    Returns ``out``."""
    if out is None:
        batch = _shape2(x, "x", "dense_forward_bf16")[0]
        cols = _shape2(weight, "weight", "dense_forward_bf16")[1]
        out = _empty((batch, cols), device)
    _core.dense_forward_bf16(out, x, weight, bias, activation, device)
    return out


def gemm_s8_pack(weight, *, device: str = "cpu") -> "_core.PackedS8":
    """int8 weights (k, n), codes in [-127, 127], packed once for ``gemm_s8`` on ``device``."""
    return _core.gemm_s8_pack(weight, device)


def gemm_s8(
    a,
    weight,
    a_scale,
    a_zero,
    w_scale,
    *,
    bias=None,
    activation: str = "identity",
    out_dtype: str = "float32",
    out_scale: Optional[float] = None,
    out_zero: Optional[int] = None,
    out=None,
    device: str = "cpu",
):
    """uint8 a (m, k) times int8 weight (k, n) (a ``PackedS8`` from ``gemm_s8_pack``, or raw
    codes, packed for this call), summed exactly in int32. With acc the sums, a_zero
    (int32, (1,) or (m,)) and a_scale (float32, same shape), w_scale (float32, (1,) or
    (n,)): "float32" out is ``activation(a_scale * w_scale * (acc - a_zero * colsum(w)) +
    bias)``; "uint8" out is that requantized with ``out_scale`` / ``out_zero`` (for the
    next layer); "int32" out is ``acc - a_zero * colsum(w)`` (a_scale, w_scale None).
    ``out``'s dtype, when given, decides. Returns ``out``."""
    if out is None:
        m = _shape2(a, "a", "gemm_s8")[0]
        n = weight.n if isinstance(weight, _core.PackedS8) else _shape2(weight, "weight", "gemm_s8")[1]
        out = _empty((m, n), device, np.dtype(out_dtype))
    _core.gemm_s8(out, a, weight, a_scale, a_zero, w_scale, bias, activation, out_scale, out_zero, device)
    return out


def apply_mask(param, keep, *, device: str = "cpu"):
    """Zeroes float32 ``param`` in place wherever uint8 ``keep`` (same shape) is 0: the
    pruning mask the optimizers re-apply after every update. Returns ``param``."""
    _core.apply_mask(param, keep, device)
    return param


def sparse_pack(offsets, index, values, in_features: int, *, device: str = "cpu") -> "_core.PackedCsr":
    """The CSR of W^T (``csr_from_dense``) of a sparse kernel W (in_features, out) prepared
    once for ``sparse_dense_forward`` on ``device``, as a model prepares its pruned layers:
    the structure checked once, the arrays copied (later changes to them do not reach it)
    and, on the CPU with AVX-512, packed into the gather-free batch-1 layout."""
    return _core.sparse_pack(offsets, index, values, in_features, device)


def sparse_dense_forward(
    x, offsets, index=None, values=None, bias=None, *, activation: str = "identity", out=None, device: str = "cpu"
):
    """``activation(x @ W + bias)`` for a sparse kernel W (in, out) given as the CSR of its
    transpose (``csr_from_dense``): output j's inputs are ``index[offsets[j]:offsets[j + 1]]``
    (int32, strictly ascending) with float32 ``values``, checked on every call; or ``offsets``
    a ``PackedCsr`` from ``sparse_pack`` (index and values None, bias by keyword), checked
    once. x (batch, in) float32; bias (out,) or None. Returns ``out`` (batch, out)."""
    packed = isinstance(offsets, _core.PackedCsr)
    if packed and (index is not None or values is not None):
        raise ValueError(
            "[sparse_dense_forward] index and values must be None when the weight is a PackedCsr (pass bias by keyword)"
        )
    if not packed and (index is None or values is None):
        raise ValueError("[sparse_dense_forward] index and values are required unless offsets is a PackedCsr")
    if out is None:
        batch = _shape2(x, "x", "sparse_dense_forward")[0]
        out = _empty((batch, offsets.shape[1] if packed else np.shape(offsets)[0] - 1), device)
    if packed:
        _core.sparse_dense_forward(out, x, offsets, bias, activation, device)
    else:
        _core.sparse_dense_forward(out, x, offsets, index, values, bias, activation, device)
    return out


def nm_dense_forward(
    x, values, index, bias=None, *, n: int = 2, m: int = 4, activation: str = "identity", out=None, device: str = "cpu"
):
    """``activation(x @ W + bias)`` for an N:M sparse kernel W (in, out) (``nm_from_dense``):
    of every m consecutive rows of a column at most n are kept, as values (ceil(in / m) n,
    out) float32 and index (same shape, uint8: each value's row within its group). x (batch,
    in) float32; bias (out,) or None. Returns ``out`` (batch, out)."""
    if out is None:
        batch = _shape2(x, "x", "nm_dense_forward")[0]
        out = _empty((batch, _shape2(values, "values", "nm_dense_forward")[1]), device)
    _core.nm_dense_forward(out, x, values, index, bias, activation, n, m, device)
    return out


def csr_from_dense(weight) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nonzeros of a dense kernel (in, out) in the format ``sparse_dense_forward`` takes:
    ``(offsets (out + 1,) int32, index (nnz,) int32, values (nnz,) float32)``, the CSR of
    ``weight.T`` (per output, its nonzero inputs ascending). Pure NumPy; zeros of either
    sign are dropped."""
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"csr_from_dense: weight must be 2-D (in, out), got shape {w.shape}")
    wt = w.T
    keep = wt != 0
    offsets = np.zeros(w.shape[1] + 1, np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    index: np.ndarray = np.nonzero(keep)[1].astype(np.int32)  # row-major order: by output, inputs ascending
    return offsets, index, np.ascontiguousarray(wt[keep])


def nm_from_dense(weight, n: int = 2, m: int = 4) -> Tuple[np.ndarray, np.ndarray]:
    """N:M pruning of a dense kernel (in, out) into the format ``nm_dense_forward`` takes:
    in each column, of every group of m consecutive rows (the last group may be short) the
    n largest-magnitude entries are kept (ties: the lower row first), the rest dropped.
    Returns ``(values (ceil(in / m) n, out) float32, index (same shape) uint8)``, each
    group's kept rows ascending; slots a short group cannot fill hold value 0, row 0.
    Pure NumPy."""
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"nm_from_dense: weight must be 2-D (in, out), got shape {w.shape}")
    if not (1 <= m <= 256 and 1 <= n <= m):
        raise ValueError(f"nm_from_dense: need 1 <= n <= m <= 256, got n={n}, m={m}")
    rows, cols = w.shape
    groups = -(-rows // m)
    padded = np.zeros((groups * m, cols), np.float32)
    padded[:rows] = w
    g = padded.reshape(groups, m, cols)
    magnitude = np.abs(g.astype(np.float64))
    row = np.arange(groups * m).reshape(groups, m, 1)
    magnitude = np.where(row < rows, magnitude, -1.0)  # padding rows lose to every real one
    # A stable sort of -|w|: equal magnitudes keep row order, so ties go to the lower row.
    picked = np.sort(np.argsort(-magnitude, axis=1, kind="stable")[:, :n, :], axis=1)
    values = np.take_along_axis(g, picked, axis=1)
    real = row[:, :1] + picked < rows
    values = np.where(real, values, np.float32(0))
    index = np.where(real, picked, 0).astype(np.uint8)
    return (
        np.ascontiguousarray(values.reshape(groups * n, cols)),
        np.ascontiguousarray(index.reshape(groups * n, cols)),
    )


def softmax(x, *, out=None, device: str = "cpu") -> np.ndarray:
    """Softmax of each row of float32 x (rows, cols): a classifier's probabilities from its
    logits (what ``Sequential.predict_proba`` returns). ``out`` may be x itself. A row
    with a NaN or +inf is NaN, as in NumPy and PyTorch. Returns ``out``."""
    if out is None:
        out = _empty(np.shape(x), device)
    _core.softmax(out, x, device)
    return out


def sigmoid(x, *, out=None, device: str = "cpu") -> np.ndarray:
    """``1 / (1 + exp(-x))`` elementwise over float32 x, without overflow: a binary
    classifier's probability from its logit. ``out`` may be x itself. Returns ``out``."""
    if out is None:
        out = _empty(np.shape(x), device)
    _core.sigmoid(out, x, device)
    return out


def feature_affine(x, scale, shift, *, out=None, device: str = "cpu") -> np.ndarray:
    """``x * scale + shift`` per column of float32 x (rows, cols), with scale and shift
    (cols,): what Normalization and Rescaling apply to a model's input. Returns ``out``."""
    if out is None:
        out = _empty(np.shape(x), device)
    _core.feature_affine(out, x, scale, shift, device)
    return out
