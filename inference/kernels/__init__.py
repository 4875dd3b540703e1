"""Fast kernels (numba ``cache=True`` and BLAS through numpy); importing this package registers them.

Each module registers ``kind="fast"`` kernels with an ``applies`` predicate, so the session picks
them over the reference ops of ``inference.ops`` (which stay the oracles in the tests). The ops of
our own domain that the fusion pass creates (``edgelearn::FusedConv``/``FusedMatMul``) are declared
in :mod:`inference.kernels.fused`.
"""
from __future__ import annotations

import importlib
import pkgutil

from inference.kernels._cache_guard import guard_package


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


_load_all()
guard_package(__name__)  # before any kernel loads its cached machine code
