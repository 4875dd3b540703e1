"""Backward-only kernels of the neural-network ops (domain ``edgelearn.grad``).

They exist because the gradients of windowed and normalizing ops are not cheap or clear as
compositions of standard ONNX ops. Each is an ordinary registered op with a schema and a shape
rule, so the session plans, frees and runs the backward graph like any forward graph. Inputs
that appear only "for their shape" (``X`` of ConvGradInput, ``W`` of ConvGradWeight) keep the
output's static type exact for shape inference and memory planning.

The window ops share one generic adjoint, :func:`scatter_taps` (the transpose of
``inference.ops._window.padded_windows``): it adds per-tap values back onto the input positions
they were read from, one strided numpy add per kernel tap; 1-D/2-D windows use serial numba loops
instead where those measured faster. Ungrouped 1-D/2-D convolutions with 8 or more input channels
run their GEMMs on NHWC rows (:mod:`training.kernels._conv_rows`); the
others use the transposed column layout of :func:`columns_t` (measured 2-4x cheaper to build than
the forward's im2col).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import TensorType
from inference.ops._window import Window, padded_windows, window_geometry
from inference.ops.conv import _conv_geometry  # the forward's own geometry and checks, so both sides agree
from inference.ops.normalization import _channel_shape
from inference.ops.pool import _lowest, _window_counts
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema
from training.grads.registry import GRAD_DOMAIN
from training.kernels._conv_rows import Params2d, grad_input_rows, grad_weight_rows, rows_win

_WINDOW_ATTRS = {"auto_pad": "NOTSET", "dilations": None, "kernel_shape": None, "pads": None, "strides": None}


# --- shared helpers ---------------------------------------------------------------------------

def scatter_taps(tap_values: Callable[[tuple[int, ...]], np.ndarray], lead: tuple[int, ...], win: Window,
                 spatial: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """Adjoint of the window view: add ``tap_values(tap)`` (lead + out_shape) at every kernel tap's
    input positions and return the (lead + spatial) sum, pads cropped. One strided add per tap."""
    padded = tuple(pb + i + pe for i, pb, pe in zip(spatial, win.pads_begin, win.padded_end(spatial)))
    acc = np.zeros(tuple(lead) + padded, dtype=dtype)
    for tap in np.ndindex(*win.kernel):
        where = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                      for t, d, o, s in zip(tap, win.dilations, win.out_shape, win.strides))
        acc[(Ellipsis,) + where] += tap_values(tap)
    crop = tuple(slice(pb, pb + i) for pb, i in zip(win.pads_begin, spatial))
    return np.ascontiguousarray(acc[(Ellipsis,) + crop])


def col2im_add(vals: np.ndarray, win: Window, spatial: Sequence[int]) -> np.ndarray:
    """:func:`scatter_taps` of materialized window values ``vals`` (lead..., *out, *kernel)."""
    nd = len(win.kernel)
    return scatter_taps(lambda tap: vals[(Ellipsis,) + tap], vals.shape[:-2 * nd], win, spatial, vals.dtype)


def columns_t(x: np.ndarray, win: Window, group: int) -> np.ndarray:
    """Columns (G, Cg*K, N*P) of ``x``: im2col transposed, so the copy runs along output pixels
    (long strided rows) instead of the few kernel taps, and both gradient GEMMs take it as is.
    1-D/2-D windows use the numba row copy (:func:`_columns_t_2d`), others a numpy strided copy."""
    n, c = x.shape[:2]
    nd = len(win.kernel)
    plan = _as_2d(win, x)
    if plan is not None:
        params, (x2,) = plan
        return _columns_t_2d(x2, *_out_2d(win), *params).reshape(group, -1, n * math.prod(win.out_shape))
    v = padded_windows(x, win).reshape((n, group, c // group) + win.out_shape + win.kernel)
    order = (1, 2) + tuple(range(3 + nd, 3 + 2 * nd)) + (0,) + tuple(range(3, 3 + nd))
    return v.transpose(order).reshape(group, -1, n * math.prod(win.out_shape))


def columns_t_adjoint(cols: np.ndarray, win: Window, shape: tuple[int, ...]) -> np.ndarray:
    """Column gradients (G, Cg*K, N*P) added back onto an input of ``shape`` (N, C, *spatial):
    the transpose of :func:`columns_t` (numba rows for 1-D/2-D, per-tap numpy adds otherwise)."""
    n, c, nd = shape[0], shape[1], len(shape) - 2
    plan = _as_2d(win)
    if plan is not None:
        params, _ = plan
        cols2 = cols.reshape((c, params[0], params[1], n) + _out_2d(win))
        spatial = (1,) * (2 - nd) + tuple(shape[2:])
        return _col2im_2d(cols2, *spatial, *params).reshape(shape)
    cols = cols.reshape((c,) + win.kernel + (n,) + win.out_shape)  # (C, *k, N, *out)
    order = (1 + nd, 0) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(1, 1 + nd))
    return col2im_add(cols.transpose(order), win, shape[2:])  # (N, C, *spatial)


def _out_2d(win: Window) -> tuple[int, int]:
    """The window's output shape with a unit height for 1-D (as :func:`_as_2d` views arrays)."""
    return ((1,) * (2 - len(win.out_shape)) + tuple(win.out_shape))[-2:]


def _per_group(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched matmul over the leading group axis (a plain 2-D GEMM when there is one group)."""
    return (a[0] @ b[0])[None] if a.shape[0] == 1 else np.matmul(a, b)


def _check_dy(dy: np.ndarray, lead: tuple[int, ...], win: Window, op: str) -> None:
    want = lead + tuple(win.out_shape)
    if dy.shape != want:
        raise KernelError(f"{op}: upstream gradient has shape {dy.shape}, the forward output was {want}")


def _spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


# --- numba loops for 1-D/2-D windows (where per-tap numpy passes lose clearly) -----------------
# Taps outside, output rows inside (contiguous reads). Serial on purpose: a parallel twin entered
# right after an OpenBLAS GEMM measured 10-50x slower on the loaded 2-core machine.

def _as_2d(win: Window, *arrays: np.ndarray) -> tuple[Params2d, list[np.ndarray]] | None:
    """Window params and C-contiguous arrays viewed as 2-D (a 1-D window gets a unit height),
    or None for 3-D and up."""
    nd = len(win.kernel)
    if nd > 2:
        return None
    pre = (1,) * (2 - nd)
    k, s, d = pre + win.kernel, pre + win.strides, pre + win.dilations
    pb = (0,) * (2 - nd) + win.pads_begin
    views = [np.ascontiguousarray(a.reshape(a.shape[:-nd] + pre + a.shape[-nd:])) for a in arrays]
    return (k[0], k[1], s[0], s[1], d[0], d[1], pb[0], pb[1]), views


@numba.njit(cache=True, error_model="numpy", inline="always")
def _outputs_reading(tap, d, s, p, size, out):
    """Range [lo, hi) of output positions whose tap ``tap`` reads inside the input [0, size)."""
    lo = max(0, (p - tap * d + s - 1) // s)
    hi = min(out, (size + p - tap * d + s - 1) // s)
    return lo, max(lo, hi)


@numba.njit(cache=True, error_model="numpy")
def _tap_ranges(out, d, s, p, size, k):
    """Per output position o, the taps [lo, hi) whose input o*s - p + tap*d lies in [0, size)."""
    r = np.empty((out, 2), np.int64)
    for o in range(out):
        start = o * s - p
        lo = max(0, (d - 1 - start) // d)
        r[o, 0], r[o, 1] = lo, max(lo, min(k, (size - start + d - 1) // d))
    return r


@numba.njit(cache=True, error_model="numpy")
def _max_pool_grad_2d(dy, x, y, kh, kw, sh, sw, dh, dw, ph, pw, relu):
    """Each window's gradient to its first tap (row-major) equal to the window's max ``y``
    (MaxPool's argmax). The taps are scanned last to first with a select instead of a branch
    and an early exit (data-dependent branches mispredicted about once per window), and the
    in-bounds tap ranges are computed once per row/column, not per window (integer divisions).
    ``relu``: drop the gradient of windows whose max is not positive (see ``through_relu``)."""
    n, c, oh, ow = dy.shape
    h, wd = x.shape[2], x.shape[3]
    dx = np.zeros(x.shape, dy.dtype)
    xf, yf, gf, df = x.reshape(-1), y.reshape(-1), dy.reshape(-1), dx.reshape(-1)
    rows, cols = _tap_ranges(oh, dh, sh, ph, h, kh), _tap_ranges(ow, dw, sw, pw, wd, kw)
    for plane in range(n * c):
        xb, yb = plane * h * wd, plane * oh * ow
        for oy in range(oh):
            for ox in range(ow):
                target = yf[yb + oy * ow + ox]
                best = -1
                for i in range(rows[oy, 1] - 1, rows[oy, 0] - 1, -1):
                    row = xb + (oy * sh - ph + i * dh) * wd + ox * sw - pw
                    for j in range(cols[ox, 1] - 1, cols[ox, 0] - 1, -1):
                        k = row + j * dw
                        best = k if xf[k] == target else best
                if best >= 0 and (not relu or target > 0):
                    df[best] += gf[yb + oy * ow + ox]
    return dx


@numba.njit(cache=True, error_model="numpy")
def _max_pool_grad_2x2(dy, x, y, relu):
    """:func:`_max_pool_grad_2d` for the common 2x2, stride 2, unpadded, undilated window, where
    each window owns its four inputs: the index (0-3) of the window's first max comes from three
    compares and one store routes the gradient there onto a zeroed dX (measured 1.5-2x faster
    than four selected stores per window, 4x faster than the generic loop). Unlike the generic
    loop, a window matching none of its taps (a NaN max) routes its gradient to the last tap:
    checking for that doubled the kernel's time, and the step's loss is NaN then anyway.
    ``relu`` as in :func:`_max_pool_grad_2d` (a select in the loop: ~0.1 ms less than numpy's
    ``where`` on dY first)."""
    n, c, oh, ow = dy.shape
    dx = np.zeros(x.shape, dy.dtype)  # rows/columns no window covers (odd sizes) stay 0
    zero = dy.dtype.type(0)
    for ni in range(n):
        for ci in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    t = y[ni, ci, oy, ox]
                    a0, a1 = x[ni, ci, 2 * oy, 2 * ox] == t, x[ni, ci, 2 * oy, 2 * ox + 1] == t
                    b0 = x[ni, ci, 2 * oy + 1, 2 * ox] == t
                    k = 0 if a0 else (1 if a1 else (2 if b0 else 3))
                    g = dy[ni, ci, oy, ox]
                    dx[ni, ci, 2 * oy + (k >> 1), 2 * ox + (k & 1)] = g if not relu or t > 0 else zero
    return dx


@numba.njit(cache=True, error_model="numpy")
def _columns_t_2d(x, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw):
    """:func:`columns_t` for 2-D windows as one pass of row copies: (C, kh, kw, N, oh, ow), zeros
    where a tap reads padding (numpy copied a 7-D strided view). Flat indices and per-tap
    in-bounds ranges, so the inner copy is a plain (vectorised) loop; a row view per row cost
    more than the copy of its few elements."""
    n, c, h, wd = x.shape
    cols = np.zeros(c * kh * kw * n * oh * ow, x.dtype)
    xf = x.reshape(-1)
    q = 0  # start of the current (ci, i, j, ni) block of oh * ow columns
    for ci in range(c):
        for i in range(kh):
            ylo, yhi = _outputs_reading(i, dh, sh, ph, h, oh)
            for j in range(kw):
                xlo, xhi = _outputs_reading(j, dw, sw, pw, wd, ow)
                for ni in range(n):
                    plane = (ni * c + ci) * h * wd
                    for oy in range(ylo, yhi):
                        src, dst = plane + (oy * sh - ph + i * dh) * wd - pw + j * dw, q + oy * ow
                        if sw == 1:  # unit stride: a contiguous copy the compiler vectorises
                            for ox in range(xlo, xhi):
                                cols[dst + ox] = xf[src + ox]
                        else:
                            for ox in range(xlo, xhi):
                                cols[dst + ox] = xf[src + ox * sw]
                    q += oh * ow
    return cols.reshape(c, kh, kw, n, oh, ow)


@numba.njit(cache=True, error_model="numpy")
def _col2im_2d(cols, h, wd, kh, kw, sh, sw, dh, dw, ph, pw):
    """Adjoint of :func:`_columns_t_2d`: column gradients (C, kh, kw, N, oh, ow) added back onto
    (N, C, h, wd) in one pass of row adds (numpy's per-tap adds walked a transposed view)."""
    c, _, _, n, oh, ow = cols.shape
    dx = np.zeros(n * c * h * wd, cols.dtype)
    cf = cols.reshape(-1)
    q = 0
    for ci in range(c):
        for i in range(kh):
            ylo, yhi = _outputs_reading(i, dh, sh, ph, h, oh)
            for j in range(kw):
                xlo, xhi = _outputs_reading(j, dw, sw, pw, wd, ow)
                for ni in range(n):
                    plane = (ni * c + ci) * h * wd
                    for oy in range(ylo, yhi):
                        dst, src = plane + (oy * sh - ph + i * dh) * wd - pw + j * dw, q + oy * ow
                        if sw == 1:
                            for ox in range(xlo, xhi):
                                dx[dst + ox] += cf[src + ox]
                        else:
                            for ox in range(xlo, xhi):
                                dx[dst + ox * sw] += cf[src + ox]
                    q += oh * ow
    return dx.reshape(n, c, h, wd)


@numba.njit(cache=True, error_model="numpy")
def _scatter_add(flat_index, values, size):
    out = np.zeros(size, values.dtype)
    for k in range(flat_index.size):
        out[flat_index[k]] += values[k]
    return out


@numba.njit(cache=True, error_model="numpy")
def _depthwise_grad_input_2d(dy, w, h, wd, kh, kw, sh, sw, dh, dw, ph, pw):
    n, c, oh, ow = dy.shape
    dx = np.zeros((n, c, h, wd), dy.dtype)
    for r in range(n * c):
        ni, ci = r // c, r % c
        for i in range(kh):
            ylo, yhi = _outputs_reading(i, dh, sh, ph, h, oh)
            for j in range(kw):
                xlo, xhi = _outputs_reading(j, dw, sw, pw, wd, ow)
                wv = w[ci, 0, i, j]
                for oy in range(ylo, yhi):
                    src, dst = dy[ni, ci, oy], dx[ni, ci, oy * sh - ph + i * dh]
                    for ox in range(xlo, xhi):
                        dst[ox * sw - pw + j * dw] += wv * src[ox]
    return dx


@numba.njit(cache=True, error_model="numpy")
def _depthwise_grad_weight_2d(dy, x, kh, kw, sh, sw, dh, dw, ph, pw):
    n, c, oh, ow = dy.shape
    h, wd = x.shape[2], x.shape[3]
    acc = np.zeros((c, 1, kh, kw), np.float64)
    for ci in range(c):
        for ni in range(n):
            for i in range(kh):
                ylo, yhi = _outputs_reading(i, dh, sh, ph, h, oh)
                for j in range(kw):
                    xlo, xhi = _outputs_reading(j, dw, sw, pw, wd, ow)
                    total = 0.0
                    for oy in range(ylo, yhi):
                        g, row = dy[ni, ci, oy], x[ni, ci, oy * sh - ph + i * dh]
                        for ox in range(xlo, xhi):
                            total += g[ox] * row[ox * sw - pw + j * dw]
                    acc[ci, 0, i, j] += total
    return acc


# --- shape rules ------------------------------------------------------------------------------

def _like(i: int):
    """Shape rule: one output with the type of input ``i``."""
    return lambda node, types: [types[i] if i < len(types) else None]


def _like_many(*idx: int):
    return lambda node, types: [types[i] if i < len(types) else None for i in idx][:len(node.outputs)]


def _conv_weight_types(node, types) -> list:
    w = types[2] if len(types) > 2 else None
    if w is None:
        return [None] * len(node.outputs)
    bias = TensorType(w.elem_type, None if w.shape is None else (w.shape[0],))
    return [w, bias][:len(node.outputs)]


def _layer_norm_types(node, types) -> list:
    x, scale = (types + [None, None, None])[1:3]
    if x is None or x.shape is None:
        return [x, None, None][:len(node.outputs)]
    norm = TensorType(scale.elem_type if scale is not None else x.elem_type,
                      tuple(x.shape[node.attrs.get("axis", -1) % len(x.shape):]))
    return [x, norm, norm][:len(node.outputs)]


def _schema(op: str, inputs: Sequence[str], outputs: Sequence[str], attrs: dict, rule,
            optional_from: int | None = None) -> None:
    ins = tuple(FormalParam(n, optional=optional_from is not None and k >= optional_from)
                for k, n in enumerate(inputs))
    register_schema(OpSchema(op, GRAD_DOMAIN, 1, ins, tuple(FormalParam(n) for n in outputs), attrs, rule))


_CONV_ATTRS = {**_WINDOW_ATTRS, "group": 1}
_POOL_ATTRS = {**_WINDOW_ATTRS, "ceil_mode": 0}
_schema("ConvGradInput", ("dY", "W", "X"), ("dX",), _CONV_ATTRS, _like(2))
_schema("ConvGradWeight", ("dY", "X", "W"), ("dW", "dB"), _CONV_ATTRS, _conv_weight_types)
_schema("MaxPoolGrad", ("dY", "Indices", "X"), ("dX",), {}, _like(2))
_schema("MaxPoolGradByMatch", ("dY", "X", "Y"), ("dX",), {**_POOL_ATTRS, "through_relu": 0}, _like(1))
_schema("AveragePoolGrad", ("dY", "X"), ("dX",), {**_POOL_ATTRS, "count_include_pad": 0}, _like(1))
_schema("GlobalAveragePoolGrad", ("dY", "X"), ("dX",), {}, _like(1))
_schema("BatchNormGrad", ("dY", "X", "scale", "input_mean", "input_var"), ("dX", "dScale", "dB"),
        {"epsilon": 1e-5, "training_mode": 0}, _like_many(1, 2, 2))
_schema("LayerNormGrad", ("dY", "X", "scale", "Mean", "InvStdDev"), ("dX", "dScale", "dB"),
        {"axis": -1, "epsilon": 1e-5}, _layer_norm_types, optional_from=3)
_schema("DropoutGrad", ("dY", "mask", "ratio", "training_mode"), ("dX",), {}, _like(0), optional_from=2)


# --- convolution ------------------------------------------------------------------------------

def _dy_t(dy: np.ndarray, group: int) -> np.ndarray:
    """dY (N, M, *out) as (G, Mg, N*P), the layout of the column GEMMs."""
    n, m = dy.shape[:2]
    return dy.reshape(n, group, m // group, -1).transpose(1, 2, 0, 3).reshape(group, m // group, -1)


@register("ConvGradInput", since=1, domain=GRAD_DOMAIN)
def conv_grad_input(dy, w, x, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                    pads=None, strides=None):
    """dX of Conv: per group ``W^T dY`` gives the column gradients, added back onto X's positions
    by :func:`columns_t_adjoint`.

    Depthwise (one input and one output channel per group) skips the GEMM: each tap adds
    ``dY * w[:, tap]`` directly (a numba loop for 1-D/2-D, measured ~10x over numpy passes).
    """
    win = _conv_geometry(x, w, group, kernel_shape, strides, dilations, pads, auto_pad, "ConvGradInput")
    n, c = x.shape[:2]
    m, nd = w.shape[0], x.ndim - 2
    _check_dy(dy, (n, m), win, "ConvGradInput")
    if c == group and m == group:
        plan = _as_2d(win, dy, w, x)
        if plan is not None:
            params, (dy2, w2, x2) = plan
            dx = _depthwise_grad_input_2d(dy2, w2, *x2.shape[2:], *params)
            return dx.reshape(x.shape).astype(x.dtype, copy=False)
        taps = w.reshape((1, c) + (1,) * nd + win.kernel)
        dx = scatter_taps(lambda tap: dy * taps[(Ellipsis,) + tap], (n, c), win, x.shape[2:], dy.dtype)
        return dx.astype(x.dtype, copy=False)
    plan = _as_2d(win, dy, w) if group == 1 and rows_win(c) else None
    if plan is not None:
        params, (dy2, w2) = plan
        shape2 = (n, c) + (1,) * (2 - nd) + tuple(x.shape[2:])
        return grad_input_rows(dy2, w2, shape2, params).reshape(x.shape).astype(x.dtype, copy=False)
    cols = _per_group(w.reshape(group, m // group, -1).transpose(0, 2, 1), _dy_t(dy, group))  # (G, Cg*K, N*P)
    return columns_t_adjoint(cols, win, x.shape).astype(x.dtype, copy=False)


@register("ConvGradWeight", since=1, domain=GRAD_DOMAIN)
def conv_grad_weight(dy, x, w, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                     pads=None, strides=None, ctx):
    """dW of Conv (and dB as a second output): ``dY`` times the columns of X, per group."""
    win = _conv_geometry(x, w, group, kernel_shape, strides, dilations, pads, auto_pad, "ConvGradWeight")
    _check_dy(dy, (x.shape[0], w.shape[0]), win, "ConvGradWeight")
    plan = _as_2d(win, dy, x) if x.shape[1] == group == w.shape[0] else None
    if plan is not None:  # depthwise: direct loop, no columns
        params, (dy2, x2) = plan
        dw = _depthwise_grad_weight_2d(dy2, x2, *params)
        db = dy.sum(axis=(0,) + _spatial_axes(dy)) if ctx.num_outputs > 1 else None
    elif group == 1 and (plan := _as_2d(win, dy, x)) is not None and rows_win(x.shape[1]):
        params, (dy2, x2) = plan
        dw, db = grad_weight_rows(dy2, x2, params)
    else:  # per sample: dY[n] (G, Mg, P) @ its columns (G, P, Cg*K), summed over the batch
        n, m = dy.shape[:2]
        cols = columns_t(x, win, group)
        cols = cols.reshape(group, cols.shape[1], n, -1).transpose(2, 0, 3, 1)  # (N, G, P, Cg*K) view
        dw = np.matmul(dy.reshape(n, group, m // group, -1), cols).sum(axis=0)
        if ctx.num_outputs > 1:  # as a GEMV: ~3x faster than numpy's sum over the (0, 2) axes
            rows = dy.reshape(n * m, -1)
            db = (rows @ np.ones(rows.shape[1], rows.dtype)).reshape(n, m).sum(axis=0)
        else:
            db = None
    dw = dw.reshape(w.shape).astype(w.dtype, copy=False)
    if db is None:
        return dw
    return dw, db.reshape(-1).astype(w.dtype, copy=False)


# --- pooling ----------------------------------------------------------------------------------

def _pool_window(x: np.ndarray, dy: np.ndarray, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode,
                 op: str) -> Window:
    if kernel_shape is None:
        raise KernelError(f"{op}: attribute kernel_shape is required")
    win = window_geometry(x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, op)
    _check_dy(dy, x.shape[:2], win, op)
    return win


@register("MaxPoolGrad", since=1, domain=GRAD_DOMAIN)
def max_pool_grad(dy, indices, x):
    """dX of MaxPool from its Indices output (flat over X, storage_order 0)."""
    if indices.shape != dy.shape:
        raise KernelError(f"MaxPoolGrad: indices {indices.shape} and dY {dy.shape} differ in shape")
    flat = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= x.size):
        raise KernelError(f"MaxPoolGrad: an index lies outside the {x.size} elements of X {x.shape}")
    dx = _scatter_add(flat, np.ascontiguousarray(dy).reshape(-1), x.size)
    return dx.reshape(x.shape).astype(x.dtype, copy=False)


@register("MaxPoolGradByMatch", since=1, domain=GRAD_DOMAIN)
def max_pool_grad_by_match(dy, x, y, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None,
                           pads=None, strides=None, through_relu=0):
    """dX of MaxPool from its output Y: each window's gradient goes to the first tap equal to its
    max (the argmax MaxPool's Indices name), so no forward re-run is needed for the indices.

    ``through_relu``: X is a Relu's output and dX also goes back through that Relu. The routed
    tap holds the window's max, so the Relu's mask there is ``Y > 0``, applied to the pooled dY
    (set by :func:`training.graph.fuse_relu_into_pool_grads`)."""
    win = _pool_window(x, dy, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, "MaxPoolGradByMatch")
    relu = bool(through_relu)
    plan = _as_2d(win, dy, x, y)
    if plan is not None:  # 1-D/2-D: one numba pass finding each window's first max (~20x numpy)
        params, (dy2, x2, y2) = plan
        inside = 2 * dy2.shape[2] <= x2.shape[2] and 2 * dy2.shape[3] <= x2.shape[3]  # no ceil_mode/pad tail
        dx = _max_pool_grad_2x2(dy2, x2, y2, relu) if params == (2, 2, 2, 2, 1, 1, 0, 0) and inside else \
            _max_pool_grad_2d(dy2, x2, y2, *params, relu)
        return dx.reshape(x.shape).astype(x.dtype, copy=False)
    if relu:
        dy = np.where(y > 0, dy, dy.dtype.type(0))
    windows = padded_windows(x, win, _lowest(x.dtype))
    taken = np.zeros(y.shape, dtype=bool)

    def routed(tap: tuple[int, ...]) -> np.ndarray:
        hit = windows[(Ellipsis,) + tap] == y
        hit &= ~taken
        taken[...] |= hit
        return np.where(hit, dy, dy.dtype.type(0))

    return scatter_taps(routed, x.shape[:2], win, x.shape[2:], dy.dtype).astype(x.dtype, copy=False)


@register("AveragePoolGrad", since=1, domain=GRAD_DOMAIN)
def average_pool_grad(dy, x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                      kernel_shape=None, pads=None, strides=None):
    """dX of AveragePool: every tap of a window gets ``dY / count`` of that window."""
    win = _pool_window(x, dy, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, "AveragePoolGrad")
    share = dy / _window_counts(x.shape[2:], win, count_include_pad).astype(dy.dtype)
    return scatter_taps(lambda tap: share, x.shape[:2], win, x.shape[2:], dy.dtype).astype(x.dtype, copy=False)


@register("GlobalAveragePoolGrad", since=1, domain=GRAD_DOMAIN)
def global_average_pool_grad(dy, x):
    """dX of GlobalAveragePool: ``dY`` spread evenly over each channel's spatial positions."""
    size = math.prod(x.shape[2:])
    out = np.empty(x.shape, dtype=x.dtype)
    out[...] = dy / x.dtype.type(size)
    return out


# --- normalization ----------------------------------------------------------------------------

@register("BatchNormGrad", since=1, domain=GRAD_DOMAIN)
def batch_norm_grad(dy, x, scale, input_mean, input_var, *, epsilon=1e-5, training_mode=0, ctx):
    """(dX, dScale, dB) of BatchNormalization; training mode differentiates the batch statistics."""
    axes = (0,) + _spatial_axes(x)
    shape = _channel_shape(x)
    if training_mode:
        centered = x - x.mean(axis=axes, keepdims=True)
        inv_std = 1.0 / np.sqrt((centered * centered).mean(axis=axes, keepdims=True) + epsilon)
    else:
        centered = x - input_mean.reshape(shape)
        inv_std = 1.0 / np.sqrt(input_var.reshape(shape) + epsilon)
    xhat = centered * inv_std
    db = dy.sum(axis=axes)
    dscale = (dy * xhat).sum(axis=axes)
    gain = scale.reshape(shape) * inv_std
    if training_mode:
        count = x.size // x.shape[1]
        dx = gain * (dy - (db.reshape(shape) + xhat * dscale.reshape(shape)) / count)
    else:
        dx = dy * gain
    outs = (dx.astype(x.dtype, copy=False), dscale.astype(scale.dtype, copy=False),
            db.astype(scale.dtype, copy=False))
    return outs[:ctx.num_outputs]


@register("LayerNormGrad", since=1, domain=GRAD_DOMAIN)
def layer_norm_grad(dy, x, scale, mean=None, inv_std=None, *, axis=-1, epsilon=1e-5, ctx):
    """(dX, dScale, dB) of LayerNormalization over axes ``axis..``; dScale/dB have X.shape[axis:].

    Mean and InvStdDev of the forward are used when given, else recomputed from X.
    """
    if not -x.ndim <= axis < x.ndim:
        raise KernelError(f"LayerNormGrad: axis {axis} out of range for input of rank {x.ndim}")
    axis %= x.ndim
    axes, lead = tuple(range(axis, x.ndim)), tuple(range(axis))
    if mean is None or inv_std is None:
        mean = x.mean(axis=axes, keepdims=True)
        inv_std = 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + epsilon)
    xhat = ((x - mean) * inv_std).astype(x.dtype, copy=False)
    g = dy * scale
    dx = inv_std * (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))
    outs = (dx.astype(x.dtype, copy=False), (dy * xhat).sum(axis=lead).astype(scale.dtype, copy=False),
            dy.sum(axis=lead).astype(scale.dtype, copy=False))
    return outs[:ctx.num_outputs]


# --- dropout ----------------------------------------------------------------------------------

@register("DropoutGrad", since=1, domain=GRAD_DOMAIN)
def dropout_grad(dy, mask, ratio=None, training_mode=None):
    """dX of a training-mode Dropout: ``dY * mask / (1 - ratio)`` (identity when not training)."""
    r = 0.5 if ratio is None else float(np.asarray(ratio))
    if (training_mode is not None and not bool(training_mode)) or r == 0.0:
        return dy.copy()
    if mask.shape != dy.shape:
        raise KernelError(f"DropoutGrad: mask {mask.shape} and dY {dy.shape} differ in shape")
    return np.where(mask, dy * dy.dtype.type(1.0 / (1.0 - r)), dy.dtype.type(0))
