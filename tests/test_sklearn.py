"""customml.sklearn: MLPClassifier and MLPRegressor as scikit-learn estimators.

scikit-learn's own estimator checks run on both (none is excluded), then the things a
user does with them: Pipeline, cross_val_score, GridSearchCV in worker processes (loky,
and fork through the multiprocessing backend), pickling, string labels, regression,
determinism and the errors for bad parameters, raised by fit as scikit-learn does.

Accuracy bars are set well below what the configurations reach (measured values in the
comments), so they catch a broken estimator (chance level) without depending on the
last bits of training.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")  # validate_data; the extra asks for it

import joblib  # noqa: E402  (a dependency of scikit-learn)
from sklearn.datasets import load_breast_cancer, load_iris, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import customml as cm  # noqa: E402
from customml.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def _iris():
    x, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(x), y


def _small_clf(**kw) -> MLPClassifier:
    # 1e-2 rather than the default 1e-3: iris folds are one batch each, so 60 epochs are
    # 60 steps, too few at 1e-3 (cross-validated accuracy 0.66-0.88 over seeds 0-4).
    params = dict(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=1e-2, random_state=0)
    params.update(kw)
    return MLPClassifier(**params)


# ------------------------------------------------------------------------------------
# scikit-learn's estimator checks
# ------------------------------------------------------------------------------------


# Every check passes, so there is no expected_failed_checks list. Small networks keep
# the 100+ checks under a few seconds; the regressor needs more capacity than the
# classifier for check_regressors_train's R^2 > 0.5 (200 samples, 10 features: (32,)
# for 200 epochs reaches about 0.9, (16,) for 100 epochs only 0.45).
@parametrize_with_checks(
    [_small_clf(max_iter=50), MLPRegressor(hidden_layer_sizes=(32,), max_iter=200, random_state=0)]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------------------
# Optional dependency
# ------------------------------------------------------------------------------------


def test_import_customml_does_not_import_sklearn():
    code = "import sys, customml; assert 'sklearn' not in sys.modules, 'customml imported sklearn'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_sklearn_names_the_extra():
    # None in sys.modules makes `import sklearn` fail as if it were not installed.
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "try:\n    import customml.sklearn\nexcept ImportError as e:\n    print(e)\n"
        "else:\n    raise SystemExit('no ImportError')"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert 'pip install ".[sklearn]" in the customml checkout' in out


# ------------------------------------------------------------------------------------
# Composition with scikit-learn
# ------------------------------------------------------------------------------------


def test_pipeline_breast_cancer():
    x, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), _small_clf(hidden_layer_sizes=(32,), max_iter=30))
    pipe.fit(x[::2], y[::2])
    # Measured 0.94-0.96 on the held-out half over seeds 0-4; logistic regression gets
    # 0.95 and the majority class 0.61.
    assert pipe.score(x[1::2], y[1::2]) > 0.9
    proba = pipe.predict_proba(x[1::2])
    assert proba.shape == (len(y[1::2]), 2) and proba.dtype == np.float64


def test_cross_val_score_iris():
    x, y = _iris()
    scores = cross_val_score(_small_clf(), x, y, cv=3)
    # Each fold measured 0.90-0.98 over seeds 0-4; chance is 1/3.
    assert scores.shape == (3,) and scores.min() > 0.8


def _grid_search(x, y):
    search = GridSearchCV(
        _small_clf(max_iter=20),
        {"hidden_layer_sizes": [(8,), (16,)], "learning_rate_init": [1e-3, 1e-2]},
        cv=2,
        n_jobs=2,
    )
    return search.fit(x, y)


def test_grid_search_in_worker_processes():
    x, y = _iris()
    search = _grid_search(x, y)  # loky: fresh worker processes that receive pickled estimators
    # Training is deterministic, so a serial search must give the very same scores.
    serial = GridSearchCV(search.estimator, search.param_grid, cv=2, n_jobs=1).fit(x, y)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])
    assert search.best_params_["learning_rate_init"] == 1e-2  # 20 epochs at 1e-3 are far from converged
    assert search.best_estimator_.score(x, y) > 0.8


def _start_thread_pool():
    """Makes customml's pool start its workers here: GEMMs of at least 2**20 multiply-adds
    are split over threads (1024 x 64 x 256 = 2**24 of them)."""
    model = cm.Sequential([cm.layers.Dense(256)], input_dim=64, seed=0)
    model.predict(np.ones((1024, 64), np.float32))


# Python 3.12+ warns about fork() in a process with threads; forking while customml's
# workers exist is exactly what these tests check (the child then runs every job inline).
_FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


@pytest.mark.filterwarnings(_FORK_WARNING)
def test_grid_search_with_fork():
    # The multiprocessing backend forks the test process, whose customml thread pool is
    # already running: the children must train and predict the same as the parent.
    x, y = _iris()
    _start_thread_pool()
    with joblib.parallel_backend("multiprocessing", n_jobs=2):
        search = _grid_search(x, y)
    serial = GridSearchCV(search.estimator, search.param_grid, cv=2, n_jobs=1).fit(x, y)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings(_FORK_WARNING)
def test_fit_in_forked_child_matches_parent():
    # 200 x 64 x 256 multiply-adds per batch: threaded in the parent (where more than one
    # thread is available), inline in the child; the results are the same bits either way.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 64))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)

    def fit():
        return _small_clf(hidden_layer_sizes=(256,), max_iter=3).fit(x, y).predict_proba(x)

    _start_thread_pool()
    parent = fit()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: fit again, send the probabilities back, exit without cleanup
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as f:
                f.write(fit().tobytes())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_array_equal(np.frombuffer(data, dtype=np.float64).reshape(parent.shape), parent)


# ------------------------------------------------------------------------------------
# Behaviour
# ------------------------------------------------------------------------------------


def test_pickle_round_trip_is_bit_exact_and_resumes():
    x, y = _iris()
    clf = _small_clf(max_iter=5).fit(x, y)
    copy = pickle.loads(pickle.dumps(clf))
    assert isinstance(copy.model_, cm.Sequential) and copy.model_ is not clf.model_
    np.testing.assert_array_equal(copy.predict_proba(x), clf.predict_proba(x))
    for a, b in zip(copy.model_.get_weights(), clf.model_.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert copy.loss_curve_ == clf.loss_curve_ and copy.n_iter_ == clf.n_iter_
    np.testing.assert_array_equal(copy.classes_, clf.classes_)
    # The optimizer state and the epoch count travel too: a further epoch gives the same bits.
    clf.partial_fit(x, y)
    copy.partial_fit(x, y)
    np.testing.assert_array_equal(copy.predict_proba(x), clf.predict_proba(x))
    # An unfitted estimator pickles as its parameters.
    assert pickle.loads(pickle.dumps(_small_clf())).get_params() == _small_clf().get_params()


def test_string_labels_and_binary_single_logit():
    x, y = load_breast_cancer(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    labels = np.array(["malignant", "benign"])[y]
    clf = _small_clf(max_iter=20).fit(x, labels)
    np.testing.assert_array_equal(clf.classes_, ["benign", "malignant"])
    assert clf.model_.output_dim == 1  # two classes: one logit, binary cross-entropy
    pred = clf.predict(x)
    assert pred.dtype == labels.dtype and set(pred) <= set(labels)
    assert clf.score(x, labels) > 0.9  # measured 0.98-0.99 over seeds 0-4 (its training data)


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_predict_proba_rows_sum_to_one(n_classes):
    rng = np.random.default_rng(n_classes)
    x = rng.standard_normal((60, 5)) * 30  # large logits: saturated sigmoid / softmax
    y = np.arange(60) % n_classes
    clf = _small_clf(max_iter=3).fit(x, y)
    proba = clf.predict_proba(x)
    assert proba.shape == (60, n_classes) and proba.dtype == np.float64
    assert (proba >= 0).all() and (proba <= 1).all()
    # float64 normalisation of n_classes terms: a few ulp of 1.
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(clf.predict(x), clf.classes_[proba.argmax(axis=1)])


def test_regression_r2():
    x, y = make_regression(n_samples=400, n_features=8, noise=5.0, random_state=0)
    y = y / y.std()  # targets are not rescaled by the estimator
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=100, random_state=0).fit(x[:300], y[:300])
    pred = reg.predict(x[300:])
    assert pred.shape == (100,) and pred.dtype == np.float64
    # A linear target with little noise: linear regression reaches R^2 0.999; this
    # network measured 0.94-0.975 over seeds 0-4 (chance level is 0).
    assert reg.score(x[300:], y[300:]) > 0.9
    two = MLPRegressor(hidden_layer_sizes=(32,), max_iter=20, random_state=0).fit(x, np.column_stack([y, -y]))
    assert two.predict(x).shape == (400, 2)


def test_fit_is_deterministic_given_random_state():
    x, y = _iris()
    a, b = _small_clf(max_iter=5).fit(x, y), _small_clf(max_iter=5).fit(x, y)
    for wa, wb in zip(a.model_.get_weights(), b.model_.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    c = _small_clf(max_iter=5, random_state=1).fit(x, y)
    assert not np.array_equal(a.model_.get_weights()[0], c.model_.get_weights()[0])
    # A refit starts from scratch: the same result as a fresh estimator.
    a.fit(x, y)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))


def test_alpha_is_a_kernel_l2_regularizer_in_sklearn_units():
    x, y = _iris()
    clf = _small_clf(max_iter=1, alpha=0.3, batch_size=50, dropout=0.25, solver="sgd").fit(x, y)
    dense = [layer for layer in clf.model_.layers if isinstance(layer, cm.layers.Dense)]
    assert len(dense) == 2 and isinstance(clf.model_.layers[1], cm.layers.Dropout)
    # scikit-learn's penalty alpha / (2 * batch) * sum(W**2) per batch.
    assert all(layer.kernel_regularizer == cm.regularizers.l2(0.3 / 100) for layer in dense)
    assert isinstance(clf.model_._optimizer, cm.optimizers.SGD)
    assert _small_clf(max_iter=1, alpha=0.0).fit(x, y).model_.layers[0].kernel_regularizer is None


def test_partial_fit():
    x, y = _iris()
    clf = _small_clf()
    with pytest.raises(ValueError, match="classes= on its first call"):
        clf.partial_fit(x, y)
    clf.partial_fit(x[:50], y[:50], classes=[0, 1, 2])  # the first batch holds class 0 alone
    clf.partial_fit(x, y)
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
    with pytest.raises(ValueError, match="labels not in classes_"):
        clf.partial_fit(x, y + 1)
    with pytest.raises(ValueError, match="4 features"):
        clf.partial_fit(x[:, :3], y)


@pytest.mark.parametrize(
    "param, value, message",
    [
        ("hidden_layer_sizes", (0,), "hidden_layer_sizes must hold integers >= 1"),
        ("hidden_layer_sizes", "wide", "hidden_layer_sizes must hold integers"),
        ("activation", "softplus", "activation must be one of"),
        ("solver", "lbfgs", "solver must be one of adam, sgd"),
        ("learning_rate_init", 0.0, "learning_rate_init must be a finite number > 0"),
        ("alpha", -1.0, "alpha must be a finite number >= 0"),
        ("batch_size", 0, "batch_size must be 'auto' or an integer >= 1"),
        ("max_iter", 0, "max_iter must be an integer >= 1"),
        ("max_iter", 2.5, "max_iter must be an integer >= 1"),
        ("dropout", 1.0, "dropout must be a finite number >= 0 and < 1"),
        ("momentum", float("nan"), "momentum must be a finite number"),
        ("shuffle", "yes", "shuffle must be True or False"),
        ("random_state", "seed", "random_state must be None, an int or a numpy RandomState"),
        ("device", "tpu", "tpu"),
    ],
)
def test_bad_params_raise_at_fit(param, value, message):
    x, y = _iris()
    for est in (_small_clf(), MLPRegressor(max_iter=1)):
        est.set_params(**{param: value})  # __init__ and set_params store, as in scikit-learn
        with pytest.raises(ValueError, match=message):
            est.fit(x, y)
        assert not hasattr(est, "model_")


def test_failed_refit_leaves_the_fitted_estimator_unchanged():
    x, y = _iris()
    clf = _small_clf(max_iter=2).fit(x, y)
    model, proba = clf.model_, clf.predict_proba(x)
    with pytest.raises(ValueError, match="device must be"):
        clf.set_params(device="tpu").fit(x, np.array(["a", "b", "c"])[y])
    assert clf.model_ is model and clf.classes_.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.set_params(device="cpu").fit(x, np.zeros(len(y)))
    assert clf.model_ is model and clf.classes_.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(clf.set_params(device="cpu").predict_proba(x), proba)


def test_bad_data_errors():
    x, y = _iris()
    with pytest.raises(ValueError, match="at least 2 classes"):
        _small_clf().fit(x, np.zeros(len(y)))
    with pytest.raises(ValueError, match="Unknown label type"):
        _small_clf().fit(x, np.linspace(0, 1, len(y)))  # continuous targets: a regression problem
    clf = _small_clf(max_iter=1).fit(x, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4"):
        clf.predict(x[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(np.full((2, 4), np.nan))


def test_each_device_fits_and_pickles(device):
    x, y = _iris()
    clf = _small_clf(max_iter=2, device=device).fit(x, y)
    assert clf.model_.device == device
    copy = pickle.loads(pickle.dumps(clf))
    assert copy.model_.device == device
    np.testing.assert_array_equal(copy.predict_proba(x), clf.predict_proba(x))


def test_verbose_prints_a_line_per_epoch(capsys):
    x, y = _iris()
    _small_clf(max_iter=3, verbose=1).fit(x, y)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    _small_clf(max_iter=3).fit(x, y)
    assert capsys.readouterr() == ("", "")


def test_dataframe_feature_names():
    pytest.importorskip("pandas")  # not in the test extra: scikit-learn reads the names from a DataFrame
    iris = load_iris(as_frame=True)
    x = (iris.data - iris.data.mean()) / iris.data.std()
    clf = _small_clf(max_iter=2).fit(x, iris.target)
    np.testing.assert_array_equal(clf.feature_names_in_, iris.data.columns)
    assert clf.predict(x).shape == (150,)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(x.rename(columns=lambda c: c.upper()))
