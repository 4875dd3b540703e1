"""Fast Softmax and LayerNormalization over the last axis, and InstanceNormalization over each
(sample, channel) plane, for float32, one row (plane) at a time in numba.

Why: the reference computes max, exp, sum, divide (or mean, variance, scale) as separate numpy
passes with full-size temporaries; a row of a transformer's attention or hidden state fits in
cache, so doing every stage per row reads the tensor from memory once. LayerNormalization's and
InstanceNormalization's statistics accumulate in float64 like the reference within rounding;
Softmax's row is 16-lane vectors written in LLVM IR (:mod:`~inference.kernels.softmax_ir`), its
sum in float32 lanes. LogSoftmax (:mod:`~inference.kernels.log_softmax`) runs through the same
axis dispatch (:func:`over_axis`) and, over a middle axis, the same columns kernel.
"""
from __future__ import annotations

import math
from typing import Callable

import numba
import numpy as np

from inference.ir import Graph, Node, TensorType
from inference.kernels._applies import float32_input
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.fused import DOMAIN
from inference.kernels.softmax_ir import softmax_row
from inference.kernels.vmath import EXP_FLOOR, FAST_FINITE, exp_shifted
from inference.ops.registry import lookup, register


@threaded_kernel()
def softmax_rows(x, y, rows, n):
    """Row-wise softmax of the flat ``x`` (``rows`` x ``n``) into ``y``, a row per parallel step on
    16-lane vectors (:func:`~inference.kernels.softmax_ir.softmax_row`)."""
    for i in numba.prange(rows):
        softmax_row(x, i * n, y, i * n, n)


@threaded_kernel(fastmath=FAST_FINITE)
def layer_norm_rows(x, scale, bias, eps, y):
    """Row-wise ``(x - mean) / sqrt(var + eps) * scale + bias`` of ``x`` (R, N) into ``y``, a row
    per parallel step (:func:`_layer_norm_row`)."""
    for i in numba.prange(x.shape[0]):
        _layer_norm_row(x[i], scale, bias, eps, y[i])


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=FAST_FINITE)
def _layer_norm_row(row, scale, bias, eps, out):
    """The float64 sums may reassociate, so they vectorise (in order: one add per 4 cycles)."""
    n = row.size
    s = 0.0
    for k in range(n):
        s += row[k]
    mean = s / n
    v = 0.0
    for k in range(n):
        d = row[k] - mean
        v += d * d
    inv = 1.0 / math.sqrt(v / n + eps)
    for k in range(n):
        out[k] = np.float32((row[k] - mean) * inv) * scale[k] + bias[k]


def _last_axis_float32(node: Node, graph: Graph) -> bool:
    t = graph.type_of(node.inputs[0])
    if not isinstance(t, TensorType):
        return True
    axis = node.attrs.get("axis", -1)
    return t.elem_type == 1 and (t.rank is None or axis in (-1, t.rank - 1))


_TINY = np.float32(np.finfo(np.float32).tiny)


@threaded_kernel(fastmath=FAST_FINITE)
def softmax_columns(x, y, scratch, log):
    """Softmax of ``x`` (outer, r, inner) over its middle axis into ``y``: per chunk of columns of
    an outer row, their maxima, the shifted exponentials with their sums, then the scaling (a
    segmentation head's per-pixel softmax over classes, axis 1 of NCHW); with ``log`` the
    log-softmax ``(x - max) - log(sum)`` instead of the scaling (:mod:`~inference.kernels.
    log_softmax`). ``scratch`` (outer * chunks, 4, chunk): each chunk's rows (maxima, sums,
    shifted arguments, exp's int32 bits)."""
    outer, r, inner = x.shape
    chunk = scratch.shape[2]
    chunks = -(-inner // chunk)
    for t in numba.prange(outer * chunks):
        o, lo = t // chunks, (t % chunks) * chunk
        w = min(chunk, inner - lo)
        sc = scratch[t]
        top, total, shifted, bits = sc[0, :w], sc[1, :w], sc[2, :w], sc[3, :w].view(np.int32)
        for k in range(w):
            top[k] = -np.inf
            total[k] = 0.0
        for j in range(r):
            row = x[o, j, lo:lo + w]
            for k in range(w):
                v = row[k]
                top[k] = v if v > top[k] or v != v else top[k]  # NaN kept: the column's outputs NaN
        for j in range(r):
            src, dst = x[o, j, lo:lo + w], y[o, j, lo:lo + w]
            for k in range(w):
                dst[k] = src[k] - top[k]
            for k in range(w):
                shifted[k] = dst[k]
            exp_shifted(dst, np.float32(0.0), dst, bits)
            for k in range(w):
                if shifted[k] < EXP_FLOOR:  # exp's floor is exp(-87), not 0: a masked entry is 0, as numpy's
                    dst[k] = np.float32(0.0)
                total[k] += dst[k]
        if log:
            for k in range(w):
                total[k] = np.log(total[k])
            for j in range(r):
                minus_log_sum(x[o, j, lo:lo + w], top, total, y[o, j, lo:lo + w])
        else:
            for k in range(w):
                total[k] = np.float32(1.0) / total[k]
            for j in range(r):
                dst = y[o, j, lo:lo + w]
                for k in range(w):
                    v = dst[k] * total[k]
                    if v < _TINY:  # not subnormal (each product with one costs a microcode assist)
                        v = np.float32(0.0)
                    dst[k] = v


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=False)
def minus_log_sum(src, top, log_sum, dst):
    """``dst = (src - top) - log_sum`` elementwise, in this order: reassociated (fast-math) as
    ``src - (top + log_sum)`` it rounds ``log_sum`` to ``top``'s ulp (measured: every output of a
    row near 1e4 was 9.8e-5 off). ``fastmath=False`` stated, not left out: a function without the
    option inherits its first caller's fast-math flags when that call compiles it (numba's
    ``inherit_if_not_set``), and its cache keeps them."""
    for k in range(dst.size):
        dst[k] = (src[k] - top[k]) - log_sum[k]


@register("Softmax", since=13, kind="fast", applies=float32_input)
def softmax(x, *, axis=-1):
    if x.dtype != np.float32 or x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        return lookup("Softmax", "", 13).fn(x, axis=axis)
    return over_axis(x, axis % x.ndim, softmax_rows)


#: a kernel of rows: ``(x, y, rows, n)``, ``x`` and ``y`` flat float32 arrays of ``rows`` x ``n``
RowsKernel = Callable[[np.ndarray, np.ndarray, int, int], None]


def over_axis(x: np.ndarray, axis: int, rows_kernel: RowsKernel, log: bool = False) -> np.ndarray:
    """Softmax (``log``: log-softmax) of float32 ``x`` over ``axis`` (0 <= axis < ndim), in ``x``'s
    shape: the last axis by ``rows_kernel`` (:func:`of_rows`), another by :func:`softmax_columns`."""
    if axis == x.ndim - 1:
        return of_rows(x, axis, rows_kernel)
    y = new_output(x.shape)
    if y.size:
        shape = (math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1:]))
        chunk = min(256, shape[2])
        scratch = new_scratch((shape[0] * -(-shape[2] // chunk), 4, chunk))  # the step's workspace: no heap
        softmax_columns(np.ascontiguousarray(x).reshape(shape), y.reshape(shape), scratch, log)
    return y


def of_rows(x: np.ndarray, axis: int, rows_kernel: RowsKernel = softmax_rows) -> np.ndarray:
    """Float32 ``x`` flattened to 2-D at ``axis`` (0 <= axis < ndim), each row through
    ``rows_kernel`` (softmax's, or log-softmax's), in ``x``'s shape: the last axis alone (opset
    13) is ``axis = ndim - 1``."""
    rows, n = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
    y = new_output(x.shape)
    if y.size:
        rows_kernel(np.ascontiguousarray(x).reshape(-1), y.reshape(-1), rows, n)
    return y


@register("Softmax", since=1, kind="fast", applies=float32_input)
def softmax_flattened(x, *, axis=1):
    """Opsets 1-12: rows of ``x`` flattened to 2-D at ``axis`` (a classifier's (1, 1000, 1, 1)
    head in squeezenet and shufflenet, opset 9: the reference took 0.13 ms of numpy for it)."""
    if x.dtype != np.float32 or x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        return lookup("Softmax", "", 1).fn(x, axis=axis)
    return of_rows(x, axis % x.ndim)


def _layer_norm_applies(node: Node, graph: Graph) -> bool:
    return len([o for o in node.outputs if o]) == 1 and _last_axis_float32(node, graph)


@register("LayerNormalization", since=1, domain=DOMAIN)
def layer_normalization_reference(x, scale, b=None, *, axis=-1, epsilon=1e-5, stash_type=1, ctx):
    """Our domain's LayerNormalization, which ``passes.layer_norm`` makes of an opset < 17 graph's
    written-out form, is the standard op."""
    return lookup("LayerNormalization", "", 17).fn(x, scale, b, axis=axis, epsilon=epsilon,
                                                   stash_type=stash_type, ctx=ctx)


@register("LayerNormalization", since=1, domain=DOMAIN, kind="fast", applies=_layer_norm_applies)
@register("LayerNormalization", since=17, kind="fast", applies=_layer_norm_applies)
def layer_normalization(x, scale, b=None, *, axis=-1, epsilon=1e-5, stash_type=1, ctx):
    n = x.shape[-1] if x.ndim else 0
    if (x.dtype != np.float32 or ctx.num_outputs > 1 or x.ndim == 0 or axis not in (-1, x.ndim - 1)
            or scale.size != n or (b is not None and b.size != n)):
        return layer_normalization_reference(x, scale, b, axis=axis, epsilon=epsilon, stash_type=stash_type, ctx=ctx)
    x2 = np.ascontiguousarray(x).reshape(-1, n)
    y = new_output(x2.shape)
    bias = np.zeros(n, np.float32) if b is None else np.ascontiguousarray(b, np.float32).reshape(n)
    layer_norm_rows(x2, np.ascontiguousarray(scale, np.float32).reshape(n), bias, float(epsilon), y)
    return y.reshape(x.shape)


@threaded_kernel()
def instance_norm_planes(x, scale, bias, eps, y):
    """Plane-wise ``(x - mean) / sqrt(var + eps) * scale[c] + bias[c]`` of ``x`` (N * C, S) into
    ``y``, plane ``i`` of channel ``i % C``, a plane per parallel step."""
    c = scale.size
    for i in numba.prange(x.shape[0]):
        mean, var = _plane_moments(x[i])
        _normalize_plane(x[i], mean, scale[i % c] / math.sqrt(var + eps), bias[i % c], y[i])


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=FAST_FINITE)
def _plane_moments(row):
    """Mean and (biased) variance of ``row`` in one float64 pass over its offsets from its first
    element. Why one pass: the plane is read twice instead of three times (a 64x128x128 map 358 ->
    232 us with :func:`_normalize_plane`); offsets, not raw values, so the variance does not cancel
    when the mean dwarfs the spread (off by ~1e-6 at mean 1e4, spread 3, in float64's 16 digits)."""
    n = row.size
    x0 = np.float64(row[0])
    s = 0.0
    q = 0.0
    for k in range(n):
        d = row[k] - x0
        s += d
        q += d * d
    m = s / n
    var = q / n - m * m
    if var < 0.0:  # rounding; a NaN stays NaN
        var = 0.0
    return x0 + m, var


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath={"contract"})
def _normalize_plane(row, mean, a, bias, out):
    """``out = (row - mean) * a + bias`` in float32 lanes, the float64 mean subtracted as two float32
    halves (the rounding of one half alone was ~1e-4 of a unit at mean 1e4); no reassociation,
    which would fold the halves back into one."""
    hi = np.float32(mean)
    lo = np.float32(mean - np.float64(hi))
    a32 = np.float32(a)
    for k in range(row.size):
        out[k] = ((row[k] - hi) - lo) * a32 + bias


@register("InstanceNormalization", since=1, kind="fast", applies=float32_input)
def instance_normalization(x, scale, b, *, epsilon=1e-5):
    """Why: the reference's float64 copies and broadcasts took 1.75 ms of a small UNet's 8.1 for two
    calls (torch's ``GroupNorm`` exports as Reshape, InstanceNormalization, Reshape, Mul, Add)."""
    if x.dtype != np.float32 or x.ndim < 3 or scale.size != x.shape[1] or b.size != x.shape[1]:
        return lookup("InstanceNormalization", "", 1).fn(x, scale, b, epsilon=epsilon)
    y = new_output(x.shape)
    if y.size:
        planes = (x.shape[0] * x.shape[1], -1)
        instance_norm_planes(np.ascontiguousarray(x).reshape(planes),
                             np.ascontiguousarray(scale, np.float32).reshape(-1),
                             np.ascontiguousarray(b, np.float32).reshape(-1), float(epsilon), y.reshape(planes))
    return y
