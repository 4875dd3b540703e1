"""Where, Expand and ConstantOfShape of float32 in numba, over numpy's broadcast views: the
attention-mask arithmetic of PyTorch exports (``Where(mask, -inf, 0)``, then ``Expand`` to the
heads), and the zero states of their recurrent layers.

These tensors are small (a (batch, seq) mask) and numpy's loops are about as fast, but a kernel
replay (:mod:`inference.kernel_replay`) repeats only numba calls: a transformer taking an attention
mask ran step by step. The operands are read at their broadcast strides through windows on their
own memory (:mod:`inference.kernels.strided`), so a replay reads the feeds' buffers.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Graph, Node, TensorType
from inference.kernels._applies import float32_input
from inference.kernels.arena_slot import new_output
from inference.kernels.strided import copy_strided, strided, where_strided
from inference.ops import binary, generators, shape_ops
from inference.ops._axes import int_list
from inference.ops.registry import register

#: Expand's outputs larger than this go to numpy, whose copy of a broadcast view is ~3x faster on
#: large ones (one thread: (1, 128) to (4096, 4, 1, 128), 210 us against 630 as rows of 128)
MAX_ELEMENTS = 1 << 16


def _where_applies(node: Node, graph: Graph) -> bool:
    t = graph.type_of(node.inputs[1]) if len(node.inputs) > 1 else None
    return not isinstance(t, TensorType) or t.elem_type == 1


@register("Where", since=9, kind="fast", applies=_where_applies)
def where_float32(condition, x, y):
    if not (type(condition) is np.ndarray and condition.dtype == np.bool_ and type(x) is np.ndarray
            and type(y) is np.ndarray and x.dtype == y.dtype == np.float32):
        return binary.where(condition, x, y)
    try:
        s = strided(condition, x, y)
    except ValueError:
        return binary.where(condition, x, y)  # its error
    if s is None or not s.size:
        return binary.where(condition, x, y)
    out = new_output(s.out_shape)
    where_strided(s.shape, s.strides, s.offsets, *s.windows, out.reshape(-1))
    return out


@register("Expand", since=8, kind="fast", applies=float32_input)
def expand_float32(x, shape):
    if type(x) is not np.ndarray or x.dtype != np.float32:
        return shape_ops.expand(x, shape)
    try:
        s = strided(x, shape=tuple(int_list(shape)))
    except (ValueError, KernelError):
        return shape_ops.expand(x, shape)  # its error
    if s is None or not 0 < s.size <= MAX_ELEMENTS:
        return shape_ops.expand(x, shape)
    out = new_output(s.out_shape)
    copy_strided(s.shape, s.strides, s.offsets, s.windows[0], out.reshape(-1))
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
