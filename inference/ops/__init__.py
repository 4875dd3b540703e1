"""Reference kernels, one module per op or op family; importing this package registers them all."""
from __future__ import annotations

import importlib

from inference.ops.registry import KernelContext, lookup, register, registered_ops
from inference.submodules import import_submodules

import_submodules(__name__, __path__, skip=("registry",))
# the fast kernels (and the fused ops of our own domain) register beside the references, so any
# session — and a saved optimized model loaded without the passes — finds them
importlib.import_module("inference.kernels")

__all__ = ["KernelContext", "lookup", "register", "registered_ops"]
