"""Model files: ``save``, ``load`` and ``load_weights`` (DESIGN decision 11, "Files are safe").

A model file is a standard safetensors file, readable by any safetensors reader and
meant to be read from C++ without Python:

- 8 bytes: the header length n, unsigned little-endian;
- n bytes: a JSON object (UTF-8, padded with spaces to a multiple of 8 so the data
  section is aligned): ``"__metadata__"`` (string values only, per the format) and one
  entry ``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` per tensor;
- the data section: the tensors' little-endian bytes (float32 unless said otherwise
  below), back to back in the canonical order below, with no gaps.

Tensors, in this order: ``layers.{i}.kernel`` (in, out) and ``layers.{i}.bias`` (out,) for
each Dense layer i (i indexes ``model.layers``, dropout layers included); then, only with
``include_optimizer=True``, ``optimizer.{slot}.layers.{i}.kernel`` / ``.bias`` for each
optimizer state slot (Adam: m, v and, with amsgrad, vmax; SGD with momentum: velocity).

An int8 Dense layer (its architecture entry has ``"quantization": {"per_channel": bool,
"input": "static" | "dynamic"}``, format version 3) stores no float kernel, which equals
scale * codes: in its place come ``layers.{i}.kernel_scale`` F32 (out,) per channel or (1,)
per tensor and, for static inputs, ``layers.{i}.input_scale`` F32 (1,) and
``layers.{i}.input_zero`` I32 (1,) (uint8 codes stand for input_scale * (q - input_zero));
its codes ``layers.{i}.kernel_q`` I8 (in, out), in [-127, 127], come after every 4-byte
tensor (optimizer state included), so that those stay 4-byte aligned.

A bf16 Dense layer (``customml.quantize.bf16``; its architecture entry has
``"kernel_dtype": "bf16"``, format version 4) stores its kernel ``layers.{i}.kernel`` as BF16
(in, out) (the upper halves of the float32 values, which are bf16 values), after every
other tensor but the int8 codes (the CSR index tensors included), so that those stay
aligned; its bias stays F32 in its place. bf16 layers are never stored compressed.

A pruned (masked) Dense layer's kernel is stored compressed, as CSR of its transpose (per
output unit, the inputs its mask keeps, ascending; the sparse kernels' own layout):
``layers.{i}.kernel.values`` (nnz,) F32 and ``layers.{i}.kernel.offsets`` (out + 1,) I32
(I64 from 2**31 kept weights) in place of ``layers.{i}.kernel``, and
``layers.{i}.kernel.index`` (nnz,) I16 (I32 for more than 32,768 inputs) after every other
tensor, so that the 4-byte tensors stay 4-byte aligned. The stored positions are the mask:
a kept weight that happens to be zero is stored, a pruned one is not. Optimizer state
stays dense.

Metadata (every value a string; the structured ones hold JSON): ``format`` = "customml",
``format_version`` = "1" (or "2" when a layer has a kernel_regularizer, the learning
rate is a schedule or the precision is not fp32; "3" when a layer is frozen, the model has
a preprocessing layer, a metric other than accuracy, callback states, an int8 layer or
a pruned layer; "4" when a layer is bf16),
``customml_version``, ``architecture``, ``preprocessing``,
``training`` (the compile configuration, "null" when uncompiled), ``optimizer_state`` (only
with include_optimizer: the step count, the epochs trained and the slot names),
``callbacks_state`` (only with include_optimizer, when the last fit's callbacks have
resumable state: ``{state_key: state}``, e.g. EarlyStopping's best and wait) and
``pruning`` (only for a pruned model: per Dense layer index with a mask or a sparse
inference format, ``{"masked": bool, "format": "dense"|"csr"|"nm", "min_batch": int,
"max_batch": int}`` (the batch sizes the sparse format runs) and,
for layers pruned N:M, ``"n_m": [n, m]``; the format choice ``customml.prune`` measured, so
loading reproduces it without measuring again) and
``checksum``: "sha256:" + the hex SHA-256 of every other metadata entry (sorted by key,
each as key NUL value NUL in UTF-8) followed by the data section.

Loading parses the header itself, in C++ (``cpp/model_file.h``, the reader the C runtime
uses too; nothing is executed, no pickle): every length, offset, name, shape and dtype is
checked against the architecture, the checksum is verified, and any problem is a
ValueError that names it. An architecture of more than 2**28 parameters is refused before
anything is allocated (the environment variable ``CUSTOMML_MAX_PARAMS`` sets another
ceiling). Writes go to a temporary file in the same
directory, are fsynced and then renamed over the target, so a failed save leaves any
existing file as it was.
"""

from __future__ import annotations

import os

from . import _core, _model_file
from ._model_description import ModelDescription, describe

# FORMAT and MAX_HEADER_BYTES are public too (the format's name, the largest header a
# reader accepts), as they were before the format moved to modules of its own.
from ._model_file import FORMAT, FORMAT_VERSION  # noqa: F401
from ._safetensors import MAX_HEADER_BYTES, atomic_write  # noqa: F401
from .models import Sequential

__all__ = ["save", "load", "load_weights", "dumps", "loads", "FORMAT_VERSION"]


def save(model, path, include_optimizer: bool = False) -> None:
    """Saves the model to ``path`` (a safetensors file): weights, architecture, training
    configuration and, with ``include_optimizer=True``, the optimizer state, the step
    count and the epochs trained, so that fit resumes exactly where it stopped. The
    write is atomic: on any failure an existing file at ``path`` is left as it was."""
    atomic_write(path, _model_file.encode(describe(model, include_optimizer)))


def dumps(model, include_optimizer: bool = False) -> bytes:
    """The bytes ``save`` would write, in memory (for pickling and sending models
    between processes); ``loads`` reads them back with every check ``load`` makes."""
    with model._lock:  # one whole weight set, as save
        return b"".join(_model_file.encode(describe(model, include_optimizer)))


def load(path, device: str = "cpu"):
    """Loads a model saved by ``Sequential.save`` onto ``device``: the architecture, the
    weights (bit for bit), the compile configuration when it was compiled and, when saved
    with ``include_optimizer=True``, the optimizer state, step count and epochs trained.
    Any malformed, truncated, oversized or modified file raises ValueError naming the problem."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', got {type(device).__name__}")
    _core.check_device(device)
    return _build(_model_file.read(path), device, os.fspath(path))


def loads(data, device: str = "cpu"):
    """A model from the bytes ``dumps`` returned (or a model file's contents), with the
    same checks as ``load``; messages name the data "<bytes>"."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"[loads] data must be bytes, got {type(data).__name__}")
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', got {type(device).__name__}")
    _core.check_device(device)
    return _build(_model_file.read("<bytes>", bytes(data)), device, "<bytes>")


def load_weights(model, path) -> None:
    """Loads the weights of the model file at ``path`` into ``model``, which must have the
    same layers (kinds, units and input size; an unbuilt model is built for the file's
    input size). Optimizer state in the file is ignored; the model's is kept. The file's
    int8 layers become int8 in the model (and its float layers float)."""
    Sequential.load_weights(model, path)


def _build(desc: ModelDescription, device: str, where: str) -> Sequential:
    return Sequential._from_description(desc, device, where)
