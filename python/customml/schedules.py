"""Learning-rate schedules: pass one as ``learning_rate=`` to an optimizer.

A schedule maps the number of updates already taken (``step``: 0 for the first
update) to a learning rate, with Keras' formulas. ``fit`` evaluates it once per batch,
on the Python side, and hands the value to the executor (``Network.set_learning_rate``)
before the step runs; the step count is the executor's, so a fit resumed from a file
saved with ``include_optimizer=True`` continues the schedule where it stopped.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

__all__ = ["LearningRateSchedule", "StepDecay", "ExponentialDecay", "CosineDecay", "get"]


def _real(owner: str, name: str, value, *, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        raise ValueError(f"{owner} {name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _count(owner: str, name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner} {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class LearningRateSchedule:
    """Base class: ``schedule(step) -> learning rate`` for the update after ``step`` updates."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class StepDecay(LearningRateSchedule):
    """``initial_learning_rate * gamma ** (step // step_size)``, as ``torch.optim.lr_scheduler.StepLR``
    but counted in updates (multiply by the steps per epoch for epochs)."""

    def __init__(self, initial_learning_rate: float, step_size: int, gamma: float = 0.1):
        self.initial_learning_rate = _real("StepDecay", "initial_learning_rate", initial_learning_rate)
        self.step_size = _count("StepDecay", "step_size", step_size, minimum=1)
        self.gamma = _real("StepDecay", "gamma", gamma)

    def __call__(self, step: int) -> float:
        return self.initial_learning_rate * self.gamma ** (step // self.step_size)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "step_size": self.step_size, "gamma": self.gamma}


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``, the exponent floored
    with ``staircase=True`` (Keras' ExponentialDecay)."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False):
        self.initial_learning_rate = _real("ExponentialDecay", "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _count("ExponentialDecay", "decay_steps", decay_steps, minimum=1)
        self.decay_rate = _real("ExponentialDecay", "decay_rate", decay_rate)
        if not isinstance(staircase, bool):
            raise ValueError(f"ExponentialDecay staircase must be True or False, got {staircase!r}")
        self.staircase = staircase

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate**p

    def get_config(self) -> dict:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
        }


class CosineDecay(LearningRateSchedule):
    """Keras 3's CosineDecay. Without ``warmup_target``: cosine from
    ``initial_learning_rate`` down to ``alpha * initial_learning_rate`` over
    ``decay_steps``, constant afterwards. With it: a linear warmup from
    ``initial_learning_rate`` to ``warmup_target`` over ``warmup_steps``, then the cosine
    from ``warmup_target`` to ``alpha * warmup_target`` over the next ``decay_steps``."""

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        alpha: float = 0.0,
        warmup_target: Optional[float] = None,
        warmup_steps: int = 0,
    ):
        self.initial_learning_rate = _real("CosineDecay", "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _count("CosineDecay", "decay_steps", decay_steps, minimum=1)
        self.alpha = _real("CosineDecay", "alpha", alpha)
        if self.alpha > 1.0:
            raise ValueError(f"CosineDecay alpha must be in [0, 1], got {alpha!r}")
        self.warmup_target = None if warmup_target is None else _real("CosineDecay", "warmup_target", warmup_target)
        self.warmup_steps = _count("CosineDecay", "warmup_steps", warmup_steps, minimum=0)
        if self.warmup_steps and self.warmup_target is None:
            raise ValueError("CosineDecay warmup_steps > 0 needs warmup_target (the rate the warmup ends at)")

    def __call__(self, step: int) -> float:
        if self.warmup_target is None:
            peak, t = self.initial_learning_rate, step
        else:
            if step < self.warmup_steps:
                return self.initial_learning_rate + (self.warmup_target - self.initial_learning_rate) * (
                    step / self.warmup_steps
                )
            peak, t = self.warmup_target, step - self.warmup_steps
        t = min(t, self.decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * t / self.decay_steps))
        return peak * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
        }


_CLASSES = {"StepDecay": StepDecay, "ExponentialDecay": ExponentialDecay, "CosineDecay": CosineDecay}


def get(class_name: str, config: dict) -> LearningRateSchedule:
    """A schedule from its class name and get_config() (used by customml.io)."""
    if class_name not in _CLASSES:
        raise ValueError(f"unknown learning-rate schedule {class_name!r}; expected one of {', '.join(_CLASSES)}")
    return _CLASSES[class_name](**config)
