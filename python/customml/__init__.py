"""customml: a native core for training and serving dense neural networks."""

from . import _core, ops

__version__ = _core.build_info()["version"]


def build_info() -> dict:
    """Version, compiler, CUDA, detected CPU features, active ISA level, the kernel
    variant chosen per family and the thread count."""
    return _core.build_info()


__all__ = ["__version__", "build_info", "ops"]
