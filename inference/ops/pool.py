"""Pooling ops (Max/Average/Lp, their Global forms, MaxUnpool) as reductions over window views."""
from __future__ import annotations

import math

import numpy as np

from inference.errors import KernelError
from inference.ops._window import (Window, pad_spatial, padded_windows, window_geometry, window_taps,
                                   window_view)
from inference.ops.registry import register


def _geometry(x: np.ndarray, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, op) -> Window:
    if kernel_shape is None:
        raise KernelError(f"{op}: attribute kernel_shape is required")
    if x.ndim < 3:
        raise KernelError(f"{op}: input must be N x C x spatial (rank >= 3), got shape {x.shape}")
    return window_geometry(x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, op)


def _lowest(dtype: np.dtype):
    """Padding value that never wins a max (ml_dtypes floats like bfloat16 have kind 'V')."""
    return np.iinfo(dtype).min if dtype.kind in "iu" else -np.inf


def _reduce(windows: np.ndarray, nd: int, ufunc: np.ufunc) -> np.ndarray:
    """Reduce the kernel axes of a window view with ``ufunc`` (np.maximum, np.add) into a new array."""
    taps = window_taps(windows, nd)
    acc = next(taps).copy()
    for values in taps:
        ufunc(acc, values, out=acc)
    return acc


def _argmax_tap(windows: np.ndarray, nd: int) -> np.ndarray:
    """Row-major kernel-tap index of the first maximum of every window."""
    taps = window_taps(windows, nd)
    best = next(taps).copy()
    arg = np.zeros(best.shape, dtype=np.int64)
    for k, values in enumerate(taps, start=1):
        better = values > best
        best[better] = values[better]
        arg[better] = k
    return arg


def _max_indices(x: np.ndarray, windows: np.ndarray, win: Window, storage_order: int) -> np.ndarray:
    """Flat input index (over the whole tensor, as ONNX wants) of each window's maximum."""
    nd = len(win.kernel)
    best_tap = np.unravel_index(_argmax_tap(windows, nd), win.kernel)
    spatial = x.shape[2:]
    coords = []
    for ax in range(nd):
        shape = [1] * nd
        shape[ax] = -1
        coords.append(win.starts(ax).reshape(shape) + win.taps(ax)[best_tap[ax]])
    order = range(nd - 1, -1, -1) if storage_order else range(nd)
    idx = np.zeros(coords[0].shape, dtype=np.int64)
    for ax in order:
        idx = idx * spatial[ax] + coords[ax]
    n, c = x.shape[:2]
    base = np.arange(n * c, dtype=np.int64).reshape((n, c) + (1,) * nd) * math.prod(spatial)
    return base + idx


@register("MaxPool", since=1)
def max_pool(x, *, kernel_shape=None, strides=None, dilations=None, pads=None, auto_pad="NOTSET",
             ceil_mode=0, storage_order=0, ctx):
    win = _geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, "MaxPool")
    windows = padded_windows(x, win, _lowest(x.dtype))
    y = _reduce(windows, len(win.kernel), np.maximum)
    if ctx.num_outputs < 2:
        return y
    return y, _max_indices(x, windows, win, storage_order)


def _window_counts(spatial, win: Window, count_include_pad: int) -> np.ndarray:
    """Number of elements each window averages over (pads count only if count_include_pad)."""
    nd = len(spatial)
    mask = pad_spatial(np.ones(spatial, dtype=np.int64), win.pads_begin, win.pads_end,
                       1 if count_include_pad else 0)
    extra = [pe - e for pe, e in zip(win.padded_end(spatial), win.pads_end)]
    mask = pad_spatial(mask, (0,) * nd, extra, 0)
    return _reduce(window_view(mask, win.kernel, win.strides, win.dilations, win.out_shape), nd, np.add)


@register("AveragePool", since=1)
def average_pool(x, *, kernel_shape=None, strides=None, dilations=None, pads=None, auto_pad="NOTSET",
                 ceil_mode=0, count_include_pad=0):
    win = _geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, "AveragePool")
    total = _reduce(padded_windows(x, win, 0), len(win.kernel), np.add)
    counts = _window_counts(x.shape[2:], win, count_include_pad)
    return (total / counts).astype(x.dtype)


@register("LpPool", since=1)
def lp_pool(x, *, kernel_shape=None, strides=None, dilations=None, pads=None, auto_pad="NOTSET",
            ceil_mode=0, p=2):
    win = _geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, "LpPool")
    powered = _reduce(padded_windows(np.abs(x) ** p, win, 0), len(win.kernel), np.add)
    return (powered ** (1.0 / p)).astype(x.dtype)


def _spatial_axes(x: np.ndarray, op: str) -> tuple[int, ...]:
    if x.ndim < 3:
        raise KernelError(f"{op}: input must be N x C x spatial (rank >= 3), got shape {x.shape}")
    return tuple(range(2, x.ndim))


@register("GlobalMaxPool", since=1)
def global_max_pool(x):
    return x.max(axis=_spatial_axes(x, "GlobalMaxPool"), keepdims=True)


@register("GlobalAveragePool", since=1)
def global_average_pool(x):
    return x.mean(axis=_spatial_axes(x, "GlobalAveragePool"), keepdims=True).astype(x.dtype)


@register("GlobalLpPool", since=1)
def global_lp_pool(x, *, p=2):
    s = (np.abs(x) ** p).sum(axis=_spatial_axes(x, "GlobalLpPool"), keepdims=True)
    return (s ** (1.0 / p)).astype(x.dtype)


@register("MaxUnpool", since=9)
def max_unpool(x, indices, output_shape=None, *, kernel_shape=None, strides=None, pads=None):
    """Scatter ``x`` to the flat positions ``indices`` (as MaxPool produced) of a zero tensor."""
    if kernel_shape is None:
        raise KernelError("MaxUnpool: attribute kernel_shape is required")
    nd = x.ndim - 2
    strides = strides or [1] * nd
    pads = pads or [0] * (2 * nd)
    shape = x.shape[:2] + tuple((i - 1) * s + k - pads[a] - pads[a + nd] for a, (i, s, k)
                                in enumerate(zip(x.shape[2:], strides, kernel_shape)))
    y = np.zeros(math.prod(shape), dtype=x.dtype)
    y[indices.reshape(-1)] = x.reshape(-1)
    y = y.reshape(shape)
    if output_shape is None:
        return y
    # indices address the default-shaped output; a larger requested shape pads at the end
    target = tuple(int(v) for v in output_shape)
    if len(target) != y.ndim or any(t < s for t, s in zip(target, shape)):
        raise KernelError(f"MaxUnpool: output_shape {target} smaller than the unpooled shape {shape}")
    return pad_spatial(y, (0,) * y.ndim, [t - s for t, s in zip(target, shape)], 0)
