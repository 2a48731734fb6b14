"""customml: a native core for training and serving dense neural networks.

Hand-written C++ kernels under a Keras-like API::

    import customml as cm
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("digits")
    model = cm.Sequential([cm.layers.Dense(256, activation="relu"), cm.layers.Dense(10)],
                          input_dim=x_train.shape[1])
    model.compile(optimizer=cm.optimizers.Adam(1e-3), loss="softmax_cross_entropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10)
"""

import os

from . import (
    _core,
    callbacks,
    cuda,
    data,
    datasets,
    distributed,
    io,
    layers,
    losses,
    metrics,
    ops,
    optimizers,
    prune,
    quantize,
    regularizers,
    schedules,
)
from ._optimize import OptimizeReport, optimize
from .array import Array, asarray, empty, from_dlpack
from .callbacks import History
from .distillation import distill
from .io import load
from .models import Sequential

__version__ = _core.build_info()["version"]


def set_num_threads(n: int) -> None:
    """Threads the CPU kernels may use, the calling thread included (default: the
    CUSTOMML_NUM_THREADS environment variable, else every hardware thread). Large GEMMs
    split their output columns over them; results do not depend on the count."""
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the CPU kernels may use (see ``set_num_threads``)."""
    return _core.get_num_threads()


def get_include() -> str:
    """The directory holding the C API's headers ``customml/customml.h`` and
    ``customml/customml.hpp`` (docs/embedding.md)."""
    return os.path.join(os.path.dirname(__file__), "include")


def get_library_dir() -> str:
    """The directory holding the C runtime ``libcustomml.so.0`` (docs/embedding.md)."""
    return os.path.join(os.path.dirname(__file__), "lib")


def get_cmake_dir() -> str:
    """The directory of the CMake package config, for ``find_package(customml CONFIG)``
    (``-Dcustomml_DIR=...``) and its target ``customml::customml``."""
    return os.path.join(get_library_dir(), "cmake", "customml")


def build_info() -> dict:
    """Version, compiler, ``cuda_compiled``, detected CPU features, the active ISA level,
    the kernel variant chosen per family and the thread count."""
    return _core.build_info()


__all__ = [
    "__version__",
    "Array",
    "History",
    "OptimizeReport",
    "Sequential",
    "asarray",
    "build_info",
    "distill",
    "empty",
    "from_dlpack",
    "get_cmake_dir",
    "get_include",
    "get_library_dir",
    "optimize",
    "get_num_threads",
    "set_num_threads",
    "callbacks",
    "cuda",
    "data",
    "datasets",
    "distributed",
    "io",
    "layers",
    "load",
    "losses",
    "metrics",
    "ops",
    "optimizers",
    "prune",
    "quantize",
    "regularizers",
    "schedules",
]
