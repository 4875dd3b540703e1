"""Fast float32 LogSoftmax over any axis: ``(x - max) - log(sum(exp(x - max)))`` in numba.

Why: the reference's numpy passes (max, subtract, exp, sum, log, subtract) each make a full-size
temporary, and a kernel replay (:mod:`inference.kernel_replay`) repeats only numba calls: a
classifier or CTC head ending in LogSoftmax ran step by step. The axis dispatch and the
middle-axis columns are Softmax's (:func:`~inference.kernels.norm.over_axis`,
:func:`~inference.kernels.norm.softmax_columns` with ``log``); the last axis is a row per step
here: its maximum (ArgMax's keyed pass, :func:`~inference.kernels.arg_reduce.extreme_into`), the
shifted exponentials summed in float64 (:func:`~inference.kernels.vmath.exp_shifted`, Cephes
expf), then ``(x - max) - log(sum)`` in that order (:func:`~inference.kernels.norm.minus_log_sum`
says why). Measured on 64 rows of 1000 (one thread, a shared machine): 39 us a call, the
reference 80-86 (the running float maximum first written here had taken 120); as a model
(``benchmarks/select_ops.py``) 47 us step by step, the reference 91, onnxruntime 26.

NaN and inf as the reference: a NaN in a row (column) makes its every output NaN, as a +inf does
(``inf - inf``), and a row of -inf is NaN; a single -inf gives -inf. Other dtypes and a bad axis go
to the reference (:mod:`inference.ops.softmax`), which names the axis.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels._jit import parallel_chunks, threaded_kernel
from inference.kernels.arg_reduce import extreme_into
from inference.kernels.arena_slot import new_scratch
from inference.kernels.norm import of_rows, over_axis
from inference.kernels.vmath import FAST_FINITE, exp_shifted
from inference.ops.registry import lookup, register


@threaded_kernel(fastmath=FAST_FINITE)
def log_softmax_rows_of(x, y, rows, n, bits):
    """Row-wise log-softmax of the flat ``x`` (``rows`` x ``n``) into ``y``, the rows in
    ``bits.shape[0]`` parallel parts, each with its int32 scratch row ``bits[p]`` (exp's bits); the
    exponentials go to the output row, which the last pass then overwrites."""
    parts = bits.shape[0]
    for p in numba.prange(parts):
        b = bits[p]
        for i in range(p * rows // parts, (p + 1) * rows // parts):
            row, out = x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]
            top = _row_max(row, b[:1])
            total = exp_shifted(row, top, out, b[:n])
            _minus(row, top, np.float32(np.log(total)), out)


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=False)
def _row_max(row, cell):
    """The maximum of the contiguous ``row``, NaN if it holds one: ArgMax's keyed pass (integer
    compares that vectorise, :func:`~inference.kernels.arg_reduce.extreme_into`) through ``cell``
    (int32 scratch of one element)."""
    extreme_into(row, True, cell.view(np.float32))
    return cell.view(np.float32)[0]


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=False)
def _minus(src, top, log_sum, dst):
    """``dst = (src - top) - log_sum`` without fast-math, as :func:`~inference.kernels.norm.
    minus_log_sum` by a row's scalars (``fastmath=False`` stated for the same reason)."""
    for k in range(dst.size):
        dst[k] = (src[k] - top) - log_sum


def log_softmax_rows(x: np.ndarray, y: np.ndarray, rows: int, n: int) -> None:
    """:func:`log_softmax_rows_of` with its scratch from the step's workspace (a
    :data:`~inference.kernels.norm.RowsKernel`)."""
    log_softmax_rows_of(x, y, rows, n, new_scratch((parallel_chunks(rows), n), np.int32))


@register("LogSoftmax", since=13, kind="fast", applies=float32_input)
def log_softmax(x, *, axis=-1):
    if x.dtype != np.float32 or x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        return lookup("LogSoftmax", "", 13).fn(x, axis=axis)
    return over_axis(x, axis % x.ndim, log_softmax_rows, log=True)


@register("LogSoftmax", since=1, kind="fast", applies=float32_input)
def log_softmax_flattened(x, *, axis=1):
    """Opsets 1-12: rows of ``x`` flattened to 2-D at ``axis``."""
    if x.dtype != np.float32 or x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        return lookup("LogSoftmax", "", 1).fn(x, axis=axis)
    return of_rows(x, axis % x.ndim, log_softmax_rows)
