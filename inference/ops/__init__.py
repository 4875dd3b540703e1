"""Reference kernels, one module per op or op family; importing this package registers them all."""
from __future__ import annotations

import importlib
import pkgutil

from inference.ops.registry import KernelContext, lookup, register, registered_ops


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "registry" and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


_load_all()
# the fast kernels (and the fused ops of our own domain) register beside the references, so any
# session — and a saved optimized model loaded without the passes — finds them
importlib.import_module("inference.kernels")

__all__ = ["KernelContext", "lookup", "register", "registered_ops"]
