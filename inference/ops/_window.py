"""Sliding-window geometry shared by convolution and pooling: one place for pads and im2col.

Everything works on NC* layout arrays whose last ``len(kernel)`` axes are spatial:

* :func:`window_geometry` resolves kernel/strides/dilations/pads/auto_pad/ceil_mode into
  :class:`Window` (begin/end pads and output spatial shape), following the ONNX formulas;
* :func:`pad_spatial` pads the spatial axes with a constant;
* :func:`window_view` is a zero-copy strided view ``(..., *out, *kernel)`` over a padded array,
  :func:`window_taps` walks its kernel taps;
* :func:`im2col` turns that view into the ``(N, P, C*K)`` matrix a convolution multiplies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from inference.errors import KernelError

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


@dataclass(frozen=True)
class Window:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def extents(self) -> tuple[int, ...]:
        """Span of one dilated kernel along each spatial axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))

    def starts(self, axis: int) -> np.ndarray:
        """Input coordinate (pads excluded) of the first tap of every window along ``axis``."""
        return np.arange(self.out_shape[axis]) * self.strides[axis] - self.pads_begin[axis]

    def taps(self, axis: int) -> np.ndarray:
        """Offset of every kernel tap from its window start along ``axis``."""
        return np.arange(self.kernel[axis]) * self.dilations[axis]

    def padded_end(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        """End pads large enough for every output window (ceil_mode may need more than pads)."""
        return tuple(max(pe, (o - 1) * s + e - i - pb) for i, o, s, e, pb, pe in zip(
            in_shape, self.out_shape, self.strides, self.extents, self.pads_begin, self.pads_end))


def spatial_attrs(nd: int, kernel: Sequence[int], strides: Sequence[int] | None,
                  dilations: Sequence[int] | None, pads: Sequence[int] | None, op: str
                  ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Default and check the per-axis attributes of an ``nd``-dimensional window op."""
    kernel = tuple(int(k) for k in kernel)
    strides = tuple(strides) if strides else (1,) * nd
    dilations = tuple(dilations) if dilations else (1,) * nd
    pads = tuple(pads) if pads else (0,) * (2 * nd)
    if len(kernel) != nd or len(strides) != nd or len(dilations) != nd or len(pads) != 2 * nd:
        raise KernelError(f"{op}: kernel_shape/strides/dilations need {nd} values and pads {2 * nd} "
                          f"for a {nd}-D input, got {kernel}, {strides}, {dilations}, {pads}")
    if min(kernel) < 1 or min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise KernelError(f"{op}: kernel_shape, strides, dilations must be positive and pads "
                          f"non-negative, got {kernel}, {strides}, {dilations}, {pads}")
    return kernel, strides, dilations, pads


def window_geometry(in_shape: Sequence[int], kernel: Sequence[int], strides: Sequence[int] | None = None,
                    dilations: Sequence[int] | None = None, pads: Sequence[int] | None = None,
                    auto_pad: str = "NOTSET", ceil_mode: int = 0, op: str = "op") -> Window:
    """Resolve the pads and output spatial shape of a window op on spatial dims ``in_shape``."""
    nd = len(in_shape)
    kernel, strides, dilations, pads = spatial_attrs(nd, kernel, strides, dilations, pads, op)
    if auto_pad not in AUTO_PADS:
        raise KernelError(f"{op}: auto_pad must be one of {AUTO_PADS}, got {auto_pad!r}")
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    rnd = math.ceil if ceil_mode else math.floor
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(in_shape, strides)]  # ceil(i / s), with or without ceil_mode
        total = [max((o - 1) * s + e - i, 0) for o, s, e, i in zip(out, strides, extents, in_shape)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    elif auto_pad == "VALID":
        begin = end = [0] * nd
        out = [rnd((i - e + (1 if ceil_mode else s)) / s) for i, s, e in zip(in_shape, strides, extents)]
    else:
        begin, end = list(pads[:nd]), list(pads[nd:])
        out = []
        for i, s, e, pb, pe in zip(in_shape, strides, extents, begin, end):
            o = rnd((i + pb + pe - e) / s) + 1
            if ceil_mode and (o - 1) * s >= i + pb:  # a window may not start in the end padding
                o -= 1
            out.append(o)
    if min(out) < 1:
        raise KernelError(f"{op}: window {tuple(extents)} does not fit input {tuple(in_shape)} "
                          f"with pads {tuple(begin)}+{tuple(end)}")
    return Window(kernel, strides, dilations, tuple(begin), tuple(end), tuple(out))


def pad_spatial(x: np.ndarray, begin: Sequence[int], end: Sequence[int], value=0) -> np.ndarray:
    """Pad the last ``len(begin)`` axes of ``x`` with constant ``value`` (no copy if no pads)."""
    if not any(begin) and not any(end):
        return x
    widths = [(0, 0)] * (x.ndim - len(begin)) + list(zip(begin, end))
    return np.pad(x, widths, mode="constant", constant_values=value)


def window_view(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
                dilations: Sequence[int], out_shape: Sequence[int] | None = None) -> np.ndarray:
    """Read-only view ``(..., *out, *kernel)`` of the windows over the last ``len(kernel)`` axes."""
    nd = len(kernel)
    spatial, sstr = x.shape[-nd:], x.strides[-nd:]
    if out_shape is None:
        out_shape = [(i - (k - 1) * d - 1) // s + 1 for i, k, s, d in zip(spatial, kernel, strides, dilations)]
    shape = x.shape[:-nd] + tuple(out_shape) + tuple(kernel)
    strides_ = (x.strides[:-nd] + tuple(st * s for st, s in zip(sstr, strides))
                + tuple(st * d for st, d in zip(sstr, dilations)))
    return as_strided(x, shape, strides_, writeable=False)


def window_taps(windows: np.ndarray, nd: int) -> Iterator[np.ndarray]:
    """Each kernel tap of a window view ``(..., *out, *kernel)`` as a ``(..., *out)`` view, in
    row-major tap order; reducing tap by tap is much faster than reducing the strided kernel axes."""
    for tap in np.ndindex(*windows.shape[-nd:]):
        yield windows[(Ellipsis,) + tap]


def padded_windows(x: np.ndarray, win: Window, value=0) -> np.ndarray:
    """Windows ``(N, C, *out, *kernel)`` of ``x`` padded with ``value`` as ``win`` prescribes."""
    nd = len(win.kernel)
    xp = pad_spatial(x, win.pads_begin, win.padded_end(x.shape[-nd:]), value)
    return window_view(xp, win.kernel, win.strides, win.dilations, win.out_shape)


def im2col(x: np.ndarray, win: Window, groups: int = 1, value=0) -> np.ndarray:
    """Columns ``(N, groups, P, C/groups * K)`` of ``x`` (N, C, *spatial), P = prod(out_shape)."""
    n, c = x.shape[:2]
    nd = len(win.kernel)
    w = padded_windows(x, win, value)  # (N, C, *out, *k)
    w = w.reshape((n, groups, c // groups) + w.shape[2:])
    order = (0, 1) + tuple(range(3, 3 + nd)) + (2,) + tuple(range(3 + nd, 3 + 2 * nd))
    p = math.prod(win.out_shape)
    return w.transpose(order).reshape(n, groups, p, (c // groups) * math.prod(win.kernel))
