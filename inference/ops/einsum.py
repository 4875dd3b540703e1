"""Tensor contractions and determinants: Einsum (numpy's einsum) and Det (batched LU determinant)."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register


@register("Einsum", since=12)
def einsum(*inputs, equation):
    eq = equation.replace(" ", "")
    lhs = eq.split("->")[0]
    if lhs.count(",") + 1 != len(inputs):
        raise KernelError(f"Einsum: equation {equation!r} names {lhs.count(',') + 1} operands, "
                          f"got {len(inputs)} inputs")
    out_type = np.result_type(*inputs)
    if out_type.kind == "V":  # ml_dtypes (bfloat16, float8...): numpy cannot einsum them natively
        inputs = [i.astype(np.float32) for i in inputs]
    try:
        out = np.einsum(eq, *inputs, optimize=len(inputs) > 2)
    except ValueError as exc:
        raise KernelError(f"Einsum: {equation!r} does not fit the input shapes "
                          f"{[i.shape for i in inputs]}: {exc}") from exc
    return np.asarray(out).astype(out_type)


@register("Det", since=11)
def det(x):
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise KernelError(f"Det: input must be (..., M, M), got shape {x.shape}")
    work = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
    return np.asarray(np.linalg.det(work), dtype=x.dtype)
