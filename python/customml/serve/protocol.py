"""The Open Inference Protocol (KServe V2) REST tensors: requests parsed into a float32
batch, responses encoded, in the JSON tensor format and in Triton's binary tensor data
extension (a JSON header of ``Inference-Header-Content-Length`` bytes, then the raw
little-endian tensors in the order the header lists them)."""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional, Tuple

import numpy as np
import orjson

HEADER_LENGTH = "inference-header-content-length"


class ProtocolError(Exception):
    """An error the client caused or must be told about: the HTTP status and the
    protocol's ``{"error": message}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass
class InferRequest:
    id: Optional[str]
    x: np.ndarray  # (rows, features) float32, C-contiguous
    outputs: List[Tuple[str, bool]]  # (name, as binary data)


def _loads(data) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # NaN and Infinity are not JSON, but Python's json (and clients built on it) write
        # them: read them, so that the finiteness check names the row and column.
        try:
            return json.loads(bytes(data))
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError(400, f"malformed JSON in the request: {exc}") from None


def check_finite(x: np.ndarray, name: str) -> None:
    """400 naming the first row and column holding NaN or inf. The server's own check
    until predict(check_finite=True) lands; then this becomes that call's ValueError."""
    if np.isfinite(x).all():
        return
    row, col = (int(i) for i in np.argwhere(~np.isfinite(x))[0])
    raise ProtocolError(400, f"input '{name}' has a non-finite value ({x[row, col]}) at row {row}, column {col}")


def _tensor(spec: object, binary: memoryview, at: int, input_name: str, features: int) -> Tuple[np.ndarray, int]:
    """The input tensor (rows, features) of one request input; ``at`` is where its binary
    data starts in ``binary``; returns the tensor and where the next one starts."""
    if not isinstance(spec, dict):
        raise ProtocolError(400, "each entry of 'inputs' must be an object")
    name = spec.get("name")
    if name != input_name:
        raise ProtocolError(400, f"unexpected input {name!r}: the model's input is '{input_name}'")
    if spec.get("datatype") != "FP32":
        raise ProtocolError(400, f"input '{name}' must have datatype FP32, got {spec.get('datatype')!r}")
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(s) is int for s in shape)
        or shape[0] < 1
        or shape[1] != features
    ):
        raise ProtocolError(400, f"input '{name}' must have shape [rows >= 1, {features}], got {shape!r}")
    count = shape[0] * features
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(400, f"input '{name}': 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size != 4 * count:
            raise ProtocolError(
                400, f"input '{name}' of shape {shape} needs binary_data_size {4 * count}, got {size!r}"
            )
        if at + size > len(binary):
            raise ProtocolError(400, f"input '{name}': the body holds {len(binary) - at} binary bytes, not {size}")
        # A copy: the body's bytes are read-only and may be misaligned for float32.
        x = np.frombuffer(binary, dtype="<f4", count=count, offset=at).astype(np.float32).reshape(shape)
        return x, at + size
    data = spec.get("data")
    if not isinstance(data, list):
        raise ProtocolError(400, f"input '{name}' needs 'data' (a list) or binary data")
    try:
        values = np.array(data)
    except ValueError:
        raise ProtocolError(400, f"input '{name}': 'data' is not a rectangular list of numbers") from None
    if values.dtype.kind not in "fiu" or values.size != count:
        raise ProtocolError(400, f"input '{name}': 'data' must hold {count} numbers for shape {shape}")
    return np.ascontiguousarray(values.astype(np.float32).reshape(shape)), at


def parse_request(
    body: bytes, header_length: Optional[str], input_name: str, features: int, output_names: Tuple[str, ...]
) -> InferRequest:
    """An inference request's body (and its Inference-Header-Content-Length header, if
    any) for a model with one FP32 input of ``features`` columns and the outputs named."""
    view = memoryview(body)
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise ProtocolError(400, f"Inference-Header-Content-Length {header_length!r} is not within the body")
        request, binary = _loads(view[:n]), view[n:]
    else:
        request, binary = _loads(body), view[:0]
    if not isinstance(request, dict):
        raise ProtocolError(400, "the request must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise ProtocolError(400, f"'inputs' must be a list of one input ('{input_name}')")
    x, used = _tensor(inputs[0], binary, 0, input_name, features)
    if used != len(binary):
        raise ProtocolError(400, f"the body has {len(binary) - used} binary bytes that no input claims")
    check_finite(x, input_name)
    params = request.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    wanted = request.get("outputs")
    outputs: List[Tuple[str, bool]] = []
    if wanted is None:
        outputs.append((output_names[0], binary_default))
    elif not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise ProtocolError(400, "'outputs' must be a list of objects")
    else:
        for out in wanted:
            name = out.get("name")
            if name not in output_names:
                raise ProtocolError(400, f"unknown output {name!r}: the model's outputs are {list(output_names)}")
            p = out.get("parameters") or {}
            outputs.append((name, bool(p.get("binary_data", binary_default)) if isinstance(p, dict) else False))
    request_id = request.get("id")
    return InferRequest(id=str(request_id) if request_id is not None else None, x=x, outputs=outputs)


_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


def encode_response(
    model_name: str, version: str, request_id: Optional[str], outputs: List[Tuple[str, bool]], tensors: Dict
) -> Tuple[bytes, Dict[str, str]]:
    """The response body and its extra headers: JSON tensors (flattened row-major), and
    binary data after the JSON header for the outputs that asked for it."""
    entries = []
    chunks = []
    for name, binary in outputs:
        t = tensors[name]
        entry: Dict[str, object] = {"name": name, "datatype": _DATATYPES[t.dtype], "shape": list(t.shape)}
        if binary:
            raw = np.ascontiguousarray(t, dtype=t.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = t.reshape(-1)
        entries.append(entry)
    head: Dict[str, object] = {"model_name": model_name, "model_version": version, "outputs": entries}
    if request_id is not None:
        head["id"] = request_id
    header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
