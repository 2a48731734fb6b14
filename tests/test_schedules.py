"""Learning-rate schedules (customml.schedules), Network.set_learning_rate, and
``compile(clipnorm=)``.

The schedule formulas are checked against values worked out by hand; everything that
trains compares weights bit for bit (``tobytes``), since a schedule only changes which
float32 learning rate each executor step receives: the same rates must give the same
bits, so no tolerance applies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import customml as cm
from customml.schedules import CosineDecay, ExponentialDecay, StepDecay


def _data(n=48, d=5, classes=3):
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, d)).astype(np.float32), (np.arange(n) % classes).astype(np.int32)


def _model(optimizer, device="cpu", **compile_kw):
    model = cm.Sequential(
        [cm.layers.Dense(6, activation="tanh"), cm.layers.Dense(3)], input_dim=5, seed=5, device=device
    )
    model.compile(optimizer, "softmax_cross_entropy", **compile_kw)
    return model


def _bits(model):
    return [w.tobytes() for w in model.get_weights()]


# -- formulas (float64 Python arithmetic; hand-worked values agree to ~1e-16 relative) --


def test_step_decay():
    s = StepDecay(0.1, step_size=3, gamma=0.5)
    assert [s(i) for i in (0, 2, 3, 5, 6, 9)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.0125], rel=1e-15)


def test_exponential_decay():
    s = ExponentialDecay(1.0, decay_steps=4, decay_rate=0.5)
    assert s(0) == 1.0 and s(4) == pytest.approx(0.5, rel=1e-15) and s(2) == pytest.approx(2**-0.5, rel=1e-15)
    stairs = ExponentialDecay(1.0, decay_steps=4, decay_rate=0.5, staircase=True)
    assert [stairs(i) for i in (0, 3, 4, 7, 8)] == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_cosine_decay_without_and_with_warmup():
    s = CosineDecay(0.2, decay_steps=10, alpha=0.1)
    assert s(0) == pytest.approx(0.2, rel=1e-15)
    assert s(5) == pytest.approx(0.2 * (0.9 * 0.5 + 0.1), rel=1e-15)  # cos(pi/2) = 0
    assert s(10) == pytest.approx(0.02, rel=1e-15) and s(50) == s(10)  # constant after decay_steps
    w = CosineDecay(0.0, decay_steps=8, warmup_target=1e-2, warmup_steps=4)
    assert [w(i) for i in range(5)] == pytest.approx([0.0, 2.5e-3, 5e-3, 7.5e-3, 1e-2], rel=1e-15)
    assert w(4 + 4) == pytest.approx(5e-3, rel=1e-15) and w(12) == 0.0
    assert all(w(i) >= w(i + 1) for i in range(4, 20))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: StepDecay(0.1, step_size=0), "step_size"),
        (lambda: StepDecay(-0.1, step_size=1), "initial_learning_rate"),
        (lambda: ExponentialDecay(0.1, 10, decay_rate=math.nan), "decay_rate"),
        (lambda: ExponentialDecay(0.1, 10, 0.5, staircase="yes"), "staircase"),
        (lambda: CosineDecay(0.1, 10, alpha=1.5), "alpha"),
        (lambda: CosineDecay(0.1, 10, warmup_steps=5), "warmup_target"),
        (lambda: CosineDecay(0.1, 0), "decay_steps"),
    ],
)
def test_bad_schedules_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# -- the executor receives the schedule's rate at every step --------------------------


def test_fit_applies_the_rate_of_each_step(device):
    """fit with a schedule equals a hand loop that sets schedule(step) before each
    executor step, bit for bit; and a schedule that drops to 0 after two steps leaves
    the weights exactly where two constant-rate steps put them."""
    x, y = _data()
    schedule = CosineDecay(0.05, decay_steps=5, warmup_target=0.2, warmup_steps=2)
    fitted = _model(cm.optimizers.SGD(schedule, momentum=0.9), device)
    fitted.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    by_hand = _model(cm.optimizers.SGD(1.0, momentum=0.9), device)
    for step in range(6):
        by_hand._net.set_learning_rate(schedule(step))
        by_hand._net.train_batch(x, y, np.arange(16 * (step % 3), 16 * (step % 3 + 1), dtype=np.int64))
    assert _bits(fitted) == _bits(by_hand)
    assert fitted.learning_rate == np.float32(schedule(5))

    stopped = _model(cm.optimizers.Adam(StepDecay(1e-2, step_size=2, gamma=0.0)), device)
    stopped.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)  # 6 steps, the last 4 at rate 0
    constant = _model(cm.optimizers.Adam(1e-2), device)
    constant.fit(x[:32], y[:32], epochs=1, batch_size=16, shuffle=False, verbose=0)  # the same 2 steps
    assert _bits(stopped) == _bits(constant)


def test_schedule_resumes_from_a_saved_file(tmp_path):
    x, y = _data()
    opt = lambda: cm.optimizers.AdamW(ExponentialDecay(1e-2, decay_steps=3, decay_rate=0.5))  # noqa: E731
    straight = _model(opt())
    straight.fit(x, y, epochs=2, batch_size=16, verbose=0)
    first = _model(opt())
    first.fit(x, y, epochs=1, batch_size=16, verbose=0)
    first.save(tmp_path / "m.cml", include_optimizer=True)
    raw = (tmp_path / "m.cml").read_bytes()
    assert b'"format_version":"2"' in raw[: int.from_bytes(raw[:8], "little") + 8]  # schedules are version 2
    resumed = cm.load(tmp_path / "m.cml")
    assert resumed._optimizer.learning_rate == ExponentialDecay(1e-2, decay_steps=3, decay_rate=0.5)
    resumed.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert _bits(resumed) == _bits(straight)


@pytest.mark.parametrize("bad", [-1e-3, math.nan, math.inf])
def test_set_learning_rate_validates(bad):
    model = _model(cm.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="learning_rate"):
        model._net.set_learning_rate(bad)
    assert model.learning_rate == np.float32(0.1)  # unchanged


def test_a_schedule_returning_a_bad_rate_fails_the_step():
    class Negative(StepDecay):
        def __call__(self, step):
            return 0.1 if step == 0 else -1.0

    model = _model(cm.optimizers.SGD(Negative(0.1, step_size=1)))
    with pytest.raises(ValueError, match="learning_rate"):
        model.fit(*_data(), epochs=1, batch_size=16, verbose=0)
    assert model._net.step == 1  # refused before the second step ran, not after


# -- compile(clipnorm=) -----------------------------------------------------------------


def test_compile_clipnorm_equals_the_optimizers(tmp_path):
    x, y = _data()
    a = _model(cm.optimizers.SGD(0.5), clipnorm=0.01)
    b = _model(cm.optimizers.SGD(0.5, clipnorm=0.01))
    unclipped = _model(cm.optimizers.SGD(0.5))
    for m in (a, b, unclipped):
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert _bits(a) == _bits(b) != _bits(unclipped)
    a.save(tmp_path / "a.cml")
    assert cm.load(tmp_path / "a.cml")._optimizer.clipnorm == 0.01


def test_compile_clipnorm_leaves_the_callers_optimizer_alone_and_refuses_conflicts():
    opt = cm.optimizers.Adam(1e-3)
    _model(opt, clipnorm=1.0)
    assert opt.clipnorm is None
    with pytest.raises(ValueError, match="clipnorm"):
        _model(cm.optimizers.Adam(1e-3, clipnorm=2.0), clipnorm=1.0)
    with pytest.raises(ValueError, match="clipnorm"):
        _model(cm.optimizers.Adam(1e-3), clipnorm=0.0)


def test_schedules_are_reachable_from_the_optimizers_module():
    assert cm.optimizers.schedules.CosineDecay is cm.schedules.CosineDecay is CosineDecay
