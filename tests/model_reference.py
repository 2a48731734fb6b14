"""A Sequential model's forward pass and training step in float64 NumPy, with bounds on the
executor's float32 error: the reference of tests/test_training_step.py (each fit step
against NumPy), test_predict.py (the forward pass), test_weights.py, test_evaluate.py,
test_compile.py and test_dropout_layer.py, which also share its small models and data.

How the tolerances of the step checks are derived
-------------------------------------------------
The executor computes in float32 (unit roundoff u = 2**-24). For an expression built
from sums and products, the classic running-error result (Higham, *Accuracy and
Stability of Numerical Algorithms*, 3.1) bounds the rounding error of the computed
value by gamma_N * A, where A is the same expression evaluated on absolute values and
N is the longest chain of roundings from an input to the result, gamma_N = N u / (1 - N u).
``_reference_grads`` carries, next to every float64 value, its "absolute evaluation" A
(with the error of each input propagated to first order; activations, softmax and the
sigmoid are smooth, so their first-order propagation is the derivative, plus a few ulp
for the libm call itself). N is the input width, plus every layer width twice
(forward and backward dot products), plus the batch (the kernel-gradient sums), plus
6 per layer and 10 for bias additions, activations and the loss: more than the
longest chain in the executor. The second-order terms are below (N u)**2 ~ 1e-10.

The optimizer update is then evaluated over gradients in [g - e, g + e]: exactly in
interval arithmetic for SGD (linear in g), and over sampled error scenarios for Adam
(see ``AdamRef``), plus slack for the float32 rounding of the update formula itself.
Each step starts from the parameters the library itself produced (read back with
get_weights, exact float32 inputs), so errors do not compound across steps. Every
check also asserts that its tolerance is tight: over all parameters, the median
interval is below 0.5 % of the update, while the bugs these tests look for (decay on
biases, a missing bias correction, eps in the wrong place, per-tensor clipping, a
wrong gradient scale) move updates by several percent with these hyper-parameters.
Measured here: the typical element uses under 20 % of its interval's half-width (a
bound, not an estimate); only elements whose gradient is within its error of zero,
where Adam's update is ill-conditioned, reach the edge of their (then wide) interval.
"""

from __future__ import annotations

import numpy as np

import customml as cm
from support import U32


def f32(v: float) -> float:
    """A hyper-parameter as the executor holds it (a C++ float)."""
    return float(np.float32(v))


def make_model(
    widths=(7, 3), acts=("relu", None), input_dim=5, seed=0, dropout=None, device="cpu", **kw
) -> cm.Sequential:
    """Dense layers of these widths and activations (a Dropout between each two when
    dropout is a rate), 5 inputs by default."""
    layers = []
    for i, (w, a) in enumerate(zip(widths, acts)):
        layers.append(cm.layers.Dense(w, activation=a, **kw))
        if dropout is not None and i < len(widths) - 1:
            layers.append(cm.layers.Dropout(dropout))
    return cm.Sequential(layers, input_dim=input_dim, seed=seed, device=device)


def random_biases(model: cm.Sequential, rng: np.random.Generator, scale: float = 0.5) -> None:
    """Non-zero biases, so that a bias wrongly given weight decay would show."""
    ws = model.get_weights()
    for i in range(1, len(ws), 2):
        ws[i] = rng.uniform(-scale, scale, ws[i].shape).astype(np.float32)
    model.set_weights(ws)


def softmax64(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax64(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def sigmoid64(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))


_GELU_C, _GELU_A = np.sqrt(2.0 / np.pi), 0.044715


def _gelu(z):
    return 0.5 * z * (1.0 + np.tanh(_GELU_C * (z + _GELU_A * z**3)))


def _gelu_grad(z):
    t = np.tanh(_GELU_C * (z + _GELU_A * z**3))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * z * z)


# name: (f(z), f'(z) given z and f(z), bound on |f''|). |f''| bounds: tanh 4/(3 sqrt 3)
# = 0.77, sigmoid 0.096, gelu 2 phi(0) = 0.80; all below 1.
ACTIVATIONS = {
    "identity": (lambda z: z, lambda z, h: np.ones_like(z), 0.0),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, h: (z > 0).astype(np.float64), 0.0),
    "tanh": (np.tanh, lambda z, h: 1.0 - h * h, 1.0),
    "sigmoid": (sigmoid64, lambda z, h: h * (1.0 - h), 1.0),
    "gelu": (_gelu, lambda z, h: _gelu_grad(z), 1.0),
}


def forward_bound(x, weights, acts):
    """The float64 forward pass at the float32 parameters ``weights`` (a list of (kernel,
    bias)) and each output's absolute evaluation A: a float32 forward is within gamma_N A
    of it, N the longest chain of roundings (see above), whatever its summation order. An
    activation's error is its derivative times its input's, plus its own few ulp of the
    result (and for gelu 2**-22 |z|, the absolute part of cpp/cpu/vmath.h's bound)."""
    h = np.asarray(x, np.float64)
    a = np.abs(h)
    for (w, b), act in zip(weights, acts):
        w, b = w.astype(np.float64), b.astype(np.float64)
        f, df, _ = ACTIVATIONS[act or "identity"]
        z = h @ w + b
        a_z = a @ np.abs(w) + np.abs(b)
        h = f(z)
        own = 0.0 if act in (None, "identity") else np.abs(h) + (np.abs(z) if act == "gelu" else 0.0)
        a = np.abs(df(z, h)) * a_z + own
    return h, a


def numpy_forward(x, weights, acts):
    h = np.asarray(x, np.float64)
    for (w, b), act in zip(weights, acts):
        h = ACTIVATIONS[act or "identity"][0](h @ w.astype(np.float64) + b.astype(np.float64))
    return h


def _reference_grads(x, y, weights, acts, loss, label_smoothing=0.0, class_weights=None):
    """Float64 forward, loss and backward at the float32 parameters ``weights`` (a list
    of (kernel, bias)). Returns (loss, loss_bound, correct, grads, bounds): grads is a
    list of (dW, db) and bounds the matching bounds on the executor's float32 error."""
    n = x.shape[0]
    h = np.asarray(x, np.float64)
    hs, ah, zs, az, ds, c2s = [h], [np.abs(h)], [], [], [], []
    for (w, b), act in zip(weights, acts):
        w, b = w.astype(np.float64), b.astype(np.float64)
        f, df, c2 = ACTIVATIONS[act or "identity"]
        z = hs[-1] @ w + b
        a_z = ah[-1] @ np.abs(w) + np.abs(b)
        hh = f(z)
        d = df(z, hh)
        zs.append(z), az.append(a_z), ds.append(d), c2s.append(c2)
        hs.append(hh), ah.append(np.abs(d) * a_z + np.abs(hh))
    out, a_out = hs[-1], ah[-1]
    correct = None
    if loss == "softmax_cross_entropy":
        classes = out.shape[1]
        p = softmax64(out)
        q = np.full_like(p, label_smoothing / classes)
        q[np.arange(n), y] += 1.0 - label_smoothing
        wi = np.ones(n) if class_weights is None else np.asarray(class_weights, np.float64)[y]
        total = wi.sum()
        value = float((wi * -(q * log_softmax64(out)).sum(axis=1)).sum() / total)
        g = (wi / total)[:, None] * (p - q)
        # p's relative error is at most twice the largest logit error of its row (the
        # softmax's condition), plus 4 ulp for exp and the normalisation.
        a_g = (wi / total)[:, None] * (p * (2.0 * a_out.max(axis=1, keepdims=True) + 4.0) + q)
        correct = int((np.argmax(out, axis=1) == y).sum())
    elif loss == "binary_cross_entropy":
        t = np.asarray(y, np.float64).reshape(n, 1)
        s = sigmoid64(out)
        value = float(np.mean(np.maximum(out, 0) - out * t + np.log1p(np.exp(-np.abs(out)))))
        g = (s - t) / n
        a_g = (0.25 * a_out + s + t) / n  # sigmoid' <= 1/4
        correct = int(((out[:, 0] > 0) == (t[:, 0] != 0)).sum())
    elif loss == "mse":
        t = np.asarray(y, np.float64).reshape(out.shape)
        value = float(np.mean((out - t) ** 2))
        g = 2.0 * (out - t) / out.size
        a_g = 2.0 * (a_out + np.abs(t)) / out.size
    else:
        raise AssertionError(loss)

    widths = [w.shape[1] for w, _ in weights]
    chain = x.shape[1] + 2 * sum(widths) + n + 6 * len(weights) + 10
    gamma = chain * U32 / (1.0 - chain * U32)
    # first order: dL = sum_j dL/dout_j d out_j, and the loss formula's own roundings
    loss_bound = gamma * float((np.abs(g) * a_out).sum()) + 8 * U32 * (1.0 + abs(value))

    grads, bounds = [None] * len(weights), [None] * len(weights)
    dh, a_dh = g, a_g
    for i in range(len(weights) - 1, -1, -1):
        w = weights[i][0].astype(np.float64)
        d = ds[i]
        dz = dh * d
        a_dz = np.abs(d) * a_dh + np.abs(dh) * (c2s[i] * az[i] + np.abs(d))
        grads[i] = (hs[i].T @ dz, dz.sum(axis=0))
        bounds[i] = (gamma * (ah[i].T @ np.abs(dz) + np.abs(hs[i]).T @ a_dz), gamma * a_dz.sum(axis=0))
        dh = dz @ w.T
        a_dh = (a_dz + np.abs(dz)) @ np.abs(w).T
    return value, loss_bound, correct, grads, bounds


class _Interval:
    """Elementwise [lo, hi] in float64."""

    def __init__(self, lo, hi=None):
        self.lo = np.asarray(lo, np.float64)
        self.hi = self.lo if hi is None else np.asarray(hi, np.float64)

    def widen(self, rel: float) -> "_Interval":
        m = np.maximum(np.abs(self.lo), np.abs(self.hi))
        return _Interval(self.lo - rel * m, self.hi + rel * m)


class SgdRef:
    """torch.optim.SGD (dampening 0) in interval arithmetic."""

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.mu, self.nesterov, self.wd = f32(lr), f32(momentum), nesterov, f32(weight_decay)
        self.vel = {}

    def step(self, key, p, g: _Interval, decay: bool, t: int) -> _Interval:
        wd = self.wd if decay else 0.0
        g_lo, g_hi = g.lo + wd * p, g.hi + wd * p
        if self.mu:
            v = self.vel.get(key, _Interval(np.zeros_like(p)))
            v_new = _Interval(self.mu * v.lo + g_lo, self.mu * v.hi + g_hi).widen(2 * U32)
            self.vel[key] = v_new
            if self.nesterov:
                s_lo, s_hi = g_lo + self.mu * v_new.lo, g_hi + self.mu * v_new.hi
            else:
                s_lo, s_hi = v_new.lo, v_new.hi
        else:
            s_lo, s_hi = g_lo, g_hi
        # float32: p - lr * s rounds once relative to p, the step's few operations
        # (decay, momentum, lr) a few times relative to the step
        slack = 2 * U32 * np.abs(p) + 8 * U32 * self.lr * np.maximum(np.abs(s_lo), np.abs(s_hi))
        return _Interval(p - self.lr * s_hi - slack, p - self.lr * s_lo + slack)


class AdamRef:
    """torch.optim.Adam / AdamW (amsgrad optional). The update is a smooth but non-linear
    function of the gradients, and plain interval arithmetic would forget that m and v
    come from the same gradient (at step 1, m / sqrt(v) is exactly sign(g)). So each
    step's gradient error is sampled at {-e, 0, +e} and the state is carried per
    scenario (3**t of them after t steps); the interval is the range over the scenarios.
    Over relative widths this small the update is monotone unless its derivative
    vanishes, where the part missed is second order (below 1e-12 of the update)."""

    def __init__(
        self, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False
    ):
        self.lr, self.b1, self.b2, self.eps = f32(lr), f32(beta_1), f32(beta_2), f32(epsilon)
        self.wd, self.amsgrad, self.decoupled = f32(weight_decay), amsgrad, decoupled
        self.m, self.v, self.vmax = {}, {}, {}

    def step(self, key, p, g: _Interval, decay: bool, t: int) -> _Interval:
        wd = self.wd if decay else 0.0
        zero = np.zeros((1,) + p.shape)
        gs = np.stack([g.lo, 0.5 * (g.lo + g.hi), g.hi])[None]  # (1, 3, ...)
        if self.decoupled:
            p_s = p * (1.0 - self.lr * wd)
        else:
            p_s = p
            gs = gs + wd * p
        flat = lambda a: a.reshape((-1,) + p.shape)  # noqa: E731
        m = flat(self.b1 * self.m.get(key, zero)[:, None] + (1 - self.b1) * gs)
        v = flat(self.b2 * self.v.get(key, zero)[:, None] + (1 - self.b2) * gs * gs)
        self.m[key], self.v[key] = m, v
        vhat = v
        if self.amsgrad:
            vhat = np.maximum(flat(np.repeat(self.vmax.get(key, zero)[:, None], 3, axis=1)), v)
            self.vmax[key] = vhat
        r = m / (np.sqrt(vhat) / np.sqrt(1.0 - self.b2**t) + self.eps)
        step = self.lr / (1.0 - self.b1**t)
        new = p_s - step * r
        # float32 rounding: the decoupled shrink and the final subtraction (u of p each),
        # the update formula and the stored m and v (u per step each, at most 3 steps
        # here), relative to the step
        slack = 3 * U32 * np.abs(p) + 32 * U32 * step * np.abs(r).max(axis=0)
        return _Interval(new.min(axis=0) - slack, new.max(axis=0) + slack)


def _clip(grads, errs, clipnorm):
    """torch.nn.utils.clip_grad_norm_ over all gradients at once, in intervals."""
    flat_g = np.concatenate([g.ravel() for g in grads])
    flat_e = np.concatenate([e.ravel() for e in errs])
    norm_lo = np.sqrt((np.maximum(np.abs(flat_g) - flat_e, 0.0) ** 2).sum())
    norm_hi = np.sqrt(((np.abs(flat_g) + flat_e) ** 2).sum()) * (1 + 4 * U32 * flat_g.size)
    c_lo = min(1.0, clipnorm / (norm_hi + 1e-6))
    c_hi = min(1.0, clipnorm / (norm_lo + 1e-6))
    out = []
    for g, e in zip(grads, errs):
        lo = np.minimum((g - e) * c_lo, (g - e) * c_hi)
        hi = np.maximum((g + e) * c_lo, (g + e) * c_hi)
        out.append(_Interval(lo, hi).widen(2 * U32))
    return out, (norm_lo, norm_hi)


def check_steps(model, x, y, acts, loss, ref, steps, *, clipnorm=None, label_smoothing=0.0, class_weights=None):
    """Runs ``steps`` one-batch fit calls and checks each against the reference."""
    n = x.shape[0]
    for t in range(1, steps + 1):
        ws = model.get_weights()
        pairs = [(ws[i], ws[i + 1]) for i in range(0, len(ws), 2)]
        value, loss_bound, correct, grads, bounds = _reference_grads(
            x, y, pairs, acts, loss, label_smoothing=label_smoothing, class_weights=class_weights
        )
        flat_g = [a for pair in grads for a in pair]
        flat_e = [a for pair in bounds for a in pair]
        if clipnorm is not None:
            g_int, (norm_lo, _) = _clip(flat_g, flat_e, clipnorm)
            assert norm_lo > 1.5 * clipnorm, "the test needs a gradient norm that clipping really changes"
        else:
            g_int = [_Interval(g - e, g + e) for g, e in zip(flat_g, flat_e)]
        expected = [ref.step(i, ws[i].astype(np.float64), g_int[i], decay=(i % 2 == 0), t=t) for i in range(len(ws))]

        history = model.fit(x, y, epochs=1, batch_size=n, shuffle=False, verbose=0)

        new = model.get_weights()
        assert [w.shape for w in new] == [w.shape for w in ws]
        assert all(w.dtype == np.float32 for w in new)
        got_loss = history.history["loss"][0]
        assert abs(got_loss - value) <= loss_bound, (
            f"step {t}: history loss {got_loss!r} but NumPy gives {value!r} (bound {loss_bound:.3g})"
        )
        if correct is not None and "accuracy" in history.history:
            assert history.history["accuracy"][0] == correct / n, f"step {t}: accuracy"
        widths, updates = [], []
        for i, (w_new, want) in enumerate(zip(new, expected)):
            name = f"step {t}, {'kernel' if i % 2 == 0 else 'bias'} {i // 2}"
            w64 = w_new.astype(np.float64)
            bad = ~((w64 >= want.lo) & (w64 <= want.hi))
            if bad.any():
                j = tuple(np.argwhere(bad)[0])
                raise AssertionError(
                    f"{name}: {int(bad.sum())} of {bad.size} elements outside the reference interval; first at "
                    f"{j}: got {w64[j]!r}, want [{want.lo[j]!r}, {want.hi[j]!r}] (before the step {ws[i][j]!r})"
                )
            widths.append((want.hi - want.lo).ravel())
            updates.append(np.abs(0.5 * (want.lo + want.hi) - ws[i].astype(np.float64)).ravel())
        # The tolerance is tight: over all parameters, the median interval is far below
        # the update, so a wrong formula cannot hide in it.
        width, update = np.concatenate(widths), np.concatenate(updates)
        moving = update > 0
        ratio = np.median(width[moving] / update[moving])
        assert ratio < 5e-3, f"step {t}: the reference intervals are too loose to test anything ({ratio:.2g})"


def step_data(loss, n=16, input_dim=5, out=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, input_dim)).astype(np.float32)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, out, n).astype(np.int32)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, n).astype(np.int32)
    elif loss == "mse":
        y = rng.standard_normal((n, out)).astype(np.float32)
    return x, y
