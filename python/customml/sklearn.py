"""scikit-learn estimators over customml: ``MLPClassifier`` and ``MLPRegressor``.

They follow scikit-learn's conventions (``__init__`` stores parameters, ``fit``
validates them and the data, fitted attributes end in ``_``), so they work in
``Pipeline``, ``cross_val_score`` and ``GridSearchCV``; cross-validation and search are
scikit-learn's own. Training is a ``customml.Sequential`` fitted by the C++ executor::

    from customml.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0).fit(X, y)
    clf.predict_proba(X_test)

scikit-learn is the optional extra ``customml[sklearn]``; importing ``customml`` does
not import it, importing this module does.
"""

from __future__ import annotations

import numbers
from typing import List

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # validate_data is scikit-learn >= 1.6
    raise ImportError(
        f'customml.sklearn needs scikit-learn >= 1.6: pip install ".[sklearn]" in the customml checkout ({exc})'
    ) from exc

from . import _core
from . import io as io_mod
from . import layers as layers_mod
from . import optimizers as optimizers_mod
from . import regularizers as regularizers_mod
from .models import Sequential

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names, plus customml's own.
_ACTIVATIONS = {
    "identity": "identity",
    "logistic": "sigmoid",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "gelu": "gelu",
}
_SOLVERS = ("adam", "sgd")


def _check_params(est) -> None:
    """Validates the constructor parameters (scikit-learn convention: in fit, not __init__)."""
    name = type(est).__name__
    sizes = est.hidden_layer_sizes
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
        sizes = (sizes,)
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise ValueError(f"{name} hidden_layer_sizes must be an int or a sequence of ints, got {sizes!r}") from None
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
            raise ValueError(f"{name} hidden_layer_sizes must hold integers >= 1, got {est.hidden_layer_sizes!r}")
    if est.activation not in _ACTIVATIONS:
        raise ValueError(f"{name} activation must be one of {', '.join(_ACTIVATIONS)}, got {est.activation!r}")
    if est.solver not in _SOLVERS:
        raise ValueError(f"{name} solver must be one of {', '.join(_SOLVERS)}, got {est.solver!r}")

    def real(value, what, low, low_open=False, high=None):
        ok = (
            not isinstance(value, bool)
            and isinstance(value, numbers.Real)
            and np.isfinite(value)
            and (value > low if low_open else value >= low)
            and (high is None or value < high)
        )
        if not ok:
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            bound += f" and < {high:g}" if high is not None else ""
            raise ValueError(f"{name} {what} must be a finite number {bound}, got {value!r}")

    real(est.learning_rate_init, "learning_rate_init", 0.0, low_open=True)
    real(est.alpha, "alpha", 0.0)
    real(est.momentum, "momentum", 0.0, high=1.0)
    real(est.dropout, "dropout", 0.0, high=1.0)
    # (typeshed's numbers.Integral has no __ge__, so mypy cannot compare it with 1; laid out
    # as ruff format does, so that the ignore stays on the comparison's line)
    if not (
        est.batch_size == "auto"
        or (
            isinstance(est.batch_size, numbers.Integral)
            and not isinstance(est.batch_size, bool)
            and est.batch_size >= 1  # type: ignore[operator]
        )
    ):
        raise ValueError(f"{name} batch_size must be 'auto' or an integer >= 1, got {est.batch_size!r}")
    if isinstance(est.max_iter, bool) or not isinstance(est.max_iter, numbers.Integral) or est.max_iter < 1:
        raise ValueError(f"{name} max_iter must be an integer >= 1, got {est.max_iter!r}")
    if not isinstance(est.shuffle, (bool, np.bool_)):
        raise ValueError(f"{name} shuffle must be True or False, got {est.shuffle!r}")
    if not isinstance(est.device, str):
        raise ValueError(f"{name} device must be a string such as 'cpu', got {est.device!r}")
    # Before fit changes anything: a failed fit leaves a fitted estimator as it was.
    _core.check_device(est.device)
    if isinstance(est.verbose, bool) or not isinstance(est.verbose, numbers.Integral) or est.verbose < 0:
        raise ValueError(f"{name} verbose must be an integer >= 0, got {est.verbose!r}")
    if not (est.random_state is None or isinstance(est.random_state, (numbers.Integral, np.random.RandomState))):
        raise ValueError(f"{name} random_state must be None, an int or a numpy RandomState, got {est.random_state!r}")


class _BaseMLP(BaseEstimator):
    """Parameters and training shared by MLPClassifier and MLPRegressor.

    hidden_layer_sizes: units of each hidden Dense layer. activation: "relu", "tanh",
    "logistic" (= "sigmoid"), "identity" or "gelu". solver: "adam" (customml.optimizers.Adam)
    or "sgd" (SGD with ``momentum`` and Nesterov momentum, as scikit-learn's defaults).
    learning_rate_init: the optimizer's rate. alpha: L2 penalty strength with
    scikit-learn's meaning, ``alpha / (2 * batch_size) * sum(W**2)`` per batch over every
    kernel (not the biases), applied as each hidden and output Dense layer's
    ``kernel_regularizer``. batch_size: "auto" = min(200, n_samples) or an int (clipped to
    n_samples).
    max_iter: epochs (always all of them: there is no convergence test). shuffle: reshuffle
    every epoch. random_state: None, an int or a RandomState; it draws the model seed
    (initialization, shuffling, dropout), so an int makes fit deterministic. dropout: rate
    of a Dropout after each hidden layer (0: none). device: "cpu", "cuda", "cuda-emulated".
    verbose: > 0 prints one line per epoch.
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        learning_rate_init=1e-3,
        alpha=1e-4,
        batch_size="auto",
        max_iter=200,
        shuffle=True,
        random_state=None,
        momentum=0.9,
        dropout=0.0,
        device="cpu",
        verbose=0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.momentum = momentum
        self.dropout = dropout
        self.device = device
        self.verbose = verbose

    # -- to be provided by the subclasses -------------------------------------------------

    def _n_outputs_and_loss(self):
        raise NotImplementedError

    # -- training ---------------------------------------------------------------------------

    def _batch_size(self, n: int) -> int:
        return min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)

    def _build(self, n_features: int, batch_size: int) -> None:
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
        outputs, loss = self._n_outputs_and_loss()
        # scikit-learn adds alpha / (2 * batch) * sum(W**2) to each batch's mean loss;
        # the regularizer's l2 * sum(W**2) is the same penalty with l2 = alpha / (2 * batch).
        reg = regularizers_mod.l2(float(self.alpha) / (2.0 * batch_size)) if self.alpha else None
        layers: List[layers_mod.Layer] = []
        for units in sizes:
            layers.append(layers_mod.Dense(int(units), _ACTIVATIONS[self.activation], kernel_regularizer=reg))
            if self.dropout:
                layers.append(layers_mod.Dropout(float(self.dropout)))
        layers.append(layers_mod.Dense(outputs, kernel_regularizer=reg))
        # A seed in [0, 2**31): what RandomState.randint can draw on every platform.
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        model = Sequential(layers, input_dim=n_features, device=self.device, seed=seed)
        opt: optimizers_mod.Optimizer
        if self.solver == "adam":
            opt = optimizers_mod.Adam(float(self.learning_rate_init))
        else:
            opt = optimizers_mod.SGD(
                float(self.learning_rate_init), momentum=float(self.momentum), nesterov=self.momentum > 0
            )
        model.compile(optimizer=opt, loss=loss)
        self.model_ = model
        self.n_iter_ = 0
        self.loss_curve_: List[float] = []
        self._fit_batch_size = batch_size

    def _train(self, X: np.ndarray, y: np.ndarray, epochs: int) -> None:
        history = self.model_.fit(
            X,
            y,
            epochs=epochs,
            batch_size=self._fit_batch_size,
            shuffle=bool(self.shuffle),
            verbose=2 if self.verbose else 0,
        )
        self.loss_curve_ = self.loss_curve_ + list(history.history["loss"])
        self.loss_ = float(self.loss_curve_[-1])
        self.n_iter_ += epochs

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=np.float32, order="C")
        return self.model_.predict(X)

    # -- pickling ---------------------------------------------------------------------------

    def __getstate__(self):
        # The model travels as customml's own file format (weights, architecture,
        # optimizer state) in memory: bit-exact, and loadable in another process.
        state = super().__getstate__()
        if "model_" in state:
            state = dict(state)
            state["model_"] = io_mod.dumps(state["model_"], include_optimizer=True)
        return state

    def __setstate__(self, state):
        if isinstance(state.get("model_"), bytes):
            state = dict(state)
            state["model_"] = io_mod.loads(state["model_"], device=state.get("device", "cpu"))
        super().__setstate__(state)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier trained by customml (see ``_BaseMLP`` for the
    parameters). Labels may be any type LabelEncoder accepts (ints, strings); two
    classes use one logit and binary cross-entropy, more use softmax cross-entropy.
    Fitted attributes: ``classes_``, ``n_features_in_`` (and ``feature_names_in_``),
    ``model_`` (the customml.Sequential), ``n_iter_``, ``loss_``, ``loss_curve_``."""

    def _n_outputs_and_loss(self):
        n = len(self.classes_)
        return (1, "binary_cross_entropy") if n == 2 else (n, "softmax_cross_entropy")

    def _encode(self, y, encoder=None):
        """(encoder, y as int32 codes): a new LabelEncoder fitted on y when none is given.
        Checks only, assigns nothing, so a fit that fails here leaves the estimator as it was."""
        check_classification_targets(y)
        if encoder is None:
            encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(f"MLPClassifier needs at least 2 classes in y, got 1 class: {encoder.classes_.tolist()}")
        unknown = np.setdiff1d(np.unique(y), encoder.classes_)
        if unknown.size:
            raise ValueError(f"y contains labels not in classes_: {unknown[:5].tolist()}")
        return encoder, encoder.transform(y).astype(np.int32)

    def fit(self, X, y):
        """Trains a new network for ``max_iter`` epochs on (X, y); returns self."""
        _check_params(self)
        X, y = validate_data(self, X, y, dtype=np.float32, order="C")
        self._label_encoder, codes = self._encode(y)
        self.classes_ = self._label_encoder.classes_
        self._build(X.shape[1], self._batch_size(X.shape[0]))
        self._train(X, codes, int(self.max_iter))
        return self

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), continuing the network (optimizer state included). The
        first call needs ``classes``, every label the estimator will see."""
        _check_params(self)
        first = not hasattr(self, "model_")
        if first:
            if classes is None:
                raise ValueError("MLPClassifier.partial_fit needs classes= on its first call")
            X, y = validate_data(self, X, y, dtype=np.float32, order="C")
            self._label_encoder, codes = self._encode(y, LabelEncoder().fit(np.asarray(classes)))
            self.classes_ = self._label_encoder.classes_
            self._build(X.shape[1], self._batch_size(X.shape[0]))
        else:
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(
                    f"classes={classes!r} differs from the classes of the first partial_fit, {self.classes_.tolist()}"
                )
            X, y = validate_data(self, X, y, dtype=np.float32, order="C", reset=False)
            _, codes = self._encode(y, self._label_encoder)
        self._train(X, codes, 1)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) in the order of ``classes_``,
        float64, each row summing to 1."""
        z: np.ndarray = self._logits(X).astype(np.float64)
        if z.shape[1] == 1:
            # sigmoid through exp of a non-positive number only (no overflow)
            e = np.exp(-np.abs(z[:, 0]))
            p1 = np.where(z[:, 0] >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
            return np.column_stack([1.0 - p1, p1])
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class (argmax of predict_proba, so the two always agree)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor trained by customml with mean squared error
    (see ``_BaseMLP`` for the parameters). ``y`` may be 1-D or (n_samples, n_outputs);
    ``predict`` returns the same shape, float64. Targets are not rescaled: standardize
    them (e.g. ``TransformedTargetRegressor``) when they are far from unit scale."""

    def _n_outputs_and_loss(self):
        return self.n_outputs_, "mse"

    def _targets(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=np.float32)
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def fit(self, X, y):
        """Trains a new network for ``max_iter`` epochs on (X, y); returns self."""
        _check_params(self)
        X, y = validate_data(self, X, y, dtype=np.float32, order="C", multi_output=True, y_numeric=True)
        self._y_1d = y.ndim == 1
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        self._build(X.shape[1], self._batch_size(X.shape[0]))
        self._train(X, self._targets(y), int(self.max_iter))
        return self

    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing the network (optimizer state included)."""
        _check_params(self)
        first = not hasattr(self, "model_")
        X, y = validate_data(self, X, y, dtype=np.float32, order="C", multi_output=True, y_numeric=True, reset=first)
        if first:
            self._y_1d = y.ndim == 1
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
            self._build(X.shape[1], self._batch_size(X.shape[0]))
        elif (1 if y.ndim == 1 else y.shape[1]) != self.n_outputs_:
            raise ValueError(f"y has {1 if y.ndim == 1 else y.shape[1]} outputs, the model {self.n_outputs_}")
        self._train(X, self._targets(y), 1)
        return self

    def predict(self, X) -> np.ndarray:
        out: np.ndarray = self._logits(X).astype(np.float64)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
