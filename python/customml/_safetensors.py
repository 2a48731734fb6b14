"""The safetensors container (https://github.com/huggingface/safetensors): writing one
atomically. Reading one back, with every length, offset, dtype and shape checked before
any tensor is used, is the C++ reader's (``cpp/model_file.cpp``). Knows nothing of
customml's metadata (``_model_file`` does).

Layout: 8 bytes, the header length n (unsigned little-endian); n bytes of JSON (UTF-8,
padded with spaces to a multiple of 8 so that the data section is aligned):
``"__metadata__"`` (string values only) and one ``{"dtype", "shape", "data_offsets"}``
entry per tensor; then the data section, the tensors' bytes back to back.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from typing import Dict, List, Sequence, Tuple

from . import _core

# The largest header a reader accepts (the C++ reader's, as the safetensors reference
# implementation's). A customml header is about 200 bytes per layer.
MAX_HEADER_BYTES = _core.MODEL_FILE_MAX_HEADER_BYTES

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
