"""Slice of float32 tensors: a view where the part is one contiguous block, else copied in numba.

Why: the reference copies a strided part with numpy (``ascontiguousarray``), which a kernel replay
(:mod:`inference.kernel_replay`, repeating only numba calls) cannot repeat, so one such Slice kept a
whole model step by step: a YOLO-style C2f block's ``chunk`` along the channels exports as two
Slices, and channels-last (:mod:`inference.passes.layout`) every channel slice is strided. The
index is the reference's own (:func:`inference.ops.indexing.slice_index`), so clamping, negative
steps and errors are the same. A part taken along one axis with step 1 is copied as a band of
columns of (outer rows, the rest) by the threads; any other part at its strides (:mod:`inference.kernels.strided`).
"""
from __future__ import annotations

import math

import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels.row_copies import copy_from_columns
from inference.kernels.strided import copy_into
from inference.ops._axes import int_list
from inference.ops.indexing import slice_, slice_index
from inference.ops.registry import register


@register("Slice", since=10, kind="fast", applies=float32_input)
def slice_float32(x, starts, ends, axes=None, steps=None):
    if type(x) is not np.ndarray or x.dtype != np.float32 or x.ndim == 0:
        return slice_(x, starts, ends, axes, steps)
    index = slice_index(x.shape, int_list(starts), int_list(ends), int_list(axes), int_list(steps))
    part = x[index]
    if part.flags.c_contiguous or not part.size:
        return part
    y = np.empty(part.shape, np.float32)
    moved = [a for a, s in enumerate(index) if s != slice(0, x.shape[a], 1) and s != slice(None)]
    if len(moved) == 1 and index[moved[0]].step == 1 and x.flags.c_contiguous:
        axis = moved[0]
        rows, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1:])
        copy_from_columns(x.reshape(rows, -1), y.reshape(rows, -1), index[axis].start * inner)
    elif not copy_into(part, y):
        return slice_(x, starts, ends, axes, steps)
    return y
