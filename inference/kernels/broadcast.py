"""Where, Expand and ConstantOfShape of float32 in numba, over numpy's broadcast views: the
attention-mask arithmetic of PyTorch exports (``Where(mask, -inf, 0)``, then ``Expand`` to the
heads), and the zero states of their recurrent layers.

These tensors are small (a (batch, seq) mask) and numpy's loops are as fast, but a kernel replay
(:mod:`inference.kernel_replay`) repeats only numba calls: a transformer taking an attention mask
ran step by step. The operands are broadcast by numpy (views with zero strides, made in Python, so
a replay reads the feeds' buffers through them) and walked row by row of the last axis.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Graph, Node, TensorType
from inference.kernels._applies import float32_input
from inference.kernels.arena_slot import new_output
from inference.ops import binary, generators, shape_ops
from inference.ops._axes import int_list
from inference.ops.registry import register

#: Expand's outputs larger than this go to numpy, whose copy of a broadcast view is 2-3x faster than
#: our strided row loop on large ones (8 x 4 x 128 x 128 from one 128-row: 97 us against 33). Where
#: has no limit: against numpy's ``where`` the loop is faster at every size measured (a causal mask
#: over 4 x 512 x 512 scores: 358 us against 606)
MAX_ELEMENTS = 1 << 16


@numba.njit(cache=True, error_model="numpy", nogil=True)
def where_rows(c, x, y, out):
    """``out = c ? x : y`` for arrays of one shape, rank >= 2 (any strides, zero included)."""
    for idx in np.ndindex(out.shape[:-1]):
        cc, xx, yy, oo = c[idx], x[idx], y[idx], out[idx]
        for j in range(oo.size):
            oo[j] = xx[j] if cc[j] else yy[j]


@numba.njit(cache=True, error_model="numpy", nogil=True)
def copy_rows(x, out):
    """``out = x`` for arrays of one shape, rank >= 2 (``x`` any strides, zero included)."""
    for idx in np.ndindex(out.shape[:-1]):
        xx, oo = x[idx], out[idx]
        for j in range(oo.size):
            oo[j] = xx[j]


def _at_least_2d(out: np.ndarray, *operands: np.ndarray) -> list[np.ndarray]:
    """``operands`` broadcast to ``out``'s shape (read-only views), then ``out``, each with leading
    axes of 1 up to rank 2."""
    lead = (None,) * max(0, 2 - out.ndim)
    return [np.broadcast_to(a, out.shape)[lead] for a in operands] + [out[lead]]


def _where_applies(node: Node, graph: Graph) -> bool:
    t = graph.type_of(node.inputs[1]) if len(node.inputs) > 1 else None
    return not isinstance(t, TensorType) or t.elem_type == 1


@register("Where", since=9, kind="fast", applies=_where_applies)
def where_float32(condition, x, y):
    if not (type(condition) is np.ndarray and condition.dtype == np.bool_ and type(x) is np.ndarray
            and type(y) is np.ndarray and x.dtype == y.dtype == np.float32):
        return binary.where(condition, x, y)
    try:
        shape = np.broadcast_shapes(condition.shape, x.shape, y.shape)
    except ValueError:
        return binary.where(condition, x, y)  # its error
    if not np.prod(shape, dtype=np.int64):
        return binary.where(condition, x, y)
    out = new_output(shape)
    where_rows(*_at_least_2d(out, condition, x, y))
    return out


@register("Expand", since=8, kind="fast", applies=float32_input)
def expand_float32(x, shape):
    if type(x) is not np.ndarray or x.dtype != np.float32:
        return shape_ops.expand(x, shape)
    try:
        out_shape = np.broadcast_shapes(x.shape, tuple(int_list(shape)))
    except (ValueError, KernelError):
        return shape_ops.expand(x, shape)  # its error
    if not 0 < np.prod(out_shape, dtype=np.int64) <= MAX_ELEMENTS:
        return shape_ops.expand(x, shape)
    out = new_output(out_shape)
    copy_rows(*_at_least_2d(out, x))
    return out


@numba.njit(cache=True, error_model="numpy", nogil=True)
def fill_flat(y, value):
    """``y[:] = value`` for a flat array."""
    for i in range(y.size):
        y[i] = value


def _float32_fill(node: Node, graph: Graph) -> bool:
    value = node.attrs.get("value")
    return value is None or getattr(value, "dtype", None) == np.float32


@register("ConstantOfShape", since=9, kind="fast", applies=_float32_fill)
def constant_of_shape_float32(shape, *, value=None):
    """A float32 fill in numba. Why: PyTorch exports an LSTM's zero initial state under a dynamic
    batch as ``ConstantOfShape`` of a computed shape, run each time; numpy's fill kept a CRNN from
    being replayed."""
    if value is not None and (getattr(value, "dtype", None) != np.float32 or value.size != 1):
        return generators.constant_of_shape(shape, value=value)
    dims = int_list(shape)
    if any(d < 0 for d in dims):
        return generators.constant_of_shape(shape, value=value)  # its error
    out = new_output(tuple(dims))
    fill_flat(out.reshape(-1), np.float32(0.0 if value is None else value.reshape(-1)[0]))
    return out
