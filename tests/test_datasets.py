"""The IDX reader (customml.datasets.read_idx) and the fashion_mnist dataset.

Every IDX file here is written by the test itself (plain and gzip'd), so the suite
needs no download and no Debian package; the real files of dataset-fashion-mnist are
checked only where the package is installed. Values are compared exactly: the reader
copies bytes, and pixel / 255 is one float32 division, the same in the test.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

import customml as cm
from customml import cli, datasets
from support import U32

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def _idx_bytes(a: np.ndarray, dtype) -> bytes:
    """IDX as specified: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data."""
    dtype = np.dtype(dtype)
    head = bytes([0, 0, CODES[dtype], a.ndim]) + np.array(a.shape, dtype=">u4").tobytes()
    return head + np.ascontiguousarray(a, dtype=dtype).tobytes()


def _write(path, raw: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def _fashion_dir(tmp_path, n_train=6, n_test=4, gz=True, images=None):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)),
        "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28)),
        "y_test": (np.arange(n_test) * 3) % 10,
    }
    arrays.update(images or {})
    for key, base in FILES.items():
        _write(tmp_path / (base + (".gz" if gz else "")), _idx_bytes(arrays[key], "u1"), gz)
    return arrays


# -- the reader ----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", list(CODES), ids=[d.str for d in CODES])
def test_read_idx_round_trips(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5)
    if dtype.kind == "u":
        a = np.abs(a)
    path = _write(tmp_path / "a.idx", _idx_bytes(a, dtype), gz)
    got = datasets.read_idx(path)
    assert got.shape == (2, 3, 5) and got.dtype == dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, a.astype(dtype))


def _corrupt_cases():
    good = _idx_bytes(np.zeros((4, 3), np.uint8), "u1")
    return {
        "empty": (b"", "too short"),
        "magic": (b"\x01" + good[1:], "magic number"),
        "type code": (good[:2] + b"\x07" + good[3:], "magic number"),
        "no dimensions": (b"\x00\x00\x08\x00", "0 dimensions"),
        "dims cut": (good[:10], "truncated: the header"),
        "data cut": (good[:-1], "truncated: dimensions \\(4, 3\\)"),
        "extra byte": (good + b"\x00", "longer than its header says"),
        "huge dims": (b"\x00\x00\x0e\x02" + np.array([2**31, 2**31], ">u4").tobytes(), "more than"),
    }


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_read_idx_refuses_corrupt_files_naming_them(tmp_path, case, gz):
    raw, match = _corrupt_cases()[case]
    path = _write(tmp_path / "bad.idx", raw, gz)
    with pytest.raises(ValueError, match=match) as info:
        datasets.read_idx(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("cut", [5, 20, -3])
def test_read_idx_refuses_damaged_gzip(tmp_path, cut):
    raw = gzip.compress(_idx_bytes(np.arange(600).reshape(20, 30) % 256, "u1"), mtime=0)
    path = _write(tmp_path / "bad.idx.gz", raw[:cut])
    with pytest.raises(ValueError, match="gzip") as info:
        datasets.read_idx(path)
    assert str(path) in str(info.value)


# -- fashion_mnist --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_fashion_mnist_from_a_path(tmp_path, gz):
    arrays = _fashion_dir(tmp_path, gz=gz)
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("fashion_mnist", path=tmp_path)
    assert x_train.shape == (6, 784) and x_test.shape == (4, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32 and x_train.flags.c_contiguous
    np.testing.assert_array_equal(x_train, arrays["x_train"].reshape(6, 784).astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0


def test_fashion_mnist_from_the_environment_variable(tmp_path, monkeypatch):
    _fashion_dir(tmp_path, n_train=3, n_test=2)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path))
    (x_train, _), (x_test, _) = cm.datasets.load("fashion_mnist")
    assert (x_train.shape[0], x_test.shape[0]) == (3, 2)


def test_fashion_mnist_missing_names_the_package(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as info:
        cm.datasets.load("fashion_mnist", path=tmp_path)
    assert datasets.FASHION_MNIST_ENV in str(info.value) and "train-images-idx3-ubyte" in str(info.value)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    assert cli.main(["train", "--dataset", "fashion_mnist", "--epochs", "1", "--quiet"]) == 2


@pytest.mark.parametrize(
    "images, match",
    [
        ({"x_train": np.zeros((6, 27, 28))}, "28, 28"),
        ({"y_train": np.arange(5)}, "expected 6 uint8 labels"),
        ({"y_test": np.array([0, 1, 10, 2])}, "label 10"),
    ],
)
def test_fashion_mnist_refuses_wrong_contents(tmp_path, images, match):
    _fashion_dir(tmp_path, images=images)
    with pytest.raises(ValueError, match=match):
        cm.datasets.load("fashion_mnist", path=tmp_path)


def test_names_and_paths():
    assert "fashion_mnist" in cm.datasets.names()
    with pytest.raises(ValueError, match="takes no path"):
        cm.datasets.load("iris", path="/tmp")
    with pytest.raises(ValueError, match="fashion_mnist"):
        cm.datasets.load("mnist_typo")


@pytest.mark.skipif(
    not os.path.isdir(datasets.FASHION_MNIST_DIR),
    reason=f"the Debian package dataset-fashion-mnist is not installed ({datasets.FASHION_MNIST_DIR} is absent)",
)
def test_the_real_package():
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("fashion_mnist", path=datasets.FASHION_MNIST_DIR)
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    # Zalando's split is balanced: 6,000 and 1,000 images per class
    assert np.bincount(y_train).tolist() == [6000] * 10 and np.bincount(y_test).tolist() == [1000] * 10


# -- the bundled scikit-learn datasets ----------------------------------------------------


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


@pytest.mark.parametrize(
    "name, n_train, n_test, features, classes",
    [("breast_cancer", 455, 114, 30, 2), ("wine", 142, 36, 13, 3), ("iris", 120, 30, 4, 3)],
)
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
