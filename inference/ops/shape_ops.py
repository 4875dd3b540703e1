"""Ops that only change or report a tensor's shape: Reshape, Flatten, Squeeze, Unsqueeze, Expand,
Shape, Size, Identity."""
from __future__ import annotations

import math

import numpy as np

from inference.errors import KernelError
from inference.ops._axes import int_list, normalize_axes
from inference.ops._memo import remember
from inference.ops.registry import register


def reshaped_dims(in_shape: tuple[int, ...], shape: list[int], allowzero: int = 0) -> tuple[int, ...]:
    """The output dims of Reshape: 0 copies the input dim (unless ``allowzero``), one -1 is inferred."""
    if shape.count(-1) > 1:
        raise KernelError(f"Reshape: shape {shape} has more than one -1")
    if allowzero and 0 in shape and -1 in shape:
        raise KernelError(f"Reshape: shape {shape} has both 0 and -1 while allowzero=1")
    dims = []
    for i, d in enumerate(shape):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise KernelError(f"Reshape: shape {shape} copies dim {i} of a rank-{len(in_shape)} input")
            d = in_shape[i]
        elif d < -1:
            raise KernelError(f"Reshape: invalid dim {d} in shape {shape}")
        dims.append(d)
    total = math.prod(in_shape)  # math.prod on Python ints: exact, and ~20x cheaper than np.prod here
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or total % known:
            raise KernelError(f"Reshape: cannot infer -1 in {shape} for input shape {in_shape}")
        dims[dims.index(-1)] = total // known
    if math.prod(dims) != total:
        raise KernelError(f"Reshape: input shape {in_shape} cannot be reshaped to {shape}")
    return tuple(dims)


@register("Reshape", since=1)
def reshape_v1(data, *, shape, consumed_inputs=None):
    return data.reshape(reshaped_dims(data.shape, list(shape)))


def _memo_dims(compute):
    """``bind`` for Flatten/Reshape: the output dims, computed (and checked) by ``compute(data, [shape,]
    **attrs)``, are memoised per input shape (and shape input), so a run is a dict lookup and a view."""

    def binder(fn):
        def bind(**attrs):
            dims: dict[tuple, tuple] = {}

            def run(data, *shape):
                if not shape:
                    key = data.shape
                elif isinstance(shape[0], np.ndarray):
                    key = (data.shape, shape[0].dtype.str, shape[0].tobytes())
                else:
                    return fn(data, *shape, **attrs)
                out = dims.get(key)
                if out is None:
                    out = remember(dims, key, compute(data, *shape, **attrs))
                return data.reshape(out)

            return run

        return bind

    return binder


def _reshape_dims(data, shape, allowzero=0) -> tuple[int, ...]:
    return reshaped_dims(data.shape, int_list(shape), allowzero)


@register("Reshape", since=5, bind=_memo_dims(_reshape_dims))
def reshape(data, shape, *, allowzero=0):
    return data.reshape(_reshape_dims(data, shape, allowzero))


def _flatten_dims(x, axis=1) -> tuple[int, int]:
    if not -x.ndim <= axis <= x.ndim:
        raise KernelError(f"Flatten: axis {axis} is out of range [-{x.ndim}, {x.ndim}]")
    axis = axis + x.ndim if axis < 0 else axis
    return math.prod(x.shape[:axis]), math.prod(x.shape[axis:])


@register("Flatten", since=1, bind=_memo_dims(_flatten_dims))
def flatten(x, *, axis=1):
    return x.reshape(_flatten_dims(x, axis))


def _squeezed_dims(x: np.ndarray, axes=None) -> tuple[int, ...]:
    if axes is None:
        return tuple(d for d in x.shape if d != 1)
    axes = normalize_axes(int_list(axes), x.ndim, "Squeeze axes")
    bad = [a for a in axes if x.shape[a] != 1]
    if bad:
        raise KernelError(f"Squeeze: axes {bad} of shape {x.shape} do not have size 1")
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


@register("Squeeze", since=1)
def squeeze_v1(x, *, axes=None):
    return x.reshape(_squeezed_dims(x, axes))


# opset 13 on: the axes an input, the dims memoised per shape as Reshape's (torch writes a Squeeze
# or Unsqueeze around every shape entry: ~20 a decoder step, 2 us each recomputed)
@register("Squeeze", since=13, bind=_memo_dims(_squeezed_dims))
def squeeze(x, axes=None):
    return x.reshape(_squeezed_dims(x, axes))


def _unsqueezed_dims(x: np.ndarray, axes) -> tuple[int, ...]:
    axes = int_list(axes)
    rank = x.ndim + len(axes)
    axes = normalize_axes(axes, rank, "Unsqueeze axes")
    dims = iter(x.shape)
    return tuple(1 if i in axes else next(dims) for i in range(rank))


@register("Unsqueeze", since=1)
def unsqueeze_v1(x, *, axes):
    return x.reshape(_unsqueezed_dims(x, axes))


@register("Unsqueeze", since=13, bind=_memo_dims(_unsqueezed_dims))
def unsqueeze(x, axes):
    return x.reshape(_unsqueezed_dims(x, axes))


@register("Expand", since=8)
def expand(x, shape):
    dims = int_list(shape)
    try:
        out_shape = np.broadcast_shapes(x.shape, tuple(dims))
    except ValueError as exc:
        raise KernelError(f"Expand: shape {dims} is not broadcast-compatible with {x.shape}") from exc
    return np.broadcast_to(x, out_shape).copy()


@register("Shape", since=1)
def shape(x, *, start=0, end=None):
    rank = x.ndim
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = rank if end is None else min(max(end + rank if end < 0 else end, 0), rank)
    return np.array(x.shape[start:end], dtype=np.int64)


@register("Size", since=1)
def size(x):
    return np.array(x.size, dtype=np.int64)


@register("Identity", since=1)
def identity(x):
    """Tensors, sequences (lists) and optionals (None or a value) pass through unchanged."""
    return x
