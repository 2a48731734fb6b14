"""customml.Array and DLPack in both directions: Arrays exported to NumPy and PyTorch
(capsule names, versions, lifetimes, dl_device / copy / stream), any ``__dlpack__`` object
taken by the ops and by ``from_dlpack`` zero-copy, with the errors naming the argument.
Host memory is testable everywhere ("cuda-emulated" exports host memory) with NumPy as the
other side; PyTorch (the bench extra, not a test dependency) is a second peer where it is
installed, and its tests skip with the reason elsewhere. The GPU paths run only where CUDA
is available and say why not elsewhere."""

from __future__ import annotations

import ctypes
import gc

import numpy as np
import pytest

import customml as cm
from customml import _core, ops
from support import assert_same_bits

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(
    torch is None,
    reason="torch is not installed (pip install .[bench]): the DLPack exchange with PyTorch is not tested",
)

HOST_DEVICES = ["cpu"] + (["cuda-emulated"] if _core.build_info()["simt_emulation"] else [])
DTYPES = ["float32", "float16", "float64", "int8", "uint8", "int32", "int64"]
SHAPES = [(), (0,), (1,), (5,), (3, 4), (2, 3, 5)]
needs_cuda = pytest.mark.skipif(
    not _core.cuda_available(), reason=f"needs a CUDA device: {_core.cuda_unavailable_reason()}"
)


@pytest.fixture(params=HOST_DEVICES)
def host_device(request) -> str:
    return request.param


def capsule_name(capsule) -> str:
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    return get_name(capsule).decode()


def values(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 50).astype(dtype)


class Wrapped:
    """Only the two DLPack methods of a NumPy (or other) array, recording each request."""

    def __init__(self, a):
        self.a = a
        self.requests = []

    def __dlpack__(self, **kwargs):
        self.requests.append(kwargs)
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


class LegacyOnly(Wrapped):
    """A producer older than DLPack 1.0: no max_version keyword, legacy capsules."""

    def __dlpack__(self, stream=None):
        self.requests.append(dict(stream=stream))
        return self.a.__dlpack__(stream=stream)


class Capsule:
    """Hands out one capsule made beforehand, so that a consumer (NumPy) takes exactly it."""

    def __init__(self, capsule, device=(1, 0)):
        self.capsule, self.device = capsule, device

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return self.device


class OnDevice:
    """Claims memory on a DLPack device; its capsule must never be asked for."""

    def __init__(self, device_type, device_id=0):
        self.device = (device_type, device_id)

    def __dlpack__(self, **kwargs):
        raise AssertionError("__dlpack__ must not be called for memory the device cannot use")

    def __dlpack_device__(self):
        return self.device


# ------------------------------------------------------------------ export


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_array_round_trips_through_numpy(host_device, dtype, shape):
    x = values(shape, dtype)
    a = cm.asarray(x, device=host_device)
    assert isinstance(a, cm.Array)
    assert a.shape == shape and a.dtype == np.dtype(dtype) and a.device == host_device
    assert a.__dlpack_device__() == (1, 0)  # host memory on both host devices
    n = np.from_dlpack(a)
    assert n.shape == shape and n.dtype == np.dtype(dtype)
    assert_same_bits(n, x, "numpy.from_dlpack")
    assert_same_bits(a.numpy(), x, "Array.numpy")
    assert_same_bits(np.asarray(a), x, "numpy.asarray")
    if x.size:  # zero-copy: a write through one view shows in the others
        n.reshape(-1)[0] = 7
        assert a.numpy().reshape(-1)[0] == 7


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_array_round_trips_through_torch(host_device, dtype, shape):
    x = values(shape, dtype)
    a = cm.asarray(x, device=host_device)
    t = torch.from_dlpack(a)
    assert tuple(t.shape) == shape and t.numpy().dtype == np.dtype(dtype)
    assert_same_bits(t.numpy(), x, "torch.from_dlpack")
    if x.size:
        t.reshape(-1)[0] = 7
        assert a.numpy().reshape(-1)[0] == 7


def test_capsule_names_and_versions(host_device):
    a = cm.asarray(np.arange(4, dtype=np.float32), device=host_device)
    assert capsule_name(a.__dlpack__()) == "dltensor"
    assert capsule_name(a.__dlpack__(max_version=(0, 8))) == "dltensor"
    assert capsule_name(a.__dlpack__(max_version=(1, 0))) == "dltensor_versioned"
    assert capsule_name(a.__dlpack__(max_version=(1, 3))) == "dltensor_versioned"
    for versioned in (False, True):  # a consumer renames the capsule it takes
        cap = a.__dlpack__(max_version=(1, 0) if versioned else None)
        n = np.from_dlpack(Capsule(cap))
        assert capsule_name(cap) == ("used_dltensor_versioned" if versioned else "used_dltensor")
        assert n.tolist() == [0, 1, 2, 3]


def test_unconsumed_capsules_are_released():
    gc.collect()
    base = _core._dlpack_exports_alive()
    a = cm.asarray(np.ones(8, np.float32))
    caps = [a.__dlpack__(), a.__dlpack__(max_version=(1, 0))]
    assert _core._dlpack_exports_alive() == base + 2
    del caps
    gc.collect()
    assert _core._dlpack_exports_alive() == base


def test_consumers_outlive_the_array_and_release_it(host_device):
    # The producer is gone before the consumers are done with the memory: it must stay
    # valid (the managed tensor holds it) until each consumer lets go.
    gc.collect()
    base = _core._dlpack_exports_alive()
    a = cm.asarray(np.arange(1000, dtype=np.float32), device=host_device)
    n = np.from_dlpack(a)
    t = np.from_dlpack(a)  # a second consumer of the same Array
    b = cm.from_dlpack(a)  # customml consuming its own export
    assert _core._dlpack_exports_alive() == base + 3
    del a
    gc.collect()
    for _ in range(3):  # allocations that would reuse freed memory
        cm.asarray(np.full(1000, -1, np.float32), device=host_device)
    t += 1
    want = np.arange(1000, dtype=np.float32) + 1
    assert_same_bits(n, want, "numpy view after the Array is gone")
    assert_same_bits(b.numpy(), want, "customml view after the Array is gone")
    del n, t
    gc.collect()
    assert _core._dlpack_exports_alive() == base + 1
    del b
    gc.collect()
    assert _core._dlpack_exports_alive() == base


def test_dlpack_export_options(host_device):
    a = cm.asarray(np.arange(6, dtype=np.float32), device=host_device)
    assert capsule_name(a.__dlpack__(dl_device=(1, 0), max_version=(1, 0))) == "dltensor_versioned"
    with pytest.raises(BufferError, match="cannot be exported to cuda:0"):
        a.__dlpack__(dl_device=(2, 0))
    with pytest.raises(ValueError, match="stream must be None for an array in host memory"):
        a.__dlpack__(stream=1)
    c = np.from_dlpack(a, copy=True)  # a copy: writes do not reach the Array
    c[0] = 100
    assert a.numpy()[0] == 0
    v = np.from_dlpack(a, copy=False)
    v[0] = 5
    assert a.numpy()[0] == 5
    assert not hasattr(a, "__cuda_array_interface__")  # host memory is not a GPU array


def test_empty_and_repr(host_device):
    a = cm.empty((2, 3), "int32", device=host_device)
    assert a.shape == (2, 3) and a.dtype == np.int32 and a.nbytes == 24 and a.size == 6 and a.ndim == 2
    assert repr(a) == f"customml.Array(shape=(2, 3), dtype=int32, device='{host_device}')"
    assert cm.empty(5).shape == (5,)
    with pytest.raises(TypeError, match=r"\[empty\] dtype must be one of"):
        cm.empty(3, "complex64")
    with pytest.raises(ValueError, match="device must be"):
        cm.empty(3, device="tpu")


# ------------------------------------------------------------------ import


@pytest.mark.parametrize("producer", ["numpy", pytest.param("torch", marks=needs_torch)])
def test_from_dlpack_views_the_producers_memory_after_it_lets_go(producer):
    make = (
        (lambda n: np.arange(n, dtype=np.float32))
        if producer == "numpy"
        else (lambda n: torch.arange(n, dtype=torch.float32))
    )
    t = make(10)
    a = cm.from_dlpack(t)
    assert a.device == "cpu" and a.shape == (10,)
    t[0] = 42  # the same memory
    assert a.numpy()[0] == 42
    del t
    gc.collect()
    assert_same_bits(a.numpy()[1:], np.arange(1, 10, dtype=np.float32), "after the producer's array is gone")
    e = cm.from_dlpack(make(3), device="cuda-emulated") if "cuda-emulated" in HOST_DEVICES else None
    if e is not None:
        assert e.device == "cuda-emulated"


def test_array_constructor_views_any_dlpack_object():
    t = np.zeros(3, np.float32)
    a = cm.Array(Wrapped(t))
    b = cm.Array(np.arange(3, dtype=np.int64), device="cuda-emulated" if "cuda-emulated" in HOST_DEVICES else None)
    ops.sgd_update(a, np.ones(3, np.float32), lr=2.0)
    assert t.tolist() == [-2.0, -2.0, -2.0]  # the op wrote the producer's memory
    assert b.dtype == np.int64 and b.numpy().tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match=r"\[from_dlpack\] x must have __dlpack__"):
        cm.Array(3.0)


def test_from_dlpack_errors():
    with pytest.raises(TypeError, match=r"\[from_dlpack\] x must have __dlpack__"):
        cm.from_dlpack([1.0, 2.0])
    with pytest.raises(ValueError, match=r"\[from_dlpack\] x must be C-contiguous"):
        cm.from_dlpack(np.ones((3, 4), np.float32).T)
    with pytest.raises(TypeError, match=r"\[from_dlpack\] x has a dtype customml.Array does not hold"):
        cm.from_dlpack(np.ones(3, bool))
    with pytest.raises(ValueError, match=r"\[from_dlpack\] x is a GPU array \(cuda:0\) but the device is 'cpu'"):
        cm.from_dlpack(OnDevice(2), device="cpu")


def test_read_only_producers_stay_read_only():
    r = np.arange(4, dtype=np.float32)
    r.setflags(write=False)
    a = cm.from_dlpack(Wrapped(r))  # NumPy says read-only in a versioned capsule
    assert a.readonly
    assert not a.numpy().flags.writeable
    with pytest.raises(BufferError, match="read-only"):
        a.__dlpack__()  # a legacy capsule cannot say so
    assert capsule_name(a.__dlpack__(max_version=(1, 0))) == "dltensor_versioned"
    assert not np.from_dlpack(a).flags.writeable
    with pytest.raises(ValueError, match=r"\[sgd_update\] param is read-only"):
        ops.sgd_update(a, np.ones(4, np.float32), lr=0.1)


@needs_torch
def test_ops_take_torch_tensors_zero_copy(host_device):
    # torch tensors as inputs and outputs give the bits NumPy buffers give
    rng = np.random.default_rng(1)
    n = 1003
    p, g, m = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal(n)).astype(np.float32)
    kw = dict(lr=1e-2, step=3, weight_decay=0.1, decoupled=True, no_decay=[(5, 17)], device=host_device)
    want = [a.copy() for a in (p, g, m, v)]
    ops.adam_update(want[0], want[1], want[2], want[3], **kw)
    tensors = [torch.from_numpy(a.copy()) for a in (p, g, m, v)]
    ops.adam_update(*tensors, **kw)
    for t, w, name in zip(tensors, want, ("param", "grad", "m", "v")):
        assert_same_bits(t.numpy(), w, name)
    x, w, b = (torch.from_numpy(values(s, np.float32, seed)) for s, seed in (((7, 5), 2), ((5, 3), 3), ((3,), 4)))
    out = torch.full((7, 3), float("nan"))
    assert ops.dense_forward(x, w, b, activation="relu", out=out, device=host_device) is out
    want = ops.dense_forward(x.numpy(), w.numpy(), b.numpy(), activation="relu", device=host_device)
    assert_same_bits(out.numpy(), want, "dense")
    loss, grad = ops.mse(x, torch.zeros(7, 5), grad_out=torch.empty(7, 5), device=host_device)
    assert isinstance(grad, torch.Tensor)
    assert loss == ops.mse(x.numpy(), np.zeros((7, 5), np.float32), device=host_device)[0]


def test_ops_take_customml_arrays(host_device):
    x = cm.asarray(values((4, 6), np.float32), device=host_device)
    w = cm.asarray(values((6, 2), np.float32, 1), device=host_device)
    b = cm.asarray(np.zeros(2, np.float32), device=host_device)
    out = cm.empty((4, 2), device=host_device)
    ops.dense_forward(x, w, b, out=out, device=host_device)
    want = ops.dense_forward(x.numpy(), w.numpy(), b.numpy(), device=host_device)
    assert_same_bits(out.numpy(), want, "dense on Arrays")
    with pytest.raises(TypeError, match=r"\[sgd_update\] param must be float32"):
        ops.sgd_update(cm.asarray(np.ones(3)), np.ones(3, np.float32), lr=0.1, device=host_device)


def test_any_dlpack_object_is_taken_with_the_requested_protocol(host_device):
    buf = np.zeros(6, np.float32)
    out = Wrapped(buf)
    ops.dropout(Wrapped(np.ones(6, np.float32)), rate=0.0, seed=1, stream=0, out=out, device=host_device)
    assert_same_bits(buf, np.ones(6, np.float32), "written through DLPack into the producer's memory")
    assert out.requests == [dict(stream=None, max_version=(1, 0))]
    legacy = LegacyOnly(np.full(6, 2.0, np.float32))
    ops.dropout(legacy, rate=0.0, seed=1, stream=0, out=out, device=host_device)
    assert legacy.requests == [dict(stream=None)]  # the retry without max_version
    assert_same_bits(buf, np.full(6, 2.0, np.float32), "from a legacy producer")


def test_ops_release_what_they_consume(host_device):
    gc.collect()
    base = _core._dlpack_exports_alive()
    a = cm.asarray(np.ones(16, np.float32), device=host_device)
    for _ in range(3):
        ops.sgd_update(
            Wrapped(a), Wrapped(cm.asarray(np.ones(16, np.float32), device=host_device)), lr=0.5, device=host_device
        )
    gc.collect()
    assert _core._dlpack_exports_alive() == base
    assert_same_bits(a.numpy(), np.full(16, -0.5, np.float32), "three steps")


OP = r"\[sgd_update\]"
DLPACK_BAD = {
    # Wrapped: NumPy memory offered through DLPack alone (not NumPy's own buffer protocol)
    "float64 tensor": (lambda: Wrapped(np.ones(4)), TypeError, OP + r" param must be float32"),
    "int32 tensor": (lambda: Wrapped(np.ones(4, np.int32)), TypeError, OP + r" param must be float32"),
    "transposed tensor": (
        lambda: Wrapped(np.ones((2, 2), np.float32).T),
        ValueError,
        OP + r" param must be C-contiguous",
    ),
    "strided tensor": (lambda: Wrapped(np.ones(8, np.float32)[::2]), ValueError, OP + r" param must be C-contiguous"),
    "GPU memory on a host device": (
        lambda: OnDevice(2, 1),
        ValueError,
        OP + r" param is a GPU array \(cuda:1\) but the device is '.*'; pass device='cuda:1'",
    ),
    "OpenCL memory": (lambda: OnDevice(4), ValueError, OP + r" param is on DLPack device type 4, which customml"),
}
if torch is not None:
    DLPACK_BAD["requires_grad"] = (
        lambda: torch.ones(4, requires_grad=True),
        ValueError,
        OP + r" param \(Tensor\) could not be shared through DLPack: .*detach",
    )


@pytest.mark.parametrize("case", list(DLPACK_BAD))
def test_dlpack_arguments_are_checked(host_device, case):
    make, exc, match = DLPACK_BAD[case]
    param = make()
    grad = np.ones(4, np.float32)
    with pytest.raises(exc, match=match):
        ops.sgd_update(param, grad, lr=0.1, device=host_device)


def test_a_broken_producer_is_a_clear_error(host_device):
    class NotACapsule(Wrapped):
        def __dlpack__(self, **kwargs):
            return object()

    class Refuses(Wrapped):
        def __dlpack__(self, **kwargs):
            raise BufferError("cannot export this one")

    a = np.ones(4, np.float32)
    with pytest.raises(
        TypeError, match=r"\[sgd_update\] grad: __dlpack__ of NotACapsule returned a value of type 'object', not"
    ):
        ops.sgd_update(a, NotACapsule(a.copy()), lr=0.1, device=host_device)
    with pytest.raises(ValueError, match=r"\[sgd_update\] grad \(Refuses\) could not be shared.*cannot export"):
        ops.sgd_update(a, Refuses(a.copy()), lr=0.1, device=host_device)


# A producer written against the C ABI with ctypes, whose deleter counts its calls: the
# consumer must call it exactly once, on success and on every error after it took the
# capsule (a newer major version, a read-only output).
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _Versioned(ctypes.Structure):
    pass


class _Legacy(ctypes.Structure):
    pass


_VersionedDeleter = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Versioned))
_LegacyDeleter = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Legacy))
_Versioned._fields_ = [
    ("version", _DLPackVersion),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", _VersionedDeleter),
    ("flags", ctypes.c_uint64),
    ("dl_tensor", _DLTensor),
]
_Legacy._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _LegacyDeleter)]


class CtypesProducer:
    def __init__(
        self, a: np.ndarray, *, versioned=True, major=1, flags=0, byte_offset=0, strides=None, shape="a", data="a"
    ):
        self.a = a
        self.deleted = 0
        self.shape = (ctypes.c_int64 * a.ndim)(*(a.shape if shape == "a" else shape or ()))
        self.strides = None if strides is None else (ctypes.c_int64 * a.ndim)(*strides)
        tensor = _DLTensor(
            a.ctypes.data - byte_offset if data == "a" else data,
            _DLDevice(1, 0),
            a.ndim,
            _DLDataType(2, 32, 1),
            self.shape if shape else None,
            self.strides,
            byte_offset,
        )

        def deleter(_):
            self.deleted += 1

        if versioned:
            self.deleter = _VersionedDeleter(deleter)
            self.managed = _Versioned(_DLPackVersion(major, 0), None, self.deleter, flags, tensor)
        else:
            self.deleter = _LegacyDeleter(deleter)
            self.managed = _Legacy(tensor, None, self.deleter)
        self.name = b"dltensor_versioned" if versioned else b"dltensor"

    def __dlpack__(self, **kwargs):
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(self.managed), self.name, None)

    def __dlpack_device__(self):
        return (1, 0)


@pytest.mark.parametrize("versioned", [True, False])
def test_consumed_capsules_are_deleted_once(host_device, versioned):
    buf = np.arange(8, dtype=np.float32)
    grad = CtypesProducer(np.ones(8, np.float32), versioned=versioned)
    param = CtypesProducer(buf, versioned=versioned, byte_offset=16)  # data + byte_offset is the array
    ops.sgd_update(param, grad, lr=1.0, device=host_device)
    gc.collect()
    assert (param.deleted, grad.deleted) == (1, 1)
    assert_same_bits(buf, np.arange(8, dtype=np.float32) - 1, "written through a ctypes producer")


def test_consumer_errors_still_delete_the_capsule(host_device):
    newer = CtypesProducer(np.ones(4, np.float32), major=2)
    with pytest.raises(
        ValueError, match=r"\[sgd_update\] param is a DLPack 2.0 tensor; customml reads major version 1"
    ):
        ops.sgd_update(newer, np.ones(4, np.float32), lr=0.1, device=host_device)
    read_only = CtypesProducer(np.ones(4, np.float32), flags=1)
    with pytest.raises(ValueError, match=r"\[sgd_update\] param is read-only"):
        ops.sgd_update(read_only, np.ones(4, np.float32), lr=0.1, device=host_device)
    strided = CtypesProducer(np.ones(8, np.float32)[::2], strides=(2,))
    with pytest.raises(ValueError, match=r"\[sgd_update\] param must be C-contiguous"):
        ops.sgd_update(strided, np.ones(4, np.float32), lr=0.1, device=host_device)
    malformed = [
        CtypesProducer(np.ones(4, np.float32), shape=None),  # ndim 1, no shape array
        CtypesProducer(np.ones(4, np.float32), shape=(-4,)),
        CtypesProducer(np.ones(4, np.float32), data=None),
    ]
    for bad, what in zip(malformed, ("no shape", "a negative dimension", "null data")):
        with pytest.raises(ValueError, match=rf"\[sgd_update\] param: malformed DLPack tensor \(.*{what}"):
            ops.sgd_update(bad, np.ones(4, np.float32), lr=0.1, device=host_device)
    gc.collect()
    assert (newer.deleted, read_only.deleted, strided.deleted) == (1, 1, 1)
    assert [bad.deleted for bad in malformed] == [1, 1, 1]
    grad_ro = CtypesProducer(np.ones(4, np.float32), flags=1)  # read-only is fine for an input
    ops.sgd_update(np.zeros(4, np.float32), grad_ro, lr=0.1, device=host_device)
    gc.collect()
    assert grad_ro.deleted == 1


# ------------------------------------------------------------------ GPU only


def test_cuda_memory_paths_ran_or_say_why():
    # the visible record (in -ra's skip summary) of why the GPU DLPack tests did not run
    if not _core.cuda_available():
        pytest.skip(f"DLPack / __cuda_array_interface__ on 'cuda' not run: {_core.cuda_unavailable_reason()}")


def _gpu_library():
    if torch is not None and torch.cuda.is_available():
        return "torch"
    try:
        import cupy  # noqa: F401
    except ImportError:
        pytest.skip("needs torch with CUDA or CuPy to exchange GPU memory with")
    return "cupy"


@needs_cuda
def test_cuda_arrays_round_trip():
    x = values((33, 7), np.float32)
    a = cm.asarray(x, device="cuda")
    assert a.__dlpack_device__() == (2, 0)
    cai = a.__cuda_array_interface__
    assert cai["shape"] == (33, 7) and cai["typestr"] == "<f4" and cai["version"] == 3
    if _gpu_library() == "torch":
        t = torch.from_dlpack(a)
        assert t.is_cuda and t.data_ptr() == cai["data"][0]
        assert_same_bits(t.cpu().numpy(), x, "torch view of a cuda Array")
    else:
        import cupy

        c = cupy.from_dlpack(a)
        assert c.data.ptr == cai["data"][0]
        assert_same_bits(cupy.asnumpy(c), x, "cupy view of a cuda Array")
    assert_same_bits(np.from_dlpack(a, device="cpu"), x, "host copy through dl_device")
    with pytest.raises(BufferError, match="copy=False"):
        a.__dlpack__(dl_device=(1, 0), copy=False)
    with pytest.raises(ValueError, match="stream must be None, -1, 1, 2"):
        a.__dlpack__(stream=0)


@needs_cuda
def test_ops_on_cuda_take_gpu_tensors_and_return_arrays():
    x, w, b = values((9, 5), np.float32), values((5, 4), np.float32, 1), values((4,), np.float32, 2)
    want = ops.dense_forward(x, w, b, activation="relu")
    if _gpu_library() == "torch":
        args = [torch.from_numpy(a).cuda() for a in (x, w, b)]
    else:
        import cupy

        args = [cupy.asarray(a) for a in (x, w, b)]
    y = ops.dense_forward(*args, activation="relu", device="cuda")
    assert isinstance(y, cm.Array) and y.device == "cuda"
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)  # FMA contraction on the GPU
    with pytest.raises(TypeError, match=r"\[dense_forward\] x must be a GPU array on device 'cuda', got a ndarray"):
        ops.dense_forward(x, *args[1:], device="cuda")
