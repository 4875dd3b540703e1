"""``edgelearn::MaxPoolNHWC`` / ``AveragePoolNHWC``: ONNX's 2-D pools on channels-last tensors.

``X`` and ``Y`` are (N, H, W, C); attributes are those of ``MaxPool`` (one output, no Indices) and
``AveragePool``. The layout pass creates them so that a pool between channels-last convolutions
(squeezenet's fire modules, shufflenet's strided units) no longer ends the region with a pair of
transposes. Why a kernel of its own: channels-last, each tap of a window is one contiguous run of
C channels, so the fold vectorises over channels whatever the window; the NCHW kernels need a
padded, phase-split plane per channel to get contiguous taps. The reference transposes to NCHW
and calls ONNX's reference pool: it is the oracle.
"""
from __future__ import annotations

import functools

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Graph, Node, TensorType
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.kernels.channels_last import valid_range
from inference.kernels.fused import DOMAIN
from inference.kernels.nhwc import TO_NCHW, TO_NHWC
from inference.kernels.pool import fold_tap, max_nan
from inference.kernels.pool_ir import max_cols
from inference.ops import pool as reference
from inference.ops._memo import remember
from inference.ops._window import Window, window_geometry
from inference.ops.registry import KernelContext, register
from inference.schema import FormalParam, OpSchema, register_schema

# our op -> the ONNX op it is the channels-last form of
POOLS = {"MaxPoolNHWC": "MaxPool", "AveragePoolNHWC": "AveragePool"}
_COMMON = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None, "kernel_shape": None, "pads": None,
           "strides": None}
_ATTRS = {"MaxPoolNHWC": dict(_COMMON), "AveragePoolNHWC": {**_COMMON, "count_include_pad": 0}}


def _window(spatial: tuple, attrs: dict, where: str) -> Window:
    return window_geometry(spatial, attrs.get("kernel_shape"), attrs.get("strides"), attrs.get("dilations"),
                           attrs.get("pads"), attrs.get("auto_pad", "NOTSET"), int(attrs.get("ceil_mode", 0)), where)


def _shape_rule(op: str):
    def rule(node: Node, types: list) -> list:
        x = types[0]
        if not isinstance(x, TensorType) or x.rank != 4:
            return [None]
        spatial = x.shape[1:3]
        out = (_window(spatial, node.attrs, f"{op} {node.label()}").out_shape
               if all(isinstance(d, int) for d in spatial) else (None, None))
        return [TensorType(x.elem_type, (x.shape[0],) + tuple(out) + (x.shape[3],))]

    return rule


for _op in POOLS:
    register_schema(OpSchema(_op, DOMAIN, 1, (FormalParam("X"),), (FormalParam("Y"),), _ATTRS[_op],
                             shape_rule=_shape_rule(_op)))


def _check(op: str, x: np.ndarray) -> None:
    if x.ndim != 4:
        raise KernelError(f"{op}: X must be (N, H, W, C), got shape {x.shape}")


def _reference(op: str, x: np.ndarray, **attrs) -> np.ndarray:
    _check(op, x)
    nchw = np.ascontiguousarray(x.transpose(TO_NCHW))
    if POOLS[op] == "MaxPool":
        y = reference.max_pool(nchw, **attrs, ctx=KernelContext(None, 1, 1))
    else:
        y = reference.average_pool(nchw, **attrs)
    return np.ascontiguousarray(y.transpose(TO_NHWC))


@register("MaxPoolNHWC", since=1, domain=DOMAIN)
def max_pool_nhwc_reference(x, **attrs):
    return _reference("MaxPoolNHWC", x, **attrs)


@register("AveragePoolNHWC", since=1, domain=DOMAIN)
def average_pool_nhwc_reference(x, **attrs):
    return _reference("AveragePoolNHWC", x, **attrs)


# -- the fast kernel ----------------------------------------------------------------------------
@threaded_kernel()
def pool_nhwc(x, kh, kw, sh, sw, dh, dw, ph, pw, y, is_max, counts, divide):
    """Max (``is_max``) or sum of each window of ``x`` (N, H, W, C) into ``y`` (N, OH, OW, C), one
    output row per parallel step; with ``divide`` each output pixel is then divided by its
    ``counts`` (OH, OW) entry (the pixels it averages: the reference's divisor)."""
    n, oh = y.shape[0], y.shape[1]
    for r in numba.prange(n * oh):
        _pool_row(x, kh, kw, sh, sw, dh, dw, ph, pw, y, is_max, counts, divide, r // oh, r % oh)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _pool_row(x, kh, kw, sh, sw, dh, dw, ph, pw, y, is_max, counts, divide, b, oy):
    """Output row ``oy`` of image ``b``: its windows' taps inside the image, folded a pixel's C
    channels at a time (taps in the padding never win a max and add nothing to a sum). A max folds
    separably (:func:`_max_row`); a sum keeps the reference's order of taps, so averages round as it does."""
    if is_max:
        if kh == kw == sh == sw == 2 and dh == dw == 1 and ph == pw == 0 and 2 * oy + 1 < x.shape[1] \
                and 2 * y.shape[2] <= x.shape[2]:
            _max2x2_row(x, y, b, oy)
        else:
            _max_row(x, kh, kw, sh, sw, dh, dw, ph, pw, y, b, oy)
        return
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    out = y[b, oy]
    for ox in range(out.shape[0]):
        o = out[ox]
        first = True
        for ky in range(kh):
            iy = oy * sh - ph + ky * dh
            if iy < 0 or iy >= h:
                continue
            for kx in range(kw):
                ix = ox * sw - pw + kx * dw
                if ix < 0 or ix >= w:
                    continue
                fold_tap(o, x[b, iy, ix], c, first, False)
                first = False
        if first:  # a window wholly in the padding: what the reference's padded reduction gives
            for k in range(c):
                o[k] = 0.0
        if divide:
            d = counts[oy, ox]
            for k in range(c):
                o[k] /= d


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _max_row(x, kh, kw, sh, sw, dh, dw, ph, pw, y, b, oy):
    """A max pool's output row, separably: the window's rows inside the image folded into one row
    first (whole rows of W*C, long vectorised runs), then each output pixel's columns of that row
    (:func:`~inference.kernels.pool_ir.max_cols` for the pixels whose taps are all inside; the few
    border ones here). Why: folding each of a 3x3 window's 9 taps per pixel spent its time
    entering 9 short loops (squeezenet's 3x3/2 on 111x111x64: 214 us that way, 112 us with the
    rows folded first and the columns still in numba, 89-97 with three rows folded in one pass and
    the IR columns; one thread, alone)."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    out = y[b, oy]
    ow = out.shape[0]
    first, last = -1, -1  # the window's rows inside the image: iy = first, first + dh, ..., last
    for ky in range(kh):
        iy = oy * sh - ph + ky * dh
        if 0 <= iy < h:
            first = iy if first < 0 else first
            last = iy
    if first < 0:  # a row of windows wholly in the padding: what the reference's padded reduction gives
        out[:] = -np.inf
        return
    rows = np.empty(w * c, np.float32)
    img = x[b].reshape(h, w * c)
    _max3(rows, img[first], img[min(first + dh, last)], img[min(first + 2 * dh, last)])  # a row twice is harmless
    for iy in range(first + 3 * dh, last + 1, dh):
        fold_tap(rows, img[iy], w * c, False, True)
    lo, hi = valid_range(pw, 0, sw, w - (kw - 1) * dw, ow)  # columns with every tap inside
    max_cols(rows, out.reshape(ow * c), lo, hi, kw, sw, dw, pw, c)
    for j in range(ow - (hi - lo)):  # the border columns: [0, lo) and [hi, ow)
        ox = j if j < lo else j + hi - lo
        o = out[ox]
        first = True
        for kx in range(kw):
            ix = ox * sw - pw + kx * dw
            if 0 <= ix < w:
                fold_tap(o, rows[ix * c:(ix + 1) * c], c, first, True)
                first = False
        if first:  # a window wholly in the padding
            for k in range(c):
                o[k] = -np.inf


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _max2x2_row(x, y, b, oy):
    """A 2x2/2 max pool's output row, every window inside the image (VGG's, a UNet encoder's, a
    CRNN's pools): each pixel the max of its four taps' channels in one pass, NaN-propagating as
    :func:`_max_row`. Its folded rows and column pass had read three rows (the window's second
    twice) and written one more: (1, 112, 112, 64) 103 -> 59 us, (1, 32, 100, 32) 15 -> 9.6 (one
    thread, through the pool kernel; bitwise the same)."""
    c = x.shape[3]
    r0, r1 = x[b, 2 * oy].reshape(-1), x[b, 2 * oy + 1].reshape(-1)
    out = y[b, oy].reshape(-1)
    for ox in range(y.shape[2]):
        a0, a1, b0, b1 = r0[2 * ox * c:], r0[(2 * ox + 1) * c:], r1[2 * ox * c:], r1[(2 * ox + 1) * c:]
        o = out[ox * c:]
        for k in range(c):
            o[k] = max_nan(max_nan(a0[k], a1[k]), max_nan(b0[k], b1[k]))


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _max3(out, r0, r1, r2):
    """``out = max(r0, r1, r2)``, NaN-propagating: a 3-row window in one pass (folding the rows
    one at a time into ``out`` read and wrote it three times: 74 against 53 us for squeezenet's pool)."""
    for k in range(out.size):
        out[k] = max_nan(max_nan(r0[k], r1[k]), r2[k])


@functools.lru_cache(maxsize=256)
def _plan(op: str, x_shape: tuple, key: tuple):
    """The output shape, the kernel's geometry ints and (averages) the read-only float32 divisors,
    derived once per input shape and attributes."""
    attrs = dict(key)
    win = _window(x_shape[1:3], attrs, op)
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = win.kernel, win.strides, win.dilations, win.pads_begin
    counts = np.ones((1, 1), np.float32)
    if POOLS[op] == "AveragePool":
        counts = reference._window_counts(x_shape[1:3], win, int(attrs.get("count_include_pad", 0))).astype(np.float32)
    counts.flags.writeable = False
    return (x_shape[0],) + win.out_shape + (x_shape[3],), (kh, kw, sh, sw, dh, dw, ph, pw), counts


def _applies(node: Node, graph: Graph) -> bool:
    t = graph.type_of(node.inputs[0])
    return not isinstance(t, TensorType) or (t.elem_type == 1 and t.rank in (4, None))


def _binder(op: str):
    def binder(fn):
        def bind(**attrs):
            key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))
            plans: dict[tuple, tuple] = {}

            def run(x):
                if x.dtype != np.float32 or x.ndim != 4:
                    return _reference(op, x, **attrs)
                plan = plans.get(x.shape)
                if plan is None:
                    plan = remember(plans, x.shape, _plan(op, x.shape, key))
                out_shape, geo, counts = plan
                y = new_output(out_shape)
                pool_nhwc(np.ascontiguousarray(x), *geo, y, POOLS[op] == "MaxPool", counts, POOLS[op] != "MaxPool")
                return y

            return run

        return bind

    return binder


@register("MaxPoolNHWC", since=1, domain=DOMAIN, kind="fast", applies=_applies, bind=_binder("MaxPoolNHWC"))
def max_pool_nhwc(x, **attrs):
    return _binder("MaxPoolNHWC")(max_pool_nhwc)(**attrs)(x)


@register("AveragePoolNHWC", since=1, domain=DOMAIN, kind="fast", applies=_applies,
          bind=_binder("AveragePoolNHWC"))
def average_pool_nhwc(x, **attrs):
    return _binder("AveragePoolNHWC")(average_pool_nhwc)(**attrs)(x)
