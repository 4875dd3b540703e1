"""Backward-only and training-mode kernels (ops of domain ``edgelearn.grad``).

They extend the inference registry by registration: importing this package imports every
module in it, which registers each kernel with ``inference.ops.registry`` and its schema with
``inference.schema``, so the session runs a backward graph like any other graph.
"""
from __future__ import annotations

from inference.kernels._cache_guard import guard_package
from inference.submodules import import_submodules

import_submodules(__name__, __path__)
guard_package(__name__)  # before any kernel loads its cached machine code
