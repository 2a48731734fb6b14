"""The customml model file: a ``ModelDescription`` to the bytes of a safetensors file
(``encode``) and back (``read``), every metadata entry, name, shape, dtype and offset
checked against the architecture on the way in. The layout is documented in
``customml.io``; the container itself is ``_safetensors``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Dict, List, Optional, Sequence, Tuple, cast

import numpy as np

from . import _core
from ._model_description import (
    LOSSES,
    OPTIMIZERS,
    DenseWeights,
    Int8,
    ModelDescription,
    OptimizerState,
    param_table,
    slot_names,
)
from ._safetensors import DTYPE_SIZES, File, Tensor, dumps_json, is_int, short
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
FORMAT_VERSION = 4
_REQUIRED_KEYS = (
    "format",
    "format_version",
    "customml_version",
    "architecture",
    "preprocessing",
    "training",
    "checksum",
)
_OPTIONAL_KEYS = ("optimizer_state", "callbacks_state", "pruning")
_FORMATS = ("dense", "csr", "nm")
# The deepest int8 layer gemm_s8 takes (kGemmS8MaxK in cpp/backend.h: 255 * 127 * k < 2^31).
_GEMM_S8_MAX_K = 66000
# The largest max_batch a file may hold (the executor's is an int64).
_MAX_BATCH_LIMIT = 2**62
# The JSON type of each constructor argument a training configuration holds; the
# constructors then check the values. "number?" may be null; "numbers?" is a list or null;
# "rate" is a number or a schedule {"class": "CosineDecay", "config": {...}} (files
# written before schedules existed hold numbers, which still load).
_ADAM_CONFIG = {
    "learning_rate": "rate",
    "beta_1": "number",
    "beta_2": "number",
    "epsilon": "number",
    "weight_decay": "number",
    "amsgrad": "bool",
    "clipnorm": "number?",
}
_CONFIG_TYPES = {
    "SGD": {
        "learning_rate": "rate",
        "momentum": "number",
        "nesterov": "bool",
        "weight_decay": "number",
        "clipnorm": "number?",
    },
    "Adam": _ADAM_CONFIG,
    "AdamW": _ADAM_CONFIG,
    "SoftmaxCrossEntropy": {"label_smoothing": "number", "class_weights": "numbers?"},
    "BinaryCrossEntropy": {},
    "MeanSquaredError": {},
    "Distillation": {"temperature": "number", "alpha": "number"},
}


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
    ``path`` then only names in messages). Any malformed, truncated, oversized or modified
    file raises ValueError naming the problem."""
    return _Reader(path, raw).description()


def _json_type(value, kind: str) -> bool:
    if kind.endswith("?") and value is None:
        return True
    kind = kind.rstrip("?")
    is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if kind == "number":
        return is_number(value)
    if kind == "rate":
        return is_number(value) or (
            isinstance(value, dict)
            and set(value) == {"class", "config"}
            and value["class"] in ("StepDecay", "ExponentialDecay", "CosineDecay")
            and isinstance(value["config"], dict)
        )
    if kind == "numbers":
        return isinstance(value, list) and all(is_number(v) for v in value)
    return isinstance(value, bool)


class _Reader:
    """A validated customml model file: the configuration and the tensors."""

    def __init__(self, path, raw: Optional[bytes] = None):
        f = File(path, raw)
        self.file = f
        meta = f.metadata
        if not meta or "format" not in meta:
            f.fail("not a customml model file (a safetensors file without customml metadata)")
        if meta["format"] != FORMAT:
            f.fail(f"not a customml model file (its format is {short(meta['format'])})")
        version = meta.get("format_version", "")
        if not (version.isascii() and version.isdigit()) or int(version) < 1:
            f.fail(f"invalid format_version {short(version)}")
        if int(version) > FORMAT_VERSION:
            f.fail(
                f"the file has format version {int(version)}, written by a newer customml "
                f"({short(meta.get('customml_version', '?'))}); this customml "
                f"({_core.build_info()['version']}) reads format versions up to {FORMAT_VERSION}: upgrade customml "
                "to load it"
            )
        for key in _REQUIRED_KEYS:
            if key not in meta:
                f.fail(f"the metadata lacks {key!r}")
        for key in meta:
            if key not in _REQUIRED_KEYS and key not in _OPTIONAL_KEYS:
                f.fail(f"unknown metadata key {short(key)}")
        if meta["checksum"] != _checksum(meta, [f.data]):
            f.fail("checksum mismatch: the data or the metadata were modified or corrupted after saving")
        self.arch = self._architecture(f.parse_json(meta["architecture"].encode("utf-8"), "architecture"))
        preprocessing = f.parse_json(meta["preprocessing"].encode("utf-8"), "preprocessing")
        if preprocessing != []:
            f.fail(f"unsupported preprocessing {short(preprocessing)} (this version has none)")
        self.training = self._training(f.parse_json(meta["training"].encode("utf-8"), "training"))
        self.state = None
        if "optimizer_state" in meta:
            self.state = self._state(f.parse_json(meta["optimizer_state"].encode("utf-8"), "optimizer_state"))
        self.callbacks = None
        if "callbacks_state" in meta:
            if self.state is None:
                f.fail("callbacks_state without optimizer_state")
            callbacks = f.parse_json(meta["callbacks_state"].encode("utf-8"), "callbacks_state")
            if not (
                isinstance(callbacks, dict)
                and all(
                    isinstance(v, dict) and all(v2 is None or _json_type(v2, "number") for v2 in v.values())
                    for v in callbacks.values()
                )
            ):
                f.fail(f"callbacks_state must map callback keys to objects of numbers, got {short(callbacks)}")
            self.callbacks = callbacks
        self.pruning: Dict[int, dict] = {}
        if "pruning" in meta:
            self.pruning = self._pruning(f.parse_json(meta["pruning"].encode("utf-8"), "pruning"))
        self._check_tensors()
        self._check_csr()

    def _architecture(self, arch) -> dict:
        fail = self.file.fail
        if not isinstance(arch, dict) or set(arch) != {"name", "input_dim", "seed", "layers"}:
            fail(f"architecture must be an object with name, input_dim, seed and layers, got {short(arch)}")
        if not isinstance(arch["name"], str):
            fail("architecture name must be a string")
        if not (is_int(arch["input_dim"]) and arch["input_dim"] >= 1):
            fail(f"architecture input_dim must be an integer >= 1, got {short(arch['input_dim'])}")
        if not (is_int(arch["seed"]) and 0 <= arch["seed"] < 2**64):
            fail(f"architecture seed must be an integer in [0, 2**64), got {short(arch['seed'])}")
        layers = arch["layers"]
        if not isinstance(layers, list) or not layers:
            fail("architecture layers must be a non-empty list")
        for i, spec in enumerate(layers):
            kind = spec.get("kind") if isinstance(spec, dict) else None
            keys = {
                "dense": {"kind", "name", "units", "activation", "kernel_initializer"},
                "dropout": {"kind", "name", "rate"},
                "normalization": {"kind", "name", "mean", "variance"},
                # (kind is None for a spec that is not an object: no keys)
                "rescaling": {"kind", "name", "scale", "offset"},
            }.get(kind)  # type: ignore[arg-type]
            # kernel_regularizer, trainable and quantization are optional: files written
            # before they existed lack them, and files of models that do not use them too.
            if keys is None or not (
                set(spec) == keys
                or (
                    kind == "dense"
                    and keys < set(spec) <= keys | {"kernel_regularizer", "trainable", "quantization", "kernel_dtype"}
                )
            ):
                fail(
                    f"architecture layer {i}: expected a dense, dropout, normalization or rescaling layer "
                    f"description, got {short(spec)}"
                )
            if kind == "normalization" and not all(
                spec[k] is None
                or (
                    isinstance(spec[k], list)
                    and len(spec[k]) == arch["input_dim"]
                    and all(_json_type(v, "number") for v in spec[k])
                )
                for k in ("mean", "variance")
            ):
                fail(
                    f"architecture layer {i}: normalization mean and variance must be null or lists of "
                    f"{short(arch['input_dim'])} numbers"
                )
            if kind == "rescaling" and not all(_json_type(spec[k], "number") for k in ("scale", "offset")):
                fail(f"architecture layer {i}: rescaling scale and offset must be numbers")
            if "trainable" in spec and not isinstance(spec["trainable"], bool):
                fail(f"architecture layer {i}: trainable must be true or false, got {short(spec['trainable'])}")
            q = spec.get("quantization")
            if "quantization" in spec and not (
                isinstance(q, dict)
                and set(q) == {"per_channel", "input"}
                and isinstance(q["per_channel"], bool)
                and q["input"] in ("static", "dynamic")
            ):
                fail(
                    f"architecture layer {i}: quantization must be {{per_channel: bool, input: static|dynamic}}, "
                    f"got {short(q)}"
                )
            if "kernel_dtype" in spec and (spec["kernel_dtype"] != "bf16" or "quantization" in spec):
                fail(
                    f'architecture layer {i}: kernel_dtype must be "bf16" (and the layer not int8), '
                    f"got {short(spec['kernel_dtype'])}"
                )
            reg = spec.get("kernel_regularizer")
            if reg is not None and not (
                isinstance(reg, dict)
                and set(reg) == {"l1", "l2"}
                and all(_json_type(reg[k], "number") for k in ("l1", "l2"))
            ):
                fail(f"architecture layer {i}: kernel_regularizer must be {{l1, l2}} numbers, got {short(reg)}")
            if not isinstance(spec["name"], str):
                fail(f"architecture layer {i}: name must be a string")
            if kind == "dense" and not (is_int(spec["units"]) and spec["units"] >= 1):
                fail(f"architecture layer {i}: units must be an integer >= 1, got {short(spec['units'])}")
        return arch

    def _training(self, training) -> Optional[dict]:
        if training is None:
            return None
        fail = self.file.fail
        keys = {"optimizer", "loss", "metrics"}
        if not isinstance(training, dict) or not keys <= set(training) <= keys | {"precision"}:
            fail(
                f"training must be null or an object with optimizer, loss, metrics (and precision), "
                f"got {short(training)}"
            )
        if training.get("precision", "fp32") not in ("fp32", "tf32", "bf16", "fp16"):
            fail(f"training precision must be fp32, tf32, bf16 or fp16, got {short(training['precision'])}")
        for part, classes in (("optimizer", OPTIMIZERS), ("loss", LOSSES)):
            item = training[part]
            if not (
                isinstance(item, dict)
                and set(item) == {"class", "config"}
                and item["class"] in classes
                and isinstance(item["config"], dict)
            ):
                fail(
                    f"training {part} must be {{class, config}} with class one of {', '.join(classes)}, got "
                    f"{short(item)}"
                )
            types = _CONFIG_TYPES[item["class"]]
            if set(item["config"]) != set(types):
                fail(
                    f"training {part} {item['class']} config must have exactly the keys {', '.join(types) or '(none)'}"
                    f", got {short(sorted(item['config']))}"
                )
            for key, kind in types.items():
                if not _json_type(item["config"][key], kind):
                    what = "number or a learning-rate schedule {class, config}" if kind == "rate" else kind.rstrip("?")
                    fail(
                        f"training {part} {item['class']} {key} must be {what}"
                        f"{' or null' if kind.endswith('?') else ''}, got {short(item['config'][key])}"
                    )
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
            fail(
                f"optimizer_state must be an object with step, epochs_trained and slots"
                f"{' (and, for fp16, loss_scale and loss_scale_good_steps)' if fp16 else ''}, got {short(state)}"
            )
        if fp16 and not (
            isinstance(state["loss_scale"], float)
            and math.isfinite(state["loss_scale"])
            and state["loss_scale"] > 0
            and is_int(state["loss_scale_good_steps"])
            and 0 <= state["loss_scale_good_steps"] < 2000
        ):
            fail(
                f"optimizer_state loss_scale must be a finite number > 0 and loss_scale_good_steps an integer in "
                f"[0, 2000), got {short(state['loss_scale'])}, {short(state['loss_scale_good_steps'])}"
            )
        for key in ("step", "epochs_trained"):
            if not (is_int(state[key]) and 0 <= state[key] < 2**62):
                fail(f"optimizer_state {key} must be an integer >= 0, got {short(state[key])}")
        if state["slots"] != list(slot_names(self.training)):
            fail(
                f"optimizer_state slots {short(state['slots'])} do not match the optimizer "
                f"{self.training['optimizer']['class']} (expected {list(slot_names(self.training))})"
            )
        return state

    def _pruning(self, pruning) -> Dict[int, dict]:
        fail = self.file.fail
        if not (isinstance(pruning, dict) and set(pruning) == {"layers"} and isinstance(pruning["layers"], dict)):
            fail(f"pruning must be an object {{layers: {{index: ...}}}}, got {short(pruning)}")
        layers = {}
        for key, spec in pruning["layers"].items():
            i = int(key) if key.isascii() and key.isdigit() else -1
            if not (0 <= i < len(self.arch["layers"]) and str(i) == key and self.arch["layers"][i]["kind"] == "dense"):
                fail(f"pruning names layer {short(key)}, which is not a Dense layer of the architecture")
            if "quantization" in self.arch["layers"][i]:
                fail(f"pruning names layer {i}, which is int8 (int8 layers hold their zeros in their codes)")
            if "kernel_dtype" in self.arch["layers"][i]:
                fail(f"pruning names layer {i}, which is bf16 (bf16 layers hold their zeros in their kernel)")
            keys = {"masked", "format", "min_batch", "max_batch"}
            if not (
                isinstance(spec, dict)
                and keys <= set(spec) <= keys | {"n_m"}
                and isinstance(spec["masked"], bool)
                and spec["format"] in _FORMATS
                and is_int(spec["min_batch"])
                and 1 <= spec["min_batch"] <= _MAX_BATCH_LIMIT
                and is_int(spec["max_batch"])
                and 0 <= spec["max_batch"] <= _MAX_BATCH_LIMIT
            ):
                fail(
                    f"pruning layer {i}: expected {{masked: bool, format: dense|csr|nm, min_batch: integer in "
                    f"[1, 2**62], max_batch: integer in [0, 2**62]}} (and n_m), got {short(spec)}"
                )
            nm = spec.get("n_m")
            if nm is not None and not (
                isinstance(nm, list) and len(nm) == 2 and all(is_int(v) for v in nm) and 1 <= nm[0] <= nm[1] <= 255
            ):
                fail(f"pruning layer {i}: n_m must be [n, m] with 1 <= n <= m <= 255, got {short(nm)}")
            layers[i] = spec
        return layers

    def _expected_tensors(self) -> List[Tuple[str, Tuple[str, ...], Tuple[int, ...]]]:
        """(name, allowed dtypes, shape) of every tensor the file must hold, in file order."""
        f = self.file
        table = param_table(self.arch)
        wide, codes = _weight_tables(self.arch)
        expected: List[Tuple[str, Tuple[str, ...], Tuple[int, ...]]]
        last: List[Tuple[str, Tuple[str, ...], Tuple[int, ...]]]
        expected, last = [], []
        for name, layer_index, shape, dtype in wide:
            if name.endswith(".kernel") and self.pruning.get(layer_index, {}).get("masked"):
                entry = f.tensors.get(f"{name}.values")
                if entry is None or len(entry[1]) != 1:
                    f.fail(f"tensor {name + '.values'!r} must be present and 1-D for the pruned layer {layer_index}")
                nnz = entry[1][0]
                if nnz > shape[0] * shape[1]:
                    f.fail(
                        f"tensor {name + '.values'!r} holds {nnz} weights, more than the kernel's {shape[0] * shape[1]}"
                    )
                expected.append((f"{name}.values", ("F32",), (nnz,)))
                expected.append((f"{name}.offsets", ("I32", "I64"), (shape[1] + 1,)))
                last.append((f"{name}.index", ("I16", "I32"), (nnz,)))
            else:
                expected.append((name, (dtype,), shape))
        for slot in self.state["slots"] if self.state else ():
            expected += [(f"optimizer.{slot}.{name}", ("F32",), shape) for name, _, shape in table]
        halves = [(name, (dtype,), shape) for name, _, shape, dtype in _bf16_kernels(self.arch)]
        return expected + last + halves + [(name, (dtype,), shape) for name, _, shape, dtype in codes]

    def _check_tensors(self) -> None:
        f = self.file
        expected = self._expected_tensors()
        known = {name for name, _, _ in expected}
        extra = [name for name in f.tensors if name not in known]
        missing = [name for name, _, _ in expected if name not in f.tensors]
        if missing or extra:
            problems = []
            if missing:
                problems.append(
                    f"tensor {missing[0]!r} is missing"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                )
            if extra:
                problems.append(
                    f"unexpected tensor {short(extra[0])}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                )
            f.fail("; ".join(problems) + " for the architecture in the file")
        begin = 0
        for name, dtypes, shape in expected:
            dtype, got_shape, got_begin, got_end = f.tensors[name]
            if dtype not in dtypes:
                f.fail(f"tensor {name!r} has dtype {dtype}, expected {' or '.join(dtypes)}")
            if got_shape != shape:
                f.fail(f"tensor {name!r} has shape {got_shape}, expected {shape} from the architecture")
            end = begin + DTYPE_SIZES[dtype] * math.prod(shape)
            if (got_begin, got_end) != (begin, end):
                f.fail(
                    f"tensor {name!r} has data_offsets [{got_begin}, {got_end}], expected [{begin}, {end}] "
                    "(tensors are stored in layer order)"
                )
            begin = end

    def _check_csr(self) -> None:
        """Each compressed kernel is a valid CSR of its (out, in) transpose: offsets start at
        0, never decrease and end at nnz; the indices lie in [0, in) and rise strictly within
        a row (a repeated position would be ambiguous). The checksum guards against
        accidents; this guards the executor against a file written wrong on purpose."""
        for name, layer_index, shape in param_table(self.arch):
            if not (name.endswith("kernel") and self.pruning.get(layer_index, {}).get("masked")):
                continue
            offsets: np.ndarray = self.file.array(f"{name}.offsets").astype(np.int64)
            index: np.ndarray = self.file.array(f"{name}.index").astype(np.int64)
            if offsets[0] != 0 or offsets[-1] != index.size:
                self.file.fail(
                    f"tensor {name + '.offsets'!r} must run from 0 to {index.size} (the number of stored "
                    f"weights), got {int(offsets[0])} to {int(offsets[-1])}"
                )
            if (np.diff(offsets) < 0).any():
                at = int(np.argmax(np.diff(offsets) < 0))
                self.file.fail(f"tensor {name + '.offsets'!r} decreases at row {at}: the offsets must not decrease")
            if index.size and (index.min() < 0 or index.max() >= shape[0]):
                bad = int(index.min() if index.min() < 0 else index.max())
                self.file.fail(f"tensor {name + '.index'!r} holds input {bad}, outside [0, {shape[0]})")
            rows: np.ndarray = np.repeat(np.arange(shape[1]), np.diff(offsets))
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
        rows: np.ndarray = np.repeat(np.arange(shape[1]), np.diff(offsets.astype(np.int64)))
        kernel = np.zeros(shape, dtype=np.float32)
        keep: np.ndarray = np.zeros(shape, dtype=bool)
        kernel[index, rows] = self.file.array(f"{name}.values")
        keep[index, rows] = True
        return kernel, keep

    def _int8(self) -> Dict[int, Int8]:
        """The int8 layers' encodings, by layer index, checked as the executor needs them."""
        f = self.file
        quantized = {}
        for name, layer_index, shape, _ in _weight_tables(self.arch)[1]:
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
            quantized[layer_index] = Int8(np.ascontiguousarray(w_q), np.ascontiguousarray(w_scale), in_scale, in_zero)
        return quantized

    def description(self) -> ModelDescription:
        f = self.file
        int8 = self._int8()
        table = param_table(self.arch)
        weights = {}
        # The table holds each Dense layer's kernel, then its bias.
        for (kernel_name, i, shape), (bias_name, _, _) in zip(table[::2], table[1::2]):
            w = DenseWeights(f.array(bias_name), int8=int8.get(i))
            if "kernel_dtype" in self.arch["layers"][i]:
                # bf16 bits -> their float32 values, exactly
                w.kernel, w.bf16 = (f.array(kernel_name).astype(np.uint32) << 16).view(np.float32), True
            elif w.int8 is None:
                w.kernel, w.keep = self.kernel(kernel_name, i, shape)
            spec = self.pruning.get(i)
            if spec is not None:
                w.format, w.min_batch, w.max_batch = spec["format"], spec["min_batch"], spec["max_batch"]
                if "n_m" in spec:
                    w.n_m = tuple(spec["n_m"])
            weights[i] = w
        state = None
        if self.state is not None:
            slots = {
                slot: {(i, name.rsplit(".", 1)[1]): f.array(f"optimizer.{slot}.{name}") for name, i, _ in table}
                for slot in self.state["slots"]
            }
            loss_scale = (
                (self.state["loss_scale"], self.state["loss_scale_good_steps"]) if "loss_scale" in self.state else None
            )
            state = OptimizerState(self.state["step"], self.state["epochs_trained"], slots, loss_scale)
        return ModelDescription(self.arch, self.training, weights, state, self.callbacks or {})
