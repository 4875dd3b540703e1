"""Direct 3x3 convolution (stride 1, any dilation/padding, one group) with the fused epilogue.

Why: on small problems (a batch-1 CNN's first layer with one input channel, or a few channels on a
14x14 map) im2col + a BLAS call cost more in fixed work than the arithmetic: Conv 1->16 on 28x28 is
0.1 MFLOP but took ~15 us that way. Here each input channel is copied once into a zero-bordered
plane of row pitch ``wp`` and the output is computed on a "wide" grid of the same pitch: output
``k = yo*wp + xo`` reads tap (i, j) at ``k + i*dh*wp + j*dw``, so every tap is one contiguous
slice and the nine taps of a channel are summed in one vectorised loop over the whole plane (the
``wp - ow`` extra columns per row are computed and dropped). Two output channels share each pass
so the nine input loads feed 18 FMAs. :func:`prefer_direct` is the measured size rule.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.kernels._jit import threaded_kernel
from inference.kernels.activations import RELU, activate_row

# Where the direct loop beat im2col + GEMM (``benchmarks/small_kernels.py``: 1 thread, batch 1, 3x3 pad 1,
# C_in 1-32, C_out 8-64, maps 7-56): 1.1-1.9x up to 32 output channels on maps up to 32x32; even or
# slower (0.6-0.9x) with 64 output channels or 56x56 maps, where the GEMM is big enough for BLAS to
# run at full speed while this loop stays at ~25-30 GMAC/s (numba emits AVX2-width FMAs).
DIRECT_MAX_CHANNELS = 32
DIRECT_MAX_PIXELS = 1024
DIRECT_MAX_MACS = 4_000_000


def prefer_direct(c: int, m: int, kh: int, kw: int, sh: int, sw: int, oh: int, ow: int, group: int) -> bool:
    """Whether :func:`direct_conv3x3` beats im2col + GEMM for this (per-image) problem."""
    if (kh, kw, sh, sw, group) != (3, 3, 1, 1, 1):
        return False
    return (c <= DIRECT_MAX_CHANNELS and m <= DIRECT_MAX_CHANNELS and oh * ow <= DIRECT_MAX_PIXELS
            and c * m * 9 * oh * ow <= DIRECT_MAX_MACS)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _padded_planes(x, ph, pw, hp, wp, slack):
    """``x`` (N, C, H, W) copied into zero-bordered flat planes (N, C, hp*wp + slack), rows ``wp`` apart."""
    n, c, h, w = x.shape
    pad = np.zeros((n, c, hp * wp + slack), np.float32)
    for b in range(n):
        for ci in range(c):
            for i in range(h):
                base = (ph + i) * wp + pw
                for j in range(w):
                    pad[b, ci, base + j] = x[b, ci, i, j]
    return pad


@numba.njit(cache=True, error_model="numpy")
def _finish(acc, y, z, has_z, b, mi, wp, code, alpha, beta):
    """Residual and activation on the wide row ``acc``, then its valid columns into ``y[b, mi]``.

    Relu rides on the copy; per-row slices here cost more than the copy (measured 1.7x).
    """
    oh, ow = y.shape[2], y.shape[3]
    yp = y[b, mi]
    if has_z:
        zp = z[b, mi]
        for yo in range(oh):
            base = yo * wp
            for xo in range(ow):
                acc[base + xo] += zp[yo, xo]
    if code == RELU:
        for yo in range(oh):
            base = yo * wp
            for xo in range(ow):
                yp[yo, xo] = max(acc[base + xo], 0)
        return
    activate_row(acc, code, alpha, beta)
    for yo in range(oh):
        base = yo * wp
        for xo in range(ow):
            yp[yo, xo] = acc[base + xo]


@threaded_kernel(fastmath=True)
def direct_conv3x3(x, w, bias, z, has_z, dh, dw, ph, pw, y, code, alpha, beta):
    """``y = act(conv3x3(x, w) + bias + z)``, stride 1: ``x`` (N, C, H, W), ``w`` (M, C, 3, 3), ``y`` (N, M, OH, OW)."""
    n, c = x.shape[0], x.shape[1]
    m = w.shape[0]
    oh, ow = y.shape[2], y.shape[3]
    hp, wp = oh + 2 * dh, ow + 2 * dw
    wide = oh * wp
    pad = _padded_planes(x, ph, pw, hp, wp, 2 * dw)
    pairs = (m + 1) // 2
    o1, o2, r1, r2 = dw, 2 * dw, dh * wp, 2 * dh * wp
    for r in numba.prange(n * pairs):
        b, m0 = r // pairs, 2 * (r % pairs)
        m1 = min(m0 + 1, m - 1)  # an odd last channel is computed twice, kept once
        acc = np.empty((2, wide), np.float32)
        p, q = acc[0], acc[1]
        p[:] = bias[m0]
        q[:] = bias[m1]
        for ci in range(c):
            src = pad[b, ci]
            a0, a1, a2 = src[0:], src[o1:], src[o2:]
            b0, b1, b2 = src[r1:], src[r1 + o1:], src[r1 + o2:]
            c0, c1, c2 = src[r2:], src[r2 + o1:], src[r2 + o2:]
            u, v = w[m0, ci], w[m1, ci]
            u00, u01, u02, u10, u11, u12, u20, u21, u22 = (u[0, 0], u[0, 1], u[0, 2], u[1, 0], u[1, 1], u[1, 2],
                                                           u[2, 0], u[2, 1], u[2, 2])
            v00, v01, v02, v10, v11, v12, v20, v21, v22 = (v[0, 0], v[0, 1], v[0, 2], v[1, 0], v[1, 1], v[1, 2],
                                                           v[2, 0], v[2, 1], v[2, 2])
            for k in range(wide):
                e0, e1, e2 = a0[k], a1[k], a2[k]
                f0, f1, f2 = b0[k], b1[k], b2[k]
                g0, g1, g2 = c0[k], c1[k], c2[k]
                p[k] += u00 * e0 + u01 * e1 + u02 * e2 + u10 * f0 + u11 * f1 + u12 * f2 + u20 * g0 + u21 * g1 + u22 * g2
                q[k] += v00 * e0 + v01 * e1 + v02 * e2 + v10 * f0 + v11 * f1 + v12 * f2 + v20 * g0 + v21 * g1 + v22 * g2
        _finish(p, y, z, has_z, b, m0, wp, code, alpha, beta)
        if m1 != m0:
            _finish(q, y, z, has_z, b, m1, wp, code, alpha, beta)
