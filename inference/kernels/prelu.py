"""Fast float32 PRelu: ``x < 0 ? x * slope : x`` in numba, for a slope that is one value, one per
channel or the input's own shape, and over numpy's broadcast views for any other.

Why: the reference's ``np.where`` with its temporaries was slow, and invisible to a kernel replay
(:mod:`inference.kernel_replay` repeats only numba calls): one PRelu kept a model step by step.
In a model before these kernels, 8 PRelus on (1, 128, 200) took 776 us a run in the reference and
750 in onnxruntime. ``benchmarks/select_ops.py`` (one thread, a shared 2-core machine), 8 PRelus
in a row on (1, 128, 200) with torch's ``nn.PReLU()`` slope of one element: 31 us a run replayed
(55 step by step), the reference 320, onnxruntime 178; one PRelu of a (128, 1) slope 13 us step
by step (onnxruntime 28), of a (64, 1, 1) slope on (1, 64, 56, 56) 32 (the reference 788,
onnxruntime 911).

The slope, right-aligned to ``x``'s shape as numpy broadcasts it, varies along at most one run of
axes in the common cases, so ``x`` is (outer, C, inner) with ``slope[c]`` for row (o, c): a scalar
slope is C = 1, a per-channel (C, 1, 1) one inner = H W, a (C,) one over the last axis inner = 1,
a same-shape one outer = inner = 1. :func:`prelu_flat` walks that flat, in chunks two threads
split. Other slopes (varying along axes apart) go through :func:`prelu_strided`, read at their
broadcast strides (:mod:`inference.kernels.strided`). One multiply and one compare, as the reference:
the results are bitwise its (a NaN stays NaN, -0 stays -0). Other dtypes, and slopes that do not
broadcast to ``x`` (the reference names the error), go to the reference
(:mod:`inference.ops.activation`); opset 6's 1-D per-channel slope is reshaped as the reference does.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.kernels.strided import advance, strided
from inference.ops.registry import lookup, register

_CHUNK = 1 << 14  # elements per parallel work item


@threaded_kernel()
def prelu_flat(x, slope, y, inner):
    """``y = prelu(x)`` for flat ``x``, ``y`` read as (outer, C, inner), C = ``slope.size``:
    element e takes ``slope[(e // inner) % C]``, in chunks of :data:`_CHUNK` elements the threads
    share; within a chunk, one segment per (o, c) row of ``inner`` elements by one value, or with
    ``inner`` = 1 one segment per (o) row of C elements by the slope's own row."""
    n, c = x.size, slope.size
    for t in numba.prange((n + _CHUNK - 1) // _CHUNK):
        e, hi = t * _CHUNK, min(n, (t + 1) * _CHUNK)
        while e < hi:
            if inner == 1:
                first = e % c
                m = min(c - first, hi - e)
                _by_row(x[e:e + m], slope[first:first + m], y[e:e + m])
            else:
                m = min(inner - e % inner, hi - e)
                _by_value(x[e:e + m], slope[(e // inner) % c], y[e:e + m])
            e += m


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _by_value(xs, a, ys):
    for k in range(ys.size):
        v = xs[k]
        ys[k] = v * a if v < 0 else v


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _by_row(xs, ss, ys):
    for k in range(ys.size):
        v = xs[k]
        ys[k] = v * ss[k] if v < 0 else v


@numba.njit(cache=True, error_model="numpy", nogil=True)
def prelu_strided(shape, strides, offsets, x, slope, y):
    """``y = prelu(x)`` into the flat contiguous ``y``, ``x`` and ``slope`` read at their strides
    (:mod:`inference.kernels.strided`)."""
    inner = shape[shape.size - 1]
    index = np.zeros(shape.size, np.int64)
    at = offsets.copy()
    sx, ss = strides[0, shape.size - 1], strides[1, shape.size - 1]
    for o in range(0, y.size, inner):
        ox, os_ = at[0], at[1]
        for j in range(inner):
            v = x[ox + j * sx]
            y[o + j] = v * slope[os_ + j * ss] if v < 0 else v
        advance(index, shape, strides, at)


def channel_run(shape: tuple[int, ...], slope_shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(outer, C, inner) when ``slope_shape`` broadcasts to ``shape`` varying along one run of axes
    (C their product; none: C = 1), else None (the slope varies along axes apart, or does not
    broadcast)."""
    if len(slope_shape) > len(shape):
        return None
    s = (1,) * (len(shape) - len(slope_shape)) + tuple(slope_shape)
    if any(b not in (1, d) for b, d in zip(s, shape)):
        return None
    varying = [i for i, b in enumerate(s) if b != 1]
    if not varying:
        return 1, 1, math.prod(shape)
    lo, hi = varying[0], varying[-1] + 1
    if any(s[i] == 1 and shape[i] != 1 for i in range(lo, hi)):
        return None
    return math.prod(shape[:lo]), math.prod(shape[lo:hi]), math.prod(shape[hi:])


@register("PRelu", since=7, kind="fast", applies=float32_input)
def prelu(x, slope):
    if not (type(x) is np.ndarray and type(slope) is np.ndarray and x.dtype == slope.dtype == np.float32) \
            or not x.size:
        return lookup("PRelu", "", 7).fn(x, slope)
    plan = channel_run(x.shape, slope.shape)
    if plan is None:
        try:
            s = strided(x, slope, shape=x.shape)  # windows on their memory: a replay reads them through these
        except ValueError:
            return lookup("PRelu", "", 7).fn(x, slope)  # its error
        if s is None or s.out_shape != x.shape:  # not a window, or a slope broadcasting x up
            return lookup("PRelu", "", 7).fn(x, slope)
        y = new_output(x.shape)
        prelu_strided(s.shape, s.strides, s.offsets, *s.windows, y.reshape(-1))
        return y
    y = new_output(x.shape)
    prelu_flat(np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(slope).reshape(-1), y.reshape(-1), plan[2])
    return y


@register("PRelu", since=6, kind="fast", applies=float32_input)
def prelu_6(x, slope):
    """Opset 6: a 1-D slope of one value per channel (axis 1), as the reference reads it."""
    if type(x) is np.ndarray and type(slope) is np.ndarray and slope.ndim == 1 and x.ndim >= 2 \
            and slope.size == x.shape[1]:
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
    return prelu(x, slope)
