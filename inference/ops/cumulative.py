"""Running reductions along an axis: CumSum and CumProd (with exclusive and reverse)."""
from __future__ import annotations

import numpy as np

from inference.ops._axes import normalize_axis, scalar
from inference.ops.registry import register


def cumulative(x: np.ndarray, axis, ufunc: np.ufunc, exclusive: int, reverse: int) -> np.ndarray:
    """``ufunc.accumulate`` along ``axis`` in x's dtype; exclusive shifts in the identity element."""
    axis = normalize_axis(scalar(axis), x.ndim, "axis")
    data = np.flip(x, axis) if reverse else x
    out = ufunc.accumulate(data, axis=axis, dtype=x.dtype)
    if exclusive:
        head = [slice(None)] * x.ndim
        head[axis] = slice(0, 1)
        body = [slice(None)] * x.ndim
        body[axis] = slice(0, -1)
        ident = np.full_like(out[tuple(head)], ufunc.identity)
        out = np.concatenate([ident, out[tuple(body)]], axis=axis)
    return np.ascontiguousarray(np.flip(out, axis) if reverse else out)


@register("CumSum", since=11)
def cumsum(x, axis, *, exclusive=0, reverse=0):
    return cumulative(x, axis, np.add, exclusive, reverse)


@register("CumProd", since=26)
def cumprod(x, axis, *, exclusive=0, reverse=0):
    return cumulative(x, axis, np.multiply, exclusive, reverse)
