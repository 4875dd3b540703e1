"""Fast float32 CumSum along any axis (``exclusive``, ``reverse``), in numba.

Why: the reference (``np.add.accumulate`` on a flipped view, then a concatenation for
``exclusive``) runs in numpy, which a kernel replay (:mod:`inference.kernel_replay`) cannot
repeat: a model with a CumSum (position ids from an attention mask, a running total) ran step by
step. ``x`` is viewed as (outer, r, inner) around the axis: the last axis (inner = 1) is a running
sum along each row; another adds each of its r rows of ``inner`` values to the running sums of
the columns (that loop vectorises). Measured (``benchmarks/select_ops.py``, one thread, a shared
machine, step by step): (8, 512) over the last axis 13 us, the reference 20, onnxruntime 18;
(4, 256, 64) over axis 1 reversed 33 us, the reference 242, onnxruntime 17.

The sums are float32 and sequential in the reference's order (from the end with ``reverse``), the
first element taken as is (not added to 0, so -0 stays -0) and ``exclusive`` shifting in +0:
numpy's accumulate adds exactly so, and the results are bitwise the reference's. The axis may be
an attribute-like constant or a run-time input (an int32 or int64 scalar). Other dtypes, a bad
axis (the reference names it) and empty tensors go to the reference (:mod:`inference.ops.
cumulative`).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.ops._axes import normalize_axis, scalar
from inference.ops.registry import lookup, register

_COLUMNS = 1024  # columns of one parallel work item (with inner > 1)


@threaded_kernel()
def cumsum_rows(x, exclusive, reverse, y):
    """``y`` = the running sums of ``x`` (outer, r, inner) along its middle axis, an outer row (or
    a run of :data:`_COLUMNS` of its columns) per parallel step; ``y`` (outer, r, inner) too."""
    outer, r, inner = x.shape
    chunks = -(-inner // _COLUMNS)
    for t in numba.prange(outer * chunks):
        o, lo = t // chunks, (t % chunks) * _COLUMNS
        if inner == 1:
            _running_sum(x[o, :, 0], exclusive, reverse, y[o, :, 0])
        else:
            _column_sums(x[o], exclusive, reverse, y[o], lo, min(inner, lo + _COLUMNS))


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=False)
def _column_sums(x, exclusive, reverse, y, lo, hi):
    """``y[:, lo:hi]`` = the running sums of ``x[:, lo:hi]`` (r, inner) down its rows, a row of
    columns at a time (:func:`cumsum_rows` with inner > 1)."""
    r = x.shape[0]
    for i in range(r):
        j = r - 1 - i if reverse else i  # the i-th row the sums meet
        src, dst = x[j, lo:hi], y[j, lo:hi]
        if i == 0:
            for k in range(hi - lo):
                dst[k] = np.float32(0.0) if exclusive else src[k]
            continue
        p = j + 1 if reverse else j - 1  # the row met before
        prev, before = y[p, lo:hi], x[p, lo:hi]
        if not exclusive:
            for k in range(hi - lo):
                dst[k] = prev[k] + src[k]
        elif i == 1:
            for k in range(hi - lo):
                dst[k] = before[k]
        else:
            for k in range(hi - lo):
                dst[k] = prev[k] + before[k]


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=False)
def _running_sum(row, exclusive, reverse, out):
    """``out`` = the running sums of ``row`` (:func:`cumsum_rows` with inner = 1)."""
    r = row.size
    s = np.float32(0.0)
    for i in range(r):
        j = r - 1 - i if reverse else i
        v = row[j]
        if exclusive:
            out[j] = s
            s = v if i == 0 else s + v
        else:
            s = v if i == 0 else s + v
            out[j] = s


@register("CumSum", since=11, kind="fast", applies=float32_input)
def cumsum(x, axis, *, exclusive=0, reverse=0):
    ref = lookup("CumSum", "", 11).fn
    if type(x) is not np.ndarray or x.dtype != np.float32 or x.ndim == 0 or not x.size:
        return ref(x, axis, exclusive=exclusive, reverse=reverse)
    a = normalize_axis(scalar(axis), x.ndim, "axis")
    shape = (math.prod(x.shape[:a]), x.shape[a], math.prod(x.shape[a + 1:]))
    y = new_output(x.shape)
    cumsum_rows(np.ascontiguousarray(x).reshape(shape), bool(exclusive), bool(reverse), y.reshape(shape))
    return y
