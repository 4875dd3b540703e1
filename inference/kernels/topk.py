"""Fast float32 TopK along any axis (largest or smallest, sorted), in numba, by a k-element heap.

Why: the reference sorts the whole axis (a stable ``argsort``, twice flipped for the largest) to
keep k of it, in numpy, which a kernel replay (:mod:`inference.kernel_replay`) cannot repeat: a
detector's or a decoder's TopK keeps the model step by step. Here each slice along the axis is
scanned once against a heap of the k best so far (its root the worst of them) held in the
indices output: an element whose value is not past the root's costs one float compare, a better
one log k moves; the heap is then sorted in place (heapsort), best first: n log k against the
reference's n log n, and no temporaries. The heap holds int64 ranks (:func:`_rank`), so that one
integer compare carries the NaN and tie rules. Measured (one thread, a shared machine, us a
call; the reference and onnxruntime as one-node models, ``benchmarks/select_ops.py``): 64 rows of
1000, k = 5: 61 (the reference 3057, onnxruntime 58); k = 100: 824 (onnxruntime 1143); one row of
25200, k = 100: 39 (the reference 2010, onnxruntime 29). The heap's first form, a compare
function with NaN branches on strided views, had taken 136 us for the first.

Order as the reference's (``inference.ops.sorting.stable_order``): ties go to the lower index
(-0 ties +0), and a NaN ranks above every number for the largest and below every number for the
smallest (NaNs among themselves by index), as numpy's argsort puts NaNs last. ``sorted=0`` leaves
the order unspecified: the sorted result serves it too, as in the reference. Other dtypes, k = 0,
a k out of range and a bad axis (the reference's errors) go to the reference.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels._jit import threaded_kernel
from inference.kernels.arg_reduce import order_key
from inference.kernels.arena_slot import new_output
from inference.ops._axes import normalize_axis, scalar
from inference.ops.registry import lookup, register


_NAN_KEY = np.int32(0x7FFFFFFF)  # every NaN's, past +inf's (either sign's NaN: one key)
_INDEX = np.int64(0xFFFFFFFF)  # a rank's low 32 bits: the element's index
#: slices up to this long: ranks hold their index in 32 bits
MAX_AXIS = 1 << 31


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _rank(bits, v, j, largest):
    """An int64 ordering element ``j`` (value ``v``, its float32 ``bits``) as TopK's output does,
    the first the smallest: the value's order as an int32 (:func:`~inference.kernels.arg_reduce.
    order_key`; a NaN past every number, at the front for the largest: the key inverted) above the
    index (ties to the lower). One integer compare for the NaN and tie rules."""
    key = _NAN_KEY if v != v else order_key(bits)
    key = ~key if largest else key
    return (np.int64(key) << 32) | j


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _sift_down(ranks, i, size):
    """Restore the heap of ``ranks[:size]`` (the worst, the largest rank, at the root) below ``i``."""
    r = ranks[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and ranks[c + 1] > ranks[c]:
            c += 1
        if ranks[c] <= r:
            break
        ranks[i] = ranks[c]
        i = c
    ranks[i] = r


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _top_of(src, bits, k, largest, vals, idx):
    """The ``k`` best of ``src`` (1-D, any stride; ``bits`` its int32 view) into ``vals`` and
    ``idx`` (length k), best first. ``idx`` holds the heap of the best ranks so far (the worst at
    the root), each later element that ranks before the root replacing it; an element whose value
    is not past the root's costs one float compare (false with a NaN, which the rank then
    decides); heapsort; the ranks' indices and their values last."""
    n = src.size
    for j in range(k):
        idx[j] = _rank(bits[j], src[j], j, largest)
    for i in range(k // 2 - 1, -1, -1):
        _sift_down(idx, i, k)
    root = idx[0]
    worst = src[root & _INDEX]
    for j in range(k, n):
        v = src[j]
        if (v <= worst) if largest else (v >= worst):
            continue  # not before the root: a tie goes to the root's lower index
        r = _rank(bits[j], v, j, largest)
        if r < root:
            idx[0] = r
            _sift_down(idx, 0, k)
            root = idx[0]
            worst = src[root & _INDEX]
    for end in range(k - 1, 0, -1):
        idx[0], idx[end] = idx[end], idx[0]
        _sift_down(idx, 0, end)
    for i in range(k):
        j = idx[i] & _INDEX
        idx[i] = j
        vals[i] = src[j]


@threaded_kernel()
def topk_rows(x, bits, k, largest, values, indices):
    """TopK of each row of ``x`` (rows, n) (``bits``: its int32 view) into the rows of ``values``
    and ``indices`` (rows, k), a row per parallel step: the last axis, contiguous."""
    for i in numba.prange(x.shape[0]):
        _top_of(x[i], bits[i], k, largest, values[i], indices[i])


@threaded_kernel()
def topk_slices(x, bits, k, largest, values, indices):
    """TopK of each slice ``x[o, :, c]`` of ``x`` (outer, n, inner) (``bits``: its int32 view) into
    ``values[o, :, c]`` and ``indices[o, :, c]`` (outer, k, inner), a slice per parallel step."""
    outer, n, inner = x.shape
    for t in numba.prange(outer * inner):
        o, c = t // inner, t % inner
        _top_of(x[o, :, c], bits[o, :, c], k, largest, values[o, :, c], indices[o, :, c])


def _topk(x, k, axis: int, largest: int, reference):
    """The fast TopK where it applies, else ``reference()``."""
    if type(x) is not np.ndarray or x.dtype != np.float32 or x.ndim == 0:
        return reference()
    a = normalize_axis(axis, x.ndim, "TopK axis")
    k = int(k)
    if not 0 < k <= x.shape[a] or not x.size or x.shape[a] >= MAX_AXIS:
        return reference()  # k = 0 (empty outputs), and the reference's errors
    shape = (math.prod(x.shape[:a]), x.shape[a], math.prod(x.shape[a + 1:]))
    out_shape = x.shape[:a] + (k,) + x.shape[a + 1:]
    values = new_output(out_shape)  # the first output: the step's slot
    indices = np.empty(out_shape, np.int64)
    xs = np.ascontiguousarray(x).reshape(shape)
    if shape[2] == 1:
        rows = (shape[0], shape[1])
        topk_rows(xs.reshape(rows), xs.reshape(rows).view(np.int32), k, bool(largest),
                  values.reshape(shape[0], k), indices.reshape(shape[0], k))
    else:
        out3 = (shape[0], k, shape[2])
        topk_slices(xs, xs.view(np.int32), k, bool(largest), values.reshape(out3), indices.reshape(out3))
    return values, indices


@register("TopK", since=1, kind="fast", applies=float32_input)
def topk_v1(x, *, k, axis=-1):
    return _topk(x, k, axis, 1, lambda: lookup("TopK", "", 1).fn(x, k=k, axis=axis))


@register("TopK", since=10, kind="fast", applies=float32_input)
def topk(x, k, *, axis=-1, largest=1, sorted=1):
    ref = lookup("TopK", "", 10).fn
    return _topk(x, scalar(k), axis, largest, lambda: ref(x, k, axis=axis, largest=largest, sorted=sorted))
