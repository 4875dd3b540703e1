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
    """Output row ``yo`` of image ``b``. Taps above, below or beside the image read a zero pixel
    (the source of each tap is picked per output pixel, no branch in the channel loop): the border
    columns take the same path as the others. Before, they went through the per-tap loop of the
    general kernel, 9 passes over the output pixel: on a 7x7 map 2 of 7 columns, and the layer ran
    ~1.5x longer. A function of its own, not the body of the ``prange`` loop: numba's parallel
    lowering left that body scalar (3x slower per thread than the serial twin)."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    ow = y.shape[2]
    w00, w01, w02 = wt[0, 0], wt[0, 1], wt[0, 2]
    w10, w11, w12 = wt[1, 0], wt[1, 1], wt[1, 2]
    w20, w21, w22 = wt[2, 0], wt[2, 1], wt[2, 2]
    out = y[b, yo]
    iy = yo * sh - ph
    r0 = x[b, iy] if 0 <= iy < h else zero
    r1 = x[b, iy + dh] if 0 <= iy + dh < h else zero
    r2 = x[b, iy + 2 * dh] if 0 <= iy + 2 * dh < h else zero
    for xo in range(ow):
        s = xo * sw - pw
        j0 = s if 0 <= s < w else -1
        j1 = s + dw if 0 <= s + dw < w else -1
        j2 = s + 2 * dw if 0 <= s + 2 * dw < w else -1
        # spelled out: an inlined helper returning the chosen view ran 3-10x slower
        a0, a1, a2 = (r0[j0] if j0 >= 0 else zero[0]), (r0[j1] if j1 >= 0 else zero[0]), \
            (r0[j2] if j2 >= 0 else zero[0])
        b0, b1, b2 = (r1[j0] if j0 >= 0 else zero[0]), (r1[j1] if j1 >= 0 else zero[0]), \
            (r1[j2] if j2 >= 0 else zero[0])
        c0, c1, c2 = (r2[j0] if j0 >= 0 else zero[0]), (r2[j1] if j1 >= 0 else zero[0]), \
            (r2[j2] if j2 >= 0 else zero[0])
        d = out[xo]
        for k in range(c):
            d[k] = (bias[k] + w00[k] * a0[k] + w01[k] * a1[k] + w02[k] * a2[k]
                    + w10[k] * b0[k] + w11[k] * b1[k] + w12[k] * b2[k]
                    + w20[k] * c0[k] + w21[k] * c1[k] + w22[k] * c2[k])
    _finish_row(out, z, has_z, b, yo, code, alpha, beta)
