"""Depthwise convolution channels-last: (N, H, W, C) in, (N, OH, OW, C) out, weights (kh, kw, C).

Why: a depthwise stencil's inner loop then runs over contiguous channels, all lanes busy, where
in NCHW it runs over a short output row (7-14 pixels: more loop overhead than arithmetic). The
NHWC layout pass runs whole regions this way (``inference.kernels.nhwc``); a lone NCHW depthwise
layer on a small or strided map transposes in and out around these kernels
(``inference.kernels.conv``), which beats the NCHW stencil there.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.kernels._jit import threaded_kernel
from inference.kernels.activations import activate_row
from inference.kernels.stencil_ir import (MID_ROW, WHOLE_ROW, depthwise3x3_cols, depthwise3x3_mid, depthwise3x3_short,
                                         depthwise5x5_cols, depthwise5x5_mid, depthwise5x5_short, depthwise7x7_cols,
                                         depthwise7x7_mid, depthwise7x7_short)
from inference.kernels.tile_lanes import clamp_epilogue


@numba.njit(cache=True, error_model="numpy", inline="always")
def valid_range(pad, tap, stride, size, out):
    """Output positions ``o`` in [lo, hi) whose input index ``o*stride - pad + tap`` is inside [0, size)."""
    lo = max(0, (pad - tap + stride - 1) // stride)
    hi = min(out, (size - 1 + pad - tap) // stride + 1)
    return lo, max(lo, hi)


# -- kernels -------------------------------------------------------------------------------
@numba.njit(cache=True, error_model="numpy", inline="always")
def _finish_row(flat, zflat, has_z, code, alpha, beta):
    """Residual and activation over one finished output row, flat (OW*M); ``zflat`` the residual's
    row (read only if ``has_z``)."""
    if has_z:
        for k in range(flat.size):
            flat[k] += zflat[k]
    activate_row(flat, code, alpha, beta)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _tap_add(out, src, wv, lo, hi, x0, sw):
    """``out[xo] += wv * src[xo*sw + x0]`` for xo in [lo, hi): one tap, all channels."""
    c = wv.size
    for xo in range(lo, hi):
        d, s = out[xo], src[xo * sw + x0]
        for k in range(c):
            d[k] += wv[k] * s[k]


@threaded_kernel(fastmath=True)
def depthwise_nhwc(x, wt, bias, z, has_z, sh, sw, dh, dw, ph, pw, y, code, alpha, beta):
    """Depthwise conv of any kernel size: ``x`` (N, H, W, C), ``wt`` (kh, kw, C) -> ``y`` (N, OH, OW, C),
    one output row per parallel step (:func:`_depthwise_row`)."""
    n, oh = x.shape[0], y.shape[1]
    for r in numba.prange(n * oh):
        _depthwise_row(x, wt, bias, z, has_z, sh, sw, dh, dw, ph, pw, y, code, alpha, beta, r // oh, r % oh)


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=True)
def _depthwise_row(x, wt, bias, z, has_z, sh, sw, dh, dw, ph, pw, y, code, alpha, beta, b, yo):
    """Output row ``yo`` of image ``b``: start from the bias, add each tap over the columns where it
    lands inside the image (no padded copy needed: pads just shorten the column range), then the
    epilogue while the row is in cache. Not inlined into the ``prange`` loop, whose lowering would
    leave it scalar (see :func:`_depthwise3x3_row`)."""
    h, w = x.shape[1], x.shape[2]
    kh, kw, _ = wt.shape
    ow = y.shape[2]
    out = y[b, yo]
    for xo in range(ow):
        out[xo] = bias
    for i in range(kh):
        iy = yo * sh - ph + i * dh
        if iy < 0 or iy >= h:
            continue
        for j in range(kw):
            lo, hi = valid_range(pw, j * dw, sw, w, ow)
            _tap_add(out, x[b, iy], wt[i, j], lo, hi, j * dw - pw, sw)
    flat = out.reshape(out.size)
    _finish_row(flat, z[b, yo].reshape(out.size) if has_z else flat, has_z, code, alpha, beta)


#: square depthwise windows that run an IR stencil (:mod:`inference.kernels.stencil_ir`); others
#: run :func:`depthwise_nhwc`
STENCIL_SIZES = (3, 5, 7)


def depthwise_nhwc_kernel(kh: int, kw: int):
    """The channels-last depthwise kernel for a ``kh`` x ``kw`` window (arguments as :func:`depthwise_nhwc`'s)."""
    return depthwise_stencil_nhwc if kh == kw and kh in STENCIL_SIZES else depthwise_nhwc


def depthwise_stencil_nhwc(x, wt, bias, z, has_z, sh, sw, dh, dw, ph, pw, y, code, alpha, beta):
    """Depthwise 3x3, 5x5 or 7x7, arguments as :func:`depthwise_nhwc`'s: each output pixel sums its taps
    per channel in registers and is clamped there when the activation is one (none, Relu, Clip)
    and no residual follows, one store (one output row per parallel step). The kernel sees rows as
    flat (W*C) vectors, reshaped here: numba compiles a reshape's error path (shape messages,
    string formatting), which made this kernel 9.5 s of a cold start."""
    n, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    k = wt.shape[0]
    clamps, amin, amax = clamp_epilogue(code, alpha, beta)
    finish = has_z or not clamps  # the residual, then the activation, in a pass over the row
    if finish:
        amin, amax = np.float32(-np.inf), np.float32(np.inf)
    kernel = _depthwise3x3 if k == 3 else _depthwise5x5 if k == 5 else _depthwise7x7
    kernel(x.reshape(n, h, w * c), wt.reshape(k * k * c), bias, z.reshape(z.shape[0], z.shape[1], -1), has_z, c,
           sh, sw, dh, dw, ph, pw, y.reshape(n, oh, ow * c), code, alpha, beta, np.zeros(w * c, np.float32),
           amin, amax, finish)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _row(x, b, iy, zero):
    """Row ``iy`` of image ``b`` (flat), or the zero row above or below the image."""
    return x[b, iy] if 0 <= iy < x.shape[1] else zero


@threaded_kernel(fastmath=True)
def _depthwise3x3(x, wt, bias, z, has_z, c, sh, sw, dh, dw, ph, pw, y, code, alpha, beta, zero, amin, amax, finish):
    """Output row ``yo`` of image ``b`` per parallel step (``x`` (N, H, W*C), ``wt`` (9*C,), ``y``
    (N, OH, OW*C)); taps above or below the image read the ``zero`` row."""
    n, oh = x.shape[0], y.shape[1]
    for r in numba.prange(n * oh):
        b, yo = r // oh, r % oh
        iy = yo * sh - ph
        depthwise3x3_row(_row(x, b, iy, zero), _row(x, b, iy + dh, zero), _row(x, b, iy + 2 * dh, zero), wt, bias,
                         y[b, yo], z[b, yo] if has_z else zero, has_z, c, sw, dw, pw, code, alpha, beta, amin, amax,
                         finish)


@threaded_kernel(fastmath=True)
def _depthwise5x5(x, wt, bias, z, has_z, c, sh, sw, dh, dw, ph, pw, y, code, alpha, beta, zero, amin, amax, finish):
    """:func:`_depthwise3x3` over five rows (``wt`` (25*C,))."""
    n, oh = x.shape[0], y.shape[1]
    for r in numba.prange(n * oh):
        b, yo = r // oh, r % oh
        iy = yo * sh - ph
        depthwise5x5_row(_row(x, b, iy, zero), _row(x, b, iy + dh, zero), _row(x, b, iy + 2 * dh, zero),
                         _row(x, b, iy + 3 * dh, zero), _row(x, b, iy + 4 * dh, zero), wt, bias, y[b, yo],
                         z[b, yo] if has_z else zero, has_z, c, sw, dw, pw, code, alpha, beta, amin, amax, finish)


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=True)
def depthwise5x5_row(r0, r1, r2, r3, r4, wt, bias, out, zrow, has_z, c, sw, dw, pw, code, alpha, beta, amin, amax,
                     finish):
    """:func:`depthwise3x3_row` over five input rows (the IR stencil
    :func:`~inference.kernels.stencil_ir.depthwise5x5_cols`)."""
    w, ow = r0.size // c, out.size // c
    lo, hi = valid_range(pw, 0, sw, w - 4 * dw, ow)  # columns whose taps 0..4 are all inside
    if ow <= WHOLE_ROW:
        _short5x5(r0, r1, r2, r3, r4, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)
    elif ow <= MID_ROW:
        _mid5x5(r0, r1, r2, r3, r4, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)
    else:
        depthwise5x5_cols(r0, r1, r2, r3, r4, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)
    if finish:
        _finish_row(out, zrow, has_z, code, alpha, beta)


@threaded_kernel(fastmath=True)
def _depthwise7x7(x, wt, bias, z, has_z, c, sh, sw, dh, dw, ph, pw, y, code, alpha, beta, zero, amin, amax, finish):
    """:func:`_depthwise3x3` over seven rows (``wt`` (49*C,))."""
    n, oh = x.shape[0], y.shape[1]
    for r in numba.prange(n * oh):
        b, yo = r // oh, r % oh
        iy = yo * sh - ph
        depthwise7x7_row(_row(x, b, iy, zero), _row(x, b, iy + dh, zero), _row(x, b, iy + 2 * dh, zero),
                         _row(x, b, iy + 3 * dh, zero), _row(x, b, iy + 4 * dh, zero), _row(x, b, iy + 5 * dh, zero),
                         _row(x, b, iy + 6 * dh, zero), wt, bias, y[b, yo], z[b, yo] if has_z else zero, has_z, c,
                         sw, dw, pw, code, alpha, beta, amin, amax, finish)


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=True)
def depthwise7x7_row(r0, r1, r2, r3, r4, r5, r6, wt, bias, out, zrow, has_z, c, sw, dw, pw, code, alpha, beta, amin,
                     amax, finish):
    """:func:`depthwise3x3_row` over seven input rows (the IR stencil
    :func:`~inference.kernels.stencil_ir.depthwise7x7_cols`)."""
    w, ow = r0.size // c, out.size // c
    lo, hi = valid_range(pw, 0, sw, w - 6 * dw, ow)  # columns whose taps 0..6 are all inside
    if ow <= WHOLE_ROW:
        _short7x7(r0, r1, r2, r3, r4, r5, r6, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)
    elif ow <= MID_ROW:
        _mid7x7(r0, r1, r2, r3, r4, r5, r6, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)
    else:
        depthwise7x7_cols(r0, r1, r2, r3, r4, r5, r6, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)
    if finish:
        _finish_row(out, zrow, has_z, code, alpha, beta)


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=True)
def depthwise3x3_row(r0, r1, r2, wt, bias, out, zrow, has_z, c, sw, dw, pw, code, alpha, beta, amin, amax, finish):
    """One output row ``out`` (OW*C) of a depthwise 3x3 from its three input rows (W*C each, a
    zero row for those outside the image): the IR stencil for the row's width
    (:mod:`inference.kernels.stencil_ir`: short, mid or wide rows) runs every column, clamped to
    [amin, amax]; ``finish``: the residual ``zrow`` (if ``has_z``) and the activation in a pass
    after. Rows, not an image and a row index: a fused block (:mod:`inference.kernels.inverted_residual`)
    reads them from a ring of rows in cache. A function of its own, not the body of the ``prange``
    loop: numba's parallel lowering left that body scalar (3x slower per thread than the serial twin)."""
    w, ow = r0.size // c, out.size // c
    lo, hi = valid_range(pw, 0, sw, w - 2 * dw, ow)  # columns whose taps 0..2 are all inside
    if ow <= WHOLE_ROW:
        _short3x3(r0, r1, r2, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)
    elif ow <= MID_ROW:
        _mid3x3(r0, r1, r2, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)
    else:
        depthwise3x3_cols(r0, r1, r2, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)
    if finish:
        _finish_row(out, zrow, has_z, code, alpha, beta)


# The short and mid row widths' stencils each in a function of their own: compiled into one function
# with the wide rows' loops, their code made those loops slower (a 112-wide 16-channel 3x3 row
# 1.2-1.4x, a 56-wide 144-channel one 1.2x).
@numba.njit(cache=True, error_model="numpy", nogil=True)
def _short3x3(r0, r1, r2, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax):
    depthwise3x3_short(r0, r1, r2, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _mid3x3(r0, r1, r2, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax):
    depthwise3x3_mid(r0, r1, r2, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _short5x5(r0, r1, r2, r3, r4, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax):
    depthwise5x5_short(r0, r1, r2, r3, r4, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _mid5x5(r0, r1, r2, r3, r4, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax):
    depthwise5x5_mid(r0, r1, r2, r3, r4, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _short7x7(r0, r1, r2, r3, r4, r5, r6, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax):
    depthwise7x7_short(r0, r1, r2, r3, r4, r5, r6, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _mid7x7(r0, r1, r2, r3, r4, r5, r6, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax):
    depthwise7x7_mid(r0, r1, r2, r3, r4, r5, r6, wt, bias, out, lo, hi, ow, w, sw, dw, pw, c, amin, amax)
