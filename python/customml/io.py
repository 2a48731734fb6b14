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
a pruned layer),
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

Loading parses the header itself (nothing is executed, no pickle): every length, offset,
name, shape and dtype is checked against the architecture, the checksum is verified, and
any problem is a ValueError that names it. Writes go to a temporary file in the same
directory, are fsynced and then renamed over the target, so a failed save leaves any
existing file as it was.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import stat
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from . import losses as losses_mod
from . import optimizers as optimizers_mod
from . import regularizers as regularizers_mod
from . import schedules as schedules_mod
from .layers import Dense, Dropout, Normalization, Rescaling

__all__ = ["save", "load", "load_weights", "dumps", "loads", "FORMAT_VERSION"]

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
FORMAT_VERSION = 3
# As the safetensors reference implementation: a header larger than this is refused
# before it is read. A customml header is about 200 bytes per layer.
MAX_HEADER_BYTES = 100_000_000

# safetensors dtype names and their sizes in bytes (the format's full list, so a foreign
# file's tensors are described correctly before it is refused).
_DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
# The dtypes a customml file uses, as NumPy reads them.
_NUMPY_DTYPES = {"F32": "<f4", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8"}
_REQUIRED_KEYS = ("format", "format_version", "customml_version", "architecture", "preprocessing", "training",
                  "checksum")
_OPTIONAL_KEYS = ("optimizer_state", "callbacks_state", "pruning")
_FORMATS = ("dense", "csr", "nm")
# The deepest int8 layer gemm_s8 takes (kGemmS8MaxK in cpp/backend.h: 255 * 127 * k < 2^31).
_GEMM_S8_MAX_K = 66000
# The largest max_batch a file may hold (the executor's is an int64).
_MAX_BATCH_LIMIT = 2**62
_SLOTS = {"adam": ("m", "v"), "adam_amsgrad": ("m", "v", "vmax"), "sgd_momentum": ("velocity",), "sgd": ()}
_OPTIMIZERS = {"SGD": optimizers_mod.SGD, "Adam": optimizers_mod.Adam, "AdamW": optimizers_mod.AdamW}
_LOSSES = {"SoftmaxCrossEntropy": losses_mod.SoftmaxCrossEntropy,
           "BinaryCrossEntropy": losses_mod.BinaryCrossEntropy,
           "MeanSquaredError": losses_mod.MeanSquaredError}
# The JSON type of each constructor argument a training configuration holds; the
# constructors then check the values. "number?" may be null; "numbers?" is a list or null;
# "rate" is a number or a schedule {"class": "CosineDecay", "config": {...}} (files
# written before schedules existed hold numbers, which still load).
_ADAM_CONFIG = {"learning_rate": "rate", "beta_1": "number", "beta_2": "number", "epsilon": "number",
                "weight_decay": "number", "amsgrad": "bool", "clipnorm": "number?"}
_CONFIG_TYPES = {"SGD": {"learning_rate": "rate", "momentum": "number", "nesterov": "bool",
                         "weight_decay": "number", "clipnorm": "number?"},
                 "Adam": _ADAM_CONFIG, "AdamW": _ADAM_CONFIG,
                 "SoftmaxCrossEntropy": {"label_smoothing": "number", "class_weights": "numbers?"},
                 "BinaryCrossEntropy": {}, "MeanSquaredError": {}}


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _atomic_write(path: str, chunks: Sequence[bytes]) -> None:
    """Writes chunks to path through a temporary file in the same directory (fsynced,
    then renamed over path): readers see the old file or the new one, never a mix, and
    a failure at any point leaves an existing file untouched and no temporary behind."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    # Not tempfile.mkstemp: its files are 0600, while a saved model should get the
    # permissions any new file gets (0666 less the umask), e.g. readable by a service.
    while True:
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself reaches the disk with the directory's entry (POSIX); best effort
    # where directories cannot be opened.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _dumps(value) -> str:
    # allow_nan=False: NaN is not JSON, and a reader in another language would refuse it.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _architecture(model) -> dict:
    layers = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            spec = {"kind": "dense", "name": layer.name, "units": layer.units, "activation": layer.activation,
                    "kernel_initializer": layer.kernel_initializer}
            # Written only when set, so a model without one writes what version 1 wrote.
            if layer.kernel_regularizer is not None:
                spec["kernel_regularizer"] = layer.kernel_regularizer.get_config()
            if not layer.trainable:
                spec["trainable"] = False
            q = model._net.quantization(layer._index) if model._net is not None else None
            if q is not None:
                spec["quantization"] = {"per_channel": bool(q["w_scale"].shape[0] == layer.units and layer.units > 1),
                                        "input": "static" if q["in_scale"] > 0 else "dynamic"}
            layers.append(spec)
        elif isinstance(layer, Dropout):
            layers.append({"kind": "dropout", "name": layer.name, "rate": layer.rate})
        elif isinstance(layer, Normalization):
            # float64 statistics as JSON numbers: repr round-trips them exactly.
            layers.append({"kind": "normalization", "name": layer.name,
                           "mean": None if layer.mean is None else layer.mean.tolist(),
                           "variance": None if layer.variance is None else layer.variance.tolist()})
        elif isinstance(layer, Rescaling):
            layers.append({"kind": "rescaling", "name": layer.name, "scale": layer.scale, "offset": layer.offset})
        else:
            raise ValueError(f"[save] cannot save layer {layer.name!r} of type {type(layer).__name__}")
    return {"name": model.name, "input_dim": model.input_dim, "seed": model.seed, "layers": layers}


def _training(model) -> Optional[dict]:
    opt, loss = model._optimizer, model._loss
    if opt is None or loss is None:
        return None
    name = type(opt).__name__
    if _OPTIMIZERS.get(name) is not type(opt):
        raise ValueError(f"[save] cannot save optimizer of type {name}; expected one of {', '.join(_OPTIMIZERS)}")
    if isinstance(opt, optimizers_mod.SGD):
        config = {"learning_rate": opt.learning_rate, "momentum": opt.momentum, "nesterov": opt.nesterov,
                  "weight_decay": opt.weight_decay}
    else:
        config = {"learning_rate": opt.learning_rate, "beta_1": opt.beta_1, "beta_2": opt.beta_2,
                  "epsilon": opt.epsilon, "weight_decay": opt.weight_decay, "amsgrad": opt.amsgrad}
    if isinstance(opt.learning_rate, schedules_mod.LearningRateSchedule):
        schedule = opt.learning_rate
        if schedules_mod._CLASSES.get(type(schedule).__name__) is not type(schedule):
            raise ValueError(f"[save] cannot save learning-rate schedule of type {type(schedule).__name__}; "
                             f"expected one of {', '.join(schedules_mod._CLASSES)}")
        config["learning_rate"] = {"class": type(schedule).__name__, "config": schedule.get_config()}
    config["clipnorm"] = opt.clipnorm
    loss_name = type(loss).__name__
    if _LOSSES.get(loss_name) is not type(loss):
        raise ValueError(f"[save] cannot save loss of type {loss_name}; expected one of {', '.join(_LOSSES)}")
    loss_config = {}
    if isinstance(loss, losses_mod.SoftmaxCrossEntropy):
        loss_config = {"label_smoothing": loss.label_smoothing, "class_weights": loss.class_weights}
    training = {"optimizer": {"class": name, "config": config}, "loss": {"class": loss_name, "config": loss_config},
                "metrics": list(model._metrics)}
    # Written only when not the default, so fp32 models' files read as before it existed.
    if model._precision != "fp32":
        training["precision"] = model._precision
    return training


def _callbacks_state(model) -> Dict[str, dict]:
    """The resumable states of the last fit's callbacks, by state_key()."""
    states = {}
    for cb in model._callbacks:
        state = cb.get_state()
        if state is not None:
            states[cb.state_key()] = state
    return states


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


def _slot_names(training: Optional[dict]) -> Tuple[str, ...]:
    """The optimizer state slots, in the executor's order, for a training configuration."""
    if training is None:
        return ()
    opt = training["optimizer"]
    if opt["class"] == "SGD":
        return _SLOTS["sgd_momentum" if opt["config"]["momentum"] != 0.0 else "sgd"]
    return _SLOTS["adam_amsgrad" if opt["config"]["amsgrad"] else "adam"]


def _param_table(arch: dict) -> List[Tuple[str, int, Tuple[int, ...]]]:
    """(name, layer index, shape) of each float parameter of the executor, in file order
    (the optimizer state's tensors)."""
    table, width = [], arch["input_dim"]
    for i, spec in enumerate(arch["layers"]):
        if spec["kind"] == "dense":
            table.append((f"layers.{i}.kernel", i, (width, spec["units"])))
            table.append((f"layers.{i}.bias", i, (spec["units"],)))
            width = spec["units"]
    return table


_TensorRow = Tuple[str, int, Tuple[int, ...], str]


def _weight_tables(arch: dict) -> Tuple[List[_TensorRow], List[_TensorRow]]:
    """(name, layer index, shape, dtype) of the weight tensors a file holds: those of 4
    bytes an element, which lead the file, and the int8 codes, which end it."""
    wide, codes, width = [], [], arch["input_dim"]
    for i, spec in enumerate(arch["layers"]):
        if spec["kind"] != "dense":
            continue
        units, q = spec["units"], spec.get("quantization")
        if q is None:
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


def _pruning(model) -> Optional[dict]:
    """The "pruning" metadata: the Dense layers with a mask or a sparse inference format.
    An int8 layer has neither: its codes hold the pruned zeros, inference runs it in int8,
    and a quantized model does not train, so its mask would have no use."""
    layers = {}
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, Dense) or model._net.quantized(i):
            continue
        fmt, max_batch = model._net.sparse_format(i)
        if i in model._masks or fmt != "dense":
            spec = {"masked": i in model._masks, "format": fmt, "min_batch": int(model._net.sparse_min_batch(i)),
                    "max_batch": int(max_batch)}
            if i in model._nm:
                spec["n_m"] = list(model._nm[i])
            layers[str(i)] = spec
    return {"layers": layers} if layers else None


def _csr(kernel: np.ndarray, keep: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, offsets, index) of the kept positions of kernel (in, out), as CSR of its
    transpose: row j lists the kept inputs of output unit j, ascending."""
    keep_t = keep.T
    counts = keep_t.sum(axis=1, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    index = np.nonzero(keep_t)[1]  # row-major, the order of kernel.T[keep.T] below
    values = kernel.T[keep_t]
    return values, offsets, index


def save(model, path, include_optimizer: bool = False) -> None:
    """Saves the model to ``path`` (a safetensors file): weights, architecture, training
    configuration and, with ``include_optimizer=True``, the optimizer state, the step
    count and the epochs trained, so that fit resumes exactly where it stopped. The
    write is atomic: on any failure an existing file at ``path`` is left as it was."""
    _atomic_write(path, _encode(model, include_optimizer))


def dumps(model, include_optimizer: bool = False) -> bytes:
    """The bytes ``save`` would write, in memory (for pickling and sending models
    between processes); ``loads`` reads them back with every check ``load`` makes."""
    return b"".join(_encode(model, include_optimizer))


def _encode(model, include_optimizer: bool) -> List[bytes]:
    if model._net is None:
        raise ValueError("[save] the model is not built: give Sequential input_dim or call fit/predict first")
    net = model._net
    arch = _architecture(model)
    training = _training(model)
    version = _format_version(arch, training)
    pruning = _pruning(model)
    if pruning or any("quantization" in spec for spec in arch["layers"]):
        version = 3
    callbacks = _callbacks_state(model) if include_optimizer else {}
    if callbacks:
        version = max(version, 3)
    metadata = {"format": FORMAT, "format_version": str(version),
                "customml_version": _core.build_info()["version"], "architecture": _dumps(arch),
                "preprocessing": _dumps([]), "training": _dumps(training)}
    if pruning:
        metadata["pruning"] = _dumps(pruning)
    table = _param_table(arch)
    offsets = {}
    for layer_index, (w_off, b_off) in enumerate(zip(net.weight_offsets, net.bias_offsets)):
        offsets[f"layers.{layer_index}.kernel"] = w_off
        offsets[f"layers.{layer_index}.bias"] = b_off
    wide, codes = _weight_tables(arch)
    # (name, dtype, shape, bytes): 4-byte tensors first, then the CSR index tensors, then
    # the int8 codes (see the module docstring), so that each stays aligned.
    tensors, last = [], []
    for name, layer_index, shape, _ in wide:
        part = name.rsplit(".", 1)[1]
        if part == "kernel" and layer_index in model._masks:
            data = net.read_params(offsets[name], math.prod(shape))
            values, csr_offsets, index = _csr(data.reshape(shape), model._masks[layer_index])
            long = values.size >= 2**31
            tensors.append((f"{name}.values", "F32", values.shape, _le_bytes(values)))
            tensors.append((f"{name}.offsets", "I64" if long else "I32", csr_offsets.shape,
                            _le_bytes(csr_offsets, "<i8" if long else "<i4")))
            narrow = shape[0] <= 2**15
            last.append((f"{name}.index", "I16" if narrow else "I32", index.shape,
                         _le_bytes(index, "<i2" if narrow else "<i4")))
        elif part in ("kernel", "bias"):
            tensors.append((name, "F32", shape, _le_bytes(net.read_params(offsets[name], math.prod(shape)))))
        else:
            q = net.quantization(layer_index)
            value = {"kernel_scale": q["w_scale"], "input_scale": np.float32([q["in_scale"]]),
                     "input_zero": np.int32([q["in_zero"]])}[part]
            tensors.append((name, "I32" if part == "input_zero" else "F32", shape,
                            np.ascontiguousarray(value, dtype="<i4" if part == "input_zero" else "<f4").tobytes()))
    if include_optimizer:
        if training is None or not net.compiled:
            raise ValueError("[save] include_optimizer=True needs a compiled model (model.compile(...))")
        slots = _slot_names(training)
        if len(slots) != net.state_slots:  # the executor and the configuration must agree
            raise RuntimeError(f"[save] the executor has {net.state_slots} optimizer state slots, expected {len(slots)}")
        for slot_index, slot in enumerate(slots):
            tensors += [(f"optimizer.{slot}.{name}", "F32", shape,
                         _le_bytes(net.read_state(slot_index, offsets[name], math.prod(shape))))
                        for name, _, shape in table]
        state = {"step": int(net.step), "epochs_trained": int(model._epoch), "slots": list(slots)}
        if net.precision == "fp16":  # the dynamic loss scale resumes too
            state["loss_scale"] = float(net.loss_scale)
            state["loss_scale_good_steps"] = int(net.loss_scale_good_steps)
        metadata["optimizer_state"] = _dumps(state)
        if callbacks:
            metadata["callbacks_state"] = _dumps(callbacks)
    if pruning:
        metadata["pruning"] = _dumps(pruning)
    tensors += last
    tensors += [(name, "I8", shape, net.quantization(layer_index)["w_q"].astype(np.int8).tobytes())
                for name, layer_index, shape, _ in codes]
    metadata["checksum"] = _checksum(metadata, [t[3] for t in tensors])

    header: Dict[str, object] = {"__metadata__": metadata}
    begin = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, begin + len(data)]}
        begin += len(data)
    text = _dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return [len(text).to_bytes(8, "little"), text] + [t[3] for t in tensors]


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


class _File:
    """A parsed, structurally valid safetensors file: its header entries, metadata and
    data section. Raises ValueError naming the problem for anything else."""

    def __init__(self, path, raw: Optional[bytes] = None):
        # raw: the file's bytes when they are already in memory (``loads``); path then
        # only names them in messages.
        self.path = os.fspath(path)
        if raw is None:
            raw = self._read(self.path)
        if len(raw) < 8:
            self.fail(f"the file is {len(raw)} bytes long, too short for a safetensors header"
                      + (" (it is empty)" if not raw else ""))
        n = int.from_bytes(raw[:8], "little")
        if n > MAX_HEADER_BYTES:
            self.fail(f"the header length field says {n} bytes, more than the {MAX_HEADER_BYTES} allowed "
                      "(not a safetensors file, or corrupt)")
        if n > len(raw) - 8:
            self.fail(f"the header length field says {n} bytes but only {len(raw) - 8} follow it "
                      "(the file is truncated, or not a safetensors file)")
        self.data = memoryview(raw)[8 + n:]
        header = self._json(raw[8:8 + n], "the header")
        if not isinstance(header, dict):
            self.fail(f"the header is JSON but not an object (got {type(header).__name__})")
        metadata = header.pop("__metadata__", None)
        if metadata is not None and not (isinstance(metadata, dict)
                                         and all(isinstance(v, str) for v in metadata.values())):
            self.fail("__metadata__ must be an object of strings")
        for key, value in (metadata or {}).items():
            try:  # JSON can escape a lone surrogate, which no UTF-8 text holds
                key.encode("utf-8"), value.encode("utf-8")
            except UnicodeEncodeError:
                self.fail(f"__metadata__ entry {_short(key)} holds an invalid Unicode escape (a lone surrogate)")
        self.metadata: Optional[Dict[str, str]] = metadata
        self.tensors: Dict[str, Tuple[str, Tuple[int, ...], int, int]] = {}
        for name, entry in header.items():
            self.tensors[name] = self._entry(name, entry)
        self._check_layout()

    def fail(self, message: str):
        raise ValueError(f"{self.path}: {message}")

    def _read(self, path: str) -> bytes:
        if os.path.isdir(path):
            raise ValueError(f"{path}: is a directory, not a model file")
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer; fstat then
        # refuses anything but a regular file (a device would never end).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{path}: not a regular file")
            raw = f.read(st.st_size + 1)
        if len(raw) != st.st_size:
            raise ValueError(f"{path}: the file changed size while it was read")
        return raw

    def _json(self, text: bytes, what: str):
        def pairs(items):
            keys = [k for k, _ in items]
            if len(set(keys)) != len(keys):
                dup = next(k for k in keys if keys.count(k) > 1)
                self.fail(f"{what} has the key {dup!r} twice")
            return dict(items)

        def constant(name):
            self.fail(f"{what} contains {name}, which is not JSON")

        try:
            return json.loads(text.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
        except UnicodeDecodeError as exc:
            self.fail(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start}): corrupt, or not a "
                      "safetensors file")
        except json.JSONDecodeError as exc:
            self.fail(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): corrupt, "
                      "or not a safetensors file")
        except RecursionError:
            self.fail(f"{what} is nested too deeply")

    def _entry(self, name: str, entry) -> Tuple[str, Tuple[int, ...], int, int]:
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            self.fail(f"tensor {name!r}: expected an object with exactly dtype, shape and data_offsets, got "
                      f"{_short(entry)}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPE_SIZES:
            self.fail(f"tensor {name!r}: unknown dtype {_short(dtype)}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            self.fail(f"tensor {name!r}: shape must be a list of non-negative integers, got {_short(shape)}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            self.fail(f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end, got "
                      f"{_short(offsets)}")
        begin, end = offsets
        if end > len(self.data):
            self.fail(f"tensor {name!r}: data_offsets [{begin}, {end}] run past the end of the data section "
                      f"({len(self.data)} bytes): the file is truncated or the offsets are out of range")
        need = math.prod(shape) * _DTYPE_SIZES[dtype]
        if end - begin != need:
            self.fail(f"tensor {name!r}: shape {tuple(shape)} of {dtype} needs {need} bytes but data_offsets "
                      f"[{begin}, {end}] hold {end - begin}")
        return dtype, tuple(shape), begin, end

    def _check_layout(self) -> None:
        """The tensors tile the data section exactly: no overlap, no gap, nothing after."""
        position, previous = 0, None
        for name, (_, _, begin, end) in sorted(self.tensors.items(), key=lambda kv: (kv[1][2], kv[1][3])):
            if begin < position:
                self.fail(f"tensors {previous!r} and {name!r} overlap in the data section")
            if begin > position:
                self.fail(f"the data section has {begin - position} unused bytes before tensor {name!r}")
            position, previous = end, name
        if position != len(self.data):
            self.fail(f"the file has {len(self.data) - position} bytes after the last tensor's data "
                      "(extra bytes appended, or offsets that do not match)")

    def array(self, name: str) -> np.ndarray:
        dtype, shape, begin, end = self.tensors[name]
        return np.frombuffer(self.data[begin:end], dtype=_NUMPY_DTYPES[dtype]).reshape(shape)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _json_type(value, kind: str) -> bool:
    if kind.endswith("?") and value is None:
        return True
    kind = kind.rstrip("?")
    is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if kind == "number":
        return is_number(value)
    if kind == "rate":
        return is_number(value) or (isinstance(value, dict) and set(value) == {"class", "config"}
                                    and value["class"] in ("StepDecay", "ExponentialDecay", "CosineDecay")
                                    and isinstance(value["config"], dict))
    if kind == "numbers":
        return isinstance(value, list) and all(is_number(v) for v in value)
    return isinstance(value, bool)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _Model:
    """A validated customml model file: the configuration and the tensors, ready to build."""

    def __init__(self, path, raw: Optional[bytes] = None):
        f = _File(path, raw)
        self.file = f
        meta = f.metadata
        if not meta or "format" not in meta:
            f.fail("not a customml model file (a safetensors file without customml metadata)")
        if meta["format"] != FORMAT:
            f.fail(f"not a customml model file (its format is {_short(meta['format'])})")
        version = meta.get("format_version", "")
        if not (version.isascii() and version.isdigit()) or int(version) < 1:
            f.fail(f"invalid format_version {_short(version)}")
        if int(version) > FORMAT_VERSION:
            f.fail(f"the file has format version {int(version)}, written by a newer customml "
                   f"({_short(meta.get('customml_version', '?'))}); this customml "
                   f"({_core.build_info()['version']}) reads format versions up to {FORMAT_VERSION}: upgrade customml "
                   "to load it")
        for key in _REQUIRED_KEYS:
            if key not in meta:
                f.fail(f"the metadata lacks {key!r}")
        for key in meta:
            if key not in _REQUIRED_KEYS and key not in _OPTIONAL_KEYS:
                f.fail(f"unknown metadata key {_short(key)}")
        if meta["checksum"] != _checksum(meta, [f.data]):
            f.fail("checksum mismatch: the data or the metadata were modified or corrupted after saving")
        self.arch = self._architecture(f._json(meta["architecture"].encode("utf-8"), "architecture"))
        preprocessing = f._json(meta["preprocessing"].encode("utf-8"), "preprocessing")
        if preprocessing != []:
            f.fail(f"unsupported preprocessing {_short(preprocessing)} (this version has none)")
        self.training = self._training(f._json(meta["training"].encode("utf-8"), "training"))
        self.state = None
        if "optimizer_state" in meta:
            self.state = self._state(f._json(meta["optimizer_state"].encode("utf-8"), "optimizer_state"))
        self.callbacks = None
        if "callbacks_state" in meta:
            if self.state is None:
                f.fail("callbacks_state without optimizer_state")
            callbacks = f._json(meta["callbacks_state"].encode("utf-8"), "callbacks_state")
            if not (isinstance(callbacks, dict) and all(
                    isinstance(v, dict) and all(v2 is None or _json_type(v2, "number") for v2 in v.values())
                    for v in callbacks.values())):
                f.fail(f"callbacks_state must map callback keys to objects of numbers, got {_short(callbacks)}")
            self.callbacks = callbacks
        self.pruning: Dict[int, dict] = {}
        if "pruning" in meta:
            self.pruning = self._pruning(f._json(meta["pruning"].encode("utf-8"), "pruning"))
        self._check_tensors()
        self._check_csr()

    def _architecture(self, arch) -> dict:
        fail = self.file.fail
        if not isinstance(arch, dict) or set(arch) != {"name", "input_dim", "seed", "layers"}:
            fail(f"architecture must be an object with name, input_dim, seed and layers, got {_short(arch)}")
        if not isinstance(arch["name"], str):
            fail("architecture name must be a string")
        if not (_is_int(arch["input_dim"]) and arch["input_dim"] >= 1):
            fail(f"architecture input_dim must be an integer >= 1, got {_short(arch['input_dim'])}")
        if not (_is_int(arch["seed"]) and 0 <= arch["seed"] < 2**64):
            fail(f"architecture seed must be an integer in [0, 2**64), got {_short(arch['seed'])}")
        layers = arch["layers"]
        if not isinstance(layers, list) or not layers:
            fail("architecture layers must be a non-empty list")
        for i, spec in enumerate(layers):
            kind = spec.get("kind") if isinstance(spec, dict) else None
            keys = {"dense": {"kind", "name", "units", "activation", "kernel_initializer"},
                    "dropout": {"kind", "name", "rate"},
                    "normalization": {"kind", "name", "mean", "variance"},
                    "rescaling": {"kind", "name", "scale", "offset"}}.get(kind)
            # kernel_regularizer, trainable and quantization are optional: files written
            # before they existed lack them, and files of models that do not use them too.
            if keys is None or not (set(spec) == keys or (kind == "dense" and keys < set(spec) <= keys | {
                    "kernel_regularizer", "trainable", "quantization"})):
                fail(f"architecture layer {i}: expected a dense, dropout, normalization or rescaling layer "
                     f"description, got {_short(spec)}")
            if kind == "normalization" and not all(
                    spec[k] is None or (isinstance(spec[k], list) and len(spec[k]) == arch["input_dim"]
                                        and all(_json_type(v, "number") for v in spec[k]))
                    for k in ("mean", "variance")):
                fail(f"architecture layer {i}: normalization mean and variance must be null or lists of "
                     f"{_short(arch['input_dim'])} numbers")
            if kind == "rescaling" and not all(_json_type(spec[k], "number") for k in ("scale", "offset")):
                fail(f"architecture layer {i}: rescaling scale and offset must be numbers")
            if "trainable" in spec and not isinstance(spec["trainable"], bool):
                fail(f"architecture layer {i}: trainable must be true or false, got {_short(spec['trainable'])}")
            q = spec.get("quantization")
            if "quantization" in spec and not (isinstance(q, dict) and set(q) == {"per_channel", "input"}
                                               and isinstance(q["per_channel"], bool)
                                               and q["input"] in ("static", "dynamic")):
                fail(f"architecture layer {i}: quantization must be {{per_channel: bool, input: static|dynamic}}, "
                     f"got {_short(q)}")
            reg = spec.get("kernel_regularizer")
            if reg is not None and not (isinstance(reg, dict) and set(reg) == {"l1", "l2"}
                                        and all(_json_type(reg[k], "number") for k in ("l1", "l2"))):
                fail(f"architecture layer {i}: kernel_regularizer must be {{l1, l2}} numbers, got {_short(reg)}")
            if not isinstance(spec["name"], str):
                fail(f"architecture layer {i}: name must be a string")
            if kind == "dense" and not (_is_int(spec["units"]) and spec["units"] >= 1):
                fail(f"architecture layer {i}: units must be an integer >= 1, got {_short(spec['units'])}")
        return arch

    def _training(self, training) -> Optional[dict]:
        if training is None:
            return None
        fail = self.file.fail
        keys = {"optimizer", "loss", "metrics"}
        if not isinstance(training, dict) or not keys <= set(training) <= keys | {"precision"}:
            fail(f"training must be null or an object with optimizer, loss, metrics (and precision), "
                 f"got {_short(training)}")
        if training.get("precision", "fp32") not in ("fp32", "tf32", "bf16", "fp16"):
            fail(f"training precision must be fp32, tf32, bf16 or fp16, got {_short(training['precision'])}")
        for part, classes in (("optimizer", _OPTIMIZERS), ("loss", _LOSSES)):
            item = training[part]
            if not (isinstance(item, dict) and set(item) == {"class", "config"} and item["class"] in classes
                    and isinstance(item["config"], dict)):
                fail(f"training {part} must be {{class, config}} with class one of {', '.join(classes)}, got "
                     f"{_short(item)}")
            types = _CONFIG_TYPES[item["class"]]
            if set(item["config"]) != set(types):
                fail(f"training {part} {item['class']} config must have exactly the keys {', '.join(types) or '(none)'}"
                     f", got {_short(sorted(item['config']))}")
            for key, kind in types.items():
                if not _json_type(item["config"][key], kind):
                    what = "number or a learning-rate schedule {class, config}" if kind == "rate" else kind.rstrip("?")
                    fail(f"training {part} {item['class']} {key} must be {what}"
                         f"{' or null' if kind.endswith('?') else ''}, got {_short(item['config'][key])}")
        if not isinstance(training["metrics"], list) or not all(isinstance(m, str) for m in training["metrics"]):
            fail("training metrics must be a list of strings")
        return training

    def _state(self, state) -> dict:
        fail = self.file.fail
        if self.training is None:
            fail("optimizer_state without a training configuration")
        keys = {"step", "epochs_trained", "slots"}
        scale_keys = {"loss_scale", "loss_scale_good_steps"}
        fp16 = self.training.get("precision") == "fp16"
        if not isinstance(state, dict) or set(state) != (keys | scale_keys if fp16 else keys):
            fail(f"optimizer_state must be an object with step, epochs_trained and slots"
                 f"{' (and, for fp16, loss_scale and loss_scale_good_steps)' if fp16 else ''}, got {_short(state)}")
        if fp16 and not (isinstance(state["loss_scale"], float) and math.isfinite(state["loss_scale"])
                         and state["loss_scale"] > 0 and _is_int(state["loss_scale_good_steps"])
                         and 0 <= state["loss_scale_good_steps"] < 2000):
            fail(f"optimizer_state loss_scale must be a finite number > 0 and loss_scale_good_steps an integer in "
                 f"[0, 2000), got {_short(state['loss_scale'])}, {_short(state['loss_scale_good_steps'])}")
        for key in ("step", "epochs_trained"):
            if not (_is_int(state[key]) and 0 <= state[key] < 2**62):
                fail(f"optimizer_state {key} must be an integer >= 0, got {_short(state[key])}")
        if state["slots"] != list(_slot_names(self.training)):
            fail(f"optimizer_state slots {_short(state['slots'])} do not match the optimizer "
                 f"{self.training['optimizer']['class']} (expected {list(_slot_names(self.training))})")
        return state

    def _pruning(self, pruning) -> Dict[int, dict]:
        fail = self.file.fail
        if not (isinstance(pruning, dict) and set(pruning) == {"layers"} and isinstance(pruning["layers"], dict)):
            fail(f"pruning must be an object {{layers: {{index: ...}}}}, got {_short(pruning)}")
        layers = {}
        for key, spec in pruning["layers"].items():
            i = int(key) if key.isascii() and key.isdigit() else -1
            if not (0 <= i < len(self.arch["layers"]) and str(i) == key and self.arch["layers"][i]["kind"] == "dense"):
                fail(f"pruning names layer {_short(key)}, which is not a Dense layer of the architecture")
            if "quantization" in self.arch["layers"][i]:
                fail(f"pruning names layer {i}, which is int8 (int8 layers hold their zeros in their codes)")
            keys = {"masked", "format", "min_batch", "max_batch"}
            if not (isinstance(spec, dict) and keys <= set(spec) <= keys | {"n_m"}
                    and isinstance(spec["masked"], bool) and spec["format"] in _FORMATS
                    and _is_int(spec["min_batch"]) and 1 <= spec["min_batch"] <= _MAX_BATCH_LIMIT
                    and _is_int(spec["max_batch"]) and 0 <= spec["max_batch"] <= _MAX_BATCH_LIMIT):
                fail(f"pruning layer {i}: expected {{masked: bool, format: dense|csr|nm, min_batch: integer in "
                     f"[1, 2**62], max_batch: integer in [0, 2**62]}} (and n_m), got {_short(spec)}")
            nm = spec.get("n_m")
            if nm is not None and not (isinstance(nm, list) and len(nm) == 2 and all(_is_int(v) for v in nm)
                                       and 1 <= nm[0] <= nm[1] <= 255):
                fail(f"pruning layer {i}: n_m must be [n, m] with 1 <= n <= m <= 255, got {_short(nm)}")
            layers[i] = spec
        return layers

    def _expected_tensors(self) -> List[Tuple[str, Tuple[str, ...], Tuple[int, ...]]]:
        """(name, allowed dtypes, shape) of every tensor the file must hold, in file order."""
        f = self.file
        table = _param_table(self.arch)
        wide, codes = _weight_tables(self.arch)
        expected, last = [], []
        for name, layer_index, shape, dtype in wide:
            if name.endswith(".kernel") and self.pruning.get(layer_index, {}).get("masked"):
                entry = f.tensors.get(f"{name}.values")
                if entry is None or len(entry[1]) != 1:
                    f.fail(f"tensor {name + '.values'!r} must be present and 1-D for the pruned layer {layer_index}")
                nnz = entry[1][0]
                if nnz > shape[0] * shape[1]:
                    f.fail(f"tensor {name + '.values'!r} holds {nnz} weights, more than the kernel's "
                           f"{shape[0] * shape[1]}")
                expected.append((f"{name}.values", ("F32",), (nnz,)))
                expected.append((f"{name}.offsets", ("I32", "I64"), (shape[1] + 1,)))
                last.append((f"{name}.index", ("I16", "I32"), (nnz,)))
            else:
                expected.append((name, (dtype,), shape))
        for slot in self.state["slots"] if self.state else ():
            expected += [(f"optimizer.{slot}.{name}", ("F32",), shape) for name, _, shape in table]
        return expected + last + [(name, (dtype,), shape) for name, _, shape, dtype in codes]

    def _check_tensors(self) -> None:
        f = self.file
        expected = self._expected_tensors()
        known = {name for name, _, _ in expected}
        extra = [name for name in f.tensors if name not in known]
        missing = [name for name, _, _ in expected if name not in f.tensors]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"tensor {missing[0]!r} is missing"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
            if extra:
                problems.append(f"unexpected tensor {_short(extra[0])}"
                                + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
            f.fail("; ".join(problems) + " for the architecture in the file")
        begin = 0
        for name, dtypes, shape in expected:
            dtype, got_shape, got_begin, got_end = f.tensors[name]
            if dtype not in dtypes:
                f.fail(f"tensor {name!r} has dtype {dtype}, expected {' or '.join(dtypes)}")
            if got_shape != shape:
                f.fail(f"tensor {name!r} has shape {got_shape}, expected {shape} from the architecture")
            end = begin + _DTYPE_SIZES[dtype] * math.prod(shape)
            if (got_begin, got_end) != (begin, end):
                f.fail(f"tensor {name!r} has data_offsets [{got_begin}, {got_end}], expected [{begin}, {end}] "
                       "(tensors are stored in layer order)")
            begin = end

    def _check_csr(self) -> None:
        """Each compressed kernel is a valid CSR of its (out, in) transpose: offsets start at
        0, never decrease and end at nnz; the indices lie in [0, in) and rise strictly within
        a row (a repeated position would be ambiguous). The checksum guards against
        accidents; this guards the executor against a file written wrong on purpose."""
        for name, layer_index, shape in _param_table(self.arch):
            if not (name.endswith("kernel") and self.pruning.get(layer_index, {}).get("masked")):
                continue
            offsets = self.file.array(f"{name}.offsets").astype(np.int64)
            index = self.file.array(f"{name}.index").astype(np.int64)
            if offsets[0] != 0 or offsets[-1] != index.size:
                self.file.fail(f"tensor {name + '.offsets'!r} must run from 0 to {index.size} (the number of stored "
                               f"weights), got {int(offsets[0])} to {int(offsets[-1])}")
            if (np.diff(offsets) < 0).any():
                at = int(np.argmax(np.diff(offsets) < 0))
                self.file.fail(f"tensor {name + '.offsets'!r} decreases at row {at}: the offsets must not decrease")
            if index.size and (index.min() < 0 or index.max() >= shape[0]):
                bad = int(index.min() if index.min() < 0 else index.max())
                self.file.fail(f"tensor {name + '.index'!r} holds input {bad}, outside [0, {shape[0]})")
            rows = np.repeat(np.arange(shape[1]), np.diff(offsets))
            same_row = rows[1:] == rows[:-1]
            if (np.diff(index)[same_row] <= 0).any():
                at = int(rows[1:][same_row][np.argmax(np.diff(index)[same_row] <= 0)])
                self.file.fail(f"tensor {name + '.index'!r}: the inputs of output {at} are not strictly increasing")

    def kernel(self, name: str, layer_index: int, shape: Tuple[int, ...]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """A kernel (in, out) as stored, and its keep mask when it is stored compressed."""
        if not self.pruning.get(layer_index, {}).get("masked"):
            return self.file.array(name), None
        offsets = self.file.array(f"{name}.offsets")
        index = self.file.array(f"{name}.index")
        rows = np.repeat(np.arange(shape[1]), np.diff(offsets.astype(np.int64)))
        kernel = np.zeros(shape, dtype=np.float32)
        keep = np.zeros(shape, dtype=bool)
        kernel[index, rows] = self.file.array(f"{name}.values")
        keep[index, rows] = True
        return kernel, keep

    def build(self, device: str):
        from .models import Sequential

        arch, path = self.arch, self.file.path
        try:
            layers = []
            for spec in arch["layers"]:
                if spec["kind"] == "dense":
                    reg = spec.get("kernel_regularizer")
                    layers.append(Dense(spec["units"], activation=spec["activation"],
                                        kernel_initializer=spec["kernel_initializer"],
                                        kernel_regularizer=regularizers_mod.L1L2(**reg) if reg else None,
                                        name=spec["name"]))
                    layers[-1].trainable = spec.get("trainable", True)
                elif spec["kind"] == "normalization":
                    layers.append(Normalization(spec["mean"], spec["variance"], name=spec["name"]))
                elif spec["kind"] == "rescaling":
                    layers.append(Rescaling(spec["scale"], spec["offset"], name=spec["name"]))
                else:
                    layers.append(Dropout(spec["rate"], name=spec["name"]))
            model = Sequential(layers, input_dim=arch["input_dim"], device=device, seed=arch["seed"],
                               name=arch["name"])
            if self.training is not None:
                t = self.training
                opt_config = dict(t["optimizer"]["config"])
                if isinstance(opt_config["learning_rate"], dict):
                    lr = opt_config["learning_rate"]
                    opt_config["learning_rate"] = schedules_mod.get(lr["class"], lr["config"])
                opt = _OPTIMIZERS[t["optimizer"]["class"]](**opt_config)
                loss = _LOSSES[t["loss"]["class"]](**t["loss"]["config"])
                model.compile(optimizer=opt, loss=loss, metrics=t["metrics"], precision=t.get("precision", "fp32"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: invalid model configuration: {exc}") from None
        self.write_weights(model)
        if self.state is not None:
            net = model._net
            for slot_index, slot in enumerate(self.state["slots"]):
                for name, layer_index, _ in _param_table(arch):
                    offset = (net.weight_offsets if name.endswith("kernel") else net.bias_offsets)[layer_index]
                    net.write_state(slot_index, offset, self.file.array(f"optimizer.{slot}.{name}").ravel())
            net.set_step(self.state["step"])
            if "loss_scale" in self.state:
                net.set_loss_scale(self.state["loss_scale"], self.state["loss_scale_good_steps"])
            model._epoch = self.state["epochs_trained"]
            model._restored_callback_state = self.callbacks
        return model

    def write_weights(self, model) -> None:
        """Writes the file's parameters straight into the executor: bit for bit, NaN
        payloads included (set_weights would refuse non-finite values a saved model may hold);
        then its pruning (the masks, cleared on layers the file has none for, the N:M shapes
        and the inference formats) and its int8 layers."""
        net, f = model._net, self.file
        wide, codes = _weight_tables(self.arch)
        # The int8 tensors are checked before anything is written, so a file refused here
        # leaves the model as it was.
        quantized = []
        for name, layer_index, shape, _ in codes:
            p = f"layers.{layer_index}"
            w_q, w_scale = f.array(name), f.array(f"{p}.kernel_scale")
            if (w_q == -128).any():
                f.fail(f"tensor {name!r} holds the code -128; int8 weights are in [-127, 127]")
            if not (np.isfinite(w_scale).all() and (w_scale > 0).all()):
                f.fail(f"tensor '{p}.kernel_scale' holds a scale that is not finite and > 0")
            if shape[0] > _GEMM_S8_MAX_K:
                f.fail(f"int8 layer {layer_index} has {shape[0]} inputs, more than gemm_s8's {_GEMM_S8_MAX_K}")
            in_scale, in_zero = 0.0, 0
            if f"{p}.input_scale" in f.tensors:
                in_scale, in_zero = float(f.array(f"{p}.input_scale")[0]), int(f.array(f"{p}.input_zero")[0])
                if not (math.isfinite(in_scale) and in_scale > 0):
                    f.fail(f"tensor '{p}.input_scale' is {in_scale}; it must be finite and > 0")
                if not 0 <= in_zero <= 255:
                    f.fail(f"tensor '{p}.input_zero' is {in_zero}; uint8 zero points are in [0, 255]")
            quantized.append((layer_index, np.ascontiguousarray(w_q), np.ascontiguousarray(w_scale), in_scale, in_zero))
        masks = {}
        for i in list(model._masks):
            net.clear_mask(i)
            del model._masks[i]
        model._nm.clear()
        for name, layer_index, shape, _ in wide:
            part = name.rsplit(".", 1)[1]
            if part == "kernel":
                net.clear_quantization(layer_index)
                values, keep = self.kernel(name, layer_index, shape)
                if keep is not None:
                    masks[layer_index] = keep
            elif part == "bias":
                values = f.array(name)
            else:
                continue
            offset = (net.weight_offsets if part == "kernel" else net.bias_offsets)[layer_index]
            net.write_params(offset, np.ascontiguousarray(values).ravel())
        for i, keep in masks.items():
            net.set_mask(i, keep.astype(np.uint8))
            model._masks[i] = keep
        for i in range(len(self.arch["layers"])):
            if self.arch["layers"][i]["kind"] != "dense":
                continue
            spec = self.pruning.get(i, {"format": "dense", "min_batch": 1, "max_batch": 0})
            nm = spec.get("n_m", (2, 4))
            if "n_m" in spec:
                model._nm[i] = tuple(nm)
            net.set_sparse_format(i, spec["format"], spec["max_batch"], *nm, min_batch=spec["min_batch"])
        for layer_index, w_q, w_scale, in_scale, in_zero in quantized:
            net.set_quantization(layer_index, w_q, w_scale, in_scale, in_zero)


def load(path, device: str = "cpu"):
    """Loads a model saved by ``Sequential.save`` onto ``device``: the architecture, the
    weights (bit for bit), the compile configuration when it was compiled and, when saved
    with ``include_optimizer=True``, the optimizer state, step count and epochs trained.
    Any malformed, truncated, oversized or modified file raises ValueError naming the problem."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', got {type(device).__name__}")
    _core.check_device(device)
    return _Model(path).build(device)


def loads(data, device: str = "cpu"):
    """A model from the bytes ``dumps`` returned (or a model file's contents), with the
    same checks as ``load``; messages name the data "<bytes>"."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"[loads] data must be bytes, got {type(data).__name__}")
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', got {type(device).__name__}")
    _core.check_device(device)
    return _Model("<bytes>", bytes(data)).build(device)


def load_weights(model, path) -> None:
    """Loads the weights of the model file at ``path`` into ``model``, which must have the
    same layers (kinds, units and input size; an unbuilt model is built for the file's
    input size). Optimizer state in the file is ignored; the model's is kept. The file's
    int8 layers become int8 in the model (and its float layers float)."""
    saved = _Model(path)
    layers = saved.arch["layers"]
    mismatch = None
    if len(layers) != len(model.layers):
        mismatch = f"the file has {len(layers)} layers, the model {len(model.layers)}"
    elif model.input_dim is not None and model.input_dim != saved.arch["input_dim"]:
        mismatch = f"the file's input size is {saved.arch['input_dim']}, the model's {model.input_dim}"
    else:
        for i, (spec, layer) in enumerate(zip(layers, model.layers)):
            mine = _architecture_of_layer(layer)
            if spec["kind"] != mine[0] or (spec["kind"] == "dense" and spec["units"] != mine[1]):
                theirs = f"Dense({spec['units']})" if spec["kind"] == "dense" else spec["kind"].capitalize()
                ours = f"Dense({mine[1]})" if mine[0] == "dense" else mine[0].capitalize()
                mismatch = f"layer {i} is {theirs} in the file but {ours} in the model"
                break
    if mismatch:
        raise ValueError(f"[load_weights] {saved.file.path} does not fit the model: {mismatch}")
    if model._net is None:
        model.build(saved.arch["input_dim"])
        if model._loss is not None:
            model._compile_net()
    saved.write_weights(model)
    # A Normalization's statistics are its weights (as in Keras); a Rescaling's constants
    # are configuration, kept as the model has them.
    for spec, layer in zip(layers, model.layers):
        if spec["kind"] == "normalization" and spec["mean"] is not None:
            layer._set_stats(spec["mean"], spec["variance"])


def _architecture_of_layer(layer) -> Tuple[str, int]:
    if isinstance(layer, Dense):
        return "dense", layer.units
    return layer._kind, 0
