"""customml.data: scaling, one-hot labels, train/validation/test splits and the seeded
mini-batch iterator. Exact checks wherever the result is a permutation or a count;
the two scaling tolerances are argued where they appear."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from customml import data

U32 = 2.0**-24


def _features(n=50, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, (n, d))
    x[:, 2] = 7.0  # a constant feature
    return x


# -- scaling ---------------------------------------------------------------------------------


def test_standardize_uses_the_first_arrays_statistics():
    x_train, x_test = _features(), _features(20, seed=1)
    z_train, z_test = data.standardize(x_train, x_test)
    assert z_train.dtype == z_test.dtype == np.float32 and z_train.shape == (50, 4) and z_test.shape == (20, 4)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[2] = 1.0
    # computed in float64 by the same formula, then rounded once to float32: identical
    np.testing.assert_array_equal(z_test, ((x_test - mean) / std).astype(np.float32))
    # each output is within half a float32 ulp of the exact value (|z| < 4 here), so the
    # mean of 50 of them is within 4 u of 0 and the std within 4 u of 1
    keep = [0, 1, 3]
    assert np.abs(z_train[:, keep].astype(np.float64).mean(axis=0)).max() < 4 * 4 * U32
    assert np.abs(z_train[:, keep].astype(np.float64).std(axis=0) - 1).max() < 4 * 4 * U32
    assert (z_train[:, 2] == 0).all()  # constant: centred, not divided by 0
    assert isinstance(data.standardize(x_train), np.ndarray)  # one argument, one array


def test_min_max_scale_maps_the_first_array_onto_the_range():
    x_train, x_test = _features(), _features(20, seed=1)
    s_train, s_test = data.min_max_scale(x_train, x_test)
    assert s_train.min() == 0.0 and s_train.max() == 1.0  # (hi - lo) / (hi - lo) is exact
    assert (s_train[:, 2] == 0).all()
    lo, hi = x_train.min(axis=0), x_train.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    # float64 results differ from this formula's by a few float64 ulps (1e-15), far below
    # float32's half-ulp (6e-8 at 1), so after rounding they agree to one float32 ulp
    np.testing.assert_allclose(s_test, (x_test - lo) / span, rtol=0, atol=2 * 2 * U32 * np.abs(s_test).max())
    r = data.min_max_scale(x_train, feature_range=(-1, 1))
    np.testing.assert_allclose([r[:, [0, 1, 3]].min(), r[:, [0, 1, 3]].max()], [-1, 1], rtol=0, atol=2 * U32)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: data.standardize(np.ones((3, 2)), np.ones((3, 3))), "argument 2 has 3 features"),
        (lambda: data.standardize(np.ones(3)), "2-D"),
        (lambda: data.standardize(np.zeros((0, 2))), "empty"),
        (lambda: data.standardize(np.array([[1.0, np.nan]])), "NaN"),
        (lambda: data.min_max_scale(np.array([["a"]])), "numeric"),
        (lambda: data.min_max_scale(np.ones((2, 2)), feature_range=(1, 0)), "feature_range"),
    ],
)
def test_scaling_refuses_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- one_hot ----------------------------------------------------------------------------------


def test_one_hot():
    out = data.one_hot([2, 0, 1, 2])
    assert out.dtype == np.float32 and out.shape == (4, 3)
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[[2, 0, 1, 2]])
    assert data.one_hot(np.array([[1], [0]]), num_classes=4, dtype=np.int32).tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]
    assert data.one_hot(np.array([1.0, 0.0])).tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize(
    "y, kwargs, match",
    [
        ([0, -1], {}, "negative"),
        ([0, 3], {"num_classes": 3}, "outside"),
        ([0.5], {}, "integer"),
        ([[0, 1]], {}, "1-D"),
        (["a"], {}, "integer"),
        ([0], {"num_classes": 0}, "num_classes"),
    ],
)
def test_one_hot_refuses_bad_labels(y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.one_hot(y, **kwargs)


# -- train_val_test_split --------------------------------------------------------------------


def _labels():
    return np.repeat([0, 1, 2], [60, 30, 10]).astype(np.int32)


def test_split_sizes_cover_and_determinism():
    x = np.arange(100, dtype=np.float32)[:, None]
    (xtr, ytr), (xv, yv), (xte, yte) = data.train_val_test_split(x, _labels(), val_size=0.15, test_size=0.2, seed=4)
    assert (len(xtr), len(xv), len(xte)) == (65, 15, 20)
    assert sorted(np.concatenate([xtr, xv, xte])[:, 0].tolist()) == list(range(100))  # a partition
    np.testing.assert_array_equal(_labels()[xte[:, 0].astype(int)], yte)  # rows stay paired
    again = data.train_val_test_split(x, _labels(), val_size=0.15, test_size=0.2, seed=4)
    assert again[2][0].tobytes() == xte.tobytes()
    other = data.train_val_test_split(x, _labels(), val_size=0.15, test_size=0.2, seed=5)
    assert other[2][0].tobytes() != xte.tobytes()
    (_, _), (xv0, _), _ = data.train_val_test_split(x, _labels(), val_size=0.0, test_size=0.2)
    assert xv0.shape == (0, 1)


def test_stratified_split_keeps_class_proportions():
    x = np.arange(100, dtype=np.float32)[:, None]
    (_, ytr), (_, yv), (_, yte) = data.train_val_test_split(
        x, _labels(), val_size=0.1, test_size=0.2, stratify=True, seed=0
    )
    # 60/30/10 of 100: exact quotas exist for 20 and 10 samples
    assert np.bincount(yte).tolist() == [12, 6, 2]
    assert np.bincount(yv).tolist() == [6, 3, 1]
    assert np.bincount(ytr).tolist() == [42, 21, 7]
    # 7 test samples of 60/30/10: 4.2, 2.1, 0.7 -> floors 4, 2, 0 and the one left goes
    # to the largest remainder (class 2)
    (_, _), _, (_, yte7) = data.train_val_test_split(x, _labels(), val_size=0.0, test_size=0.07, stratify=True)
    assert np.bincount(yte7, minlength=3).tolist() == [4, 2, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"val_size": 1.0}, "val_size"),
        ({"test_size": -0.1}, "test_size"),
        ({"val_size": 0.5, "test_size": 0.5}, "no training"),
        ({"seed": -1}, "seed"),
        ({"stratify": True, "y": np.linspace(0, 1, 100)}, "integer"),
        ({"y": np.zeros(99)}, "y has 99"),
    ],
)
def test_split_refuses_bad_arguments(kwargs, match):
    args = {"x": np.zeros((100, 2)), "y": _labels()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        data.train_val_test_split(**args)


# -- batches ----------------------------------------------------------------------------------


def test_batches_are_seeded_permutations_per_epoch():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    it = data.batches(x, y, batch_size=4, seed=3)
    assert len(it) == 3
    epochs = []
    for _ in range(2):
        parts = list(it)
        assert [len(xb) for xb, _ in parts] == [4, 4, 2]
        assert all((xb[:, 0] == yb).all() for xb, yb in parts)  # pairs stay together
        epochs.append(np.concatenate([yb for _, yb in parts]))
        assert sorted(epochs[-1].tolist()) == list(range(10))
    assert epochs[0].tolist() != epochs[1].tolist()  # a new order each pass
    fresh = data.Batches(x, y, batch_size=4, seed=3)
    np.testing.assert_array_equal(fresh.order(1), epochs[1])  # pass 1 without replaying pass 0
    assert [b.tolist() for b in data.batches(x, batch_size=4, shuffle=False, drop_last=True)] == [
        [[0], [1], [2], [3]],
        [[4], [5], [6], [7]],
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"seed": 1.5}, "seed"),
        ({"y": np.zeros(3)}, "y has 3"),
        ({"batch_size": 20, "drop_last": True}, "drop_last"),
    ],
)
def test_batches_refuse_bad_arguments(kwargs, match):
    args = {"x": np.zeros((10, 2))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        data.batches(**args)


def test_data_is_exported():
    assert cm.data.standardize is data.standardize
