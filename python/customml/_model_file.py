"""The customml model file: a ``ModelDescription`` to the bytes of a safetensors file
(``encode``) and back (``read``, through the C++ reader ``_core.read_model_file``, which
checks every metadata entry, name, shape, dtype and offset against the architecture).
The layout is documented in ``customml.io``; the container writer is ``_safetensors``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Optional, Sequence, Tuple, cast

import numpy as np

from . import _core
from ._model_description import (
    DenseWeights,
    Int8,
    ModelDescription,
    OptimizerState,
    param_table,
)
from ._safetensors import Tensor, dumps_json
from ._safetensors import encode as encode_container

FORMAT = "customml"
# Version 1 is this layout. A later version that changes the layout or adds information
# a reader must not ignore bumps it; readers accept every version up to their own.
# Version 2 adds a Dense layer's optional "kernel_regularizer" and learning-rate
# schedules as an optimizer's learning_rate. A file is written as version 1 unless it
# uses one of them, so version-1 readers keep reading every file they can understand and
# tell their users to upgrade for the others.
# Version 3 adds, each written only when a model uses it: a Dense layer's optional
# "trainable": false (a frozen layer), int8 Dense layers (a layer's "quantization" and its
# I8 / I32 tensors), pruning (compressed kernels: CSR tensors of other dtypes, and the
# "pruning" metadata), the preprocessing layers "normalization" (mean and variance as JSON
# number lists, or null before adapt) and "rescaling" (scale, offset), metric names other
# than accuracy and the callbacks' state; a version-2 reader would refuse them anyway, and
# with the version it says why.
# Version 4 adds bf16 Dense layers (customml.quantize.bf16): a layer's "kernel_dtype": "bf16"
# and its kernel as a BF16 tensor after the 2- and 4-byte index tensors, written only when a
# model has one (a version-3 reader would read the BF16 kernel as a wrong dtype).
# The C++ reader (cpp/model_file.h) knows this version and every earlier one.
FORMAT_VERSION = _core.MODEL_FILE_FORMAT_VERSION


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _format_version(arch: dict, training: Optional[dict]) -> int:
    """The oldest format version that holds everything the file must say."""
    if any("trainable" in spec or spec["kind"] in ("normalization", "rescaling") for spec in arch["layers"]):
        return 3
    # Version-2 readers know the metric "accuracy" only; any other name would fail there as
    # an invalid configuration rather than as a file to upgrade for.
    if training is not None and any(m != "accuracy" for m in training["metrics"]):
        return 3
    regularized = any("kernel_regularizer" in spec for spec in arch["layers"])
    scheduled = training is not None and isinstance(training["optimizer"]["config"]["learning_rate"], dict)
    reduced_precision = training is not None and training.get("precision", "fp32") != "fp32"
    return 2 if regularized or scheduled or reduced_precision else 1


_TensorRow = Tuple[str, int, Tuple[int, ...], str]


def _weight_tables(arch: dict) -> Tuple[List[_TensorRow], List[_TensorRow]]:
    """(name, layer index, shape, dtype) of the weight tensors a file holds: those of 4
    bytes an element, which lead the file, and the int8 codes, which end it."""
    wide: List[_TensorRow]
    codes: List[_TensorRow]
    wide, codes, width = [], [], arch["input_dim"]
    for i, spec in enumerate(arch["layers"]):
        if spec["kind"] != "dense":
            continue
        units, q = spec["units"], spec.get("quantization")
        if spec.get("kernel_dtype") == "bf16":
            wide.append((f"layers.{i}.bias", i, (units,), "F32"))
        elif q is None:
            wide.append((f"layers.{i}.kernel", i, (width, units), "F32"))
            wide.append((f"layers.{i}.bias", i, (units,), "F32"))
        else:
            wide.append((f"layers.{i}.kernel_scale", i, (units if q["per_channel"] else 1,), "F32"))
            wide.append((f"layers.{i}.bias", i, (units,), "F32"))
            if q["input"] == "static":
                wide.append((f"layers.{i}.input_scale", i, (1,), "F32"))
                wide.append((f"layers.{i}.input_zero", i, (1,), "I32"))
            codes.append((f"layers.{i}.kernel_q", i, (width, units), "I8"))
        width = units
    return wide, codes


def _bf16_kernels(arch: dict) -> List[_TensorRow]:
    """(name, layer index, shape, "BF16") of the bf16 layers' kernels, which follow the
    index tensors (2-byte aligned after them) and precede the int8 codes."""
    rows: List[_TensorRow] = []
    width = arch["input_dim"]
    for i, spec in enumerate(arch["layers"]):
        if spec["kind"] != "dense":
            continue
        if spec.get("kernel_dtype") == "bf16":
            rows.append((f"layers.{i}.kernel", i, (width, spec["units"]), "BF16"))
        width = spec["units"]
    return rows


def _checksum(metadata: Dict[str, str], data: Sequence) -> str:
    h = hashlib.sha256()
    for key in sorted(metadata):
        if key != "checksum":
            h.update(key.encode("utf-8") + b"\0" + metadata[key].encode("utf-8") + b"\0")
    for chunk in data:
        h.update(chunk)
    return "sha256:" + h.hexdigest()


def _le_bytes(values: np.ndarray, dtype: str = "<f4") -> bytes:
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def _csr(kernel: np.ndarray, keep: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, offsets, index) of the kept positions of kernel (in, out), as CSR of its
    transpose: row j lists the kept inputs of output unit j, ascending."""
    keep_t = keep.T
    counts = keep_t.sum(axis=1, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    index = np.nonzero(keep_t)[1]  # row-major, the order of kernel.T[keep.T] below
    values = kernel.T[keep_t]
    return values, offsets, index


def _pruning(desc: ModelDescription) -> Optional[dict]:
    """The "pruning" metadata: the float Dense layers with a mask or a sparse inference
    format (an int8 layer has neither: see ``describe``)."""
    layers = {}
    for i, w in desc.weights.items():
        if w.int8 is None and (w.keep is not None or w.format != "dense"):
            spec = {
                "masked": w.keep is not None,
                "format": w.format,
                "min_batch": w.min_batch,
                "max_batch": w.max_batch,
            }
            if w.n_m is not None:
                spec["n_m"] = list(w.n_m)
            layers[str(i)] = spec
    return {"layers": layers} if layers else None


def encode(desc: ModelDescription) -> List[bytes]:
    """The model file's bytes, in chunks (with the optimizer and callback state when the
    description holds them)."""
    arch, training, state = desc.architecture, desc.training, desc.optimizer
    version = _format_version(arch, training)
    pruning = _pruning(desc)
    if pruning or any("quantization" in spec for spec in arch["layers"]):
        version = 3
    callbacks = desc.callbacks if state is not None else {}
    if callbacks:
        version = max(version, 3)
    if _bf16_kernels(arch):
        version = 4
    metadata = {
        "format": FORMAT,
        "format_version": str(version),
        "customml_version": _core.build_info()["version"],
        "architecture": dumps_json(arch),
        "preprocessing": dumps_json([]),
        "training": dumps_json(training),
    }
    if pruning:
        metadata["pruning"] = dumps_json(pruning)
    wide, codes = _weight_tables(arch)
    # 4-byte tensors first, then the CSR index tensors, then the int8 codes (see the
    # layout in customml.io), so that each stays aligned.
    tensors: List[Tensor] = []
    last: List[Tensor] = []
    for name, layer_index, shape, _ in wide:
        w = desc.weights[layer_index]
        part = name.rsplit(".", 1)[1]
        if part == "kernel" and w.keep is not None:
            assert w.kernel is not None  # a float layer
            values, csr_offsets, index = _csr(w.kernel.reshape(shape), w.keep)
            long = values.size >= 2**31
            tensors.append((f"{name}.values", "F32", values.shape, _le_bytes(values)))
            tensors.append(
                (
                    f"{name}.offsets",
                    "I64" if long else "I32",
                    csr_offsets.shape,
                    _le_bytes(csr_offsets, "<i8" if long else "<i4"),
                )
            )
            narrow = shape[0] <= 2**15
            last.append(
                (f"{name}.index", "I16" if narrow else "I32", index.shape, _le_bytes(index, "<i2" if narrow else "<i4"))
            )
        elif part in ("kernel", "bias"):
            tensors.append((name, "F32", shape, _le_bytes(cast(np.ndarray, w.kernel) if part == "kernel" else w.bias)))
        else:
            q = w.int8
            assert q is not None  # only an int8 layer has these parts
            value = {
                "kernel_scale": q.w_scale,
                "input_scale": np.float32([q.in_scale]),
                "input_zero": np.int32([q.in_zero]),
            }[part]
            tensors.append(
                (
                    name,
                    "I32" if part == "input_zero" else "F32",
                    shape,
                    np.ascontiguousarray(value, dtype="<i4" if part == "input_zero" else "<f4").tobytes(),
                )
            )
    if state is not None:
        for slot, arrays in state.slots.items():
            tensors += [
                (f"optimizer.{slot}.{name}", "F32", shape, _le_bytes(arrays[(i, name.rsplit(".", 1)[1])]))
                for name, i, shape in param_table(arch)
            ]
        saved = {"step": state.step, "epochs_trained": state.epochs_trained, "slots": list(state.slots)}
        if state.loss_scale is not None:  # fp16: the dynamic loss scale resumes too
            saved["loss_scale"], saved["loss_scale_good_steps"] = state.loss_scale
        metadata["optimizer_state"] = dumps_json(saved)
        if callbacks:
            metadata["callbacks_state"] = dumps_json(callbacks)
    tensors += last
    tensors += [
        (
            name,
            "BF16",
            shape,
            _core.to_bf16(np.ascontiguousarray(desc.weights[i].kernel, np.float32)).astype("<u2").tobytes(),
        )
        for name, i, shape, _ in _bf16_kernels(arch)
    ]
    tensors += [
        (name, "I8", shape, cast(Int8, desc.weights[layer_index].int8).w_q.astype(np.int8).tobytes())
        for name, layer_index, shape, _ in codes
    ]
    metadata["checksum"] = _checksum(metadata, [t[3] for t in tensors])
    return encode_container(metadata, tensors)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def read(path, raw: Optional[bytes] = None) -> ModelDescription:
    """The description in the model file at ``path`` (or in ``raw``, its bytes, which
    ``path`` then only names in messages). The file is read and checked by the C++ reader
    (``cpp/model_file.h``, the one the C runtime uses too): any malformed, truncated,
    oversized or modified file raises ValueError naming the problem."""
    f = _core.read_model_file(os.fsdecode(path), raw)
    weights = {}
    for i, layer in f["layers"].items():
        int8 = None
        if "w_q" in layer:
            int8 = Int8(layer["w_q"], layer["w_scale"], layer["in_scale"], layer["in_zero"])
        weights[i] = DenseWeights(
            layer["bias"],
            kernel=layer.get("kernel"),
            keep=layer.get("keep"),
            int8=int8,
            format=layer["format"],
            min_batch=layer["min_batch"],
            max_batch=layer["max_batch"],
            n_m=layer.get("n_m"),
            bf16=layer["bf16"],
        )
    state = None
    saved = f["optimizer_state"]
    if saved is not None:
        loss_scale = (saved["loss_scale"], saved["loss_scale_good_steps"]) if "loss_scale" in saved else None
        state = OptimizerState(saved["step"], saved["epochs_trained"], f["slots"], loss_scale)
    return ModelDescription(f["architecture"], f["training"], weights, state, f["callbacks_state"] or {})
