"""Reading a user's ``.npz`` arrays: one reader for every command that takes one, so each gives the
same errors (the file, the arrays it lacks, the arrays it holds) and none unpickles objects."""
from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable

import numpy as np

from .errors import InputError


def read_npz(path: str | os.PathLike, required: Iterable[str] = (), hint: str = "") -> dict[str, np.ndarray]:
    """All arrays of ``path``, loaded now (the file is closed on return).

    Raises :class:`InputError` when the file is missing or not an .npz, or lacks any of ``required``;
    ``hint`` (what such a file should hold) is appended to that message. Object arrays are refused
    (``allow_pickle=False``): a data file must not be able to run code.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"data file {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: a single .npy array, not an .npz archive of named arrays")
    with loaded as f:
        missing = [k for k in required if k not in f.files]
        if missing:
            tail = f"; {hint}" if hint else ""
            raise InputError(f"{path}: missing arrays {missing}, it holds {sorted(f.files)}{tail}")
        try:
            return {k: f[k] for k in f.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise InputError(f"{path}: not a readable .npz file ({e})") from e
