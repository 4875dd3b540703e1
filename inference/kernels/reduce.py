"""Fast float32 ReduceSum, ReduceMean, ReduceMax, ReduceMin over a contiguous run of axes, in numba.

Why: a model that pools with a Reduce (a recurrent encoder's mean over time, a transformer's mean
over tokens, a squeeze-and-excitation written as ReduceMean) ran it in numpy, and a kernel replay
(:mod:`inference.kernel_replay`) repeats only numba calls: one such step kept a whole model step by
step (a bidirectional GRU classifier averaged over time, ``benchmarks/torch_families.py``).
The reduced axes, merged, are the middle of (outer, r, inner): each outer row sums (or takes the
extreme of) r rows of ``inner`` contiguous values. Sums accumulate in float64 (numpy's float32 sum
is pairwise: as close); max and min keep a NaN as numpy does. Axes that are not one run after
dropping those of length 1, other dtypes, empty reductions and ``noop_with_empty_axes`` go to the
reference (:mod:`inference.ops.reduce`), which also names a bad axis.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.kernels.arg_reduce import extreme_into
from inference.ops.reduce import _REDUCTIONS, _normalize_axes
from inference.ops.registry import lookup, register

SUM, MEAN, MAX, MIN = range(4)
_CODES = {"ReduceSum": SUM, "ReduceMean": MEAN, "ReduceMax": MAX, "ReduceMin": MIN}


@threaded_kernel(fastmath={"reassoc", "contract"})
def reduce_rows(x, code, y):
    """``y[o, k]`` = the sum, mean, max or min (``code``) of ``x[o, :, k]`` for ``x`` (outer, r,
    inner); an outer row per parallel step (or, with one outer row, chunks of its columns)."""
    outer, r, inner = x.shape
    chunks = 1 if outer > 1 else max(1, min(inner // 256, 64))
    for t in numba.prange(outer * chunks):
        o, c = t // chunks, t % chunks
        lo, hi = c * inner // chunks, (c + 1) * inner // chunks
        if code <= MEAN:
            scale = 1.0 / r if code == MEAN else 1.0
            if inner == 1:
                s = 0.0
                for j in range(r):
                    s += x[o, j, 0]
                y[o, 0] = s * scale
            else:
                acc = np.zeros(hi - lo)
                for j in range(r):
                    row = x[o, j, lo:hi]
                    for k in range(hi - lo):
                        acc[k] += row[k]
                for k in range(hi - lo):
                    y[o, lo + k] = acc[k] * scale
        else:
            out = y[o, lo:hi]
            first = x[o, 0, lo:hi]
            for k in range(hi - lo):
                out[k] = first[k]
            for j in range(1, r):
                row = x[o, j, lo:hi]
                for k in range(hi - lo):
                    v, m = row[k], out[k]
                    if (v > m if code == MAX else v < m) or v != v:
                        if m == m:  # a NaN, once there, stays
                            out[k] = v


@threaded_kernel()
def extreme_rows(x, largest, y):
    """``y[i]`` = the max (``largest``) or min of the contiguous row ``x[i]``, NaN if it holds one,
    a row per parallel step. Why apart from :func:`reduce_rows`: a run per row is ArgMax's keyed
    pass (:func:`~inference.kernels.arg_reduce.extreme_into`, integer compares that vectorise);
    the one-value loop, a float compare and NaN test per element, ran scalar (PointNet's max of
    256 channels over 1024 points: 550 us, numpy 39)."""
    for i in numba.prange(x.shape[0]):
        extreme_into(x[i], largest, y[i:i + 1])


def _run_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(outer, r, inner) when ``axes`` (sorted, non-negative) are one run once axes of length 1
    are dropped; None otherwise."""
    kept = [a for a in range(len(shape)) if shape[a] != 1 or a in axes]
    moving = [i for i, a in enumerate(kept) if a in axes and shape[a] != 1]
    if not moving:
        return math.prod(shape), 1, 1
    if moving != list(range(moving[0], moving[-1] + 1)):
        return None
    dims = [shape[a] for a in kept]
    return math.prod(dims[:moving[0]]), math.prod(dims[moving[0]:moving[-1] + 1]), math.prod(dims[moving[-1] + 1:])


def _reduce(op: str, data, axes, keepdims: int, noop: int, reference):
    """The fast reduction where it applies, else ``reference()`` (the op as the reference runs it)."""
    if data.dtype != np.float32 or not data.ndim:
        return reference()
    norm = _normalize_axes(axes, data.ndim, op)
    if norm is None:
        if noop:
            return reference()
        norm = tuple(range(data.ndim))
    plan = _run_shape(data.shape, norm)
    if plan is None or plan[1] == 0 or plan[0] * plan[2] == 0:
        return reference()
    shape = tuple(1 if a in norm else d for a, d in enumerate(data.shape)) if keepdims else \
        tuple(d for a, d in enumerate(data.shape) if a not in norm)
    y = new_output(shape)
    outer, r, inner = plan
    if inner == 1 and _CODES[op] in (MAX, MIN):  # a contiguous run per output (PointNet's max over its points)
        extreme_rows(np.ascontiguousarray(data).reshape(outer, r), _CODES[op] == MAX, y.reshape(outer))
    else:
        reduce_rows(np.ascontiguousarray(data).reshape(outer, r, inner), _CODES[op], y.reshape(outer, inner))
    return y


def _make(op: str, input_since: int) -> None:
    attr_ref, input_ref = lookup(op, "", 1).fn, lookup(op, "", input_since).fn

    def with_axes_attr(data, *, axes=None, keepdims=1):
        return _reduce(op, data, axes, keepdims, 0, lambda: attr_ref(data, axes=axes, keepdims=keepdims))

    def with_axes_input(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        return _reduce(op, data, axes, keepdims, noop_with_empty_axes,
                       lambda: input_ref(data, axes, keepdims=keepdims, noop_with_empty_axes=noop_with_empty_axes))

    for kernel, kind in ((with_axes_attr, "attr"), (with_axes_input, "input")):
        kernel.__name__ = kernel.__qualname__ = f"fast_{op.lower()}_axes_{kind}"
    register(op, since=1, kind="fast", applies=float32_input)(with_axes_attr)
    register(op, since=input_since, kind="fast", applies=float32_input)(with_axes_input)


for _op in _CODES:
    _make(_op, _REDUCTIONS[_op][1])
