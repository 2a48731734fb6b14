"""Bundled real datasets, with a fixed split and scaling so results are comparable.

digits, breast_cancer, wine and iris are the files scikit-learn ships (no download):
a stratified 80/20 split with seed 0; features float32 scaled to [0, 1] with the
training split's minimum and maximum (digits: pixel / 16), so test values may fall
slightly outside. Labels are int32.

fashion_mnist is Zalando's 60,000 / 10,000 split of 28x28 grey images in 10 classes,
read from the IDX files of the Debian package dataset-fashion-mnist
(``/usr/share/datasets/fashion-mnist``), or from the directory given as ``path=`` or in
the environment variable ``CUSTOMML_FASHION_MNIST``; gzip'd or plain files. Images are
flattened to 784 float32 features, pixel / 255.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from typing import List, NoReturn, Optional, Tuple

import numpy as np

__all__ = ["load", "names", "read_idx", "FASHION_MNIST_ENV", "FASHION_MNIST_DIR"]

FASHION_MNIST_ENV = "CUSTOMML_FASHION_MNIST"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# IDX type codes: numpy dtype (big-endian on disk).
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# An IDX file larger than this is refused before its data is read (fashion_mnist's
# largest is 47 MB): a corrupt header, or a gzip bomb, cannot make us allocate more.
MAX_IDX_BYTES = 1 << 32

_SKLEARN = {"digits": "load_digits", "breast_cancer": "load_breast_cancer", "wine": "load_wine", "iris": "load_iris"}

Split = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def names() -> Tuple[str, ...]:
    """The names ``load`` takes: digits, breast_cancer, wine, iris and fashion_mnist."""
    return tuple(_SKLEARN) + ("fashion_mnist",)


def read_idx(path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format) as a NumPy array in native byte order: two
    zero bytes, a type code, the number of dimensions, each dimension as a big-endian
    uint32, then the data. gzip'd files (by their magic bytes) are decompressed on the
    fly. The magic number, the dimensions and the data size are checked against the
    file's length; any problem is a ValueError that names the file."""
    path = os.fspath(path)

    def fail(message: str) -> NoReturn:
        raise ValueError(f"{path}: {message}")

    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    problem = None
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                fail(
                    f"not an IDX file: {len(head)} bytes, too short for the 4-byte magic number"
                    + (" (after gzip decompression)" if compressed else "")
                )
            if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
                fail(
                    f"not an IDX file: magic number {head.hex()} (expected 0000, a type code in "
                    f"{', '.join(f'{t:02x}' for t in _IDX_TYPES)}, then the number of dimensions)"
                )
            dtype, ndim = _IDX_TYPES[head[2]], head[3]
            if ndim == 0:
                fail("IDX magic number says 0 dimensions")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                fail(f"truncated: the header needs {4 * ndim} bytes of dimensions, the file has {len(dims_raw)}")
            shape = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
            need = math.prod(shape) * dtype.itemsize
            if need > MAX_IDX_BYTES:
                fail(
                    f"dimensions {shape} describe {need} bytes of data, more than the {MAX_IDX_BYTES} allowed "
                    "(a corrupt header?)"
                )
            body = f.read(need + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        problem = f"corrupt or truncated gzip data ({type(exc).__name__}: {exc})"
    if problem:
        fail(problem)
    if len(body) != need:
        what = "truncated" if len(body) < need else "longer than its header says"
        fail(
            f"{what}: dimensions {shape} of {dtype.name} need {need} bytes of data, the file has "
            f"{len(body) if len(body) < need else 'more'}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _fashion_mnist(path) -> Split:
    source: Optional[str] = "path="
    if path is None:
        path, source = os.environ.get(FASHION_MNIST_ENV), FASHION_MNIST_ENV
    if path is None:
        path, source = FASHION_MNIST_DIR, None
    directory = os.fspath(path)
    files = {}
    for key, base in _FASHION_FILES.items():
        found = [
            os.path.join(directory, base + ext)
            for ext in (".gz", "")
            if os.path.isfile(os.path.join(directory, base + ext))
        ]
        if not found:
            where = f"{directory} (from {source})" if source else directory
            raise FileNotFoundError(
                f"dataset 'fashion_mnist': {base}[.gz] is not in {where}; install the Debian package "
                f"dataset-fashion-mnist (apt-get install dataset-fashion-mnist), or pass path= or set "
                f"{FASHION_MNIST_ENV} to a directory holding the four IDX files"
            )
        files[key] = found[0]
    arrays = {key: read_idx(p) for key, p in files.items()}
    out: List[Tuple[np.ndarray, np.ndarray]] = []
    # Any number of images is accepted (a subset made for a quick experiment loads too).
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"{files[f'x_{split}']}: expected uint8 images (n, 28, 28), got {x.dtype.name} {x.shape}")
        if y.dtype != np.uint8 or y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{files[f'y_{split}']}: expected {x.shape[0]} uint8 labels, got {y.dtype.name} {y.shape}")
        if y.size and y.max() > 9:
            raise ValueError(f"{files[f'y_{split}']}: label {int(y.max())} is outside [0, 10)")
        out.append(
            (np.ascontiguousarray(x.reshape(x.shape[0], 784), dtype=np.float32) / np.float32(255.0), y.astype(np.int32))
        )
    return out[0], out[1]


def load(name: str, path: Optional[str] = None) -> Split:
    """``(x_train, y_train), (x_test, y_test)`` for a bundled dataset. ``path`` (a
    directory) applies to fashion_mnist only."""
    if name == "fashion_mnist":
        return _fashion_mnist(path)
    if name not in _SKLEARN:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(names())}")
    if path is not None:
        raise ValueError(f"dataset {name!r} comes from scikit-learn's bundled files and takes no path")
    try:
        import sklearn.datasets
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f'dataset {name!r} needs scikit-learn: pip install ".[datasets]" in the customml checkout'
        ) from exc
    bunch = getattr(sklearn.datasets, _SKLEARN[name])()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    if name == "digits":
        lo, scale = 0.0, 16.0  # 4-bit pixel intensities
    else:
        lo = x_train.min(axis=0)
        span = x_train.max(axis=0) - lo
        scale = np.where(span > 0, span, 1.0)
    x_train = ((x_train - lo) / scale).astype(np.float32)
    x_test = ((x_test - lo) / scale).astype(np.float32)
    return (np.ascontiguousarray(x_train), y_train), (np.ascontiguousarray(x_test), y_test)
