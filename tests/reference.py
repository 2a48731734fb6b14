"""The NumPy specification of every op in ``customml.ops``, one function per op with the
op's name (STYLE rule 1).

Inputs are the float32 (int32) arrays the op receives; the maths is float64, so each
function is the exact value the float32 kernel approximates, and the tests bound the
difference with a tolerance argued from the kernel's float32 operations. Scalar
configuration (lr, betas, rates, ...) crosses the binding as C ``float``: callers pass
values that are exactly representable in float32, and the functions round them once more
with ``np.float32`` to say so. Pure functions: optimizer references return new state
instead of updating in place.

Two ops are specified in float32 on purpose, because they are exact by construction:
``count_correct`` (a comparison) and ``dropout`` (a Philox bit mask and one float32
multiply).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "gelu")

GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------- activations


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp of a non-positive argument only: no overflow for |z| up to float32 max.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def gelu_inner(z: np.ndarray) -> np.ndarray:
    """u = c (z + a z^3), the argument of tanh in the tanh-form GELU."""
    return GELU_C * (z + GELU_A * z**3)


def activation_forward(name: str, z) -> np.ndarray:
    """act(z) in float64 for each activation name (gelu: 0.5 z (1 + tanh(c (z + a z^3))))."""
    z = _f64(z)
    if name == "identity":
        return z.copy()
    if name == "relu":
        # NaN propagates (PyTorch, ONNX Runtime): relu(NaN) = NaN, relu(-0) = +0.
        return np.where(z <= 0, 0.0, z)
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "gelu":
        return 0.5 * z * (1.0 + np.tanh(gelu_inner(z)))
    raise ValueError(f"unknown activation {name!r}")


def gelu_grad(z) -> np.ndarray:
    """d gelu / dz = 0.5 (1 + t) + 0.5 z (1 - t^2) c (1 + 3 a z^2), t = tanh(u)."""
    z = _f64(z)
    t = np.tanh(gelu_inner(z))
    s = 1.0 - t * t
    # Where t saturates s is exactly 0 and the second term is 0 (never 0 * inf).
    second = np.where(s == 0.0, 0.0, 0.5 * z * s * GELU_C * (1.0 + 3.0 * GELU_A * z * z))
    return 0.5 * (1.0 + t) + second


def activation_backward(name: str, dy, y, z=None) -> np.ndarray:
    """dL/dz from dL/dy: a function of the forward output y for relu, sigmoid and tanh
    (which is what the op receives), of the pre-activation z for gelu."""
    dy, y = _f64(dy), _f64(y)
    if name == "identity":
        return dy.copy()
    if name == "relu":
        # 0 only where y <= 0: a NaN output passes dy on (PyTorch's threshold_backward).
        return np.where(y <= 0, 0.0, dy)
    if name == "sigmoid":
        return dy * y * (1.0 - y)
    if name == "tanh":
        return dy * (1.0 - y * y)
    if name == "gelu":
        if z is None:
            raise ValueError("gelu backward needs z")
        return dy * gelu_grad(z)
    raise ValueError(f"unknown activation {name!r}")


# ---------------------------------------------------------------------------- dense


def dense_forward(x, weight, bias, *, activation: str = "identity") -> Tuple[np.ndarray, np.ndarray]:
    """x (batch, in), weight (in, out), bias (out,) -> (y, z): z = x @ weight + bias,
    y = activation(z)."""
    z = _f64(x) @ _f64(weight) + _f64(bias)
    return activation_forward(activation, z), z


def dense_backward(
    dy, x, weight, y, *, z=None, activation: str = "identity", need_dx: bool = True
) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """Gradients of dense_forward: (dx, dweight, dbias) with dz = dy * act'(.),
    dweight = x^T dz, dbias = sum over the batch of dz, dx = dz weight^T (None unless
    need_dx)."""
    dz = activation_backward(activation, dy, y, z)
    dw = _f64(x).T @ dz
    db = dz.sum(axis=0)
    dx = dz @ _f64(weight).T if need_dx else None
    return dx, dw, db


# ---------------------------------------------------------------------------- sparse


def apply_mask(param, keep) -> np.ndarray:
    """param with every element whose keep byte is 0 replaced by +0 (exact, float32)."""
    p = np.asarray(param, np.float32)
    return np.where(np.asarray(keep) != 0, p, np.float32(0))


def csr_to_dense(offsets, index, values, n_in: int) -> np.ndarray:
    """The float64 (in, out) kernel a CSR of its transpose stands for."""
    offsets = np.asarray(offsets, np.int64)
    w = np.zeros((n_in, len(offsets) - 1))
    cols = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    w[np.asarray(index, np.int64), cols] = _f64(values)
    return w


def nm_to_dense(values, index, n_in: int, *, n: int, m: int) -> np.ndarray:
    """The float64 (in, out) kernel of the N:M format: slot s of column j is row
    (s // n) m + index[s, j] (slots on the same row add up)."""
    values, index = _f64(values), np.asarray(index, np.int64)
    slots, n_out = values.shape
    rows = (np.arange(slots) // n * m)[:, None] + index
    w = np.zeros((n_in, n_out))
    np.add.at(w, (rows, np.broadcast_to(np.arange(n_out), rows.shape)), values)
    return w


def sparse_dense_forward(
    x, offsets, index, values, bias=None, *, activation: str = "identity"
) -> Tuple[np.ndarray, np.ndarray]:
    """dense_forward of the kernel csr_to_dense(...) (bias None: zeros): (y, z)."""
    x = _f64(x)
    w = csr_to_dense(offsets, index, values, x.shape[1])
    return dense_forward(x, w, np.zeros(w.shape[1]) if bias is None else bias, activation=activation)


def nm_dense_forward(
    x, values, index, bias=None, *, n: int = 2, m: int = 4, activation: str = "identity"
) -> Tuple[np.ndarray, np.ndarray]:
    """dense_forward of the kernel nm_to_dense(...) (bias None: zeros): (y, z)."""
    x = _f64(x)
    w = nm_to_dense(values, index, x.shape[1], n=n, m=m)
    return dense_forward(x, w, np.zeros(w.shape[1]) if bias is None else bias, activation=activation)


# ---------------------------------------------------------------------------- losses


def softmax_cross_entropy(
    logits, labels, *, class_weights=None, label_smoothing: float = 0.0, row_weights=None
) -> Tuple[float, np.ndarray]:
    """Weighted mean softmax cross-entropy and its gradient w.r.t. the logits.

    q_i = (1 - eps) onehot(y_i) + eps / C; l_i = -sum_c q_ic log softmax(logits_i)_c;
    w_i = class_weights[y_i] row_weights[i] (a missing factor is 1);
    loss = sum_i w_i l_i / sum_i w_i and
    grad_i = w_i / sum_i w_i (softmax(logits_i) - q_i). When sum_i w_i == 0 the loss is
    defined as 0 with a zero gradient.
    """
    z = _f64(logits)
    labels = np.asarray(labels)
    batch, classes = z.shape
    eps = float(np.float32(label_smoothing))
    q = np.full((batch, classes), eps / classes)
    q[np.arange(batch), labels] += 1.0 - eps
    d = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(d).sum(axis=1))
    logp = d - lse[:, None]
    row_loss = -(q * logp).sum(axis=1)
    w = np.ones(batch) if class_weights is None else _f64(class_weights)[labels]
    if row_weights is not None:
        w = w * _f64(row_weights)
    total = w.sum()
    if total == 0.0:
        return 0.0, np.zeros((batch, classes))
    p = np.exp(logp)
    grad = (w / total)[:, None] * (p - q)
    return float((w * row_loss).sum() / total), grad


def softmax_cross_entropy_soft(logits, targets, *, row_weights=None) -> Tuple[float, np.ndarray]:
    """Weighted mean softmax cross-entropy against soft labels q (batch, classes):
    l_i = -sum_c q_ic log softmax(logits_i)_c, a term with q_ic == 0 being 0 (0 log 0);
    grad_i = w_i / sum_i w_i (sum_c q_ic softmax(logits_i) - q_i); w_i = row_weights[i]
    (1 without). Every weight 0: loss 0, gradient 0."""
    z = _f64(logits)
    q = _f64(targets)
    d = z - z.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        lse = np.log(np.exp(d).sum(axis=1))
        logp = d - lse[:, None]
        row_loss = -np.where(q == 0.0, 0.0, q * logp).sum(axis=1)
    w = np.ones(z.shape[0]) if row_weights is None else _f64(row_weights)
    total = w.sum()
    if total == 0.0:
        return 0.0, np.zeros(z.shape)
    grad = (w / total)[:, None] * (q.sum(axis=1, keepdims=True) * np.exp(logp) - q)
    return float((w * row_loss).sum() / total), grad


def distillation_loss(
    student, teacher, labels, *, temperature: float, alpha: float, row_weights=None
) -> Tuple[float, np.ndarray]:
    """Hinton et al.'s distillation loss, the weighted mean over rows of
    l_i = alpha T^2 KL(p_i || r_i) + (1 - alpha) CE(softmax(s_i), y_i) with
    p = softmax(teacher / T), r = softmax(student / T) (KL's terms with p_c = 0 are 0), and
    grad_i = w_i / W (alpha T (r_i - p_i) + (1 - alpha) (softmax(s_i) - onehot(y_i))).
    alpha == 1 reads no label."""
    s = _f64(student)
    t = _f64(teacher)
    T = float(np.float32(temperature))
    a = float(np.float32(alpha))
    batch, classes = s.shape
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        log_r = s / T - s.max(axis=1, keepdims=True) / T
        log_r = log_r - np.log(np.exp(log_r).sum(axis=1, keepdims=True))
        log_p = t / T - t.max(axis=1, keepdims=True) / T
        log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        p = np.exp(log_p)
        kl = np.where(p == 0.0, 0.0, p * (log_p - log_r)).sum(axis=1)
        row_loss = a * T * T * kl
        grad_row = a * T * (np.exp(log_r) - p)
        if a != 1.0:
            d = s - s.max(axis=1, keepdims=True)
            log_q = d - np.log(np.exp(d).sum(axis=1, keepdims=True))
            rows = np.arange(batch)
            row_loss = row_loss - (1.0 - a) * log_q[rows, np.asarray(labels)]
            onehot = np.zeros((batch, classes))
            onehot[rows, np.asarray(labels)] = 1.0
            grad_row = grad_row + (1.0 - a) * (np.exp(log_q) - onehot)
    w = np.ones(batch) if row_weights is None else _f64(row_weights)
    total = w.sum()
    if total == 0.0:
        return 0.0, np.zeros((batch, classes))
    return float((w * row_loss).sum() / total), (w / total)[:, None] * grad_row


def row_weight_scale(shape, row_weights) -> np.ndarray:
    """The factor each element's term takes in a row-weighted mean over an array of
    ``shape``: w_i / (cols sum_i w_i) for the elements of row i (the first axis), 1 / n
    without weights; all 0 when every weight is 0 (the loss is then defined as 0)."""
    n = int(np.prod(shape))
    if row_weights is None:
        return np.full(shape, 1.0 / n)
    w = _f64(row_weights)
    total = w.sum() * (n // shape[0])
    scale = w / total if total > 0 else np.zeros_like(w)
    return np.broadcast_to(scale.reshape((-1,) + (1,) * (len(shape) - 1)), shape)


def binary_cross_entropy_with_logits(logits, targets, row_weights=None) -> Tuple[float, np.ndarray]:
    """sum_ij s_ij [softplus(z_ij) - z_ij t_ij] and its gradient s_ij (sigmoid(z) - t),
    with s = row_weight_scale (1 / n without weights: the mean)."""
    z, t = _f64(logits), _f64(targets)
    s = row_weight_scale(z.shape, row_weights)
    loss = np.logaddexp(0.0, z) - z * t
    return float((s * loss).sum()), s * (_sigmoid(z) - t)


def mse(pred, target, row_weights=None) -> Tuple[float, np.ndarray]:
    """sum_ij s_ij (pred - target)_ij^2 and its gradient 2 s_ij (pred - target)_ij, with
    s = row_weight_scale (1 / n without weights: the mean over all elements)."""
    d = _f64(pred) - _f64(target)
    s = row_weight_scale(d.shape, row_weights)
    return float((s * d * d).sum()), 2.0 * s * d


def count_correct(logits, labels) -> int:
    """Rows whose first maximal logit is the label (numpy.argmax semantics); with one
    column, rows where (logit > 0) == (label != 0)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.shape[1] == 1:
        return int(((logits[:, 0] > 0) == (labels != 0)).sum())
    return int((np.argmax(logits, axis=1) == labels).sum())


# ---------------------------------------------------------------------------- dropout

PHILOX_M0, PHILOX_M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
PHILOX_W0, PHILOX_W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_LO32 = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def philox4x32_10(seed: int, stream: int, block) -> np.ndarray:
    """Philox4x32-10 (Salmon et al., SC'11; Random123's philox4x32_R(10, ctr, key)) of
    counter (block low32, block high32, stream low32, stream high32) under key (seed
    low32, seed high32), for an array of blocks: returns (len(block), 4) uint32.

    uint64 arithmetic: a 32 x 32-bit product fits exactly, so mulhilo is a shift and a mask.
    """
    block = np.asarray(block, dtype=np.uint64)
    c0, c1 = block & _LO32, block >> _32
    c2 = np.full_like(block, np.uint64(stream) & _LO32)
    c3 = np.full_like(block, np.uint64(stream) >> _32)
    k0, k1 = np.uint64(seed) & _LO32, np.uint64(seed) >> _32
    for _ in range(10):
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = (p1 >> _32) ^ c1 ^ k0, p1 & _LO32, (p0 >> _32) ^ c3 ^ k1, p0 & _LO32
        k0 = (k0 + PHILOX_W0) & _LO32
        k1 = (k1 + PHILOX_W1) & _LO32
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def dropout_uniform(n: int, seed: int, stream: int) -> np.ndarray:
    """The uniform draw of element i in [0, 1): lane i % 4 of Philox block i // 4, top 24
    bits scaled by 2**-24 (exact in float32)."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    bits = philox4x32_10(seed, stream, blocks).reshape(-1)[:n]
    return (bits >> np.uint32(8)).astype(np.float64) * 2.0**-24


def dropout(x, *, rate: float, seed: int, stream: int) -> np.ndarray:
    """Inverted dropout, float32-exact: element i is kept iff its uniform draw >= rate
    (rate as float32), and then y_i = x_i * scale with scale = 1.0f / (1.0f - rate)
    evaluated in float32 (two roundings: 1 - rate, then the reciprocal); dropped elements
    are +0.0."""
    x = np.asarray(x, dtype=np.float32)
    rate32 = np.float32(rate)
    scale = np.float32(1.0) / (np.float32(1.0) - rate32)
    keep = (dropout_uniform(x.size, seed, stream) >= float(rate32)).reshape(x.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(keep, x * scale, np.float32(0.0)).astype(np.float32)


# ---------------------------------------------------------------------------- optimizers


def decay_mask(n: int, no_decay: Sequence[Tuple[int, int]]) -> np.ndarray:
    """True where weight decay applies: outside every [begin, end) no_decay segment."""
    mask = np.ones(n, bool)
    for begin, end in no_decay:
        mask[begin:end] = False
    return mask


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
):
    """One torch.optim.SGD step (dampening 0) over flat buffers: g = grad + wd p (wd = 0
    inside no_decay); with momentum v = mu v + g and the step is g + mu v (nesterov) or v;
    p -= lr step. Returns (param, velocity) (velocity unchanged when momentum is 0)."""
    lr, mu, wd = (float(np.float32(a)) for a in (lr, momentum, weight_decay))
    p = _f64(param).reshape(-1)
    g = _f64(grad).reshape(-1) + np.where(decay_mask(p.size, no_decay), wd, 0.0) * p
    v = None if velocity is None else _f64(velocity).reshape(-1)
    if mu == 0.0:
        step = g
    else:
        v = mu * v + g
        step = g + mu * v if nesterov else v
    shape = np.shape(param)
    return (p - lr * step).reshape(shape), (None if v is None else v.reshape(shape))


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
):
    """One torch.optim.Adam (decoupled=False: L2, g += wd p) or AdamW (decoupled=True:
    p *= 1 - lr wd first) step, wd = 0 inside no_decay:
    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; vhat = max(vmax, v) with amsgrad,
    else v; p -= lr / (1 - b1^t) * m / (sqrt(vhat) / sqrt(1 - b2^t) + eps).
    Returns (param, m, v, vmax) (vmax None without amsgrad)."""
    lr, b1, b2, eps, wd = (float(np.float32(a)) for a in (lr, beta1, beta2, eps, weight_decay))
    shape = np.shape(param)
    p = _f64(param).reshape(-1)
    wd_i = np.where(decay_mask(p.size, no_decay), wd, 0.0)
    if decoupled:
        p = p * (1.0 - lr * wd_i)
        g = _f64(grad).reshape(-1)
    else:
        g = _f64(grad).reshape(-1) + wd_i * p
    m = b1 * _f64(m).reshape(-1) + (1.0 - b1) * g
    v = b2 * _f64(v).reshape(-1) + (1.0 - b2) * g * g
    vhat = np.maximum(_f64(vmax).reshape(-1), v) if amsgrad else v
    bias1 = 1.0 - b1**step
    bias2_sqrt = math.sqrt(1.0 - b2**step)
    p = p - (lr / bias1) * m / (np.sqrt(vhat) / bias2_sqrt + eps)
    return p.reshape(shape), m.reshape(shape), v.reshape(shape), (vhat.reshape(shape) if amsgrad else None)


def clip_by_global_norm(grad, max_norm: float) -> Tuple[np.ndarray, float]:
    """torch.nn.utils.clip_grad_norm_: norm = ||grad||_2, coef = max_norm / (norm + 1e-6),
    grad scaled by coef only if coef < 1. Returns (grad, norm before scaling)."""
    g = _f64(grad)
    norm = float(np.sqrt(np.sum(g * g)))
    coef = float(np.float32(max_norm)) / (norm + 1e-6)
    return (g * coef if coef < 1.0 else g.copy()), norm


def l1_l2_penalty(param, grad, l1: float, l2: float) -> Tuple[Optional[np.ndarray], float]:
    """Keras' l1_l2 regularizer: penalty l1 sum|w| + l2 sum w^2; grad + l1 sign(w) + 2 l2 w
    (sign(0) = 0). l1 and l2 as the op holds them (float32)."""
    w = _f64(param)
    l1, l2 = float(np.float32(l1)), float(np.float32(l2))
    penalty = l1 * float(np.abs(w).sum()) + l2 * float((w * w).sum())
    return (None if grad is None else _f64(grad) + l1 * np.sign(w) + 2.0 * l2 * w), penalty


# ---------------------------------------------------------------------------- metric statistics


def confusion_matrix_update(counts, logits, labels) -> np.ndarray:
    """counts + one per row at [label, prediction]; prediction: numpy.argmax (first
    maximum), or logit > 0 with one column. Integers: exact."""
    logits = np.asarray(logits)
    labels = np.asarray(labels, np.int64)
    pred = (logits[:, 0] > 0).astype(np.int64) if logits.shape[1] == 1 else np.argmax(logits, axis=1)
    out = np.array(counts, dtype=np.int64, copy=True)
    np.add.at(out, (labels, pred), 1)
    return out


def regression_stats_update(stats, pred, target, shift) -> np.ndarray:
    """stats + per column [sum |e|, sum e^2, sum d, sum d^2], e = pred - target,
    d = target - shift, in float64."""
    y = _f64(target)
    e = _f64(pred) - y
    d = y - _f64(shift)
    return _f64(stats) + np.stack([np.abs(e).sum(axis=0), (e * e).sum(axis=0), d.sum(axis=0), (d * d).sum(axis=0)])


def vmath(name, x):
    """The functions of the vectorized float32 math (cpp/cpu/vmath.h) in float64: exp (and
    exp_nonpositive, the same for x <= 0), log,
    log1p (and log1p_unit, the same on [0, 1]), tanh, sigmoid and gelu (tanh form)."""
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if name in ("exp", "exp_nonpositive"):
            return np.exp(x)
        if name == "log":
            return np.log(x)
        if name in ("log1p", "log1p_unit"):
            return np.log1p(x)
        if name == "tanh":
            return np.tanh(x)
        if name == "sigmoid":
            return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))
        return 0.5 * x * (1 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


# ---------------------------------------------------------------------------- int8

# Code ranges: int8 weights are symmetric, so -128 is never a code.
QCODES = {"int8": (-127, 127), "uint8": (0, 255)}


def _along(v, axis: str) -> np.ndarray:
    """A per-axis parameter (1,), (rows,) or (cols,) shaped to broadcast over (rows, cols)."""
    v = np.asarray(v)
    if axis == "tensor":
        return v.reshape(1, 1)
    if axis == "row":
        return v.reshape(-1, 1)
    return v.reshape(1, -1)


def quantize(x, scale, zero=None, *, dtype: str = "uint8", axis: str = "tensor") -> np.ndarray:
    """clip(rint(x / scale) + zero, lo, hi) as dtype, half to even. The quotient is the
    float32 one (correctly rounded, what the op computes, as ONNX QuantizeLinear defines
    it), so the codes are exact: specified in float32 on purpose, like dropout."""
    lo, hi = QCODES[dtype]
    with np.errstate(over="ignore"):  # a tiny scale: the quotient saturates to +-inf, then clips
        v = (np.asarray(x, np.float32) / _along(np.asarray(scale, np.float32), axis)).astype(np.float64)
    z = 0 if zero is None else _along(np.asarray(zero, np.int64), axis)
    return np.clip(np.rint(v) + z, lo, hi).astype(dtype)


def dequantize(q, scale, zero=None, *, axis: str = "tensor") -> np.ndarray:
    """scale (q - zero) in float64: exact (a float32 times an integer below 2^10), so the
    float32 op, which rounds it once, must equal it rounded to float32."""
    z = 0 if zero is None else _along(np.asarray(zero, np.int64), axis)
    return _along(_f64(np.asarray(scale, np.float32)), axis) * (np.asarray(q, np.int64) - z)


def quantize_rows_dynamic(x) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: lo = min(0, min x), hi = max(0, max x); scale = (hi - lo) / 255 in float32
    (1 where that is 0); zero = clip(rint(-lo / scale), 0, 255); then quantize per row.
    Returns (q uint8, scale float32, zero int32). Float32 on purpose, as quantize."""
    x = np.asarray(x, np.float32)
    rows = x.shape[0]
    lo = np.minimum(np.float32(0), x.min(axis=1) if x.shape[1] else np.zeros(rows, np.float32))
    hi = np.maximum(np.float32(0), x.max(axis=1) if x.shape[1] else np.zeros(rows, np.float32))
    scale = ((hi - lo).astype(np.float32) / np.float32(255)).astype(np.float32)
    scale[scale == 0] = 1
    zero = np.clip(np.rint((-lo / scale).astype(np.float32).astype(np.float64)), 0, 255).astype(np.int32)
    return quantize(x, scale, zero, dtype="uint8", axis="row"), scale, zero


def symmetric_scales(w, axis: str = "column") -> np.ndarray:
    """max |w| per column (cols,) or over the tensor (1,), divided by 127 in float32, 1
    where the maximum is 0; NaN is left out of the maximum (fmax)."""
    a = np.abs(np.asarray(w, np.float32))
    amax = np.fmax.reduce(a if axis == "column" else a.reshape(-1, 1), axis=0, initial=np.float32(0))
    if axis != "column":
        amax = np.fmax.reduce(amax, initial=np.float32(0)).reshape(1)
    return np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)


def observe_range(x, range_, *, momentum: float, first: bool) -> Tuple[Tuple[float, float], np.float32, int]:
    """QAT's moving input range: the batch's lo = min(0, min x), hi = max(0, max x) (NaN
    left out), taken as the range when ``first``, else averaged in as momentum * range +
    (1 - momentum) * batch in float64 (momentum a float32, each product rounded); then
    scale = float32((hi - lo) / 255) and zero = clip(rint(float32(-lo) / scale), 0, 255)
    (NaN, from an infinite range, clips to 0), or (1, 0) when scale is not > 0.
    Returns ((lo, hi), scale, zero)."""
    x = np.asarray(x, np.float32).ravel()
    lo = float(np.fmin.reduce(x, initial=np.float32(0)))
    hi = float(np.fmax.reduce(x, initial=np.float32(0)))
    if not first:
        m = float(np.float32(momentum))
        lo, hi = m * float(range_[0]) + (1.0 - m) * lo, m * float(range_[1]) + (1.0 - m) * hi
    scale = np.float32((hi - lo) / 255.0)
    if not scale > 0:
        return (lo, hi), np.float32(1), 0
    with np.errstate(invalid="ignore"):
        z = np.rint(np.float32(-lo) / scale)
    z = z if z > 0 else 0.0
    z = z if z < 255 else 255.0
    return (lo, hi), scale, int(z)


def gemm_s8(
    a,
    w,
    a_scale,
    a_zero,
    w_scale,
    *,
    bias=None,
    activation: str = "identity",
    out_dtype: str = "float32",
    out_scale: Optional[float] = None,
    out_zero: Optional[int] = None,
) -> np.ndarray:
    """uint8 a (m, k) times int8 w (k, n), accumulated in int64: acc - a_zero colsum(w)
    (= (a - a_zero) w) is the int32 output, exact. The float32 output is act(a_scale w_scale
    (acc - a_zero colsum) + bias) in float64; the uint8 output that value requantized,
    clip(rint(y / out_scale) + out_zero, 0, 255), from the float64 y (the op's float32 y
    may land on the other side of a rounding boundary: the tests allow that there only).
    a_scale / a_zero: (1,) or (m,); w_scale: (1,) or (n,)."""
    a64 = np.asarray(a, np.int64)
    m = a64.shape[0]
    az = (
        np.broadcast_to(np.asarray(a_zero, np.int64).reshape(-1), (m,))
        if np.size(a_zero) == 1
        else np.asarray(a_zero, np.int64)
    )
    acc = (a64 - az.reshape(-1, 1)) @ np.asarray(w, np.int64)
    if out_dtype == "int32":
        return acc
    s = _f64(a_scale).reshape(-1, 1) * _f64(w_scale).reshape(1, -1)
    r = s * acc + (0.0 if bias is None else _f64(bias).reshape(1, -1))
    y = activation_forward(activation, r)
    if out_dtype == "float32":
        return y
    return np.clip(np.rint(y / float(np.float32(out_scale))) + int(out_zero), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- bf16


def to_bf16(x) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16) as VCVTNEPS2BF16: zero and denormals to a zero of
    their sign, NaN to its upper half with the quiet bit set, the rest rounded to nearest
    even (the largest finite values may round to inf)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    mag = u & 0x7FFFFFFF
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    out = np.where(mag > 0x7F800000, (u >> 16) | 0x40, np.where(mag < 0x00800000, (u >> 16) & 0x8000, rounded))
    return (out & 0xFFFF).astype(np.uint16)


def bf16_to_float(b) -> np.ndarray:
    """bfloat16 bits -> their float32 values, exactly; denormals read as zero of their sign
    (the instructions' DAZ)."""
    b = np.asarray(b, np.uint16)
    b = np.where((b & 0x7F80) == 0, b & 0x8000, b).astype(np.uint32)
    return (b << 16).view(np.float32)


def dense_forward_bf16(x, weight, bias=None, *, activation: str = "identity") -> np.ndarray:
    """act(bf16(x) @ weight + bias) in float64 from the rounded operands (each product exact),
    weight as bfloat16 bits (in, out). relu keeps NaN (x < 0 ? 0 : x, as PyTorch's)."""
    xb = _f64(bf16_to_float(to_bf16(x)))
    with np.errstate(invalid="ignore", over="ignore"):
        z = xb @ _f64(bf16_to_float(weight))
        if bias is not None:
            z = z + _f64(bias)
        if activation == "relu":
            return np.where(z < 0, 0.0, z)
        return activation_forward(activation, z)


# ---------------------------------------------------------------------- preprocessing


def softmax(x) -> np.ndarray:
    """Softmax of each row in float64, from the row's maximum (the kernels' shift); a row
    with a NaN or +inf is NaN."""
    x = _f64(x)
    with np.errstate(invalid="ignore"):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def sigmoid(x) -> np.ndarray:
    """1 / (1 + e^-x) in float64."""
    return _sigmoid(_f64(x))


def feature_affine(x, scale, shift) -> np.ndarray:
    """x * scale + shift per column, exact in float64 (the kernel rounds the product and the sum)."""
    return _f64(x) * _f64(scale)[None, :] + _f64(shift)[None, :]
