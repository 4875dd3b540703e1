"""ConvTranspose as one matmul (input pixels x kernel taps) and a col2im scatter-add per tap."""
from __future__ import annotations

import itertools
import math

import numpy as np

from inference.errors import KernelError
from inference.ops._window import pad_spatial, spatial_attrs
from inference.ops.registry import register


def _resolve_pads(in_shape, kernel, strides, dilations, pads, output_padding, output_shape, auto_pad
                  ) -> tuple[list[int], list[int], list[int]]:
    """(pads_begin, pads_end, out_shape) following the ONNX ConvTranspose formulas."""
    nd = len(in_shape)
    full = [s * (i - 1) + op + (k - 1) * d + 1
            for i, k, s, d, op in zip(in_shape, kernel, strides, dilations, output_padding)]
    if output_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [i * s for i, s in zip(in_shape, strides)]
    if output_shape is None:
        if auto_pad == "VALID":
            pads = [0] * (2 * nd)
        begin, end = list(pads[:nd]), list(pads[nd:])
        return begin, end, [f - b - e for f, b, e in zip(full, begin, end)]
    output_shape = list(output_shape)[-nd:]
    total = [f - o for f, o in zip(full, output_shape)]
    small = [t // 2 for t in total]
    big = [t - t // 2 for t in total]
    begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    return begin, end, output_shape


@register("ConvTranspose", since=1)
def conv_transpose(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                   output_padding=None, output_shape=None, pads=None, strides=None):
    kernel, strides, dilations, begin, out_shape, output_padding = transpose_geometry(
        x, w, auto_pad, dilations, group, kernel_shape, output_padding, output_shape, pads, strides)
    nd = x.ndim - 2
    in_shape = x.shape[2:]
    contrib = tap_products(x, w, group, kernel)
    full = [s * (i - 1) + (k - 1) * d + 1 + op
            for i, k, s, d, op in zip(in_shape, kernel, strides, dilations, output_padding)]
    y = np.zeros(contrib.shape[:2] + tuple(full), dtype=contrib.dtype)
    for tap in itertools.product(*(range(k) for k in kernel)):
        dst = tuple(slice(t * d, t * d + (i - 1) * s + 1, s)
                    for t, d, i, s in zip(tap, dilations, in_shape, strides))
        y[(Ellipsis,) + dst] += contrib[(slice(None), slice(None)) + tap]
    # crop the pads (negative pads, from a large output_shape, extend with zeros instead)
    y = pad_spatial(y, [max(0, -p) for p in begin], [max(0, o + p - f) for o, p, f in zip(out_shape, begin, full)])
    y = y[(Ellipsis,) + tuple(slice(max(p, 0), max(p, 0) + o) for p, o in zip(begin, out_shape))]
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return y.astype(x.dtype)


def transpose_geometry(x, w, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, output_padding=None,
                       output_shape=None, pads=None, strides=None) -> tuple:
    """(kernel, strides, dilations, pads_begin, out_shape, output_padding) of a ConvTranspose of
    ``x`` by ``w``, the shapes checked: what the reference and the fast kernel both resolve."""
    if x.ndim < 3 or w.ndim != x.ndim or x.shape[1] != w.shape[0] or x.shape[1] % group:
        raise KernelError(f"ConvTranspose: X (N, C, ...) and W (C, M/group, ...) disagree: "
                          f"X {x.shape}, W {w.shape}, group={group}")
    nd = x.ndim - 2
    kernel, strides, dilations, pads = spatial_attrs(nd, kernel_shape or w.shape[2:], strides,
                                                     dilations, pads, "ConvTranspose")
    output_padding = list(output_padding) if output_padding else [0] * nd
    begin, _, out_shape = _resolve_pads(x.shape[2:], kernel, strides, dilations, pads, output_padding,
                                        output_shape, auto_pad)
    return kernel, strides, dilations, begin, out_shape, output_padding


def tap_products(x: np.ndarray, w: np.ndarray, group: int, kernel: tuple, out: np.ndarray | None = None
                 ) -> np.ndarray:
    """Every input pixel times every kernel tap, one matmul per group: (N, M, *kernel, *in), into
    ``out`` (of that many elements, C-contiguous) if given."""
    n, c = x.shape[:2]
    mg, taps = w.shape[1], math.prod(kernel)
    xs = np.ascontiguousarray(x).reshape(n, group, c // group, -1)
    ws = np.ascontiguousarray(w.reshape(group, c // group, mg * taps).transpose(0, 2, 1))
    shape = (n, group * mg) + tuple(kernel) + x.shape[2:]
    if out is None:
        return np.matmul(ws, xs).reshape(shape)
    np.matmul(ws, xs, out=out.reshape(n, group, mg * taps, xs.shape[-1]))
    return out.reshape(shape)
