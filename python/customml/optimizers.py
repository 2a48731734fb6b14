"""Optimizers: configuration objects that the C++ executor applies in one fused pass
over the flat parameter buffer (biases take no weight decay)."""

from __future__ import annotations

from typing import Optional, Union

from . import schedules
from ._checks import number
from .schedules import LearningRateSchedule

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "get", "schedules"]


class Optimizer:
    """Base: a learning rate (a number, or a ``customml.schedules`` schedule evaluated
    at each step) and optional global-norm gradient clipping (``clipnorm``)."""

    def __init__(self, learning_rate: Union[float, LearningRateSchedule], clipnorm: Optional[float] = None):
        owner = type(self).__name__
        self.learning_rate: Union[float, LearningRateSchedule]
        if isinstance(learning_rate, LearningRateSchedule):
            self.learning_rate = learning_rate
        else:
            self.learning_rate = number(owner, "learning_rate", learning_rate)
        if clipnorm is not None:
            clipnorm = number(owner, "clipnorm", clipnorm)
            if clipnorm == 0.0:
                raise ValueError(f"{owner} clipnorm must be > 0 (or None for no clipping), got {clipnorm!r}")
        self.clipnorm = clipnorm

    def _initial_lr(self) -> float:
        """The rate of the first update: the schedule at step 0, or the number."""
        lr = self.learning_rate
        return float(lr(0)) if isinstance(lr, LearningRateSchedule) else lr

    def _config(self) -> dict:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent as ``torch.optim.SGD`` (dampening 0): optional
    momentum, Nesterov momentum, and L2 ``weight_decay`` added to the gradient."""

    def __init__(
        self,
        learning_rate: Union[float, LearningRateSchedule] = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clipnorm: Optional[float] = None,
    ):
        super().__init__(learning_rate, clipnorm)
        self.momentum = number("SGD", "momentum", momentum)
        self.weight_decay = number("SGD", "weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("SGD nesterov=True needs momentum > 0")

    def _config(self) -> dict:
        return {
            "optimizer": "sgd",
            "lr": self._initial_lr(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def __repr__(self) -> str:
        return (
            f"SGD(learning_rate={self.learning_rate}, momentum={self.momentum}, "
            f"nesterov={self.nesterov}, weight_decay={self.weight_decay})"
        )


class Adam(Optimizer):
    """Adam as ``torch.optim.Adam``: ``weight_decay`` is L2 added to the gradient;
    ``amsgrad`` keeps the running maximum of the second moment."""

    _decoupled = False

    def __init__(
        self,
        learning_rate: Union[float, LearningRateSchedule] = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        clipnorm: Optional[float] = None,
    ):
        super().__init__(learning_rate, clipnorm)
        owner = type(self).__name__
        self.beta_1 = number(owner, "beta_1", beta_1, high=1.0, high_open=True)
        self.beta_2 = number(owner, "beta_2", beta_2, high=1.0, high_open=True)
        self.epsilon = number(owner, "epsilon", epsilon)
        if self.epsilon == 0.0:
            raise ValueError(f"{owner} epsilon must be > 0, got {epsilon!r}")
        self.weight_decay = number(owner, "weight_decay", weight_decay)
        self.amsgrad = bool(amsgrad)

    def _config(self) -> dict:
        return {
            "optimizer": "adam",
            "lr": self._initial_lr(),
            "beta1": self.beta_1,
            "beta2": self.beta_2,
            "eps": self.epsilon,
            "weight_decay": self.weight_decay,
            "decoupled": self._decoupled,
            "amsgrad": self.amsgrad,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(learning_rate={self.learning_rate}, beta_1={self.beta_1}, "
            f"beta_2={self.beta_2}, epsilon={self.epsilon}, weight_decay={self.weight_decay}, "
            f"amsgrad={self.amsgrad})"
        )


class AdamW(Adam):
    """Adam with decoupled weight decay as ``torch.optim.AdamW``: each step first
    shrinks the weights by ``learning_rate * weight_decay`` (default 0.01)."""

    _decoupled = True

    def __init__(
        self,
        learning_rate: Union[float, LearningRateSchedule] = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
        clipnorm: Optional[float] = None,
    ):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay, amsgrad, clipnorm)


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get(optimizer: Union[str, Optimizer]) -> Optimizer:
    """An optimizer from an instance or a name ("sgd", "adam", "adamw") with defaults."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _BY_NAME:
        return _BY_NAME[optimizer.lower()]()
    raise ValueError(
        f"unknown optimizer {optimizer!r}; expected one of {', '.join(_BY_NAME)} or a customml.optimizers.Optimizer"
    )
