"""The safetensors container (https://github.com/huggingface/safetensors): writing one
atomically, and reading one back with every length, offset, dtype and shape checked
before any tensor is used. Knows nothing of customml's metadata (``_model_file`` does).

Layout: 8 bytes, the header length n (unsigned little-endian); n bytes of JSON (UTF-8,
padded with spaces to a multiple of 8 so that the data section is aligned):
``"__metadata__"`` (string values only) and one ``{"dtype", "shape", "data_offsets"}``
entry per tensor; then the data section, the tensors' bytes back to back.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import stat
import time
from typing import Dict, List, NoReturn, Optional, Sequence, Tuple

import numpy as np

# As the safetensors reference implementation: a header larger than this is refused
# before it is read. A customml header is about 200 bytes per layer.
MAX_HEADER_BYTES = 100_000_000

# safetensors dtype names and their sizes in bytes (the format's full list, so a foreign
# file's tensors are described correctly before it is refused).
DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "F64": 8,
    "I64": 8,
    "U64": 8,
}
# The dtypes a customml file uses, as NumPy reads them.
# BF16 as its bits (NumPy has no bfloat16).
NUMPY_DTYPES = {"F32": "<f4", "BF16": "<u2", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8"}

# A tensor to write: (name, dtype name, shape, its little-endian bytes).
Tensor = Tuple[str, str, Tuple[int, ...], bytes]


# A writer holds an exclusive flock on its temporary file for as long as it lives (the
# kernel drops it when the process dies, kill -9 included); a temporary nobody holds that
# is older than this is a killed save's leftover, removed by the next save to that path.
# The age covers the instant between a writer's open and its flock.
_STALE_TMP_SECONDS = 10.0


def _remove_stale_temporaries(directory: str, name: str) -> None:
    """Removes .NAME.HEX.tmp files (atomic_write's naming, 12 hex digits) in directory that
    no live writer holds; best effort, and only where flock exists (POSIX)."""
    try:
        import fcntl
    except ImportError:
        return
    prefix = f".{name}."
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        hexpart = entry[len(prefix) : -len(".tmp")]
        if not (entry.startswith(prefix) and entry.endswith(".tmp") and len(hexpart) == 12):
            continue
        if any(c not in "0123456789abcdef" for c in hexpart):
            continue
        tmp = os.path.join(directory, entry)
        try:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or time.time() - info.st_mtime < _STALE_TMP_SECONDS:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a writer holds it
            os.unlink(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)


def atomic_write(path: str, chunks: Sequence[bytes]) -> None:
    """Writes chunks to path through a temporary file in the same directory (fsynced,
    then renamed over path): readers see the old file or the new one, never a mix, and
    a failure at any point leaves an existing file untouched and no temporary behind
    (a killed save's temporary is removed by the next save to the same path). Errors
    name path, never the temporary."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: the directory {os.path.dirname(path) or '.'!r} does not exist")
    _remove_stale_temporaries(directory, os.path.basename(path))
    # Not tempfile.mkstemp: its files are 0600, while a saved model should get the
    # permissions any new file gets (0666 less the umask), e.g. readable by a service.
    while True:
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot write {path!r}: {exc.strerror}") from None
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the file is closed: see _STALE_TMP_SECONDS
    except ImportError:
        pass
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # still locked, so no other save takes it for a leftover
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


def dumps_json(value) -> str:
    # allow_nan=False: NaN is not JSON, and a reader in another language would refuse it.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def encode(metadata: Dict[str, str], tensors: Sequence[Tensor]) -> List[bytes]:
    """The file's bytes, in chunks: the length, the header, then each tensor's data in the
    order given (the data offsets follow that order, with no gaps)."""
    header: Dict[str, object] = {"__metadata__": metadata}
    begin = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, begin + len(data)]}
        begin += len(data)
    text = dumps_json(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return [len(text).to_bytes(8, "little"), text] + [t[3] for t in tensors]


class File:
    """A parsed, structurally valid safetensors file: its header entries, metadata and
    data section. Raises ValueError naming the problem for anything else."""

    def __init__(self, path, raw: Optional[bytes] = None):
        # raw: the file's bytes when they are already in memory (``loads``); path then
        # only names them in messages.
        self.path = os.fspath(path)
        if raw is None:
            raw = self._read(self.path)
        if len(raw) < 8:
            self.fail(
                f"the file is {len(raw)} bytes long, too short for a safetensors header"
                + (" (it is empty)" if not raw else "")
            )
        n = int.from_bytes(raw[:8], "little")
        if n > MAX_HEADER_BYTES:
            self.fail(
                f"the header length field says {n} bytes, more than the {MAX_HEADER_BYTES} allowed "
                "(not a safetensors file, or corrupt)"
            )
        if n > len(raw) - 8:
            self.fail(
                f"the header length field says {n} bytes but only {len(raw) - 8} follow it "
                "(the file is truncated, or not a safetensors file)"
            )
        self.data = memoryview(raw)[8 + n :]
        header = self.parse_json(raw[8 : 8 + n], "the header")
        if not isinstance(header, dict):
            self.fail(f"the header is JSON but not an object (got {type(header).__name__})")
        metadata = header.pop("__metadata__", None)
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            self.fail("__metadata__ must be an object of strings")
        for key, value in (metadata or {}).items():
            try:  # JSON can escape a lone surrogate, which no UTF-8 text holds
                key.encode("utf-8"), value.encode("utf-8")
            except UnicodeEncodeError:
                self.fail(f"__metadata__ entry {short(key)} holds an invalid Unicode escape (a lone surrogate)")
        self.metadata: Optional[Dict[str, str]] = metadata
        self.tensors: Dict[str, Tuple[str, Tuple[int, ...], int, int]] = {}
        for name, entry in header.items():
            self.tensors[name] = self._entry(name, entry)
        self._check_layout()

    def fail(self, message: str) -> NoReturn:
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

    def parse_json(self, text: bytes, what: str):
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
            self.fail(
                f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start}): corrupt, or not a safetensors file"
            )
        except json.JSONDecodeError as exc:
            self.fail(
                f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): corrupt, "
                "or not a safetensors file"
            )
        except RecursionError:
            self.fail(f"{what} is nested too deeply")

    def _entry(self, name: str, entry) -> Tuple[str, Tuple[int, ...], int, int]:
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            self.fail(
                f"tensor {name!r}: expected an object with exactly dtype, shape and data_offsets, got {short(entry)}"
            )
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_SIZES:
            self.fail(f"tensor {name!r}: unknown dtype {short(dtype)}")
        if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
            self.fail(f"tensor {name!r}: shape must be a list of non-negative integers, got {short(shape)}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            self.fail(
                f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end, got {short(offsets)}"
            )
        begin, end = offsets
        if end > len(self.data):
            self.fail(
                f"tensor {name!r}: data_offsets [{begin}, {end}] run past the end of the data section "
                f"({len(self.data)} bytes): the file is truncated or the offsets are out of range"
            )
        need = math.prod(shape) * DTYPE_SIZES[dtype]
        if end - begin != need:
            self.fail(
                f"tensor {name!r}: shape {tuple(shape)} of {dtype} needs {need} bytes but data_offsets "
                f"[{begin}, {end}] hold {end - begin}"
            )
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
            self.fail(
                f"the file has {len(self.data) - position} bytes after the last tensor's data "
                "(extra bytes appended, or offsets that do not match)"
            )

    def array(self, name: str) -> np.ndarray:
        dtype, shape, begin, end = self.tensors[name]
        return np.frombuffer(self.data[begin:end], dtype=NUMPY_DTYPES[dtype]).reshape(shape)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
