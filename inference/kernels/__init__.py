"""Fast kernels (numba ``cache=True`` and BLAS through numpy); importing this package registers them.

Each module registers ``kind="fast"`` kernels with an ``applies`` predicate, so the session picks
them over the reference ops of ``inference.ops`` (which stay the oracles in the tests). The ops of
our own domain that the fusion pass creates (``edgelearn::FusedConv``/``FusedMatMul``) are declared
in :mod:`inference.kernels.fused`.
"""
from __future__ import annotations

from inference.kernels._cache_guard import guard_package
from inference.submodules import import_submodules

import_submodules(__name__, __path__)
guard_package(__name__)  # before any kernel loads its cached machine code
