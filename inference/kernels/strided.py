"""Operands of any strides (broadcast ones included) as flat windows, element strides and an axis
odometer, for the numba kernels that read them: Where over a mask, Expand, a strided Slice.

Why: those kernels had walked their operands row by row of the last axis with ``np.ndindex`` over
numpy's broadcast views, each row a view of a view; a causal mask's ``Where`` over GPT scores of
(1, 4, 32, 32) took 22 us, numpy's ``where`` 4.8. Here the shape is first coalesced as numpy's own
iterator does (axes of one dropped, an axis merged into the next wherever every operand steps
through both as one), so that mask is 4 rows of 1024, and each row is one loop over offsets.

The windows view the operands' own memory (no copy made in Python), so a kernel replay
(:mod:`inference.kernel_replay`) that reruns the numba call reads the buffers the record read.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np


class Strided:
    """Operands broadcast to one shape (``out_shape``, of ``size`` elements): the coalesced
    ``shape`` (int64, rank >= 1), ``strides`` (operands x rank, in elements), the element offset of
    each operand's first element in its window (``offsets``) and the ``windows`` (flat views holding
    every element each one reads)."""

    __slots__ = ("out_shape", "size", "shape", "strides", "offsets", "windows")

    def __init__(self, layout: tuple, offsets: np.ndarray, windows: list[np.ndarray]):
        self.out_shape, self.size, self.shape, self.strides = layout
        self.offsets, self.windows = offsets, windows


def strided(*operands: np.ndarray, shape: tuple[int, ...] = ()) -> Strided | None:
    """``operands`` broadcast together (and to ``shape``) as a :class:`Strided`; None when one's
    memory cannot be windowed (a view of a non-contiguous array or of another dtype: the caller
    copies instead). Raises ValueError, as numpy, for shapes that do not broadcast."""
    windows = []
    for a in operands:
        if a.flags.c_contiguous:
            windows.append((a.reshape(-1), 0))
        else:
            windows.append(_window(a))
            if windows[-1] is None:
                return None
    layout = _layout(shape, tuple((a.shape, a.strides, a.itemsize) for a in operands))
    offsets = _ZEROS[len(operands)] if not any(w[1] for w in windows) else np.array([w[1] for w in windows], np.int64)
    return Strided(layout, offsets, [w[0] for w in windows])


_ZEROS = [np.zeros(n, np.int64) for n in range(8)]
for _z in _ZEROS:
    _z.flags.writeable = False


@functools.lru_cache(maxsize=1024)
def _layout(shape: tuple[int, ...], operands: tuple) -> tuple:
    """(broadcast shape, its size, the coalesced shape, each operand's element strides along it)
    from each operand's (shape, byte strides, item size): a run's shapes repeat, so this is worked
    out once per layout."""
    out_shape = np.broadcast_shapes(shape, *(dims for dims, _, _ in operands))
    rank = len(out_shape)
    steps = [[0 if d < rank - len(dims) or dims[d - rank + len(dims)] == 1 else own[d - rank + len(dims)] // size
              for d in range(rank)] for dims, own, size in operands]
    axes: list[tuple[int, list[int]]] = []  # (length, each operand's stride), outermost first
    for d, n in enumerate(out_shape):
        if n == 1:
            continue
        column = [s[d] for s in steps]
        if axes and all(outer == inner * n for outer, inner in zip(axes[-1][1], column)):
            axes[-1] = (axes[-1][0] * n, column)  # the previous axis steps as this one continued
        else:
            axes.append((n, column))
    axes = axes or [(1, [0] * len(operands))]
    dims, strides = np.array([n for n, _ in axes], np.int64), np.array([c for _, c in axes], np.int64).T.copy()
    dims.flags.writeable = strides.flags.writeable = False  # shared by every call of the layout
    return out_shape, math.prod(out_shape), dims, strides


def _window(a: np.ndarray) -> tuple[np.ndarray, int] | None:
    """A flat view of the contiguous array the non-contiguous ``a`` views (a Slice's part of its
    input) and the offset of ``a``'s first element in it; None when there is none of its dtype or
    ``a``'s strides are not whole elements."""
    size = a.itemsize
    root = a.base
    while isinstance(root, np.ndarray) and root.base is not None and not root.flags.c_contiguous:
        root = root.base
    if not (isinstance(root, np.ndarray) and root.flags.c_contiguous and root.dtype == a.dtype
            and all(s % size == 0 for s in a.strides)):
        return None
    first = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    if first % size:
        return None
    return root.reshape(-1), first // size


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def advance(index, shape, strides, offsets):
    """Step the odometer ``index`` over every axis but the last one, each operand's offset with it."""
    d = shape.size - 2
    while d >= 0:
        index[d] += 1
        for k in range(offsets.size):
            offsets[k] += strides[k, d]
        if index[d] < shape[d]:
            return
        for k in range(offsets.size):
            offsets[k] -= strides[k, d] * shape[d]
        index[d] = 0
        d -= 1


@numba.njit(cache=True, error_model="numpy", nogil=True)
def where_strided(shape, strides, offsets, c, x, y, out):
    """``out = c ? x : y`` into the flat contiguous ``out``, the operands read at their strides."""
    inner = shape[shape.size - 1]
    index = np.zeros(shape.size, np.int64)
    at = offsets.copy()
    sc, sx, sy = strides[0, shape.size - 1], strides[1, shape.size - 1], strides[2, shape.size - 1]
    for o in range(0, out.size, inner):
        _where_row(c, at[0], sc, x, at[1], sx, y, at[2], sy, out[o:o + inner])
        advance(index, shape, strides, at)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _where_row(c, oc, sc, x, ox, sx, y, oy, sy, out):
    """One row, each operand's first element at its offset: the common strides (a mask and a
    tensor along the row, a scalar fill) as loops over views from there, which vectorise; any other
    (a reversed axis steps back) by offsets into the whole window."""
    if sc == 1 and sy == 1 and sx == 0:
        cc, yy, v = c[oc:], y[oy:], x[ox]
        for j in range(out.size):
            out[j] = v if cc[j] else yy[j]
    elif sc == 1 and sx == 1 and sy == 0:
        cc, xx, v = c[oc:], x[ox:], y[oy]
        for j in range(out.size):
            out[j] = xx[j] if cc[j] else v
    elif sc == 1 and sx == 1 and sy == 1:
        cc, xx, yy = c[oc:], x[ox:], y[oy:]
        for j in range(out.size):
            out[j] = xx[j] if cc[j] else yy[j]
    else:
        for j in range(out.size):
            out[j] = x[ox + j * sx] if c[oc + j * sc] else y[oy + j * sy]


@numba.njit(cache=True, error_model="numpy", nogil=True)
def copy_strided(shape, strides, offsets, x, out):
    """``out = x`` into the flat contiguous ``out``, ``x`` read at its strides."""
    inner = shape[shape.size - 1]
    index = np.zeros(shape.size, np.int64)
    at = offsets.copy()
    sx = strides[0, shape.size - 1]
    for o in range(0, out.size, inner):
        d = out[o:o + inner]
        if sx == 1:  # views indexed from 0: the copy vectorises
            s = x[at[0]:]
            for j in range(inner):
                d[j] = s[j]
        else:  # offsets into the whole window: a reversed axis steps back
            for j in range(inner):
                d[j] = x[at[0] + j * sx]
        advance(index, shape, strides, at)


def copy_into(x: np.ndarray, out: np.ndarray) -> bool:
    """``out[...] = x`` (``x`` broadcast to the contiguous ``out``) in numba; False (nothing
    written) where :func:`strided` declines."""
    s = strided(x, shape=out.shape)
    if s is None:
        return False
    copy_strided(s.shape, s.strides, s.offsets, s.windows[0], out.reshape(-1))
    return True
