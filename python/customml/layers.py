"""Layers of a Sequential model. A layer describes itself to the C++ network executor
(``_spec``) and reads or writes its slice of the model's flat parameter buffer."""

from __future__ import annotations

import numbers
from typing import List, Optional, Protocol, Tuple

import numpy as np

from . import _core
from . import regularizers as regularizers_mod

__all__ = ["Layer", "Dense", "Dropout", "Normalization", "Rescaling"]

_INITIALIZERS = ("glorot_uniform", "he_normal", "zeros")


class _Owner(Protocol):
    """What a layer uses of the model it belongs to (``models.Sequential``, which imports
    this module: the protocol keeps the import one-way)."""

    _net: Optional[_core.Network]

    def _write_layer_params(self, w_off: int, kernel: np.ndarray, b_off: int, bias: np.ndarray) -> None: ...


class Layer:
    """Base class: a named layer that a Sequential model binds to its executor."""

    _kind = "layer"
    _preprocessing = False  # Normalization, Rescaling: must come first in a model

    def __init__(self, name: Optional[str] = None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{type(self).__name__} name must be a string, got {type(name).__name__}")
        self.name = name
        self._model: Optional[_Owner] = None
        self._index = -1
        self.input_dim: Optional[int] = None
        self._trainable = True

    @property
    def built(self) -> bool:
        return self._model is not None and self._model._net is not None

    @property
    def trainable(self) -> bool:
        """``False`` freezes the layer (Keras' meaning, for fine-tuning); fit leaves its
        parameters and their optimizer state bit-identical, whatever the weight decay, and
        skips its weight-gradient work (and all backward work below the lowest trainable
        layer). Takes effect from the next batch; saved in the model file."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"layer {self.name!r} trainable must be True or False, got {value!r}")
        self._trainable = bool(value)
        if self.built:
            assert self._model is not None and self._model._net is not None
            self._model._net.set_trainable(self._index, self._trainable)

    def count_trainable_params(self) -> int:
        return self.count_params() if self._trainable else 0

    def output_dim(self, input_dim: int) -> int:
        return input_dim

    def count_params(self) -> int:
        return 0

    # How many arrays get_weights() returns.
    _num_weight_arrays = 0

    def get_weights(self) -> List[np.ndarray]:
        return []

    def set_weights(self, weights) -> None:
        """Sets the arrays get_weights() returns (Dense: ``[kernel (in, out), bias (out,)]``);
        shapes must match and values be finite; all are checked before any is written."""
        self._assign(self._check_weights(weights))

    def _check_weights(self, weights) -> List[np.ndarray]:
        """The arrays set_weights would write, converted and checked; writes nothing."""
        if len(weights) != 0:
            raise ValueError(f"layer {self.name!r} has no weights, got {len(weights)} arrays")
        return []

    def _assign(self, arrays: List[np.ndarray]) -> None:
        pass

    def _spec(self) -> dict:
        raise NotImplementedError

    def _initial_weights(self, rng: np.random.Generator) -> List[np.ndarray]:
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Dense(Layer):
    """``y = activation(x @ kernel + bias)``; kernel (in, out), bias (out,).

    activation: None/"linear"/"identity", "relu", "sigmoid", "tanh" or "gelu" (tanh
    form), fused into the GEMM epilogue. kernel_initializer: "glorot_uniform"
    (default), "he_normal" or "zeros"; biases start at zero. kernel_regularizer: None or
    ``customml.regularizers.l1(..)`` / ``l2(..)`` / ``l1_l2(..)`` (the penalty is added
    to the loss and its gradient to the kernel's in C++; biases are not regularized).
    """

    _kind = "dense"

    def __init__(
        self,
        units: int,
        activation: Optional[str] = None,
        *,
        kernel_initializer: str = "glorot_uniform",
        kernel_regularizer=None,
        name: Optional[str] = None,
    ):
        super().__init__(name)
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units < 1:
            raise ValueError(f"Dense units must be a positive integer, got {units!r}")
        act = "identity" if activation in (None, "linear") else activation
        if act not in _core.activations:
            raise ValueError(
                f"Dense activation must be one of {', '.join(_core.activations)} (or None/'linear'), got {activation!r}"
            )
        if kernel_initializer not in _INITIALIZERS:
            raise ValueError(
                f"Dense kernel_initializer must be one of {', '.join(_INITIALIZERS)}, got {kernel_initializer!r}"
            )
        self.units: int = int(units)
        self.activation: str = act
        self.kernel_initializer: str = kernel_initializer
        self.kernel_regularizer: Optional[regularizers_mod.L1L2] = regularizers_mod.get(kernel_regularizer)

    def output_dim(self, input_dim: int) -> int:
        return self.units

    def count_params(self) -> int:
        if self.input_dim is None:
            raise ValueError(f"layer {self.name!r} is not built yet (its input size is unknown)")
        return self.input_dim * self.units + self.units

    def _spec(self) -> dict:
        spec = {"kind": "dense", "units": self.units, "activation": self.activation, "trainable": self._trainable}
        if self.kernel_regularizer is not None:
            spec.update(self.kernel_regularizer.get_config())
        return spec

    def _initial_weights(self, rng: np.random.Generator) -> List[np.ndarray]:
        assert self.input_dim is not None  # the model sets it before initializing
        fan_in, fan_out = self.input_dim, self.units
        shape = (fan_in, fan_out)
        if self.kernel_initializer == "glorot_uniform":
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            kernel = rng.uniform(-limit, limit, size=shape)
        elif self.kernel_initializer == "he_normal":
            # As Keras: a normal truncated at two standard deviations, rescaled so the
            # variance stays 2 / fan_in (0.8796 is the std of the truncated unit normal).
            std = np.sqrt(2.0 / fan_in) / 0.87962566103423978
            kernel = rng.standard_normal(size=shape)
            bad = np.abs(kernel) > 2.0
            while bad.any():
                kernel[bad] = rng.standard_normal(size=int(bad.sum()))
                bad = np.abs(kernel) > 2.0
            kernel *= std
        else:
            kernel = np.zeros(shape)
        return [kernel.astype(np.float32), np.zeros(fan_out, dtype=np.float32)]

    def _offsets(self) -> Tuple[int, int]:
        if not self.built:
            raise ValueError(f"layer {self.name!r} is not built yet: give the model input_dim or call fit/predict")
        assert self._model is not None and self._model._net is not None
        net = self._model._net
        return net.weight_offsets[self._index], net.bias_offsets[self._index]

    def get_weights(self) -> List[np.ndarray]:
        """Copies of ``[kernel (in, out), bias (out,)]`` as float32 NumPy arrays."""
        w_off, b_off = self._offsets()
        assert self._model is not None and self._model._net is not None and self.input_dim is not None
        net = self._model._net
        kernel = net.read_params(w_off, self.input_dim * self.units).reshape(self.input_dim, self.units)
        return [kernel, net.read_params(b_off, self.units)]

    _num_weight_arrays = 2

    def _check_weights(self, weights) -> List[np.ndarray]:
        self._offsets()
        if not isinstance(weights, (list, tuple)) or len(weights) != 2:
            raise ValueError(
                f"Dense.set_weights expects [kernel, bias], got {type(weights).__name__} "
                f"of length {len(weights) if hasattr(weights, '__len__') else '?'}"
            )
        kernel = np.asarray(weights[0], dtype=np.float32)
        bias = np.asarray(weights[1], dtype=np.float32)
        if kernel.shape != (self.input_dim, self.units):
            raise ValueError(f"kernel has shape {kernel.shape}, expected {(self.input_dim, self.units)}")
        if bias.shape != (self.units,):
            raise ValueError(f"bias has shape {bias.shape}, expected {(self.units,)}")
        for name, arr in (("kernel", kernel), ("bias", bias)):
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} contains NaN or inf")
        return [kernel, bias]

    def _assign(self, arrays: List[np.ndarray]) -> None:
        w_off, b_off = self._offsets()
        assert self._model is not None
        self._model._write_layer_params(w_off, arrays[0], b_off, arrays[1])

    def __repr__(self) -> str:
        return f"Dense({self.units}, activation={self.activation!r}, name={self.name!r})"


class Dropout(Layer):
    """Inverted dropout: during fit, zeroes each activation with probability ``rate``
    and scales the rest by ``1 / (1 - rate)``; the identity in predict and evaluate.
    Masks come from Philox(seed, step, index), so a seeded fit is reproducible."""

    _kind = "dropout"

    def __init__(self, rate: float, *, name: Optional[str] = None):
        super().__init__(name)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not (0.0 <= rate < 1.0):
            raise ValueError(f"Dropout rate must be a number in [0, 1), got {rate!r}")
        self.rate: float = float(rate)

    def _spec(self) -> dict:
        return {"kind": "dropout", "rate": self.rate}

    def __repr__(self) -> str:
        return f"Dropout({self.rate}, name={self.name!r})"


class _Preprocessing(Layer):
    """A per-feature affine map ``x * scale + shift`` on the model's input, run by the
    executor (the op ``feature_affine``) on every device; no trainable parameters.
    Preprocessing layers come first in a model."""

    _preprocessing = True

    def _affine(self, width: int) -> Tuple[np.ndarray, np.ndarray]:
        """(scale, shift), float32 arrays of ``width`` values."""
        raise NotImplementedError

    def _spec(self) -> dict:
        assert self.input_dim is not None  # the model sets it before asking for the spec
        scale, shift = self._affine(self.input_dim)
        return {"kind": "affine", "scale": scale.tolist(), "shift": shift.tolist()}

    def _push(self) -> None:
        """Sends a changed map to a built model's executor."""
        if self.built:
            assert self._model is not None and self._model._net is not None and self.input_dim is not None
            scale, shift = self._affine(self.input_dim)
            self._model._net.set_affine(self._index, scale, shift)


class Normalization(_Preprocessing):
    """Keras' Normalization: ``(x - mean) / sqrt(variance)`` per feature, with the mean
    and (population) variance that ``adapt(x)`` computes from training data, or given.
    As Keras, the standard deviation is floored at 1e-7 (a constant feature is only
    centred). Runs as the executor's first step as ``x * scale + shift`` with the float32
    constants ``scale = 1 / std`` and ``shift = -(mean * scale)``; saved in the model file
    and exported to ONNX. Until adapted (or given mean and variance) it is the identity, and fit refuses
    to train through it."""

    _kind = "normalization"
    EPSILON = 1e-7
    mean: Optional[np.ndarray]
    variance: Optional[np.ndarray]

    def __init__(self, mean=None, variance=None, *, name: Optional[str] = None):
        super().__init__(name)
        if (mean is None) != (variance is None):
            raise ValueError("Normalization needs both mean and variance, or neither (then call adapt)")
        self.mean = self.variance = None
        if mean is not None:
            self._set_stats(mean, variance)

    @property
    def adapted(self) -> bool:
        return self.mean is not None

    def _set_stats(self, mean, variance) -> None:
        mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        variance = np.atleast_1d(np.asarray(variance, dtype=np.float64))
        if mean.ndim != 1 or mean.shape != variance.shape or mean.size == 0:
            raise ValueError(
                f"Normalization mean and variance must be 1-D of the same length, got shapes "
                f"{mean.shape} and {variance.shape}"
            )
        if not (np.isfinite(mean).all() and np.isfinite(variance).all() and (variance >= 0).all()):
            raise ValueError("Normalization mean must be finite and variance finite and >= 0")
        if self.input_dim is not None and mean.size != self.input_dim:
            raise ValueError(
                f"Normalization of layer {self.name!r} has {self.input_dim} features, got statistics for {mean.size}"
            )
        self.mean, self.variance = mean, variance
        self._push()

    def adapt(self, x) -> None:
        """Sets mean and variance per feature from ``x`` (samples, features), in float64."""
        x = np.asarray(x)
        if x.dtype.kind not in "biuf" or x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(
                f"[adapt] x must be a non-empty 2-D numeric array (samples, features), got {x.dtype} of shape {x.shape}"
            )
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError("[adapt] x contains NaN or inf")
        self._set_stats(x.mean(axis=0), x.var(axis=0))

    def _affine(self, width: int) -> Tuple[np.ndarray, np.ndarray]:
        if self.mean is None:
            return np.ones(width, np.float32), np.zeros(width, np.float32)
        if self.mean.size != width:
            raise ValueError(
                f"Normalization of layer {self.name!r} was adapted to {self.mean.size} features, the model has {width}"
            )
        std = np.maximum(np.sqrt(self.variance), self.EPSILON)
        scale = (1.0 / std).astype(np.float32)
        # shift = -(fl32(mean) scale) in float32, so a value equal to the mean maps to
        # exactly 0 (a constant feature: scale 1e7 would otherwise leave a rounding
        # residue of order |mean|).
        shift = -(self.mean.astype(np.float32) * scale)
        return scale, shift

    def __repr__(self) -> str:
        return f"Normalization(adapted={self.adapted}, name={self.name!r})"


class Rescaling(_Preprocessing):
    """Keras' Rescaling: ``x * scale + offset`` with scalar scale and offset (e.g.
    ``Rescaling(1 / 255)`` for pixels), run by the executor as the model's first step."""

    _kind = "rescaling"

    def __init__(self, scale: float, offset: float = 0.0, *, name: Optional[str] = None):
        super().__init__(name)
        for what, v in (("scale", scale), ("offset", offset)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
                raise ValueError(f"Rescaling {what} must be a finite number, got {v!r}")
        self.scale, self.offset = float(scale), float(offset)

    def _affine(self, width: int) -> Tuple[np.ndarray, np.ndarray]:
        return np.full(width, self.scale, np.float32), np.full(width, self.offset, np.float32)

    def __repr__(self) -> str:
        return f"Rescaling({self.scale}, offset={self.offset}, name={self.name!r})"
