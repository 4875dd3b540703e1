"""Convolutions (float, integer, quantized, deformable) as im2col followed by one batched matmul."""
from __future__ import annotations

import math

import numpy as np

from inference.errors import KernelError
from inference.ops._window import Window, im2col, window_geometry
from inference.ops.grid import sample
from inference.ops.quantize import saturate_cast
from inference.ops.registry import register


def _conv_geometry(x: np.ndarray, w: np.ndarray, group: int, kernel_shape, strides, dilations,
                   pads, auto_pad: str, op: str) -> Window:
    if x.ndim < 3 or w.ndim != x.ndim:
        raise KernelError(f"{op}: X and W must both be N x C x spatial of equal rank, "
                          f"got X {x.shape} and W {w.shape}")
    if group < 1 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise KernelError(f"{op}: X has {x.shape[1]} channels but W {w.shape} with group={group} "
                          f"expects {w.shape[1] * group} (and output channels divisible by group)")
    kernel = kernel_shape or w.shape[2:]
    if tuple(kernel) != w.shape[2:]:
        raise KernelError(f"{op}: kernel_shape {tuple(kernel)} does not match W spatial shape {w.shape[2:]}")
    return window_geometry(x.shape[2:], kernel, strides, dilations, pads, auto_pad, 0, op)


def _gemm_columns(cols: np.ndarray, w: np.ndarray, group: int, out_shape) -> np.ndarray:
    """(N, G, P, Cg*K) columns times W (M, Cg, *k) -> (N, M, *out)."""
    n = cols.shape[0]
    m = w.shape[0]
    wm = w.reshape(group, m // group, -1).transpose(0, 2, 1)  # (G, Cg*K, Mg)
    y = np.matmul(cols, wm)  # (N, G, P, Mg)
    return y.transpose(0, 1, 3, 2).reshape((n, m) + tuple(out_shape))


def _bias(b: np.ndarray | None, nd: int):
    return 0 if b is None else b.reshape((1, -1) + (1,) * nd)


def conv_nd(x: np.ndarray, w: np.ndarray, win: Window, group: int) -> np.ndarray:
    """Plain N-D convolution (no bias) of ``x`` with ``w`` over the geometry ``win``."""
    return _gemm_columns(im2col(x, win, group), w, group, win.out_shape)


@register("Conv", since=1)
def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None):
    win = _conv_geometry(x, w, group, kernel_shape, strides, dilations, pads, auto_pad, "Conv")
    return (conv_nd(x, w, win, group) + _bias(b, x.ndim - 2)).astype(x.dtype)


def _shift(a: np.ndarray, zero_point: np.ndarray | None) -> np.ndarray:
    """``a - zero_point`` in int32; a zero point with several values applies per axis-0 slice
    (per output channel of W; X's zero point is per tensor)."""
    a32 = a.astype(np.int32)
    if zero_point is None:
        return a32
    zp = zero_point.astype(np.int32)
    zp = zp.reshape((-1,) + (1,) * (a.ndim - 1)) if zp.size > 1 else zp.reshape(())
    return a32 - zp


def _integer_conv(x, x_zero_point, w, w_zero_point, op: str, auto_pad, dilations, group, kernel_shape,
                  pads, strides) -> np.ndarray:
    """int32 convolution of zero-point-shifted integer inputs (so the pads hold the zero point)."""
    win = _conv_geometry(x, w, group, kernel_shape, strides, dilations, pads, auto_pad, op)
    if x_zero_point is not None and x_zero_point.size != 1:
        raise KernelError(f"{op}: x_zero_point must be a scalar, got shape {x_zero_point.shape}")
    return conv_nd(_shift(x, x_zero_point), _shift(w, w_zero_point), win, group).astype(np.int32)


@register("ConvInteger", since=10)
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET", dilations=None, group=1,
                 kernel_shape=None, pads=None, strides=None):
    return _integer_conv(x, x_zero_point, w, w_zero_point, "ConvInteger", auto_pad, dilations, group,
                         kernel_shape, pads, strides)


@register("QLinearConv", since=10)
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, b=None, *,
                 auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    acc = _integer_conv(x, x_zero_point, w, w_zero_point, "QLinearConv", auto_pad, dilations, group,
                        kernel_shape, pads, strides)
    nd = x.ndim - 2
    if b is not None:
        acc = acc + _bias(b.astype(np.int32), nd)
    w_scale = w_scale.reshape((1, -1) + (1,) * nd) if w_scale.size > 1 else w_scale.reshape(())
    real = acc.astype(np.float64) * (x_scale.astype(np.float64) * w_scale / y_scale)
    return saturate_cast(real + y_zero_point.astype(np.float64), y_zero_point.dtype)


# --- DeformConv ------------------------------------------------------------------------------

@register("DeformConv", since=19)
def deform_conv(x, w, offset, b=None, mask=None, *, dilations=None, group=1, kernel_shape=None,
                offset_group=1, pads=None, strides=None):
    """Deformable convolution: im2col whose taps are N-linear samples at learned offsets."""
    win = _conv_geometry(x, w, group, kernel_shape, strides, dilations, pads, "NOTSET", "DeformConv")
    n, c = x.shape[:2]
    nd = x.ndim - 2
    k, p = math.prod(win.kernel), math.prod(win.out_shape)
    if c % offset_group or offset.shape != (n, offset_group * nd * k) + win.out_shape:
        raise KernelError(f"DeformConv: offset must have shape {(n, offset_group * nd * k) + win.out_shape} "
                          f"and C={c} be divisible by offset_group={offset_group}, got {offset.shape}")
    # regular sampling positions of every (tap, output pixel) along each spatial axis
    axes = range(nd)
    grids = np.meshgrid(*(win.taps(a) for a in axes), *(win.starts(a) for a in axes), indexing="ij")
    off = offset.reshape(n, offset_group, k, nd, p)
    coords = [(grids[d] + grids[nd + d]).reshape(k, p) + off[:, :, :, d] for d in range(nd)]
    imgs = x.reshape((n * offset_group, c // offset_group) + x.shape[2:])
    samples = sample(imgs, [cd.reshape(n * offset_group, k * p) for cd in coords], "linear", "zeros")
    samples = samples.reshape(n, offset_group, c // offset_group, k, p)
    if mask is not None:
        samples = samples * mask.reshape(n, offset_group, 1, k, p)
    cols = samples.reshape(n, group, c // group, k, p).transpose(0, 1, 4, 2, 3)
    cols = cols.reshape(n, group, p, (c // group) * k)
    return (_gemm_columns(cols, w, group, win.out_shape) + _bias(b, nd)).astype(x.dtype)
