"""Concat (along any axis) and Split's strided parts as numba row copies, and Add, Sub, Mul and
Div of same-shape operands, of a tensor and an operand broadcast over a middle run of its axes (a
per-channel gate, a bias, an attention mask), or of a tensor and a one-element one (attention's
scale), split over the threads when more than one runs.

Why Concat: numpy copies each part's short rows (a channels-last map's pixels) through its strided
loop, ~13 ns a row: three 16-channel 80x80 maps concatenated in 87 us, 40 as row copies here, 37
at two threads (numpy: 78); along an outer axis numpy copies whole blocks as fast, but a kernel
replay repeats only numba calls (a ViT's class token, concatenated before its patches, had kept
the whole model step by step). Why the binary ops: at one thread numpy's ufunc is one pass and as
fast as anything, but at two these ops ran slower than at one (YOLOv8-style at 320x320, per-node
sums: Add 79 -> 93 us, Concat 358 -> 586): what they read was just written by a parallel kernel,
half of it in the other core's cache, and one thread pulled it all across while the other
waited. Split by rows the way the producing kernels split their pixels, each thread finds its
half where it left it. At one thread these ran numpy's ufunc (as fast: 100K elements 9.9 us here
against 9.7, 400K 48 against 50) until kernel replay (:mod:`inference.kernel_replay`), which
repeats only numba calls: now here at any thread count, into the arena's slot and in place where
the plan says (100K in place: 5.5 us).
"""
from __future__ import annotations

import itertools
import math

import numba
import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import OVER_FIRST, OVER_SECOND, new_output, overwritten
from inference.ops import layout
from inference.ops._axes import int_list, normalize_axis
from inference.ops.registry import lookup, register

_CHUNK = 1 << 14  # elements per parallel work item of a binary op
ADD, SUB, MUL, DIV = range(4)


@threaded_kernel()
def copy_into_columns(src, dst, first):
    """``dst[r, first:first + w] = src[r]`` for each row r of ``src`` (rows, w)."""
    rows, width = src.shape
    for r in numba.prange(rows):
        d, s = dst[r, first:first + width], src[r]  # views indexed from 0: the loop vectorises
        for j in range(width):
            d[j] = s[j]


@threaded_kernel()
def copy_from_columns(src, dst, first):
    """``dst[r] = src[r, first:first + w]`` for each row r of ``dst`` (rows, w)."""
    rows, width = dst.shape
    for r in numba.prange(rows):
        d, s = dst[r], src[r, first:first + width]
        for j in range(width):
            d[j] = s[j]


@threaded_kernel()
def copy_parts(src, dst, widths):
    """Columns of ``src`` (rows, sum of ``widths``) into the flat ``dst`` part after part, each part
    its (rows, width) block: part p's row r at ``rows * (widths before p) + r * widths[p]``."""
    rows = src.shape[0]
    for r in numba.prange(rows):
        first = 0
        for w in widths:
            d, s = dst[rows * first + r * w:rows * first + (r + 1) * w], src[r, first:first + w]
            for j in range(w):
                d[j] = s[j]
            first += w


@threaded_kernel()
def binary_flat(a, b, y, op, over):
    """``y = a op b`` over flat arrays of one length, in chunks the threads share; ``over`` says
    which operand ``y`` is (:data:`OVER_FIRST` ...), when the plan runs the op in place."""
    n = y.size
    for c in numba.prange((n + _CHUNK - 1) // _CHUNK):
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        # views indexed from 0: indexing from ``lo`` kept the loop scalar, 6x slower than numpy
        # (58 against 10 us for 100K elements)
        aa, bb, yy = a[lo:hi], b[lo:hi], y[lo:hi]
        if over == OVER_FIRST:  # one view read and written: see arena_slot.overwritten
            _binary_loop(yy, bb, yy, op)
        elif over == OVER_SECOND:
            _binary_loop(aa, yy, yy, op)
        else:
            _binary_loop(aa, bb, yy, op)


@threaded_kernel()
def scalar_flat(a, s, y, op, scalar_first, in_place):
    """``y = a op s[0]`` (``s[0] op a`` for ``scalar_first``) over flat arrays, in the chunks of
    :func:`binary_flat`; ``s`` is read here, not passed as a value, so that a replay reads it anew;
    ``in_place``: ``y`` is ``a``."""
    n = y.size
    v = s[0]
    for c in numba.prange((n + _CHUNK - 1) // _CHUNK):
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        yy = y[lo:hi]
        if in_place:  # one view read and written: ``yy if in_place else a[lo:hi]`` kept it scalar
            _scalar_loop(yy, v, yy, op, scalar_first)  # (65K elements divided in place: 39 us, now 3)
        else:
            _scalar_loop(a[lo:hi], v, yy, op, scalar_first)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _scalar_loop(aa, v, yy, op, scalar_first):
    """``yy = aa op v`` (``v op aa`` for ``scalar_first``), the op chosen outside each loop."""
    if op == ADD:
        for i in range(yy.size):
            yy[i] = aa[i] + v
    elif op == MUL:
        for i in range(yy.size):
            yy[i] = aa[i] * v
    elif op == SUB and scalar_first:
        for i in range(yy.size):
            yy[i] = v - aa[i]
    elif op == SUB:
        for i in range(yy.size):
            yy[i] = aa[i] - v
    elif scalar_first:
        for i in range(yy.size):
            yy[i] = v / aa[i]
    else:
        for i in range(yy.size):
            yy[i] = aa[i] / v


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _binary_loop(aa, bb, yy, op):
    """``yy = aa op bb``, the op chosen outside each loop (a branch inside kept it scalar)."""
    if op == ADD:
        for i in range(yy.size):
            yy[i] = aa[i] + bb[i]
    elif op == SUB:
        for i in range(yy.size):
            yy[i] = aa[i] - bb[i]
    elif op == MUL:
        for i in range(yy.size):
            yy[i] = aa[i] * bb[i]
    else:
        for i in range(yy.size):
            yy[i] = aa[i] / bb[i]


@threaded_kernel()
def gated_rows(x, g, y, per_image, op, gate_first, in_place):
    """``y[r] = x[r] op g[r // per_image]`` (``g op x`` for ``gate_first``) for the rows of ``x``
    (outer * per_image, inner) and of its gate ``g`` (outer, inner) (:func:`_gate`), rows shared
    by the threads; ``in_place``: ``y`` is ``x``."""
    for r in numba.prange(x.shape[0]):
        gs, ys = g[r // per_image], y[r]
        if in_place:
            _gate_loop(ys, gs, ys, op, gate_first)
        else:
            _gate_loop(x[r], gs, ys, op, gate_first)


@threaded_kernel()
def channel_rows(x, g, y, channels, op, gate_first, in_place):
    """``y[r] = x[r] op g[r % channels]`` (``g op x`` for ``gate_first``): each row of ``x``
    (outer * channels, inner) by its channel's one value (:func:`_channels`), rows shared by the
    threads; ``in_place``: ``y`` is ``x``."""
    for r in numba.prange(x.shape[0]):
        ys, v = y[r], g[r % channels]
        if in_place:
            _scalar_loop(ys, v, ys, op, gate_first)
        else:
            _scalar_loop(x[r], v, ys, op, gate_first)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _gate_loop(xs, gs, ys, op, gate_first):
    if op == MUL:
        for k in range(ys.size):
            ys[k] = xs[k] * gs[k]
    elif op == ADD:
        for k in range(ys.size):
            ys[k] = xs[k] + gs[k]
    elif op == SUB and gate_first:
        for k in range(ys.size):
            ys[k] = gs[k] - xs[k]
    elif op == SUB:
        for k in range(ys.size):
            ys[k] = xs[k] - gs[k]
    elif gate_first:
        for k in range(ys.size):
            ys[k] = gs[k] / xs[k]
    else:
        for k in range(ys.size):
            ys[k] = xs[k] / gs[k]


#: a gate's rows shorter than this go to numpy when the tensor has more than SHORT_GATE_MAX
#: elements: a loop per few elements ran 1.1-1.2x numpy's broadcast there (1 x 128 x 128 x 4 by a
#: gate of 4: 90 against 76 us). On smaller tensors both are call-bound (an attention mask over
#: 4 x 7 x 7 scores: 0.8 against 1.1 us) and a numba call keeps the run replayable: a sequence of
#: fewer than 8 tokens ran its mask Add in numpy, so such a BERT was never replayed (1.2 ms a run
#: at 7 tokens step by step against 0.5 replayed at 9)
MIN_GATE_ROW = 8
SHORT_GATE_MAX = 16384


def _gate(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int] | None:
    """(outer, mid, inner) when ``b`` broadcasts over a middle run of ``a``'s axes alone, ``a`` viewed
    as (outer, mid, inner) and ``b`` as (outer, 1, inner): a channels-last map's per-channel gate
    (N, 1, 1, C), a bias (C,) over (N, L, C), an attention mask (B, 1, L) over scores (B, L, L)."""
    if b.ndim > a.ndim or b.size >= a.size:
        return None
    x, g = a.shape, (1,) * (a.ndim - b.ndim) + b.shape
    i = 0
    while i < len(x) and g[i] == x[i]:
        i += 1
    j = i
    while j < len(x) and g[j] == 1:
        j += 1
    inner = math.prod(x[j:])
    if x[j:] != g[j:] or (inner < MIN_GATE_ROW and a.size > SHORT_GATE_MAX):
        return None
    return math.prod(x[:i]), math.prod(x[i:j]), inner


def _channels(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int] | None:
    """(outer, channels, inner) when ``b`` holds one value per index of a middle run of ``a``'s axes
    and broadcasts over the rest: an NCHW map's per-channel scale or shift (1, C, 1, 1) or (C, 1, 1),
    as torch's GroupNorm export applies its affine after the InstanceNormalization."""
    if b.ndim > a.ndim or b.size >= a.size:
        return None
    x, g = a.shape, (1,) * (a.ndim - b.ndim) + b.shape
    i = 0
    while i < len(x) and g[i] == 1:
        i += 1
    j = i
    while j < len(x) and g[j] == x[j] and g[j] != 1:
        j += 1
    if j == i or any(d != 1 for d in g[j:]):
        return None
    return math.prod(x[:i]), math.prod(x[i:j]), math.prod(x[j:])


@register("Concat", since=4, kind="fast", applies=float32_input)
def concat_rows(*inputs, axis):
    """Each part's rows (everything from ``axis`` inward) copied into its columns of the output
    viewed as (outer rows, total width): on the last axis a channels-last map's pixels, on an
    outer one whole blocks (a ViT's class token before its patches), in numba either way so that a
    kernel replay repeats it. One part is copied the same way (``torch.stack`` of a one-layer
    model's key/value cache, a graph output, had been numpy's copy: never replayed)."""
    rows_copy = len(inputs) > 0
    if rows_copy:
        x = inputs[0]
        axis = normalize_axis(axis, x.ndim, "Concat axis")
        rows_copy = x.ndim >= 1 and all(a.dtype == np.float32 and a.ndim == x.ndim and a.shape[:axis] == x.shape[:axis]
                                        and a.shape[axis + 1:] == x.shape[axis + 1:] for a in inputs)
    if not rows_copy:
        return layout.concat(*inputs, axis=axis)  # and its errors
    shape = list(inputs[0].shape)
    shape[axis] = sum(a.shape[axis] for a in inputs)
    y = new_output(tuple(shape))
    rows = math.prod(shape[:axis])
    width = y.size // rows if rows else 0
    first = 0
    for a in inputs:
        if a.size:
            copy_into_columns(np.ascontiguousarray(a).reshape(rows, -1), y.reshape(rows, width), first)
        first += a.size // rows if rows else 0
    return y


def _split_rows(x: np.ndarray, axis: int, sizes: list[int]) -> tuple:
    """The parts of float32 ``x`` along ``axis``: views where each part is one contiguous block (the
    outermost axis), else all copied out by one numba call into one buffer they view in turn.
    PyTorch's q/k/v split of a fused projection runs along the last axis; the reference copies every
    part in numpy, which a kernel replay (repeating only numba calls) cannot repeat. One call, not
    one per part: GPT's (1, 32, 384) q/k/v split took 13.6 us as three (numpy's split and copies:
    11.5), the Python around each call as long as its copy."""
    x = np.ascontiguousarray(x)
    rows, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1:])
    starts = list(itertools.accumulate(sizes, initial=0))
    if rows <= 1 or len(sizes) == 1:
        lead = (slice(None),) * axis
        return tuple(x[lead + (slice(a, b),)] for a, b in zip(starts, starts[1:]))
    flat = np.empty(x.size, np.float32)
    if flat.size:
        copy_parts(x.reshape(rows, -1), flat, np.array(sizes, np.int64) * inner)
    parts = []
    for size, first in zip(sizes, starts):
        shape = x.shape[:axis] + (size,) + x.shape[axis + 1:]
        parts.append(flat[rows * first * inner:rows * (first + size) * inner].reshape(shape))
    return tuple(parts)


@register("Split", since=13, kind="fast", applies=float32_input)
def split_13(x, split=None, *, axis=0, ctx):
    if x.dtype != np.float32 or x.ndim == 0:
        return layout.split_v13(x, split, axis=axis, ctx=ctx)
    return _split_rows(x, *layout.split_plan(x, int_list(split), axis, ctx.num_outputs))


@register("Split", since=18, kind="fast", applies=float32_input)
def split_18(x, split=None, *, axis=0, num_outputs=None, ctx):
    if x.dtype != np.float32 or x.ndim == 0:
        return layout.split_v18(x, split, axis=axis, num_outputs=num_outputs, ctx=ctx)
    layout.check_split18(split is not None, num_outputs, ctx.num_outputs)
    return _split_rows(x, *layout.split_plan(x, int_list(split), axis, num_outputs, ragged=True))


def _binary(op_type: str, code: int):
    reference = lookup(op_type, "", 14).fn

    def kernel(a, b):
        if type(a) is not np.ndarray or type(b) is not np.ndarray or a.dtype != np.float32 or b.dtype != np.float32:
            return reference(a, b)
        if a.shape == b.shape:
            y = new_output(a.shape)
            af, bf, yf = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1), y.reshape(-1)
            binary_flat(af, bf, yf, code, overwritten(yf, af, bf))
            return y
        scalar_first = a.size == 1 and a.ndim <= b.ndim
        if scalar_first or (b.size == 1 and b.ndim <= a.ndim):
            x, s = (b, a) if scalar_first else (a, b)
            y = new_output(x.shape)
            xf, yf = np.ascontiguousarray(x).reshape(-1), y.reshape(-1)
            scalar_flat(xf, s.reshape(1), yf, code, scalar_first, overwritten(yf, xf) == OVER_FIRST)
            return y
        y = _broadcast_rows(a, b, code)
        return reference(a, b) if y is None else y

    kernel.__name__ = kernel.__qualname__ = f"threaded_{op_type.lower()}"
    return kernel


#: the broadcasts run as rows: (the split's finder, its rows kernel, whether the broadcast operand
#: is (outer, inner) rows (a gate over a middle run) rather than one value per channel)
_BROADCASTS = ((_gate, gated_rows, True), (_channels, channel_rows, False))


def _broadcast_rows(a: np.ndarray, b: np.ndarray, code: int) -> np.ndarray | None:
    """``a op b`` where one operand broadcasts over the other as a gate over a middle run of its
    axes (:func:`_gate`) or as per-channel values (:func:`_channels`), either order, into the
    step's slot (in place where planned); None when neither applies (numpy's broadcast then)."""
    for find, rows_kernel, gate_rows in _BROADCASTS:
        split = find(b, a)
        gate_first = split is not None
        split = split or find(a, b)
        if split is None:
            continue
        x, g = (b, a) if gate_first else (a, b)
        outer, mid, inner = split
        y = new_output(x.shape)
        xr, yr = np.ascontiguousarray(x).reshape(-1, inner), y.reshape(-1, inner)
        g = np.ascontiguousarray(g).reshape((outer, inner) if gate_rows else (mid,))
        rows_kernel(xr, g, yr, mid, code, gate_first, overwritten(yr, xr) == OVER_FIRST)
        return y
    return None


for _op, _code in (("Add", ADD), ("Sub", SUB), ("Mul", MUL), ("Div", DIV)):
    register(_op, since=7, kind="fast", applies=float32_input)(_binary(_op, _code))
