"""One-file checkpoints written atomically and verified on load.

Layout: a magic header, the payload length (u64 little-endian), the payload (an uncompressed
npz holding the arrays and a JSON document of everything else), then the payload's SHA-256.
The file is written to a temporary sibling, fsynced, and renamed over the target, so a crash
at any point leaves either the previous checkpoint or the new one, never a mix; a truncated or
altered file is rejected with :class:`training.errors.CheckpointError` naming what is wrong.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from typing import Any, Mapping

import numpy as np

from training.errors import CheckpointError

MAGIC = b"EDGELEARN-CKPT\x00\x01"
_LEN = struct.Struct("<Q")
_DIGEST = 32


def save_checkpoint_file(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write ``arrays`` (name -> ndarray) and ``meta`` (JSON-able) to ``path`` atomically."""
    names = list(arrays)
    buf = io.BytesIO()
    doc = json.dumps({"names": names, "meta": meta}, default=_json_default).encode()
    np.savez(buf, doc=np.frombuffer(doc, np.uint8), **{f"a{i}": np.asarray(arrays[n]) for i, n in enumerate(names)})
    payload = buf.getvalue()
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + _LEN.pack(len(payload)))
            f.write(payload)
            f.write(hashlib.sha256(payload).digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def load_checkpoint_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a checkpoint; returns (arrays, meta)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {e.strerror or e}") from None
    head = len(MAGIC) + _LEN.size
    if len(data) < head or not data.startswith(MAGIC):
        raise CheckpointError(f"{path!r} is not an edgelearn checkpoint (bad header)")
    (size,) = _LEN.unpack_from(data, len(MAGIC))
    expected = head + size + _DIGEST
    if len(data) != expected:
        raise CheckpointError(f"checkpoint {path!r} is truncated or padded: {len(data)} bytes, expected {expected}")
    payload = data[head:head + size]
    if hashlib.sha256(payload).digest() != data[head + size:]:
        raise CheckpointError(f"checkpoint {path!r} is corrupt: checksum mismatch")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            doc = json.loads(z["doc"].tobytes())
            arrays = {n: z[f"a{i}"] for i, n in enumerate(doc["names"])}
    except (ValueError, KeyError, OSError) as e:  # checksum matched but content is not ours
        raise CheckpointError(f"checkpoint {path!r} has an unreadable payload: {e}") from None
    return arrays, doc["meta"]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"checkpoint metadata cannot hold {type(o).__name__}")


def _fsync_dir(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
