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
from inference.kernels.stencil_ir import depthwise3x3_cols


@numba.njit(cache=True, error_model="numpy", inline="always")
def valid_range(pad, tap, stride, size, out):
    """Output positions ``o`` in [lo, hi) whose input index ``o*stride - pad + tap`` is inside [0, size)."""
    lo = max(0, (pad - tap + stride - 1) // stride)
    hi = min(out, (size - 1 + pad - tap) // stride + 1)
    return lo, max(lo, hi)


# -- kernels -------------------------------------------------------------------------------
@numba.njit(cache=True, error_model="numpy", inline="always")
def _finish_row(out, z, has_z, b, yo, code, alpha, beta):
    """Residual and activation over one finished output row (ow, M), seen as one flat vector."""
    flat = out.reshape(out.size)
    if has_z:
        zr = z[b, yo].reshape(out.size)
        for k in range(flat.size):
            flat[k] += zr[k]
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
    _finish_row(out, z, has_z, b, yo, code, alpha, beta)


@threaded_kernel(fastmath=True)
def depthwise3x3_nhwc(x, wt, bias, z, has_z, sh, sw, dh, dw, ph, pw, y, code, alpha, beta):
    """Depthwise 3x3: each output pixel sums its nine taps per channel in registers, one store
    (:func:`_depthwise3x3_row`, one output row per parallel step)."""
    n, _, w, c = x.shape
    oh = y.shape[1]
    zero = np.zeros((w, c), np.float32)
    for r in numba.prange(n * oh):
        _depthwise3x3_row(x, wt, bias, z, has_z, sh, sw, dh, dw, ph, pw, y, code, alpha, beta, zero, r // oh, r % oh)


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=True)
def _depthwise3x3_row(x, wt, bias, z, has_z, sh, sw, dh, dw, ph, pw, y, code, alpha, beta, zero, b, yo):
    """Output row ``yo`` of image ``b``. Taps above or below the image read a zero row, so every
    column whose three taps lie inside the row's width runs the IR stencil
    (:func:`~inference.kernels.stencil_ir.depthwise3x3_cols`); the border columns pick a zero pixel
    per tap (:func:`_border_cols`). A function of its own, not the body of the ``prange`` loop:
    numba's parallel lowering left that body scalar (3x slower per thread than the serial twin)."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    ow = y.shape[2]
    iy = yo * sh - ph
    flat_zero = zero.reshape(w * c)
    r0 = x[b, iy].reshape(w * c) if 0 <= iy < h else flat_zero
    r1 = x[b, iy + dh].reshape(w * c) if 0 <= iy + dh < h else flat_zero
    r2 = x[b, iy + 2 * dh].reshape(w * c) if 0 <= iy + 2 * dh < h else flat_zero
    out = y[b, yo]
    lo, hi = valid_range(pw, 0, sw, w - 2 * dw, ow)  # columns whose taps 0..2 are all inside
    depthwise3x3_cols(r0, r1, r2, wt.reshape(9 * c), bias, out.reshape(ow * c), lo, hi, sw, dw, pw, c)
    _border_cols(r0, r1, r2, wt, bias, out, sw, dw, pw, w, c, 0, lo)
    _border_cols(r0, r1, r2, wt, bias, out, sw, dw, pw, w, c, max(lo, hi), ow)
    _finish_row(out, z, has_z, b, yo, code, alpha, beta)


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=True)
def _border_cols(r0, r1, r2, wt, bias, out, sw, dw, pw, w, c, lo, hi):
    """Output columns [lo, hi) of a row, taps left or right of the image skipped."""
    for xo in range(lo, hi):
        d = out[xo]
        d[:] = bias
        for j in range(3):
            ix = xo * sw - pw + j * dw
            if 0 <= ix < w:
                s0, s1, s2 = r0[ix * c:(ix + 1) * c], r1[ix * c:(ix + 1) * c], r2[ix * c:(ix + 1) * c]
                w0, w1, w2 = wt[0, j], wt[1, j], wt[2, j]
                for k in range(c):
                    d[k] += w0[k] * s0[k] + w1[k] * s1[k] + w2[k] * s2[k]
