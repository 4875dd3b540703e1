"""``edgelearn::ChannelShuffle``: ShuffleNet's channel shuffle as one op.

``Y`` = ``X`` with its ``axis`` (C channels, ``group`` groups of C/group) read as (group, C/group)
and transposed: output channel ``j*group + g`` is input channel ``g*(C/group) + j``. Models spell it
Reshape -> Transpose -> Reshape (:mod:`inference.passes.channel_shuffle` finds that chain); as one
op it has no 5-D intermediate, and the layout pass can move it channels-last (``axis`` 3), where a
5-D transpose has no NHWC form it could keep. Channels-last the shuffle is a scatter within each
pixel's row of channels: our kernel writes it with stride ``group`` (a numpy transpose copy of
shufflenet's 14x14x272 ran ~3x slower); with channels outside the innermost axis (NCHW), whole
planes move and numpy's copy serves.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Graph, Node, TensorType
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.kernels.fused import DOMAIN
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema

OP = "ChannelShuffle"


def _shape(node: Node, types: list) -> list:
    return [types[0]]


register_schema(OpSchema(OP, DOMAIN, 1, (FormalParam("X"),), (FormalParam("Y"),), {"axis": 1, "group": None},
                         shape_rule=_shape))


def _split(x: np.ndarray, axis: int, group: int) -> tuple[int, int, int, int]:
    """(rows before the axis, groups, channels per group, elements after the axis), checked."""
    if not -x.ndim <= axis < x.ndim:
        raise KernelError(f"{OP}: axis {axis} out of range for X of shape {x.shape}")
    axis %= x.ndim
    c = x.shape[axis]
    if group < 1 or c % group:
        raise KernelError(f"{OP}: {c} channels of X {x.shape} (axis {axis}) do not split into {group} groups")
    return math.prod(x.shape[:axis]), group, c // group, math.prod(x.shape[axis + 1:])


@register(OP, since=1, domain=DOMAIN)
def channel_shuffle_reference(x, *, axis=1, group):
    pre, g, cg, post = _split(x, axis, group)
    return np.ascontiguousarray(x.reshape(pre, g, cg, post).transpose(0, 2, 1, 3)).reshape(x.shape)


@threaded_kernel()
def shuffle_last_axis(x, group, y):
    """``y`` := ``x`` (rows, C) with each row's channels shuffled in ``group`` groups."""
    rows, c = x.shape
    cg = c // group
    for r in numba.prange(rows):
        _shuffle_row(x[r], group, cg, y[r])


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _shuffle_row(src, group, cg, dst):
    """Group by group: a contiguous read, a store every ``group`` channels (reading strided and
    storing contiguous ran 1.7x slower)."""
    for g in range(group):
        for j in range(cg):
            dst[j * group + g] = src[g * cg + j]


def _applies(node: Node, graph: Graph) -> bool:
    t = graph.type_of(node.inputs[0])
    return not isinstance(t, TensorType) or t.elem_type == 1


@register(OP, since=1, domain=DOMAIN, kind="fast", applies=_applies)
def channel_shuffle(x, *, axis=1, group):
    pre, g, cg, post = _split(x, axis, group)
    if post != 1 or x.dtype != np.float32:
        return channel_shuffle_reference(x, axis=axis, group=group)
    y = new_output(x.shape)
    shuffle_last_axis(np.ascontiguousarray(x).reshape(pre, g * cg), g, y.reshape(pre, g * cg))
    return y
