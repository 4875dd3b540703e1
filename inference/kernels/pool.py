"""Fast 2-D pooling (Max/Average, their Global forms) for float32 NCHW, as numba loops.

Why: the reference pools reduce a strided window view, which numpy walks element by element
through a 6-D iterator; here each output row is a running max/sum over the kernel taps read
through contiguous slices. Geometry (pads, auto_pad, ceil_mode) comes from ``inference.ops._window``.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.ir import Graph, Node, TensorType
from inference.kernels._jit import threaded_kernel
from inference.kernels.conv import _phase_planes
from inference.ops import pool as reference
from inference.ops._window import Window, window_geometry
from inference.ops.registry import register


@threaded_kernel()
def pool2d(x, kh, kw, sh, sw, dh, dw, ph, pw, hp, wp, y, is_max):
    """Max (``is_max``) or sum pooling of ``x`` (N, C, H, W) into ``y`` (N, C, OH, OW).

    Each channel is padded (-inf for max, 0 for sum) and split by column phase like the depthwise
    conv, so every tap of an output row is one contiguous slice folded into the row in a
    vectorised loop (a per-tap bounds check per output ran ~10x slower).
    """
    n, c, h, w = x.shape
    _, _, oh, ow = y.shape
    fill = -np.inf if is_max else 0.0
    for r in numba.prange(n * c):
        b, ch = r // c, r % c
        planes = _phase_planes(x, b, ch, ph, pw, hp, wp, sw, fill)
        for yo in range(oh):
            out = y[b, ch, yo]
            for i in range(kh):
                for j in range(kw):
                    src = planes[(j * dw) % sw, yo * sh + i * dh, (j * dw) // sw:]
                    if i == 0 and j == 0:
                        for k in range(ow):
                            out[k] = src[k]
                    elif is_max:
                        for k in range(ow):
                            out[k] = max(out[k], src[k])
                    else:
                        for k in range(ow):
                            out[k] += src[k]


@threaded_kernel()
def global_pool(x, y, is_max):
    """Global max or average over each (H*W) plane of ``x`` (N, C, P) into ``y`` (N, C)."""
    n, c, p = x.shape
    for r in numba.prange(n * c):
        b, ch = r // c, r % c
        row = x[b, ch]
        if is_max:
            acc = row[0]
            for k in range(1, p):
                acc = max(acc, row[k])
            y[b, ch] = acc
        else:
            s = 0.0
            for k in range(p):
                s += row[k]
            y[b, ch] = s / p


def _handles(node: Node, graph: Graph) -> bool:
    t = graph.type_of(node.inputs[0])
    return (not isinstance(t, TensorType) or (t.elem_type == 1 and t.rank in (4, None))) and len(node.outputs) == 1


def _fast(x: np.ndarray) -> bool:
    return x.ndim == 4 and x.dtype == np.float32


def _pool(x: np.ndarray, win: Window, is_max: bool, count_include_pad: int) -> np.ndarray:
    x = np.ascontiguousarray(x)
    y = np.empty(x.shape[:2] + win.out_shape, np.float32)
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = win.kernel, win.strides, win.dilations, win.pads_begin
    end_h, end_w = win.padded_end(x.shape[2:])
    hp, wp = ph + x.shape[2] + end_h, pw + x.shape[3] + end_w + sw
    pool2d(x, kh, kw, sh, sw, dh, dw, ph, pw, hp, wp, y, is_max)
    if not is_max:  # the reference's own divisor: pads count only if count_include_pad
        y /= reference._window_counts(x.shape[2:], win, count_include_pad).astype(np.float32)
    return y


@register("MaxPool", since=1, kind="fast", applies=_handles)
def max_pool(x, *, kernel_shape=None, strides=None, dilations=None, pads=None, auto_pad="NOTSET", ceil_mode=0,
             storage_order=0, ctx):
    if not _fast(x) or ctx.num_outputs > 1 or kernel_shape is None:
        return reference.max_pool(x, kernel_shape=kernel_shape, strides=strides, dilations=dilations, pads=pads,
                                  auto_pad=auto_pad, ceil_mode=ceil_mode, storage_order=storage_order, ctx=ctx)
    win = window_geometry(x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, "MaxPool")
    return _pool(x, win, True, 0)


@register("AveragePool", since=1, kind="fast", applies=_handles)
def average_pool(x, *, kernel_shape=None, strides=None, dilations=None, pads=None, auto_pad="NOTSET",
                 ceil_mode=0, count_include_pad=0):
    if not _fast(x) or kernel_shape is None:
        return reference.average_pool(x, kernel_shape=kernel_shape, strides=strides, dilations=dilations,
                                      pads=pads, auto_pad=auto_pad, ceil_mode=ceil_mode,
                                      count_include_pad=count_include_pad)
    win = window_geometry(x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad, ceil_mode,
                          "AveragePool")
    return _pool(x, win, False, count_include_pad)


def _global(x: np.ndarray, is_max: bool) -> np.ndarray:
    n, c = x.shape[:2]
    y = np.empty((n, c), np.float32)
    global_pool(np.ascontiguousarray(x).reshape(n, c, -1), y, is_max)
    return y.reshape(n, c, 1, 1)


@register("GlobalAveragePool", since=1, kind="fast", applies=_handles)
def global_average_pool(x):
    return _global(x, False) if _fast(x) else reference.global_average_pool(x)


@register("GlobalMaxPool", since=1, kind="fast", applies=_handles)
def global_max_pool(x):
    return _global(x, True) if _fast(x) else reference.global_max_pool(x)
