"""``inference.kernels._cache_guard``: numba's cached machine code of a package is dropped when any
of the package's sources changed, so a kernel never runs a helper's old code after only the
helper's module changed; an unchanged package keeps its cache. Each run is a fresh interpreter,
as a user's next process is."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from inference.kernels import _cache_guard

ROOT = Path(__file__).resolve().parents[1]


def _package(tmp_path: Path) -> Path:
    """``stalepkg``: ``g`` (in b.py) calls ``f`` (in a.py), both cached; the package guards its cache."""
    pkg = tmp_path / "stalepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from stalepkg import a, b
        from inference.kernels._cache_guard import guard_package
        guard_package(__name__)
    """))
    (pkg / "a.py").write_text("import numba\n\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1\n")
    (pkg / "b.py").write_text("import numba\nfrom stalepkg.a import f\n\n@numba.njit(cache=True)\ndef g(x):\n"
                              "    return f(x) * 10\n")
    return pkg


def _run(tmp_path: Path) -> tuple[int, int]:
    """``g(1)`` and how many of ``g``'s compilations came from the cache, in a fresh interpreter."""
    code = "from stalepkg.b import g; print(g(1), sum(g.stats.cache_hits.values()))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    value, hits = out.stdout.split()
    return int(value), int(hits)


def _edit(path: Path, old: str, new: str) -> None:
    st = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a later stamp, whatever the clock


def test_a_changed_helper_module_is_not_run_from_its_callers_cache(tmp_path):
    pkg = _package(tmp_path)
    assert _run(tmp_path) == (20, 0)  # compiled and cached
    assert _run(tmp_path) == (20, 1)  # unchanged: from the cache
    _edit(pkg / "a.py", "x + 1", "x + 2")  # only the helper's module changes; b.py's stamp stays
    assert _run(tmp_path) == (30, 0)  # numba alone would load g's old code (f inlined): 20
    assert _run(tmp_path) == (30, 1)
    assert (pkg / "__pycache__" / _cache_guard.STAMP).read_text() == _cache_guard.sources_stamp(pkg)


@pytest.mark.parametrize("failing", ["write", "rename"])
def test_a_cache_it_cannot_write_is_left_with_a_warning(tmp_path, monkeypatch, failing):
    """The stamp's write or its rename fails: a warning, and no partial stamp file left behind."""
    pkg = _package(tmp_path)
    _run(tmp_path)
    _edit(pkg / "a.py", "x + 1", "x + 3")
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("stalepkg")  # its import stamps the cache as it stands; the next write fails

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        _edit(pkg / "a.py", "x + 3", "x + 4")
        if failing == "write":
            monkeypatch.setattr(Path, "write_text", refuse)
        else:
            monkeypatch.setattr(_cache_guard.os, "replace", refuse)
        with pytest.warns(RuntimeWarning, match="could not check it against"):
            _cache_guard.guard_package("stalepkg")
        cache = pkg / "__pycache__"
        assert not [p.name for p in cache.iterdir() if p.name.startswith(_cache_guard.STAMP + ".")]
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "stalepkg" or n.startswith("stalepkg.")]:
            del sys.modules[name]
