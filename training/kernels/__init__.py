"""Backward-only and training-mode kernels (ops of domain ``edgelearn.grad``).

They extend the inference registry by registration: importing this package imports every
module in it, which registers each kernel with ``inference.ops.registry`` and its schema with
``inference.schema``, so the session runs a backward graph like any other graph.
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
