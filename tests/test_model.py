"""The model API end to end: Sequential, Dense, Dropout, the optimizers, the losses, fit /
evaluate / predict, the datasets, threads, Ctrl-C and the device checks. The checks against
NumPy (the forward pass and every kind of training step) run on every device of the
``device`` fixture (cuda-emulated under two thread orders included); the rest of the API is
device-independent Python and C++ and runs on "cpu".

The central test is ``test_training_step_matches_numpy``: each fit step of the C++
executor (forward, loss, backward, clipping, optimizer update) is compared with a
float64 NumPy re-implementation, within error bounds derived below rather than guessed.

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
(see ``_AdamRef``), plus slack for the float32 rounding of the update formula itself.
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

import _thread
import re
import threading
import time
import tracemalloc

import numpy as np
import pytest

import customml as cm

U32 = 2.0**-24  # unit roundoff of float32


def f32(v: float) -> float:
    """A hyper-parameter as the executor holds it (a C++ float)."""
    return float(np.float32(v))


# ------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------


def _model(widths=(7, 3), acts=("relu", None), input_dim=5, seed=0, dropout=None, device="cpu",
           **kw) -> cm.Sequential:
    layers = []
    for i, (w, a) in enumerate(zip(widths, acts)):
        layers.append(cm.layers.Dense(w, activation=a, **kw))
        if dropout is not None and i < len(widths) - 1:
            layers.append(cm.layers.Dropout(dropout))
    return cm.Sequential(layers, input_dim=input_dim, seed=seed, device=device)


def _random_biases(model: cm.Sequential, rng: np.random.Generator, scale: float = 0.5) -> None:
    """Non-zero biases, so that a bias wrongly given weight decay would show."""
    ws = model.get_weights()
    for i in range(1, len(ws), 2):
        ws[i] = rng.uniform(-scale, scale, ws[i].shape).astype(np.float32)
    model.set_weights(ws)


def _softmax64(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax64(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def _sigmoid64(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))


_GELU_C, _GELU_A = np.sqrt(2.0 / np.pi), 0.044715


def _gelu(z):
    return 0.5 * z * (1.0 + np.tanh(_GELU_C * (z + _GELU_A * z**3)))


def _gelu_grad(z):
    t = np.tanh(_GELU_C * (z + _GELU_A * z**3))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * z * z)


# name: (f(z), f'(z) given z and f(z), bound on |f''|). |f''| bounds: tanh 4/(3 sqrt 3)
# = 0.77, sigmoid 0.096, gelu 2 phi(0) = 0.80; all below 1.
_ACTS = {
    "identity": (lambda z: z, lambda z, h: np.ones_like(z), 0.0),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, h: (z > 0).astype(np.float64), 0.0),
    "tanh": (np.tanh, lambda z, h: 1.0 - h * h, 1.0),
    "sigmoid": (_sigmoid64, lambda z, h: h * (1.0 - h), 1.0),
    "gelu": (_gelu, lambda z, h: _gelu_grad(z), 1.0),
}


def _numpy_forward(x, weights, acts):
    h = np.asarray(x, np.float64)
    for (w, b), act in zip(weights, acts):
        h = _ACTS[act or "identity"][0](h @ w.astype(np.float64) + b.astype(np.float64))
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
        f, df, c2 = _ACTS[act or "identity"]
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
        p = _softmax64(out)
        q = np.full_like(p, label_smoothing / classes)
        q[np.arange(n), y] += 1.0 - label_smoothing
        wi = np.ones(n) if class_weights is None else np.asarray(class_weights, np.float64)[y]
        total = wi.sum()
        value = float((wi * -(q * _log_softmax64(out)).sum(axis=1)).sum() / total)
        g = (wi / total)[:, None] * (p - q)
        # p's relative error is at most twice the largest logit error of its row (the
        # softmax's condition), plus 4 ulp for exp and the normalisation.
        a_g = (wi / total)[:, None] * (p * (2.0 * a_out.max(axis=1, keepdims=True) + 4.0) + q)
        correct = int((np.argmax(out, axis=1) == y).sum())
    elif loss == "binary_cross_entropy":
        t = np.asarray(y, np.float64).reshape(n, 1)
        s = _sigmoid64(out)
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
    for l in range(len(weights) - 1, -1, -1):
        w = weights[l][0].astype(np.float64)
        d = ds[l]
        dz = dh * d
        a_dz = np.abs(d) * a_dh + np.abs(dh) * (c2s[l] * az[l] + np.abs(d))
        grads[l] = (hs[l].T @ dz, dz.sum(axis=0))
        bounds[l] = (gamma * (ah[l].T @ np.abs(dz) + np.abs(hs[l]).T @ a_dz), gamma * a_dz.sum(axis=0))
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


class _SgdRef:
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


class _AdamRef:
    """torch.optim.Adam / AdamW (amsgrad optional). The update is a smooth but non-linear
    function of the gradients, and plain interval arithmetic would forget that m and v
    come from the same gradient (at step 1, m / sqrt(v) is exactly sign(g)). So each
    step's gradient error is sampled at {-e, 0, +e} and the state is carried per
    scenario (3**t of them after t steps); the interval is the range over the scenarios.
    Over relative widths this small the update is monotone unless its derivative
    vanishes, where the part missed is second order (below 1e-12 of the update)."""

    def __init__(self, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.0, amsgrad=False,
                 decoupled=False):
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


def _check_steps(model, x, y, acts, loss, ref, steps, *, clipnorm=None, label_smoothing=0.0, class_weights=None):
    """Runs ``steps`` one-batch fit calls and checks each against the reference."""
    n = x.shape[0]
    for t in range(1, steps + 1):
        ws = model.get_weights()
        pairs = [(ws[i], ws[i + 1]) for i in range(0, len(ws), 2)]
        value, loss_bound, correct, grads, bounds = _reference_grads(
            x, y, pairs, acts, loss, label_smoothing=label_smoothing, class_weights=class_weights)
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
            f"step {t}: history loss {got_loss!r} but NumPy gives {value!r} (bound {loss_bound:.3g})")
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
                    f"{j}: got {w64[j]!r}, want [{want.lo[j]!r}, {want.hi[j]!r}] (before the step {ws[i][j]!r})")
            widths.append((want.hi - want.lo).ravel())
            updates.append(np.abs(0.5 * (want.lo + want.hi) - ws[i].astype(np.float64)).ravel())
        # The tolerance is tight: over all parameters, the median interval is far below
        # the update, so a wrong formula cannot hide in it.
        width, update = np.concatenate(widths), np.concatenate(updates)
        moving = update > 0
        ratio = np.median(width[moving] / update[moving])
        assert ratio < 5e-3, f"step {t}: the reference intervals are too loose to test anything ({ratio:.2g})"


def _step_data(loss, n=16, input_dim=5, out=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, input_dim)).astype(np.float32)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, out, n).astype(np.int32)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, n).astype(np.int32)
    elif loss == "mse":
        y = rng.standard_normal((n, out)).astype(np.float32)
    return x, y


# ------------------------------------------------------------------------------------
# Build, weights, summary, names, initializers, constructors
# ------------------------------------------------------------------------------------


def test_build_shapes_count_params_and_summary():
    model = cm.Sequential([cm.layers.Dense(7, activation="relu"), cm.layers.Dropout(0.2), cm.layers.Dense(3)],
                          input_dim=5, seed=0)
    assert model.built and model.input_dim == 5 and model.output_dim == 3
    assert model.count_params() == 5 * 7 + 7 + 7 * 3 + 3
    ws = model.get_weights()
    assert [w.shape for w in ws] == [(5, 7), (7,), (7, 3), (3,)]
    assert all(w.dtype == np.float32 for w in ws)
    assert model.layers[1].get_weights() == []
    assert model.layers[0].count_params() == 42 and model.layers[1].count_params() == 0
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    for name in ("dense", "dropout", "dense_1"):
        assert re.search(rf"^{name} ", text, re.M), text
    assert "(None, 7)" in text and "(None, 3)" in text
    assert lines[-2] == "Total params: 66", text
    assert lines[-1] == "Trainable params: 66", text


def test_unbuilt_model_builds_on_first_predict():
    model = cm.Sequential([cm.layers.Dense(4), cm.layers.Dense(2)], seed=0)
    assert not model.built and model.input_dim is None
    with pytest.raises(ValueError, match="not built"):
        model.count_params()
    with pytest.raises(ValueError, match="not built"):
        model.get_weights()
    with pytest.raises(ValueError, match="not built"):
        model.summary(print_fn=lambda s: None)
    out = model.predict(np.ones((3, 6), np.float32))
    assert out.shape == (3, 2) and out.dtype == np.float32
    assert model.built and model.input_dim == 6 and model.count_params() == 6 * 4 + 4 + 4 * 2 + 2


def test_get_weights_returns_copies_and_set_weights_round_trips():
    model = _model()
    rng = np.random.default_rng(1)
    first = model.get_weights()
    second = model.get_weights()
    for a, b in zip(first, second):
        assert not np.shares_memory(a, b)
        np.testing.assert_array_equal(a, b)
    first[0][:] = 123.0  # writing into a copy must not reach the model
    np.testing.assert_array_equal(model.get_weights()[0], second[0])

    new = [rng.standard_normal(w.shape).astype(np.float32) for w in second]
    model.set_weights(new)
    back = model.get_weights()
    for a, b in zip(back, new):
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b)
    new[0][:] = 0.0  # the model holds its own copy
    np.testing.assert_array_equal(model.get_weights()[0], back[0])
    # float64 and nested lists convert
    model.layers[1].set_weights([back[2].astype(np.float64).tolist(), back[3].astype(np.float64)])
    np.testing.assert_array_equal(model.get_weights()[2], back[2])


def test_predict_follows_set_weights():
    """A prepared inference plan is dropped when the weights change."""
    model = _model()
    x = np.random.default_rng(2).standard_normal((9, 5)).astype(np.float32)
    model.predict(x)  # prepares whatever predict prepares
    rng = np.random.default_rng(3)
    ws = [rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(ws)
    got = model.predict(x)
    want = _numpy_forward(x, [(ws[0], ws[1]), (ws[2], ws[3])], ["relu", None])
    # float32 forward of a 5- and a 7-term dot product: relative error ~1e-6 of the
    # absolute-value sums, which are O(10) here.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "index, bad, match",
    [
        (0, np.zeros((5, 6), np.float32), r"kernel has shape \(5, 6\), expected \(5, 7\)"),
        (0, np.zeros((7, 5), np.float32), r"kernel has shape \(7, 5\)"),
        (0, np.zeros(35, np.float32), r"kernel has shape \(35,\)"),
        (1, np.zeros(6, np.float32), r"bias has shape \(6,\), expected \(7,\)"),
        (1, np.zeros((1, 7), np.float32), r"bias has shape \(1, 7\)"),
        (0, np.full((5, 7), np.nan, np.float32), r"kernel contains NaN"),
        (1, np.array([0, 0, 0, np.inf, 0, 0, 0], np.float32), r"bias contains NaN or inf"),
        (3, np.array([0, -np.inf, 0], np.float32), r"bias contains NaN or inf"),
    ],
)
def test_set_weights_rejects_wrong_shapes_and_non_finite(index, bad, match):
    model = _model()
    before = model.get_weights()
    ws = model.get_weights()
    ws[index] = bad
    with pytest.raises(ValueError, match=match):
        model.set_weights(ws)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_set_weights_wrong_count():
    model = _model()
    ws = model.get_weights()
    with pytest.raises(ValueError, match="more arrays"):
        model.set_weights(ws + [np.zeros(3, np.float32)])
    with pytest.raises(ValueError, match="too few arrays"):
        model.set_weights(ws[:3])
    with pytest.raises(ValueError, match="kernel, bias"):
        model.layers[0].set_weights([ws[0]])
    with pytest.raises(ValueError, match="no weights"):
        cm.Sequential([cm.layers.Dense(2), cm.layers.Dropout(0.5)], input_dim=2).layers[1].set_weights([ws[0]])


def test_set_weights_is_all_or_nothing():
    """A rejected set_weights must leave the model as it was, not half-updated: here the
    last array is bad, and the first layer must keep its old kernel (as Keras checks
    every shape before assigning any)."""
    model = _model()
    before = model.get_weights()
    ws = [w + 1.0 for w in before]
    ws[3] = np.array([0.0, np.nan, 0.0], np.float32)
    with pytest.raises(ValueError, match="bias"):
        model.set_weights(ws)
    for i, (a, b) in enumerate(zip(model.get_weights(), before)):
        np.testing.assert_array_equal(a, b, err_msg=f"weight {i} changed although set_weights raised")


def test_layer_auto_names():
    model = cm.Sequential([cm.layers.Dense(4), cm.layers.Dropout(0.1), cm.layers.Dense(4), cm.layers.Dropout(0.1),
                           cm.layers.Dense(2, name="head")])
    assert [l.name for l in model.layers] == ["dense", "dropout", "dense_1", "dropout_1", "head"]
    taken = cm.Sequential([cm.layers.Dense(3, name="dense_1"), cm.layers.Dense(3), cm.layers.Dense(3)])
    assert [l.name for l in taken.layers] == ["dense_1", "dense", "dense_2"]
    # names are per model
    assert cm.Sequential([cm.layers.Dense(3)]).layers[0].name == "dense"


def test_layer_cannot_join_two_models_and_built_model_grows():
    layer = cm.layers.Dense(3)
    cm.Sequential([layer])
    with pytest.raises(ValueError, match="already belongs"):
        cm.Sequential([layer])
    model = _model()
    model.add(cm.layers.Dense(2))  # rebuilds the executor (tests/test_trainable.py)
    assert model.output_dim == 2
    with pytest.raises(TypeError, match="layer"):
        cm.Sequential([cm.layers.Dense(2), "dense"])
    with pytest.raises(ValueError, match="Dense"):
        cm.Sequential([cm.layers.Dropout(0.5)], input_dim=3)


def test_glorot_uniform_bounds_and_moments():
    fan_in, fan_out = 300, 200
    model = cm.Sequential([cm.layers.Dense(fan_out)], input_dim=fan_in, seed=11)
    kernel, bias = model.get_weights()
    assert kernel.shape == (fan_in, fan_out) and kernel.dtype == np.float32
    assert bias.shape == (fan_out,) and bias.dtype == np.float32
    np.testing.assert_array_equal(bias, 0.0)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    k = kernel.astype(np.float64)
    # float32 rounding of a value inside [-limit, limit] can move it by half an ulp
    assert np.abs(k).max() <= limit * (1 + U32)
    # 60000 uniform draws: P(max |w| < 0.99 limit) = 0.99**60000, i.e. never
    assert np.abs(k).max() > 0.99 * limit
    n = k.size
    # mean: sd = limit / sqrt(3 n) ~ 0.0024 limit; 5 sigma
    assert abs(k.mean()) < 5 * limit / np.sqrt(3 * n)
    # second moment limit^2 / 3, sd of its estimate = limit^2 sqrt(4 / 45 / n); 5 sigma
    assert abs((k**2).mean() - limit**2 / 3) < 5 * limit**2 * np.sqrt(4 / 45 / n)


def test_he_normal_truncated_with_variance_2_over_fan_in():
    fan_in, fan_out = 400, 250
    model = cm.Sequential([cm.layers.Dense(fan_out, kernel_initializer="he_normal")], input_dim=fan_in, seed=12)
    kernel, bias = model.get_weights()
    assert kernel.shape == (fan_in, fan_out) and kernel.dtype == np.float32
    np.testing.assert_array_equal(bias, 0.0)
    k = kernel.astype(np.float64)
    n = k.size
    # As Keras: a unit normal truncated at +-2, scaled by sqrt(2 / fan_in) / 0.87962566
    # (the sd of the truncated unit normal), so the variance is 2 / fan_in.
    scale = np.sqrt(2.0 / fan_in) / 0.87962566103423978
    assert np.abs(k).max() <= 2.0 * scale * (1 + 2 * U32)
    # P(|z| in (1.96, 2] | |z| <= 2) = 0.0059: with 1e5 draws some land there, surely
    assert np.abs(k).max() > 1.96 * scale
    var = 2.0 / fan_in
    # For the truncated normal standardised to variance 1, E x^4 = 2.3656, so the sd of
    # the mean of x^2 over n draws is sqrt(1.3656 / n) = 0.0037 at n = 1e5; 5 sigma.
    assert abs((k**2).mean() / var - 1.0) < 5 * np.sqrt(1.3656 / n)
    assert abs(k.mean()) < 5 * np.sqrt(var / n)
    # not glorot: its variance 2 / (in + out) is 38 % smaller
    assert (k**2).mean() > 1.2 * 2.0 / (fan_in + fan_out)


def test_zeros_initializer_and_unknown_initializer():
    kernel, bias = cm.Sequential([cm.layers.Dense(4, kernel_initializer="zeros")], input_dim=3).get_weights()
    assert kernel.shape == (3, 4) and kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel, 0.0)
    np.testing.assert_array_equal(bias, 0.0)
    with pytest.raises(ValueError, match="kernel_initializer"):
        cm.layers.Dense(4, kernel_initializer="orthogonal")


@pytest.mark.parametrize("units", [0, -1, 2.5, True, "3", None])
def test_dense_rejects_bad_units(units):
    with pytest.raises(ValueError, match="units"):
        cm.layers.Dense(units)


def test_dense_activations():
    assert cm.layers.Dense(2).activation == "identity"
    assert cm.layers.Dense(2, activation="linear").activation == "identity"
    for act in ("relu", "sigmoid", "tanh", "gelu"):
        assert cm.layers.Dense(2, activation=act).activation == act
    with pytest.raises(ValueError, match="activation"):
        cm.layers.Dense(2, activation="swish")
    with pytest.raises(TypeError, match="name"):
        cm.layers.Dense(2, name=3)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), True, "0.5", None])
def test_dropout_rejects_bad_rate(rate):
    with pytest.raises(ValueError, match="rate"):
        cm.layers.Dropout(rate)


def test_dropout_accepts_zero_and_fractions():
    assert cm.layers.Dropout(0).rate == 0.0
    assert cm.layers.Dropout(0.999).rate == 0.999


# ------------------------------------------------------------------------------------
# Activations through the executor's forward pass
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["identity", "relu", "sigmoid", "tanh", "gelu"])
def test_predict_matches_numpy_forward(act, device):
    rng = np.random.default_rng(4)
    model = _model(widths=(33, 4), acts=(act, None), input_dim=17, seed=1, device=device)
    _random_biases(model, rng)
    x = rng.standard_normal((29, 17)).astype(np.float32)
    got = model.predict(x)
    assert got.shape == (29, 4) and got.dtype == np.float32
    ws = model.get_weights()
    want = _numpy_forward(x, [(ws[0], ws[1]), (ws[2], ws[3])], [act, None])
    # The same running-error bound as the step checks (see the module docstring): the
    # absolute evaluation A of each output, times gamma_N with N = 17 + 33 roundings
    # of the two dot products plus 10 for the bias additions and the activation.
    w1, b1, w2, b2 = (w.astype(np.float64) for w in ws)
    f, df, _ = _ACTS[act]
    z1 = x.astype(np.float64) @ w1 + b1
    h1 = f(z1)
    a_h1 = np.abs(df(z1, h1)) * (np.abs(x) @ np.abs(w1) + np.abs(b1)) + np.abs(h1)
    a_out = a_h1 @ np.abs(w2) + np.abs(b2)
    np.testing.assert_array_less(np.abs(got - want), 60 * U32 * a_out)
    assert np.abs(want).max() > 0.5  # the outputs are not all tiny


# ------------------------------------------------------------------------------------
# The training step against NumPy (the main correctness test of cpp/network.cpp)
# ------------------------------------------------------------------------------------

_OPTIMIZER_CASES = {
    # id: (optimizer as compiled, reference, steps)
    "sgd": (lambda: cm.optimizers.SGD(0.5), lambda: _SgdRef(0.5), 2),
    "sgd-name": (lambda: "sgd", lambda: _SgdRef(0.01), 1),
    "sgd-l2": (lambda: cm.optimizers.SGD(0.5, weight_decay=0.1), lambda: _SgdRef(0.5, weight_decay=0.1), 2),
    "sgd-momentum": (lambda: cm.optimizers.SGD(0.1, momentum=0.9), lambda: _SgdRef(0.1, momentum=0.9), 3),
    "sgd-nesterov-l2": (lambda: cm.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.05),
                        lambda: _SgdRef(0.1, momentum=0.9, nesterov=True, weight_decay=0.05), 3),
    "adam": (lambda: cm.optimizers.Adam(1e-2), lambda: _AdamRef(1e-2), 2),
    "adam-name": (lambda: "adam", lambda: _AdamRef(), 1),
    "adam-l2": (lambda: cm.optimizers.Adam(1e-2, weight_decay=0.3), lambda: _AdamRef(1e-2, weight_decay=0.3), 2),
    "adam-eps": (lambda: cm.optimizers.Adam(1e-2, beta_1=0.8, beta_2=0.9, epsilon=1e-2),
                 lambda: _AdamRef(1e-2, beta_1=0.8, beta_2=0.9, epsilon=1e-2), 2),
    "adam-amsgrad": (lambda: cm.optimizers.Adam(1e-2, beta_2=0.5, amsgrad=True),
                     lambda: _AdamRef(1e-2, beta_2=0.5, amsgrad=True), 3),
    "adamw": (lambda: cm.optimizers.AdamW(1e-2, weight_decay=0.5),
              lambda: _AdamRef(1e-2, weight_decay=0.5, decoupled=True), 2),
    "adamw-name": (lambda: "adamw", lambda: _AdamRef(weight_decay=0.01, decoupled=True), 2),
    "adamw-amsgrad": (lambda: cm.optimizers.AdamW(1e-2, beta_2=0.5, weight_decay=0.2, amsgrad=True),
                      lambda: _AdamRef(1e-2, beta_2=0.5, weight_decay=0.2, amsgrad=True, decoupled=True), 3),
}


@pytest.mark.parametrize("case", sorted(_OPTIMIZER_CASES))
def test_training_step_matches_numpy(case, device):
    """5 -> 7 relu -> 3, softmax cross-entropy, one whole-data batch per fit call."""
    make_opt, make_ref, steps = _OPTIMIZER_CASES[case]
    x, y = _step_data("softmax_cross_entropy")
    model = _model(seed=3, device=device)
    _random_biases(model, np.random.default_rng(5))
    model.compile(optimizer=make_opt(), loss="softmax_cross_entropy", metrics=["accuracy"])
    _check_steps(model, x, y, ["relu", None], "softmax_cross_entropy", make_ref(), steps)


@pytest.mark.parametrize("opt, ref", [
    (lambda: cm.optimizers.SGD(0.5, clipnorm=0.05), lambda: _SgdRef(0.5)),
    (lambda: cm.optimizers.SGD(0.2, momentum=0.5, clipnorm=0.05), lambda: _SgdRef(0.2, momentum=0.5)),
    (lambda: cm.optimizers.Adam(1e-2, clipnorm=0.05), lambda: _AdamRef(1e-2)),
], ids=["sgd", "sgd-momentum", "adam"])
def test_clipnorm_clips_the_global_norm(opt, ref, device):
    x, y = _step_data("softmax_cross_entropy")
    model = _model(seed=3, device=device)
    _random_biases(model, np.random.default_rng(5))
    model.compile(optimizer=opt(), loss="softmax_cross_entropy")
    _check_steps(model, x, y, ["relu", None], "softmax_cross_entropy", ref(), 2, clipnorm=0.05)


def test_clipnorm_above_the_norm_changes_nothing():
    x, y = _step_data("softmax_cross_entropy")
    a, b = _model(seed=3), _model(seed=3)
    a.compile(optimizer=cm.optimizers.SGD(0.5, clipnorm=1e6), loss="softmax_cross_entropy")
    b.compile(optimizer=cm.optimizers.SGD(0.5), loss="softmax_cross_entropy")
    for m in (a, b):
        m.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)  # the same float32 operations: bit for bit


@pytest.mark.parametrize("act", ["identity", "tanh", "sigmoid", "gelu"])
def test_training_step_other_activations(act, device):
    x, y = _step_data("softmax_cross_entropy")
    model = _model(acts=(act, None), seed=4, device=device)
    _random_biases(model, np.random.default_rng(6))
    model.compile(optimizer=cm.optimizers.SGD(0.5, momentum=0.5), loss="softmax_cross_entropy")
    _check_steps(model, x, y, [act, None], "softmax_cross_entropy", _SgdRef(0.5, momentum=0.5), 2)


def test_training_step_deeper_model_with_wide_layers(device):
    """Three dense layers, widths across the GEMM tiles (NR 16/32, MR 4/6/12), batch 13."""
    x, y = _step_data("softmax_cross_entropy", n=13, input_dim=19, out=5, seed=7)
    model = _model(widths=(33, 17, 5), acts=("tanh", "relu", None), input_dim=19, seed=8, device=device)
    _random_biases(model, np.random.default_rng(9))
    model.compile(optimizer=cm.optimizers.Adam(1e-2, weight_decay=0.1), loss="softmax_cross_entropy")
    _check_steps(model, x, y, ["tanh", "relu", None], "softmax_cross_entropy", _AdamRef(1e-2, weight_decay=0.1), 2)


@pytest.mark.parametrize("smoothing, weights", [(0.1, None), (0.0, [1.0, 3.0, 0.5]), (0.2, [0.0, 2.0, 1.0])])
def test_training_step_label_smoothing_and_class_weights(smoothing, weights, device):
    x, y = _step_data("softmax_cross_entropy")
    model = _model(seed=3, device=device)
    _random_biases(model, np.random.default_rng(5))
    loss = cm.losses.SoftmaxCrossEntropy(label_smoothing=smoothing, class_weights=weights)
    model.compile(optimizer=cm.optimizers.SGD(0.5), loss=loss, metrics=["accuracy"])
    _check_steps(model, x, y, ["relu", None], "softmax_cross_entropy", _SgdRef(0.5), 2,
                 label_smoothing=smoothing, class_weights=weights)


@pytest.mark.parametrize("opt, ref", [
    (lambda: cm.optimizers.SGD(0.5), lambda: _SgdRef(0.5)),
    (lambda: cm.optimizers.Adam(1e-2, weight_decay=0.1), lambda: _AdamRef(1e-2, weight_decay=0.1)),
], ids=["sgd", "adam-l2"])
def test_training_step_binary_cross_entropy(opt, ref, device):
    x, y = _step_data("binary_cross_entropy")
    model = _model(widths=(7, 1), seed=3, device=device)
    _random_biases(model, np.random.default_rng(5))
    model.compile(optimizer=opt(), loss="binary_cross_entropy", metrics=["accuracy"])
    _check_steps(model, x, y, ["relu", None], "binary_cross_entropy", ref(), 2)


@pytest.mark.parametrize("out, one_d", [(2, False), (1, False), (1, True)])
def test_training_step_mse(out, one_d, device):
    x, y = _step_data("mse", out=out)
    if one_d:
        y = y[:, 0].copy()
    model = _model(widths=(7, out), seed=3, device=device)
    _random_biases(model, np.random.default_rng(5))
    model.compile(optimizer=cm.optimizers.AdamW(1e-2, weight_decay=0.3), loss="mse")
    _check_steps(model, x, y, ["relu", None], "mse", _AdamRef(1e-2, weight_decay=0.3, decoupled=True), 2)


def test_mse_sigmoid_output_layer(device):
    """An activation on the last layer is part of the prediction, and of the gradient."""
    x, y = _step_data("mse", out=2)
    y = _sigmoid64(y).astype(np.float32)
    model = _model(widths=(7, 2), acts=("relu", "sigmoid"), seed=3, device=device)
    model.compile(optimizer=cm.optimizers.SGD(1.0), loss="mse")
    _check_steps(model, x, y, ["relu", "sigmoid"], "mse", _SgdRef(1.0), 2)


def test_minibatches_equal_successive_steps():
    """fit with batch_size 6 over 16 rows (batches 6, 6, 4; no shuffle) is, bit for bit,
    three one-batch fits on those slices: same operations on the same rows."""
    x, y = _step_data("softmax_cross_entropy")
    a, b = _model(seed=3), _model(seed=3)
    for m in (a, b):
        m.compile(optimizer=cm.optimizers.Adam(1e-2, amsgrad=True), loss="softmax_cross_entropy")
    a.fit(x, y, epochs=1, batch_size=6, shuffle=False, verbose=0)
    for s in (slice(0, 6), slice(6, 12), slice(12, 16)):
        b.fit(x[s], y[s], epochs=1, batch_size=16, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_compile_names_equal_objects():
    """Optimizer and loss names build the same configuration as the default objects."""
    x, y = _step_data("softmax_cross_entropy")
    pairs = [("adam", cm.optimizers.Adam()), ("Adam", cm.optimizers.Adam()), ("sgd", cm.optimizers.SGD()),
             ("adamw", cm.optimizers.AdamW())]
    for name, obj in pairs:
        a, b = _model(seed=3), _model(seed=3)
        a.compile(optimizer=name, loss="sparse_categorical_crossentropy")
        b.compile(optimizer=obj, loss=cm.losses.SoftmaxCrossEntropy())
        for m in (a, b):
            m.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb, err_msg=name)
    assert isinstance(cm.optimizers.get("adamw"), cm.optimizers.AdamW)
    assert isinstance(cm.losses.get("binary_crossentropy"), cm.losses.BinaryCrossEntropy)
    assert isinstance(cm.losses.get("mean_squared_error"), cm.losses.MeanSquaredError)


def test_a_single_metric_name_is_accepted_as_a_string():
    x, y = _step_data("softmax_cross_entropy")
    model = _model()
    model.compile(optimizer="sgd", loss="softmax_cross_entropy", metrics="accuracy")
    history = model.fit(x, y, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}


def test_optimizer_objects_keep_their_settings():
    sgd = cm.optimizers.SGD(0.05, momentum=0.9, nesterov=True)
    assert (sgd.learning_rate, sgd.momentum, sgd.nesterov) == (0.05, 0.9, True)
    adam = cm.optimizers.Adam(amsgrad=True)
    assert adam.amsgrad and adam.learning_rate == 1e-3 and adam.weight_decay == 0.0
    assert cm.optimizers.AdamW().weight_decay == 0.01
    assert cm.optimizers.Adam(clipnorm=1.0).clipnorm == 1.0


def test_recompile_resets_the_optimizer_state():
    x, y = _step_data("softmax_cross_entropy")
    a = _model(seed=3)
    a.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy")
    a.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    b = _model(seed=99)
    b.set_weights(a.get_weights())
    a.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy")
    b.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy")
    for m in (a, b):
        m.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_compile_checks_the_loss_against_the_model():
    model = _model()
    with pytest.raises(ValueError, match="one output"):
        model.compile(loss="binary_cross_entropy")
    with pytest.raises(ValueError, match="class_weights"):
        model.compile(loss=cm.losses.SoftmaxCrossEntropy(class_weights=[1.0, 2.0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        cm.losses.SoftmaxCrossEntropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="class_weights"):
        cm.losses.SoftmaxCrossEntropy(class_weights=[1.0, -1.0])


# ------------------------------------------------------------------------------------
# fit: History, validation, verbosity
# ------------------------------------------------------------------------------------


def _classification_data(n=120, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
    return x, np.minimum(y, classes - 1)


def test_fit_history_keys_and_lengths():
    x, y = _classification_data()
    model = _model(widths=(16, 3), input_dim=6)
    model.compile("adam", metrics=["accuracy"])
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert isinstance(history, cm.History) and model.history is history
    assert list(history.history) == ["loss", "accuracy"]
    assert history.epoch == [0, 1, 2]
    for key, values in history.history.items():
        assert len(values) == 3 and all(isinstance(v, float) and np.isfinite(v) for v in values), key
    assert all(0.0 <= a <= 1.0 for a in history.history["accuracy"])
    assert history.params == {"epochs": 3, "batch_size": 32, "steps": 4, "samples": 120}


def test_fit_without_metrics_records_loss_only():
    x, y = _classification_data()
    model = _model(widths=(16, 3), input_dim=6)
    model.compile("sgd")
    history = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0)
    assert list(history.history) == ["loss", "val_loss"]


def test_fit_epochs_zero():
    x, y = _classification_data()
    model = _model(widths=(16, 3), input_dim=6)
    model.compile("adam", metrics=["accuracy"])
    before = model.get_weights()
    history = model.fit(x, y, epochs=0, verbose=1)
    assert history.history == {} and history.epoch == []
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_fit_validation_split_uses_the_last_samples():
    x, y = _classification_data(n=100)
    model = _model(widths=(16, 3), input_dim=6)
    model.compile("adam", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=16, validation_split=0.2, verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 2 for v in history.history.values())
    assert history.params["samples"] == 80
    # As Keras: the last 20 % before shuffling; at the end of the last epoch the model
    # is the one evaluate sees now (the same computation, so exactly equal).
    result = model.evaluate(x[80:], y[80:])
    assert history.history["val_loss"][-1] == result["loss"]
    assert history.history["val_accuracy"][-1] == result["accuracy"]


def test_fit_validation_data():
    x, y = _classification_data(n=100)
    xv, yv = _classification_data(n=37, seed=1)
    model = _model(widths=(16, 3), input_dim=6)
    model.compile("adam", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, validation_data=(xv, yv), verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert history.params["samples"] == 100
    result = model.evaluate(xv, yv)
    assert history.history["val_loss"][-1] == result["loss"]
    assert history.history["val_accuracy"][-1] == result["accuracy"]
    # a list works as well as a tuple
    model.fit(x, y, epochs=1, validation_data=[xv, yv], verbose=0)


def test_verbose_levels(capsys):
    x, y = _classification_data()
    model = _model(widths=(16, 3), input_dim=6)
    model.compile("adam", metrics=["accuracy"])
    capsys.readouterr()

    model.fit(x, y, epochs=3, verbose=0)
    out, err = capsys.readouterr()
    assert out == "" and err == ""

    model.fit(x, y, epochs=3, validation_split=0.1, verbose=2)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3, out
    for i, line in enumerate(lines):
        assert re.match(rf"Epoch {i + 1}/3 - \d+\.\d+s - loss: \d+\.\d{{4}} - accuracy: \d\.\d{{4}} - "
                        r"val_loss: \d+\.\d{4} - val_accuracy: \d\.\d{4}$", line), line
    assert err == ""

    model.fit(x, y, epochs=2, verbose=1)
    out, err = capsys.readouterr()
    assert out == ""
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "batch" in err and "loss=" in err

    with pytest.raises(ValueError, match="verbose"):
        model.fit(x, y, epochs=1, verbose=3)


# ------------------------------------------------------------------------------------
# evaluate, predict, predict_proba
# ------------------------------------------------------------------------------------


def test_evaluate_matches_numpy_from_predict(device):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((301, 12)).astype(np.float32)
    y = rng.integers(0, 4, 301).astype(np.int32)
    model = _model(widths=(20, 4), input_dim=12, seed=5, device=device)
    model.compile("adam", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    result = model.evaluate(x, y)
    assert set(result) == {"loss", "accuracy"}
    assert all(isinstance(v, float) for v in result.values())
    logits = model.predict(x)
    want_loss = float(-_log_softmax64(logits)[np.arange(301), y].mean())
    want_acc = float((np.argmax(logits, axis=1) == y).mean())
    # Same logits (evaluate runs the same forward); the loss kernel takes exp in float32
    # (1 ulp each) and sums in float64, so the mean differs by a few ulp of float32.
    assert abs(result["loss"] - want_loss) <= 8 * U32 * max(1.0, want_loss)
    assert result["accuracy"] == want_acc
    # batch size only changes how the float64 sum is grouped
    small = model.evaluate(x, y, batch_size=7)
    assert small["accuracy"] == result["accuracy"]
    assert abs(small["loss"] - result["loss"]) <= 1e-12 * result["loss"]


def test_evaluate_binary_and_mse(device):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = _model(widths=(8, 1), input_dim=4, seed=2, device=device)
    model.compile("adam", loss="binary_cross_entropy", metrics=["accuracy"])
    result = model.evaluate(x, y)
    z = model.predict(x).astype(np.float64)[:, 0]
    want = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    assert set(result) == {"loss", "accuracy"}
    # The kernel's max(z, 0) - z t is float64 on float32 logits; its log1p(exp(-|z|))
    # is float32 (cpp/cpu/vmath.h) within 6u of the term (argued in
    # tests/test_binary_cross_entropy.py), plus the float64 summation order.
    log_term = np.log1p(np.exp(-np.abs(z)))
    assert abs(result["loss"] - want) <= 6 * U32 * log_term.mean() + 1e-12 * max(1.0, want)
    assert result["accuracy"] == float(((z > 0) == (y == 1)).mean())

    t = rng.standard_normal((50, 2)).astype(np.float32)
    reg = _model(widths=(8, 2), input_dim=4, seed=2, device=device)
    reg.compile("sgd", loss="mse")
    result = reg.evaluate(x, t)
    assert set(result) == {"loss"}
    want = np.mean((reg.predict(x).astype(np.float64) - t) ** 2)
    # the executor rounds each difference to float32 (u relative), then squares and sums
    # in float64: the mean is off by at most 2u relative
    assert abs(result["loss"] - want) <= 2 * U32 * want


def test_predict_shape_dtype_and_out():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((37, 5)).astype(np.float32)
    model = _model()
    got = model.predict(x)
    assert isinstance(got, np.ndarray) and got.shape == (37, 3) and got.dtype == np.float32
    assert got.flags.c_contiguous and np.isfinite(got).all()
    buf = np.full((37, 3), np.nan, np.float32)
    ret = model.predict(x, out=buf)
    assert ret is buf
    np.testing.assert_array_equal(buf, got)
    # a float64 x is converted; the output still lands in buf
    buf[:] = np.nan
    assert model.predict(x.astype(np.float64), out=buf) is buf
    np.testing.assert_array_equal(buf, got)
    # lists work
    np.testing.assert_array_equal(model.predict(x[:2].tolist()), got[:2])


def test_predict_fast_path_output_and_fallbacks():
    """The executor takes float32 C-contiguous 2-D x as it is and allocates the output
    itself; every other x goes through the checked path, with the same result."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((9, 5)).astype(np.float32)
    model = _model()
    got = model.predict(x)
    assert type(got) is np.ndarray and got.shape == (9, 3) and got.dtype == np.float32
    assert got.flags.c_contiguous and got.flags.writeable and got.flags.owndata
    assert not np.shares_memory(got, x)
    again = model.predict(x)
    assert again is not got and not np.shares_memory(again, got)
    np.testing.assert_array_equal(again, got)
    # one row, and a contiguous slice of rows, take the fast path too
    np.testing.assert_array_equal(model.predict(x[4:5]), got[4:5])
    np.testing.assert_array_equal(model.predict(x[2:6]), got[2:6])
    # float32 under another dtype object, big-endian, strided, Fortran order, float64:
    # the checked path, the same values
    meta = x.astype(np.dtype(np.float32, metadata={"unit": "m"}))
    assert meta.dtype is not np.dtype(np.float32)
    for other in (meta, x.astype(">f4"), np.repeat(x, 2, axis=0)[::2], np.asfortranarray(x), x.astype(np.float64)):
        np.testing.assert_array_equal(model.predict(other), got)
        buf = np.full((9, 3), np.nan, np.float32)
        assert model.predict(other, out=buf) is buf
        np.testing.assert_array_equal(buf, got)
    # an out float32 under another dtype object is accepted, through the checked path
    out_meta = np.full((9, 3), np.nan, np.dtype(np.float32, metadata={"unit": "m"}))
    assert model.predict(x, out=out_meta) is out_meta
    np.testing.assert_array_equal(out_meta, got)


def test_try_predict_declines_without_touching_out():
    model = _model()
    x = np.random.default_rng(15).standard_normal((4, 5)).astype(np.float32)
    net = model._net
    out = np.full((4, 3), np.nan, np.float32)
    for other in (x.tolist(), x.astype(np.float64), np.asfortranarray(x), x[0], x[:0], x.astype(">f4")):
        assert net.try_predict(other, out, 1024) is None
    assert net.try_predict(x, [[0.0] * 3] * 4, 1024) is None
    assert np.isnan(out).all()
    # taken: into out, or a new array when out is None
    assert net.try_predict(x, out, 1024) is out
    np.testing.assert_array_equal(net.try_predict(x, None, 1024), out)
    # the checked entry allocates too, and takes what try_predict declines
    np.testing.assert_array_equal(net.predict(x, None, 1024), out)
    np.testing.assert_array_equal(net.predict(x.astype(np.dtype(np.float32, metadata={"u": 1})), None, 1024), out)
    with pytest.raises(TypeError, match=r"\[predict\] x must be float32, got float64"):
        net.predict(x.astype(np.float64), None, 1024)
    # errors of arrays the fast path recognises come from the checked path, unchanged
    with pytest.raises(ValueError, match=r"\[predict\] x has 4 features but the model expects 5"):
        net.try_predict(x[:, :4].copy(), None, 1024)
    with pytest.raises(ValueError, match=r"out has shape \(4, 2\)"):
        net.try_predict(x, np.empty((4, 2), np.float32), 1024)
    with pytest.raises(ValueError, match=r"batch_size must be >= 1"):
        net.try_predict(x, None, 0)


def test_predict_out_allocates_nothing():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4000, 32)).astype(np.float32)
    model = _model(widths=(64, 50), acts=("relu", None), input_dim=32)
    out = np.empty((4000, 50), np.float32)
    model.predict(x, out=out)  # warm-up: workspace pool, packing buffers
    model.predict(x)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        model.predict(x)
        _, peak_alloc = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        model.predict(x, out=out)
        _, peak_out = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the measurement sees NumPy's allocations: without out= the 800 kB result shows
    assert peak_alloc >= out.nbytes
    # with out=, nothing close to an output array (a few hundred bytes of Python objects)
    assert peak_out < out.nbytes // 100, f"predict(out=) allocated {peak_out} bytes"


def test_predict_proba_softmax(device):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    model = _model(device=device)
    model.compile("adam")
    p = model.predict_proba(x)
    assert p.shape == (40, 3) and p.dtype == np.float32
    # float32 softmax: each entry within a few ulp of the float64 softmax of the same logits
    want = _softmax64(model.predict(x))
    np.testing.assert_allclose(p, want, rtol=8 * U32, atol=8 * U32)
    # rows sum to 1 up to 3 float32 roundings of terms <= 1
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=1), 1.0, rtol=0, atol=8 * U32)
    # huge logits: no overflow (warnings are errors here), probabilities stay in [0, 1]
    ws = model.get_weights()
    model.set_weights([ws[0] * 1e4, ws[1], ws[2] * 1e4, ws[3]])
    p = model.predict_proba(x)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()


def test_predict_proba_binary_is_sigmoid(device):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    model = _model(widths=(7, 1), device=device)
    model.compile("adam", loss="binary_cross_entropy")
    p = model.predict_proba(x)
    assert p.shape == (40, 1) and p.dtype == np.float32
    np.testing.assert_allclose(p, _sigmoid64(model.predict(x)), rtol=4 * U32, atol=0)
    ws = model.get_weights()
    model.set_weights([ws[0] * 1e5, ws[1], ws[2] * 1e5, ws[3]])  # logits of +-1e6: no overflow
    p = model.predict_proba(x)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    reg = _model(device=device)
    reg.compile("adam", loss="mse")
    with pytest.raises(ValueError, match="classification"):
        reg.predict_proba(x)


def test_predict_is_batch_invariant(isa):
    """predict(x)[i] == predict(x[i:i+1])[0] bit for bit: GEMMs of fewer than MR rows take
    the small-m path, larger ones the tiled microkernel; depth 300 and 1030 cross
    KC = 256, width 1030 crosses NC = 1024, 130 rows cross MC = 120."""
    rng = np.random.default_rng(16)
    model = cm.Sequential([cm.layers.Dense(1030, activation="gelu"), cm.layers.Dense(40, activation="relu"),
                           cm.layers.Dense(10)], input_dim=300, seed=1)
    _random_biases(model, rng, scale=0.1)
    x = rng.standard_normal((130, 300)).astype(np.float32)
    full = model.predict(x)
    assert full.shape == (130, 10) and full.dtype == np.float32
    for i in range(130):
        np.testing.assert_array_equal(model.predict(x[i:i + 1])[0], full[i], err_msg=f"row {i} alone")
    for b in (2, 3, 4, 5, 6, 7, 11, 12, 13, 25, 121):
        np.testing.assert_array_equal(model.predict(x[:b]), full[:b], err_msg=f"first {b} rows")
        np.testing.assert_array_equal(model.predict(x[-b:]), full[-b:], err_msg=f"last {b} rows")
    for bs in (1, 3, 4, 5, 64):
        np.testing.assert_array_equal(model.predict(x, batch_size=bs), full, err_msg=f"batch_size {bs}")


# ------------------------------------------------------------------------------------
# Dropout
# ------------------------------------------------------------------------------------


def test_dropout_is_off_in_predict_and_evaluate():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((60, 5)).astype(np.float32)
    y = rng.integers(0, 3, 60).astype(np.int32)
    drop = _model(widths=(16, 9, 3), acts=("relu", "tanh", None), dropout=0.5, seed=2)
    plain = _model(widths=(16, 9, 3), acts=("relu", "tanh", None), seed=9)
    assert [l.name for l in drop.layers] == ["dense", "dropout", "dense_1", "dropout_1", "dense_2"]
    plain.set_weights(drop.get_weights())
    np.testing.assert_array_equal(drop.predict(x), plain.predict(x))  # same GEMMs: bit for bit
    for m in (drop, plain):
        m.compile("adam", metrics=["accuracy"])
    assert drop.evaluate(x, y) == plain.evaluate(x, y)
    # ... and a trailing Dropout too
    tail = cm.Sequential([cm.layers.Dense(16, activation="relu"), cm.layers.Dense(3), cm.layers.Dropout(0.5)],
                         input_dim=5)
    tail.set_weights(drop.get_weights()[:2] + [rng.standard_normal((16, 3)).astype(np.float32),
                                               np.zeros(3, np.float32)])
    ref = cm.Sequential([cm.layers.Dense(16, activation="relu"), cm.layers.Dense(3)], input_dim=5)
    ref.set_weights(tail.get_weights())
    np.testing.assert_array_equal(tail.predict(x), ref.predict(x))
    buf = np.full((60, 3), np.nan, np.float32)
    np.testing.assert_array_equal(tail.predict(x, out=buf), ref.predict(x))


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_dropout_mask_in_training(rate):
    """[Dropout(rate), Dense(1)] with a zero kernel, one row of ones, target 1, mse and
    SGD: the kernel gradient is -2 mask_j / (1 - rate), so after one step the kernel *is*
    the scaled mask: zeros where dropped, lr * 2 / (1 - rate) where kept."""
    d = 20000
    model = cm.Sequential([cm.layers.Dropout(rate), cm.layers.Dense(1, kernel_initializer="zeros")],
                          input_dim=d, seed=21)
    lr = 0.125
    model.compile(optimizer=cm.optimizers.SGD(lr), loss="mse")
    model.fit(np.ones((1, d), np.float32), np.ones((1, 1), np.float32), epochs=1, batch_size=1, verbose=0)
    kernel, bias = model.get_weights()
    assert kernel.shape == (d, 1) and kernel.dtype == np.float32
    k = kernel[:, 0].astype(np.float64)
    dropped = k == 0.0
    # binomial(d, rate): sd = sqrt(rate (1 - rate) / d) <= 0.0036; 5 sigma
    assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / d)
    # kept: 1 / (1 - rate) scaling, then x 2 (mse) x lr; four float32 roundings
    np.testing.assert_allclose(k[~dropped], lr * 2.0 / (1.0 - rate), rtol=8 * U32)
    np.testing.assert_allclose(bias, [lr * 2.0], rtol=4 * U32)  # the bias sees no dropout


def test_dropout_backward_uses_the_forward_mask(device):
    """Dense(64, identity) -> Dropout(0.5) -> Dense(3), one sample, one SGD step with
    lr = 1. The second kernel's gradient row j is h_j m_j / (1 - rate) dz, so its zero
    rows show the forward mask m; the first kernel's gradient must then be
    x^T (dz W2^T * m / (1 - rate)): the backward pass applies the same mask, scaled."""
    rate = 0.5
    rng = np.random.default_rng(22)
    model = cm.Sequential([cm.layers.Dense(64), cm.layers.Dropout(rate), cm.layers.Dense(3)], input_dim=6, seed=4,
                          device=device)
    _random_biases(model, rng)
    model.compile(optimizer=cm.optimizers.SGD(1.0), loss="softmax_cross_entropy")
    x = rng.standard_normal((1, 6)).astype(np.float32)
    y = np.array([1], np.int32)
    w1, b1, w2, b2 = (w.astype(np.float64) for w in model.get_weights())
    model.fit(x, y, epochs=1, batch_size=1, verbose=0)
    n1, nb1, n2, nb2 = (w.astype(np.float64) for w in model.get_weights())
    dw2 = w2 - n2
    kept = np.abs(dw2).max(axis=1) > 0
    # 64 units, binomial(64, 0.5): sd 4, so 10..54 kept is a 5.5-sigma band
    assert 10 <= kept.sum() <= 54, kept.sum()
    h = x.astype(np.float64) @ w1 + b1
    hd = h * kept / (1.0 - rate)
    z = hd @ w2 + b2
    g = _softmax64(z)
    g[0, 1] -= 1.0
    dh = (g @ w2.T) * kept / (1.0 - rate)
    want = [x.T.astype(np.float64) @ dh, dh[0], hd.T @ g, g[0]]
    got = [w1 - n1, b1 - nb1, dw2, b2 - nb2]
    for name, a, b in zip(("kernel 0", "bias 0", "kernel 1", "bias 1"), got, want):
        # one row: sums of at most 64 products of O(1) values, then p - lr g rounding
        # (2**-24 of |p| <= 3): 1e-5 absolute is far above both, far below the gradients
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=name)
    assert np.abs(want[0]).max() > 0.1


def test_dropout_zero_rate_trains_like_no_dropout():
    """Dropout(0.0) is accepted and must be the identity in training too: the dense
    layer after it must see (and take its gradient from) the previous layer's output."""
    x, y = _step_data("softmax_cross_entropy")
    plain = _model(seed=3)
    zero = cm.Sequential([cm.layers.Dense(7, activation="relu"), cm.layers.Dropout(0.0), cm.layers.Dense(3)],
                         input_dim=5, seed=3)
    zero.set_weights(plain.get_weights())
    for m in (plain, zero):
        m.compile(optimizer=cm.optimizers.SGD(0.5), loss="softmax_cross_entropy")
        m.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for i, (a, b) in enumerate(zip(zero.get_weights(), plain.get_weights())):
        np.testing.assert_array_equal(a, b, err_msg=f"weight {i} after one SGD step with Dropout(0.0)")


def test_dropout_op_statistics():
    n = 100_000
    x = np.full(n, 3.0, np.float32)
    for rate in (0.1, 0.3, 0.7):
        y = cm.ops.dropout(x, rate=rate, seed=5, stream=2)
        assert y.shape == (n,) and y.dtype == np.float32
        kept = y != 0
        sd = np.sqrt(rate * (1 - rate) / n)
        assert abs((~kept).mean() - rate) < 5 * sd, rate
        for lane in range(4):  # each Philox output word is used
            sd_lane = np.sqrt(rate * (1 - rate) / (n / 4))
            assert abs((~kept[lane::4]).mean() - rate) < 5 * sd_lane, (rate, lane)
        # x * float32(1 / (1 - rate)): two roundings
        np.testing.assert_allclose(y[kept], 3.0 / (1.0 - rate), rtol=4 * U32)
    np.testing.assert_array_equal(cm.ops.dropout(x, rate=0.0, seed=5, stream=2), x)
    a = cm.ops.dropout(x, rate=0.5, seed=5, stream=2)
    np.testing.assert_array_equal(a, cm.ops.dropout(x, rate=0.5, seed=5, stream=2))
    assert not np.array_equal(a, cm.ops.dropout(x, rate=0.5, seed=5, stream=3))
    assert not np.array_equal(a, cm.ops.dropout(x, rate=0.5, seed=6, stream=2))


# ------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------


def test_datasets_load_digits():
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("digits")
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64)
    assert y_train.shape == (1437,) and y_test.shape == (360,)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int32 and y_test.dtype == np.int32
    assert x_train.flags.c_contiguous and x_test.flags.c_contiguous
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert x_test.min() >= 0.0 and x_test.max() <= 1.0  # pixel / 16
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    # stratified: each class's test share is within one sample of 20 %
    for c in range(10):
        total = (y_train == c).sum() + (y_test == c).sum()
        assert abs((y_test == c).sum() - 0.2 * total) <= 1.0, c
    (x2, y2), (x3, y3) = cm.datasets.load("digits")
    for a, b in ((x_train, x2), (y_train, y2), (x_test, x3), (y_test, y3)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, n_train, n_test, features, classes", [
    ("breast_cancer", 455, 114, 30, 2), ("wine", 142, 36, 13, 3), ("iris", 120, 30, 4, 3)])
def test_datasets_load_others(name, n_train, n_test, features, classes):
    (x_train, y_train), (x_test, y_test) = cm.datasets.load(name)
    assert x_train.shape == (n_train, features) and x_test.shape == (n_test, features)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32 and y_test.dtype == np.int32
    # min-max scaled with the training split's range: [0, 1] exactly per feature
    np.testing.assert_array_equal(x_train.min(axis=0), 0.0)
    np.testing.assert_allclose(x_train.max(axis=0), 1.0, rtol=2 * U32)
    assert set(np.unique(y_train)) == set(range(classes))


def test_datasets_errors():
    assert set(cm.datasets.names()) >= {"digits", "breast_cancer", "wine", "iris"}
    with pytest.raises(ValueError, match="mnist_typo"):
        cm.datasets.load("mnist_typo")
    with pytest.raises(ValueError, match="path"):
        cm.datasets.load("digits", path="/tmp/digits")


def test_learns_digits():
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("digits")
    model = cm.Sequential([cm.layers.Dense(64, activation="relu"), cm.layers.Dropout(0.1), cm.layers.Dense(10)],
                          input_dim=64, seed=0)
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    assert time.perf_counter() - start < 10.0
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(x_test, y_test)
    # chance is 0.1; this network reaches ~0.97, 0.9 leaves a wide margin for seeds
    assert result["accuracy"] >= 0.9, result


def test_learns_breast_cancer_binary():
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("breast_cancer")
    model = cm.Sequential([cm.layers.Dense(16, activation="relu"), cm.layers.Dense(1)], input_dim=30, seed=0)
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="binary_cross_entropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=30, batch_size=32, verbose=0)
    result = model.evaluate(x_test, y_test)
    assert result["accuracy"] >= 0.9, result  # majority class is 0.63; this reaches ~0.97
    p = model.predict_proba(x_test)[:, 0]
    assert float(((p > 0.5) == (y_test == 1)).mean()) == result["accuracy"]


def test_regression_learns_a_linear_map():
    rng = np.random.default_rng(18)
    x = rng.standard_normal((512, 4)).astype(np.float32)
    w = np.array([1.0, -2.0, 0.5, 3.0])
    y = (x @ w + 0.5).astype(np.float32)  # 1-D targets for one output
    model = cm.Sequential([cm.layers.Dense(1)], input_dim=4, seed=0)
    model.compile(optimizer=cm.optimizers.Adam(5e-2), loss="mse")
    model.fit(x, y, epochs=60, batch_size=64, verbose=0)
    kernel, bias = model.get_weights()
    # noiseless linear data, convex loss: Adam gets within a few 1e-3 of the solution
    np.testing.assert_allclose(kernel[:, 0], w, atol=0.05)
    np.testing.assert_allclose(bias, [0.5], atol=0.05)
    assert model.evaluate(x, y)["loss"] < 1e-3


# ------------------------------------------------------------------------------------
# Threads, Ctrl-C
# ------------------------------------------------------------------------------------


def test_concurrent_predict_matches_serial():
    rng = np.random.default_rng(19)
    model = cm.Sequential([cm.layers.Dense(96, activation="relu"), cm.layers.Dense(48, activation="tanh"),
                           cm.layers.Dense(10)], input_dim=40, seed=3)
    batches = [rng.standard_normal((b, 40)).astype(np.float32) for b in (1, 3, 4, 5, 17, 130, 600)]
    serial = [model.predict(x) for x in batches]
    errors, results = [], {}
    barrier = threading.Barrier(8)

    def worker(k):
        try:
            barrier.wait()
            outs = []
            for it in range(30):
                j = (k + it) % len(batches)
                outs.append((j, model.predict(batches[j])))
            results[k] = outs
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 8
    for k, outs in results.items():
        for j, out in outs:
            np.testing.assert_array_equal(out, serial[j], err_msg=f"thread {k}, batch {j}")


def test_fit_and_predict_from_threads_at_once():
    """fit takes exclusive access and predict shared access: interleaving them from
    threads neither crashes nor yields a half-updated result (every prediction is
    finite and has the right shape), and training still converges to the same place as
    when run alone (fit is deterministic)."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((512, 20)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def make():
        m = cm.Sequential([cm.layers.Dense(64, activation="relu"), cm.layers.Dense(2)], input_dim=20, seed=1)
        m.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy")
        return m

    alone = make()
    alone.fit(x, y, epochs=5, batch_size=32, verbose=0)
    model = make()
    errors, stop, counts = [], threading.Event(), []

    def reader():
        n = 0
        try:
            while not stop.is_set():
                out = model.predict(x[:7])
                assert out.shape == (7, 2) and np.isfinite(out).all()
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        counts.append(n)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors
    assert sum(counts) > 0
    for a, b in zip(model.get_weights(), alone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_predict_never_sees_a_half_written_weight_change():
    """write_params takes exclusive access: predictions from threads racing a writer that
    swaps between two weight sets each match one set exactly, and the writer is not
    starved by the readers' loop."""
    rng = np.random.default_rng(24)
    model = cm.Sequential([cm.layers.Dense(64, activation="relu"), cm.layers.Dense(8)], input_dim=16, seed=2)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    net = model._net
    flat = [rng.standard_normal(net.num_params).astype(np.float32) for _ in range(2)]
    wants = []
    for f in flat:
        net.write_params(0, f)
        wants.append(model.predict(x))
    assert not np.array_equal(wants[0], wants[1])
    errors, stop = [], threading.Event()

    def reader():
        out = np.empty((3, 8), np.float32)
        try:
            while not stop.is_set():
                model.predict(x, out=out)
                assert any(np.array_equal(out, w) for w in wants), "a prediction mixed two weight sets"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for i in range(300):
            net.write_params(0, flat[i % 2])
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors


def test_predict_releases_the_gil():
    """While one thread is inside a long predict (one C++ call), another Python thread
    keeps running."""
    rng = np.random.default_rng(20)
    model = cm.Sequential([cm.layers.Dense(1024, activation="relu"), cm.layers.Dense(10)], input_dim=512, seed=0)
    # 60,000 rows (~63 GFLOP): at least 0.1 s even on two Zen 5 cores, where 20,000 took 0.06 s.
    x = rng.standard_normal((60000, 512)).astype(np.float32)
    model.predict(x[:10])
    stamps, stop = [], threading.Event()

    def ticker():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        time.sleep(0.05)
        start = time.perf_counter()
        model.predict(x)
        end = time.perf_counter()
    finally:
        stop.set()
        t.join()
    inside = np.array([s for s in stamps if start <= s <= end])
    duration = end - start
    assert duration > 0.1, f"predict took only {duration:.3f}s, too short to tell"
    # GIL held: one gap as long as the C++ call; released: ticks every ~1-5 ms. Half the
    # call's duration leaves room for a busy 2-core machine.
    gaps = np.diff(np.concatenate([[start], inside, [end]]))
    assert gaps.max() < 0.5 * duration, f"no Python thread ran for {gaps.max():.3f}s of a {duration:.3f}s predict"


def test_ctrl_c_during_fit():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2048, 64)).astype(np.float32)
    y = rng.integers(0, 10, 2048).astype(np.int32)
    model = cm.Sequential([cm.layers.Dense(128, activation="relu"), cm.layers.Dropout(0.2), cm.layers.Dense(10)],
                          input_dim=64, seed=0)
    model.compile("adam", metrics=["accuracy"])
    timer = threading.Timer(0.3, _thread.interrupt_main)
    returned = interrupted = False
    start = time.perf_counter()
    timer.start()
    try:
        model.fit(x, y, epochs=2000, batch_size=32, verbose=0)  # minutes if not interrupted
        returned = True
        timer.join()
        time.sleep(1.0)  # a late interrupt lands here, not in a later test
    except KeyboardInterrupt:
        interrupted = True
    finally:
        timer.cancel()
        timer.join()
    elapsed = time.perf_counter() - start
    assert interrupted and not returned, "KeyboardInterrupt did not propagate out of fit"
    assert elapsed < 5.0, f"fit took {elapsed:.1f}s to stop after Ctrl-C"
    for w in model.get_weights():
        assert np.isfinite(w).all()
    out = model.predict(x[:5])
    assert out.shape == (5, 10) and np.isfinite(out).all()
    history = model.fit(x[:256], y[:256], epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])


# ------------------------------------------------------------------------------------
# Devices
# ------------------------------------------------------------------------------------


def test_cuda_unavailable_here():
    if cm.build_info()["cuda_compiled"]:
        pytest.skip("this build has the CUDA backend")
    assert cm.cuda.is_available() is False
    reason = cm.cuda.unavailable_reason()
    assert isinstance(reason, str) and reason.strip()


def test_cuda_device_rejected_with_the_reason():
    if cm.cuda.is_available():
        pytest.skip("a GPU is available")
    reason = cm.cuda.unavailable_reason()
    with pytest.raises(ValueError) as info:
        cm.Sequential([cm.layers.Dense(2)], input_dim=3, device="cuda")
    assert reason in str(info.value)


def test_other_devices_rejected():
    with pytest.raises(ValueError, match="tpu"):
        cm.Sequential([cm.layers.Dense(2)], input_dim=3, device="tpu")
    with pytest.raises(TypeError, match="device"):
        cm.Sequential([cm.layers.Dense(2)], input_dim=3, device=0)
    model = cm.Sequential([cm.layers.Dense(2)], input_dim=3, device="cpu")
    assert model.device == "cpu"


@pytest.mark.parametrize("device", ["tpu", "cuda"])
def test_device_validated_at_construction_without_input_dim(device):
    """A model that cannot run on its device should say so when it is created, not at
    the first fit/predict (possibly after loading data for minutes)."""
    if device == "cuda" and cm.cuda.is_available():
        pytest.skip("a GPU is available")
    with pytest.raises(ValueError, match=device):
        cm.Sequential([cm.layers.Dense(2)], device=device)


def test_failed_construction_leaves_the_layers_reusable():
    """Trying a device and falling back to another with the same layer objects is a
    natural pattern; a constructor that raised must not have claimed the layers."""
    layers = [cm.layers.Dense(4, activation="relu"), cm.layers.Dense(2)]
    with pytest.raises(ValueError):
        cm.Sequential(layers, input_dim=3, device="tpu")
    model = cm.Sequential(layers, input_dim=3, device="cpu")
    assert model.predict(np.ones((1, 3), np.float32)).shape == (1, 2)
