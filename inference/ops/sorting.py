"""Ops that order or rank elements: TopK, ArgMax, ArgMin, Unique (ties always go to the lower index
unless asked otherwise)."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops._axes import normalize_axis, scalar
from inference.ops.registry import register


def stable_order(x: np.ndarray, axis: int, descending: bool) -> np.ndarray:
    """Indices sorting ``x`` along ``axis``; equal values keep their input order either way."""
    if not descending:
        return np.argsort(x, axis=axis, kind="stable")
    n = x.shape[axis]
    flipped = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
    return n - 1 - np.flip(flipped, axis)


def _topk(x: np.ndarray, k: int, axis: int, largest: int = 1):
    axis = normalize_axis(axis, x.ndim, "TopK axis")
    if not 0 <= k <= x.shape[axis]:
        raise KernelError(f"TopK: k={k} is out of range for an axis of size {x.shape[axis]}")
    order = stable_order(x, axis, descending=bool(largest))
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)


@register("TopK", since=1)
def topk_v1(x, *, k, axis=-1):
    return _topk(x, k, axis)


@register("TopK", since=10)
def topk(x, k, *, axis=-1, largest=1, sorted=1):
    """``sorted=0`` leaves the order unspecified, so the sorted result serves both."""
    return _topk(x, int(scalar(k)), axis, largest)


def _arg_extreme(x: np.ndarray, find, axis: int, keepdims: int, select_last_index: int) -> np.ndarray:
    axis = normalize_axis(axis, x.ndim, "axis")
    if x.shape[axis] == 0:
        raise KernelError(f"cannot take the arg-extreme of an empty axis {axis}")
    if select_last_index:
        idx = x.shape[axis] - 1 - find(np.flip(x, axis), axis=axis, keepdims=bool(keepdims))
    else:
        idx = find(x, axis=axis, keepdims=bool(keepdims))
    return np.asarray(idx, dtype=np.int64)


@register("ArgMax", since=1)
def argmax(x, *, axis=0, keepdims=1, select_last_index=0):
    return _arg_extreme(x, np.argmax, axis, keepdims, select_last_index)


@register("ArgMin", since=1)
def argmin(x, *, axis=0, keepdims=1, select_last_index=0):
    return _arg_extreme(x, np.argmin, axis, keepdims, select_last_index)


@register("Unique", since=11)
def unique(x, *, axis=None, sorted=1, ctx):
    """Y, first-occurrence indices, inverse indices, counts; in sorted or first-occurrence order."""
    if axis is not None:
        axis = normalize_axis(axis, x.ndim, "Unique axis")
    y, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True,
                                          return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not sorted:
        order = np.argsort(first, kind="stable")
        y = np.take(y, order, axis=0 if axis is None else axis)
        first, counts = first[order], counts[order]
        inverse = np.argsort(order)[inverse]
    outs = (y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64))
    return outs[:ctx.num_outputs]
