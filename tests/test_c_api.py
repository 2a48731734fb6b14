"""The C runtime (include/customml/customml.h, libcustomml.so.0): bit for bit what Python's
predict returns for every kind of model file, every misuse a status and a message naming
the argument, only cml_* exported; and the examples (examples/c, examples/cpp) built with
CMake's find_package(customml) against the installed package and run.

The library is the installed package's (``customml.get_library_dir()``); in a source tree,
``cmake --install build/dev --prefix python`` puts it there (docs/architecture.md)."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest

import customml as cm
from customml import _model_file
from model_kinds import KINDS, data

LIBRARY = os.path.join(cm.get_library_dir(), "libcustomml.so.0")
OK, INVALID_ARGUMENT, BAD_FILE, IO_ERROR = 0, 1, 2, 3
F32P = ctypes.POINTER(ctypes.c_float)


@pytest.fixture(scope="module")
def lib():
    assert os.path.exists(LIBRARY), f"{LIBRARY} is missing: install the build (cmake --install BUILD --prefix python)"
    c = ctypes.CDLL(LIBRARY)
    c.cml_version.restype = ctypes.c_char_p
    c.cml_last_error.restype = ctypes.c_char_p
    c.cml_model_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    c.cml_model_load_from_memory.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
    c.cml_model_free.argtypes = [ctypes.c_void_p]
    c.cml_model_input_dim.argtypes = c.cml_model_output_dim.argtypes = [ctypes.c_void_p]
    c.cml_model_input_dim.restype = c.cml_model_output_dim.restype = ctypes.c_int64
    for f in (c.cml_predict, c.cml_predict_proba):
        f.argtypes = [ctypes.c_void_p, F32P, ctypes.c_int64, ctypes.c_int64, F32P, ctypes.c_int64]
    c.cml_set_num_threads.argtypes = [ctypes.c_int]
    yield c
    c.cml_set_num_threads(cm.get_num_threads())


def _load(lib, raw: bytes):
    model = ctypes.c_void_p()
    status = lib.cml_model_load_from_memory(raw, len(raw), ctypes.byref(model))
    assert status == OK, lib.cml_last_error()
    return model


def _predict(lib, model, x: np.ndarray, out: int, proba=False) -> np.ndarray:
    y = np.full((x.shape[0], out), np.nan, np.float32)
    fn = lib.cml_predict_proba if proba else lib.cml_predict
    status = fn(model, x.ctypes.data_as(F32P), x.shape[0], x.shape[1], y.ctypes.data_as(F32P), y.size)
    assert status == OK, lib.cml_last_error()
    return y


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_predict_is_bit_identical_to_python(lib, kind, threads):
    model = KINDS[kind]()
    raw = cm.io.dumps(model)
    loaded = cm.io.loads(raw)  # what a Python service would run
    handle = _load(lib, raw)
    try:
        assert (lib.cml_model_input_dim(handle), lib.cml_model_output_dim(handle)) == (12, 3)
        cm.set_num_threads(threads)
        assert lib.cml_set_num_threads(threads) == OK
        x = data(n=200, seed=3)[0]
        for rows in (1, 2, 7, 64, 200):
            assert _predict(lib, handle, x[:rows], 3).tobytes() == loaded.predict(x[:rows]).tobytes(), rows
        if loaded._loss is not None:
            assert _predict(lib, handle, x[:9], 3, proba=True).tobytes() == loaded.predict_proba(x[:9]).tobytes()
    finally:
        lib.cml_model_free(handle)
        cm.set_num_threads(os.cpu_count() or 1)


def test_many_threads_share_one_model(lib):
    model = KINDS["pruned-csr"]()
    handle = _load(lib, cm.io.dumps(model))
    x = data(n=64, seed=4)[0]
    want = [model.predict(x[i : i + 1]).tobytes() for i in range(64)]
    errors = []

    def worker(t):
        for i in range(t, 64, 4):
            if _predict(lib, handle, x[i : i + 1], 3).tobytes() != want[i]:
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lib.cml_model_free(handle)
    assert errors == []


def test_every_misuse_is_a_status_naming_the_argument(lib, tmp_path):
    def status(expected, call, message):
        assert call() == expected
        assert message in lib.cml_last_error().decode()

    out = ctypes.c_void_p(1)
    status(INVALID_ARGUMENT, lambda: lib.cml_model_load(None, ctypes.byref(out)), "path is NULL")
    assert out.value is None  # *out is cleared on failure
    status(INVALID_ARGUMENT, lambda: lib.cml_model_load(b"m.cml", None), "out is NULL")
    status(IO_ERROR, lambda: lib.cml_model_load(str(tmp_path / "missing.cml").encode(), ctypes.byref(out)), "missing")
    status(BAD_FILE, lambda: lib.cml_model_load(str(tmp_path).encode(), ctypes.byref(out)), "is a directory")
    raw = cm.io.dumps(KINDS["float-adam"]())
    for cut in (0, 5, 100, len(raw) - 1):
        status(BAD_FILE, lambda c=cut: lib.cml_model_load_from_memory(raw[:c], c, ctypes.byref(out)), "<memory>: ")
    status(INVALID_ARGUMENT, lambda: lib.cml_model_load_from_memory(None, 8, ctypes.byref(out)), "data is NULL")
    handle = _load(lib, raw)
    x = np.ones((2, 12), np.float32)
    y = np.zeros((2, 3), np.float32)
    xp, yp = x.ctypes.data_as(F32P), y.ctypes.data_as(F32P)
    status(INVALID_ARGUMENT, lambda: lib.cml_predict(None, xp, 2, 12, yp, 6), "model is NULL")
    status(INVALID_ARGUMENT, lambda: lib.cml_predict(handle, None, 2, 12, yp, 6), "x is NULL")
    status(INVALID_ARGUMENT, lambda: lib.cml_predict(handle, xp, 2, 12, None, 6), "y is NULL")
    status(INVALID_ARGUMENT, lambda: lib.cml_predict(handle, xp, -1, 12, yp, 6), "rows must be >= 0")
    status(INVALID_ARGUMENT, lambda: lib.cml_predict(handle, xp, 2, 11, yp, 6), "cols is 11")
    status(INVALID_ARGUMENT, lambda: lib.cml_predict(handle, xp, 2, 12, yp, 5), "y_len is 5")
    status(INVALID_ARGUMENT, lambda: lib.cml_predict(handle, xp, 2**62, 12, yp, 6), "rows")
    status(INVALID_ARGUMENT, lambda: lib.cml_set_num_threads(0), "num_threads must be in [1, 1024]")
    assert lib.cml_predict(handle, xp, 0, 12, yp, 0) == OK  # no rows: nothing to write
    lib.cml_model_free(handle)
    lib.cml_model_free(None)
    assert (lib.cml_model_input_dim(None), lib.cml_model_output_dim(None)) == (-1, -1)
    regression = cm.Sequential([cm.layers.Dense(2)], input_dim=12)
    regression.compile("sgd", "mse")
    handle = _load(lib, cm.io.dumps(regression))
    status(INVALID_ARGUMENT, lambda: lib.cml_predict_proba(handle, xp, 1, 12, yp, 6), "classification loss")
    lib.cml_model_free(handle)


@pytest.mark.parametrize(
    "old, new, message",
    [
        (b'"activation":"relu"', b'"activation":"swish"', "invalid model configuration: layer 0: unknown activation"),
        (b'"rate":0.2', b'"rate":1.5', "invalid model configuration: layer 1: Dropout rate"),
    ],
)
def test_configurations_python_refuses_are_refused(lib, old, new, message):
    raw = cm.io.dumps(KINDS["float-uncompiled"]())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header["__metadata__"]
    meta["architecture"] = meta["architecture"].replace(old.decode(), new.decode())
    meta["checksum"] = _model_file._checksum(meta, [raw[8 + n :]])
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    edited = len(text).to_bytes(8, "little") + text + raw[8 + n :]
    out = ctypes.c_void_p()
    assert lib.cml_model_load_from_memory(edited, len(edited), ctypes.byref(out)) == BAD_FILE
    assert message in lib.cml_last_error().decode()
    with pytest.raises(ValueError):
        cm.io.loads(edited)


C_API = {
    "cml_version",
    "cml_last_error",
    "cml_model_load",
    "cml_model_load_from_memory",
    "cml_model_free",
    "cml_model_input_dim",
    "cml_model_output_dim",
    "cml_predict",
    "cml_predict_proba",
    "cml_set_num_threads",
}
# The private C++ surface _core links (cpp/private_api.h; docs/decisions.md, "The C runtime",
# says why each group): classes exported whole (their out-of-line members, and the type
# information of those _core catches by type), and functions by name.
PRIVATE_CLASSES = {
    "Network",
    "Array",
    "Tensor",
    "Device",
    "ops::PackedS8",
    "TypeError",
    "ModelFileError",
    "ModelFileIoError",
}
PRIVATE_FUNCTIONS = {
    # the model file reader behind customml.io
    "read_model_file",
    "parse_model_file",
    "sha256_hex",
    "ModelFile::f32",
    # names and parsers of the enums the bindings convert
    "dtype_name",
    "dtype_size",
    "parse_loss",
    "loss_name",
    "parse_sparse_format",
    "sparse_format_name",
    "Trainer::step",
    "Trainer::loss_scale",
    "Trainer::loss_scale_good_steps",
    # customml.distributed's roc_auc over the rows gathered on rank 0
    "roc_auc",
    # devices, DLPack
    "backend_for",
    "cuda_compiled",
    "cuda_available",
    "cuda_unavailable_reason",
    "simt_emulation_compiled",
    "emulated_cuda_allocations",
    "emulated_cuda_host_waits",
    "emulated_cuda_bytes_to_device",
    "emulated_cuda_graph_replays",
    "emulated_cuda_set_sm90",
    "dlpack_device",
    "dtype_from_dlpack",
    "dlpack_owner",
    # customml.ops: the Tensor-level ops
    *(
        "ops::" + op
        for op in (
            "dense_forward dense_backward dense_forward_bf16 softmax_cross_entropy softmax_cross_entropy_soft "
            "distillation_loss binary_cross_entropy_with_logits mse count_correct confusion_matrix_update "
            "regression_stats_update dropout sgd_update adam_update clip_by_global_norm l1_l2_penalty quantize "
            "dequantize quantize_rows_dynamic symmetric_scales observe_range gemm_s8_pack gemm_s8 apply_mask "
            "sparse_dense_forward sparse_pack nm_dense_forward softmax sigmoid feature_affine"
        ).split()
    ),
    # the CPU: ISA levels, kernel variants (build_info), threads, test hooks
    *(
        "cpu::" + f
        for f in (
            "isa_name parse_isa detected_isa cpu_features active_isa set_isa_ceiling amx_emulation "
            "set_amx_emulation elementwise elementwise_for first_nonfinite gemm_f32_variant gemm_bf16_variant "
            "gemm_s8_variant quantize_variant sparse_kernels ThreadPool::instance ThreadPool::set_num_threads"
        ).split()
    ),
    # the SIMT emulator's test hooks
    "simt::set_thread_order",
    "simt::parse_thread_order",
    "simt::launches",
    "simt::recordings",
    "simt::wgmma_issued",
    "simt::run_selftest",
}


def _exported_names(path: str) -> set:
    """The library's defined dynamic symbols, demangled, without parameter lists."""
    nm = shutil.which("nm")
    assert nm, "nm (binutils) is needed"
    out = subprocess.run([nm, "-DC", "--defined-only", path], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        name = line.split(" ", 2)[2].split("@")[0].replace("[abi:cxx11]", "")
        depth = 0
        for i, c in enumerate(name):
            depth += {"<": 1, ">": -1}.get(c, 0)
            if c == "(" and depth == 0:
                name = name[:i]
                break
        names.add(name)
    return names - {"CUSTOMML_0", "CUSTOMML_PRIVATE"}  # the symbol map's version nodes


def test_only_the_c_api_and_the_private_cxx_surface_are_exported():
    names = _exported_names(LIBRARY)
    leaked = sorted(n for n in names if "std::" in n or "nlohmann" in n or "__gnu_cxx" in n)
    assert not leaked, leaked
    functions = {"customml::" + f for f in PRIVATE_FUNCTIONS}
    if not cm.build_info()["simt_emulation"]:
        functions = {f for f in functions if "::simt::" not in f}
    classes = tuple("customml::" + c for c in PRIVATE_CLASSES)

    def of_a_private_class(name: str) -> bool:
        for prefix in ("typeinfo name for ", "typeinfo for ", "vtable for "):
            if name.startswith(prefix):
                return name[len(prefix) :] in classes
        return name.startswith(tuple(c + "::" for c in classes))

    unlisted = sorted(n for n in names - C_API - functions if not of_a_private_class(n))
    assert not unlisted, unlisted
    assert C_API | functions <= names, sorted(C_API | functions - names)
    assert {"customml::Network::predict", "typeinfo for customml::TypeError"} <= names
    soname = subprocess.run(["readelf", "-d", LIBRARY], capture_output=True, text=True, check=True).stdout
    assert "Library soname: [libcustomml.so.0]" in soname


def test_the_python_module_runs_on_the_library(lib):
    """_core links libcustomml.so.0 instead of a copy of the core: one library file in the
    process, and its state (here the kernels' thread count) is Python's."""
    core = cm._core.__file__
    dynamic = subprocess.run(["readelf", "-d", core], capture_output=True, text=True, check=True).stdout
    assert "Shared library: [libcustomml.so.0]" in dynamic
    assert "customml::ops::dense_forward" not in _exported_names(core)
    with open("/proc/self/maps") as f:
        maps = f.read()
    assert {line.split()[-1] for line in maps.splitlines() if "libcustomml.so" in line} == {os.path.realpath(LIBRARY)}
    before = cm.get_num_threads()
    try:
        assert lib.cml_set_num_threads(3) == OK
        assert cm.get_num_threads() == 3
    finally:
        cm.set_num_threads(before)


def test_version(lib):
    assert lib.cml_version().decode() == cm.__version__
    assert lib.cml_last_error() is not None


def _build(example: str, tmp_path) -> str:
    build = tmp_path / example
    cmake = ["cmake", "-S", os.path.join(os.path.dirname(__file__), "..", "examples", example), "-B", str(build)]
    subprocess.run(
        cmake + [f"-Dcustomml_DIR={cm.get_cmake_dir()}", "-DCMAKE_BUILD_TYPE=Release"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return str(build)


@pytest.mark.parametrize("kind", ["int8-static-per-channel", "preprocessed", "pruned-nm"])
def test_the_examples_build_with_find_package_and_match_python(kind, tmp_path):
    model = KINDS[kind]()
    path = tmp_path / "m.cml"
    model.save(path)
    x = data(n=33, seed=6)[0]
    np.save(tmp_path / "x.npy", x)
    x.tofile(tmp_path / "x.f32")
    c_dir, cpp_dir = _build("c", tmp_path), _build("cpp", tmp_path)
    run = lambda *args: subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True)  # noqa: E731
    run(os.path.join(c_dir, "customml_predict"), path, tmp_path / "x.npy", tmp_path / "y_npy.f32")
    run(os.path.join(c_dir, "customml_predict"), path, tmp_path / "x.f32", tmp_path / "y_raw.f32")
    want = model.predict(x).tobytes()
    assert (tmp_path / "y_npy.f32").read_bytes() == want
    assert (tmp_path / "y_raw.f32").read_bytes() == want
    run(os.path.join(cpp_dir, "customml_service"), path, tmp_path / "x.f32", tmp_path / "y_service.f32", 3)
    rows = b"".join(model.predict(x[i : i + 1]).tobytes() for i in range(len(x)))  # batch 1, as the service
    assert (tmp_path / "y_service.f32").read_bytes() == rows
    failed = subprocess.run(
        [os.path.join(c_dir, "customml_predict"), str(tmp_path / "x.f32"), str(tmp_path / "x.f32"), "out"],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1 and "not a safetensors file" in failed.stderr


@pytest.mark.parametrize("kind", ["float-adam", "int8-dynamic-per-tensor", "pruned-csr", "preprocessed"])
@pytest.mark.parametrize("rows, threads", [(1, 1), (64, 2)])
def test_predict_allocates_nothing_in_steady_state(kind, rows, threads, tmp_path):
    exe = tmp_path / "count_allocations"
    subprocess.run(
        [
            "cc",
            "-O1",
            "-std=c11",
            os.path.join(os.path.dirname(__file__), "c", "count_allocations.c"),
            "-I",
            cm.get_include(),
            LIBRARY,
            f"-Wl,-rpath,{cm.get_library_dir()}",
            "-o",
            str(exe),
        ],
        check=True,
    )
    path = tmp_path / "m.cml"
    KINDS[kind]().save(path)
    done = subprocess.run([str(exe), str(path), str(rows), str(threads)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0"]
