"""Numba's on-disk cache of a package's kernels, dropped as a whole when any of its sources changed.

Why: numba keys each cached function by its own file's size and time stamp only. A kernel that
calls a helper from another module keeps the helper's old machine code after only that module
changed, so an in-place upgrade or an edit can run stale code, slower or wrong: in two modules,
``g(x) = f(x) * 10`` kept returning the old ``f``'s result after ``f`` changed; here, after
``rows_gemm.py`` changed, EfficientNet-Lite0 ran 8% slower until the cache was cleared. So each
directory numba caches a package's functions in holds a stamp of all the package's sources; a
process that finds it differ removes the package's cached functions (they compile again on first
use) and writes the new stamp. Functions compiled in this process stay as they are.
"""
from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterable

STAMP = "edgelearn-sources.stamp"


def sources_stamp(package_dir: Path) -> str:
    """A digest of the name, size and modification time of every ``.py`` file in ``package_dir``
    (what numba compares per file, taken over the package)."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.glob("*.py")):
        st = path.stat()
        digest.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_dirs(modules: Iterable[ModuleType]) -> set[Path]:
    """The directories numba caches these modules' own functions in (``cache=True`` dispatchers at
    module level, and the serial and parallel twins of :func:`~inference.kernels._jit.threaded_kernel`;
    not those a module imported from elsewhere, whose package guards its own)."""
    modules = list(modules)
    names = {m.__name__ for m in modules}
    dirs: set[Path] = set()
    for module in modules:
        for value in vars(module).values():
            for fn in (value, getattr(value, "serial", None), getattr(value, "parallel", None)):
                path = getattr(getattr(fn, "_cache", None), "_cache_path", None)
                if isinstance(path, str) and getattr(getattr(fn, "py_func", None), "__module__", None) in names:
                    dirs.add(Path(path))
    return dirs


def guard(package_dir: Path, modules: Iterable[ModuleType]) -> list[Path]:
    """Remove the cached functions of ``modules`` (the package in ``package_dir``) from each of their
    cache directories whose stamp differs from the sources now; returns the files removed. A cache
    that cannot be read or written is left to numba, with a warning."""
    modules = list(modules)
    stamp = sources_stamp(package_dir)
    stems = {Path(m.__file__).stem for m in modules if getattr(m, "__file__", None)}
    removed: list[Path] = []
    for directory in cache_dirs(modules):
        marker = directory / STAMP
        try:
            if marker.is_file() and marker.read_text() == stamp:
                continue
            directory.mkdir(parents=True, exist_ok=True)  # numba makes it when it locates the cache
            for path in directory.iterdir():
                if path.suffix in (".nbi", ".nbc") and path.name.split(".", 1)[0] in stems:
                    path.unlink(missing_ok=True)
                    removed.append(path)
            partial = directory / f"{STAMP}.{os.getpid()}"
            try:
                partial.write_text(stamp)
                os.replace(partial, marker)  # whole or absent: a reader never sees half a stamp
            finally:
                partial.unlink(missing_ok=True)  # a failed write leaves no partial stamp behind
        except OSError as e:
            warnings.warn(f"numba cache in {directory}: could not check it against {package_dir}'s sources "
                          f"({e}); a kernel may run code cached before a helper it calls changed", RuntimeWarning,
                          stacklevel=2)
    return removed


def guard_package(name: str) -> list[Path]:
    """:func:`guard` for the imported package ``name`` and every module of it imported so far."""
    package = sys.modules[name]
    modules = [m for n, m in list(sys.modules.items()) if n == name or n.startswith(name + ".")]
    return guard(Path(package.__file__).parent, modules)
