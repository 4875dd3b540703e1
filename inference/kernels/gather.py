"""Gather as row copies in numba: embedding lookups by token id (float32 tables, and the 8-bit
ones of a quantized model: onnxruntime's ``quantize_dynamic`` stores the token table int8 before a
DequantizeLinear), and PyTorch's split of a fused q/k/v projection (``Gather(qkv, 0)``, ...).

numpy's ``take`` is as fast, but a kernel replay (:mod:`inference.kernel_replay`) repeats only
numba calls: a transformer with a numpy Gather ran step by step. The indices are checked in the
kernel too (a replay skips this module's Python), raising there, so that the run is made again
step by step and the reference op names the bad index.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.kernels._applies import input_of_type
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.kernels.memcpy_ir import copy_run
from inference.ops import indexing as reference
from inference.ops.registry import register


@threaded_kernel()
def gather_rows(data, idx, out):
    """``out (pre, m, post)[p, j] = data (pre, n, post)[p, idx[j]]`` (flat arrays), a negative
    index counting from the end; IndexError for one outside ``[-n, n)``."""
    pre, n, post = data.shape
    m = idx.size
    for j in range(m):
        if idx[j] < -n or idx[j] >= n:
            raise IndexError("Gather: index out of range")
    flat_in, flat_out = data.reshape(-1), out.reshape(-1)
    for t in numba.prange(pre * m):
        p, j = t // m, t % m
        k = idx[j] + n if idx[j] < 0 else idx[j]
        copy_run(flat_out, t * post, flat_in, (p * n + k) * post, post)


#: the data types gathered here, by ONNX element type: tables of numbers. int64 data is shape
#: arithmetic (``Shape -> Gather``), a few entries the reference indexes for less than a kernel call;
#: float16 is not a numba type (a half model's tables are widened to float32 first)
TABLE_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 11: np.float64,
               12: np.uint32}
_TABLE_DTYPES = frozenset(np.dtype(t) for t in TABLE_TYPES.values())


def _table_input(node, graph) -> bool:
    return input_of_type(node, graph, tuple(TABLE_TYPES))


@register("Gather", since=1, kind="fast", applies=_table_input)
def gather_table(data, indices, *, axis=0):
    if (type(data) is not np.ndarray or data.dtype not in _TABLE_DTYPES or not -data.ndim <= axis < data.ndim
            or indices.dtype.kind not in "iu" or indices.dtype.itemsize > 8):
        return reference.gather(data, indices, axis=axis)
    axis %= data.ndim
    n = data.shape[axis]
    idx = np.ascontiguousarray(indices).reshape(-1)
    if idx.dtype.kind == "u":
        idx = idx.astype(np.int64)
    out = new_output(data.shape[:axis] + indices.shape + data.shape[axis + 1:], data.dtype)
    if out.size:
        pre, post = math.prod(data.shape[:axis]), math.prod(data.shape[axis + 1:])
        try:  # the kernel checks the indices (a numpy min and max here cost more than its copy)
            gather_rows(np.ascontiguousarray(data).reshape(pre, n, post), idx, out.reshape(pre, idx.size, post))
        except IndexError:
            return reference.gather(data, indices, axis=axis)  # its error names the index
    elif idx.size and (idx.min() < -n or idx.max() >= n):  # nothing copied, nothing checked
        return reference.gather(data, indices, axis=axis)
    return out
