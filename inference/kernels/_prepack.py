"""One cache for what kernels derive from a weight array once: packed tiles, CSR forms, constants.

Why: a Predictor's session hands a kernel the same initializer object on every run, so work that
depends only on the weight (onnxruntime's pre-packing) is done on the first call and kept while
the array lives. Keyed by the array's identity, not its contents (hashing a weight costs as much
as the product at batch 1), so callers use it only for arrays that never change in place: the
kernel kinds a Predictor plans (``inference.session.CONSTANT_WEIGHT_KINDS``) or int8 weights.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Hashable

import numpy as np

_KEPT: dict[tuple[int, Hashable], tuple[weakref.ref, Any]] = {}


def prepacked(w: np.ndarray, tag: Hashable, build: Callable[[], Any]) -> Any:
    """``build()`` for weight ``w`` under ``tag`` (what is derived, and how), built on the first call
    and returned again while ``w`` lives; the entry goes with the array. An array that cannot be
    weakly referenced gets a fresh ``build()`` every call."""
    key = (id(w), tag)
    hit = _KEPT.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    value = build()
    try:
        _KEPT[key] = (weakref.ref(w, lambda _r, k=key: _KEPT.pop(k, None)), value)
    except TypeError:
        pass
    return value


def constant_weight(graph: Any, name: str) -> np.ndarray | None:
    """``name``'s array when it is an initializer no feed can override (what may be prepacked at
    plan time), else None: the passes' test, imported on use (the passes import the kernels)."""
    from inference.passes._rewrite import constant_value

    return constant_value(graph, name)
