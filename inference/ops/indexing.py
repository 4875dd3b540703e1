"""Ops that read or write elements at computed positions: Slice, Gather, GatherElements, GatherND,
Scatter, ScatterElements, ScatterND, TensorScatter, Compress, NonZero, OneHot."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops._axes import (check_index_range, index_error, int_list, normalize_axes, normalize_axis,
                                 positive_index, scalar)
from inference.ops.registry import register


# --- Slice -----------------------------------------------------------------------------------

def onnx_slice(start: int, end: int, step: int, dim: int) -> slice:
    """The Python slice equal to ONNX's clamped [start, end) with ``step`` on an axis of ``dim``."""
    if step == 0:
        raise KernelError("Slice: steps must not be 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start, end = min(max(start, -1), dim - 1), min(max(end, -1), dim - 1)
    if start < 0:
        return slice(0, 0)
    return slice(start, None if end < 0 else end, step)


def slice_index(shape: tuple[int, ...], starts, ends, axes=None, steps=None) -> tuple[slice, ...]:
    """The Python index of ONNX's Slice on a tensor of ``shape`` (lists of ints; axes and steps
    optional), its inputs checked."""
    if len(starts) != len(ends):
        raise KernelError(f"Slice: {len(starts)} starts but {len(ends)} ends")
    axes = list(range(len(starts))) if axes is None else normalize_axes(axes, len(shape), "Slice axes")
    steps = [1] * len(starts) if steps is None else steps
    if not len(axes) == len(steps) == len(starts):
        raise KernelError("Slice: starts, ends, axes and steps must have the same length")
    index = [slice(None)] * len(shape)
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a] = onnx_slice(s, e, st, shape[a])
    return tuple(index)


def _slice(x: np.ndarray, starts, ends, axes=None, steps=None) -> np.ndarray:
    return np.ascontiguousarray(x[slice_index(x.shape, starts, ends, axes, steps)])


@register("Slice", since=1)
def slice_v1(x, *, starts, ends, axes=None):
    return _slice(x, starts, ends, axes)


@register("Slice", since=10)
def slice_(x, starts, ends, axes=None, steps=None):
    return _slice(x, int_list(starts), int_list(ends), int_list(axes), int_list(steps))


# --- Gather family ---------------------------------------------------------------------------

@register("Gather", since=1)
def gather(data, indices, *, axis=0):
    axis = normalize_axis(axis, data.ndim, "Gather axis")
    if type(indices) is np.ndarray and indices.ndim == 0 and indices.dtype.kind in "iu":
        # one entry (torch's Shape -> Gather(i), ~20 a decoder step): indexed, not np.take's 7 us
        n, i = data.shape[axis], int(indices)
        if not -n <= i < n:
            raise index_error("Gather", n)
        return np.array(data[(slice(None),) * axis + (i,)])
    idx = positive_index(indices, data.shape[axis])
    check_index_range(idx, data.shape[axis], "Gather")
    return np.asarray(np.take(data, idx, axis=axis))


@register("GatherElements", since=11)
def gather_elements(data, indices, *, axis=0):
    axis = normalize_axis(axis, data.ndim, "GatherElements axis")
    if indices.ndim != data.ndim:
        raise KernelError(f"GatherElements: indices rank {indices.ndim} != data rank {data.ndim}")
    idx = positive_index(indices, data.shape[axis])
    check_index_range(idx, data.shape[axis], "GatherElements")
    window = tuple(slice(None) if a == axis else slice(0, n) for a, n in enumerate(indices.shape))
    return np.take_along_axis(data[window], idx, axis=axis)


def _nd_index(data_shape: tuple[int, ...], indices: np.ndarray, op: str) -> tuple[np.ndarray, ...]:
    """The last axis of ``indices`` (k-tuples into the leading k dims of data) as k index arrays."""
    k = indices.shape[-1]
    if k > len(data_shape):
        raise KernelError(f"{op}: indices.shape[-1]={k} exceeds the data rank {len(data_shape)}")
    cols = []
    for d in range(k):
        col = positive_index(indices[..., d], data_shape[d])
        check_index_range(col, data_shape[d], op)
        cols.append(col)
    return tuple(cols)


@register("GatherND", since=11)
def gather_nd(data, indices, *, batch_dims=0):
    b = batch_dims
    if not 0 <= b < min(data.ndim, indices.ndim):
        raise KernelError(f"GatherND: batch_dims={b} must be below the ranks of data and indices")
    if data.shape[:b] != indices.shape[:b]:
        raise KernelError(f"GatherND: batch dims differ: {data.shape[:b]} vs {indices.shape[:b]}")
    batch = int(np.prod(data.shape[:b], dtype=np.int64))
    flat_data = data.reshape(batch, *data.shape[b:])
    flat_idx = indices.reshape(batch, -1, indices.shape[-1])
    cols = _nd_index(flat_data.shape[1:], flat_idx, "GatherND")
    batch_col = np.arange(batch)[:, None]
    gathered = flat_data[(batch_col, *cols)]
    k = indices.shape[-1]
    return gathered.reshape(*indices.shape[:-1], *data.shape[b + k:])


# --- Scatter family --------------------------------------------------------------------------

_REDUCERS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def scatter_into(data: np.ndarray, index: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    """A copy of ``data`` with ``updates`` written (or reduced) at the advanced ``index``."""
    out = data.copy()
    if reduction == "none":
        out[index] = updates
    elif reduction in _REDUCERS:
        _REDUCERS[reduction].at(out, index, updates)
    else:
        raise KernelError(f"unknown reduction {reduction!r} (expected none, add, mul, max or min)")
    return out


@register("ScatterElements", since=11)
def scatter_elements(data, indices, updates, *, axis=0, reduction="none"):
    axis = normalize_axis(axis, data.ndim, "ScatterElements axis")
    if indices.shape != updates.shape or indices.ndim != data.ndim:
        raise KernelError(f"ScatterElements: indices {indices.shape} and updates {updates.shape} "
                          f"must have one shape, of the rank of data {data.shape}")
    idx = positive_index(indices, data.shape[axis])
    check_index_range(idx, data.shape[axis], "ScatterElements")
    index = list(np.indices(indices.shape, sparse=True))
    index[axis] = idx
    return scatter_into(data, tuple(index), updates, reduction)


@register("Scatter", since=9)
def scatter(data, indices, updates, *, axis=0):
    """Deprecated alias of ScatterElements without reduction."""
    return scatter_elements(data, indices, updates, axis=axis)


@register("ScatterND", since=11)
def scatter_nd(data, indices, updates, *, reduction="none"):
    k = indices.shape[-1]
    expected = indices.shape[:-1] + data.shape[k:]
    if updates.shape != expected:
        raise KernelError(f"ScatterND: updates shape {updates.shape} != expected {expected}")
    return scatter_into(data, _nd_index(data.shape, indices, "ScatterND"), updates, reduction)


@register("TensorScatter", since=24)
def tensor_scatter(past_cache, update, write_indices=None, *, axis=-2, mode="linear"):
    axis = normalize_axis(axis, past_cache.ndim, "TensorScatter axis")
    if axis == 0:
        raise KernelError("TensorScatter: axis must not be the batch axis 0")
    if mode not in ("linear", "circular"):
        raise KernelError(f"TensorScatter: mode must be 'linear' or 'circular', got {mode!r}")
    batch, max_len, seq = past_cache.shape[0], past_cache.shape[axis], update.shape[axis]
    starts = np.zeros(batch, np.int64) if write_indices is None else write_indices.astype(np.int64)
    pos = starts[:, None] + np.arange(seq)  # (batch, seq)
    if mode == "circular":
        pos %= max_len
    check_index_range(pos, max_len, "TensorScatter write")
    shape = [1] * update.ndim
    shape[0], shape[axis] = batch, seq
    idx = np.broadcast_to(pos.reshape(shape), update.shape)
    out = past_cache.copy()
    np.put_along_axis(out, idx, update, axis=axis)
    return out


# --- selection and encoding ------------------------------------------------------------------

@register("Compress", since=9)
def compress(x, condition, *, axis=None):
    cond = np.asarray(condition).astype(bool).reshape(-1)
    if axis is None:
        return np.compress(cond, x.reshape(-1))
    axis = normalize_axis(axis, x.ndim, "Compress axis")
    if cond.size > x.shape[axis]:
        raise KernelError(f"Compress: condition has {cond.size} entries for axis of size {x.shape[axis]}")
    return np.compress(cond, x, axis=axis)


@register("NonZero", since=9)
def nonzero(x):
    if x.ndim == 0:
        return np.zeros((0, int(bool(x))), dtype=np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@register("OneHot", since=9)
def one_hot(indices, depth, values, *, axis=-1):
    depth = int(scalar(depth))
    if depth < 1:
        raise KernelError(f"OneHot: depth must be positive, got {depth}")
    if values.size != 2:
        raise KernelError(f"OneHot: values must hold [off_value, on_value], got shape {values.shape}")
    axis = normalize_axis(axis, indices.ndim + 1, "OneHot axis")
    idx = positive_index(np.asarray(indices).astype(np.int64), depth)
    mask = idx[..., None] == np.arange(depth)
    off, on = values.reshape(-1)
    out = np.where(mask, on, off).astype(values.dtype)
    return np.ascontiguousarray(np.moveaxis(out, -1, axis))
