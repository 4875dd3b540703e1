"""int8 depthwise convolution (one input channel per output channel): the stencil and its fused
epilogue, for ``edgelearn::QConv`` with ``group`` equal to its channels.

Why: the int8 tile (:mod:`inference.kernels.int8`) computes 8 output channels of one group per
step, which a depthwise convolution (one channel a group) would leave 7/8 idle, so ``fuse_qdq``
had kept these as float convolutions between dequantize and quantize steps: onnxruntime's
quantized MobileNetV2 spent 7.9 of its 19.6 ms there at batch 2, and 2.4 more converting to float
and back. Here each (image, channel) plane is a direct stencil over its 8-bit rows: int32 sums of
``(x - x_zero_point) * w`` over the taps that fall inside the image (padding holds the zero point,
so it adds nothing), then the tile's epilogue over 32-lane blocks of each output row (scale, bias,
residual, activation, requantization or float32), so the result is the tile's to the bit.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np

from inference.kernels.memcpy_ir import copy_run
from inference.kernels.tile_lanes import epilogue_block, row_segments
from inference.ops._window import window_geometry

LANES = 32  # the epilogue's block (the int8 tile's pixel vector)


GROUP = 9  # taps summed in one pass over the sums (a 3x3 window; larger ones in groups, zero-padded)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _phase_planes(plane, zx, sh, sw, ph, pw, hq, wq, out):
    """``out[(p * sw + q) * hq * wq + i * wq + j]`` = the input at row ``i * sh + p - ph``, column
    ``j * sw + q - pw``, the zero point ``zx`` where that is padding: each phase of a strided window
    a plane of its own, so that every tap reads one contiguous run. Stride-1 rows are copied whole
    (``memcpy``); each element written once."""
    h, wd = plane.shape
    for p in range(sh):
        for q in range(sw):
            j0 = min(wq, max(0, (pw - q + sw - 1) // sw))  # the first j whose column is >= 0
            j1 = max(j0, min(wq, (wd + pw - q + sw - 1) // sw))  # past the last whose column is < wd
            for i in range(hq):
                at = ((p * sw + q) * hq + i) * wq
                dst = out[at:at + wq]
                r = i * sh + p - ph
                if r < 0 or r >= h:
                    dst[:] = zx
                    continue
                dst[:j0] = zx
                dst[j1:] = zx
                start = j0 * sw + q - pw
                if sw == 1:
                    copy_run(out, at + j0, plane, r * wd + start, j1 - j0)
                else:  # contiguous source and a literal stride: LLVM vectorises the de-interleaving loads
                    inner, src = dst[j0:j1], plane[r, start:start + (j1 - j0 - 1) * sw + 1]
                    if sw == 2:
                        for j in range(inner.size):
                            inner[j] = src[2 * j]
                    else:
                        for j in range(inner.size):
                            inner[j] = src[sw * j]


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _nine_taps(sums, planes, offs, wts, g, flat):
    """``sums[:flat]`` (+)= nine taps: ``planes[offs[k] + i] * wts[k]``, k in group ``g`` (uint8 times
    int32: the zero point's share is folded into the bias, padding holding it); one pass,
    each of the nine runs contiguous (33 GMAC/s on one core, against 12 tap by tap: the sums stay
    in registers)."""
    k = g * GROUP
    r0, r1, r2 = planes[offs[k]:offs[k] + flat], planes[offs[k + 1]:offs[k + 1] + flat], planes[offs[k + 2]:offs[k + 2] + flat]
    r3, r4, r5 = planes[offs[k + 3]:offs[k + 3] + flat], planes[offs[k + 4]:offs[k + 4] + flat], planes[offs[k + 5]:offs[k + 5] + flat]
    r6, r7, r8 = planes[offs[k + 6]:offs[k + 6] + flat], planes[offs[k + 7]:offs[k + 7] + flat], planes[offs[k + 8]:offs[k + 8] + flat]
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = wts[k], wts[k + 1], wts[k + 2], wts[k + 3], wts[k + 4], wts[k + 5], \
        wts[k + 6], wts[k + 7], wts[k + 8]
    s = sums[:flat]
    if g == 0:
        for i in range(flat):
            s[i] = np.int32(np.int32(r0[i]) * w0 + r1[i] * w1 + r2[i] * w2 + r3[i] * w3 + r4[i] * w4 + r5[i] * w5
                            + r6[i] * w6 + r7[i] * w7 + r8[i] * w8)
    else:
        for i in range(flat):
            s[i] += np.int32(np.int32(r0[i]) * w0 + r1[i] * w1 + r2[i] * w2 + r3[i] * w3 + r4[i] * w4 + r5[i] * w5
                             + r6[i] * w6 + r7[i] * w7 + r8[i] * w8)


@numba.njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def qdepthwise(x, xzp, taps, offs, sh, sw, ph, pw, hq, wq, oh, ow, ibias, scale, fbias, z, has_z, code, alpha,
               beta, amin, amax, inv_ys, yzp, qmin, qmax, quantize, yq, yf, nchunks):
    """``x`` uint8 (N, C, H, W); ``taps`` int32 (C, groups * 9), zero past the window's own;
    ``offs`` each tap's start in the phase planes (:func:`_phase_planes`, rows ``wq`` wide);
    outputs flat (N, C, oh, ow) in ``yq`` (requantized) or ``yf`` (float32), ``z`` the flat
    residual; the (image, channel) planes split into ``nchunks`` parallel runs. Output (oy, ox)
    sits at ``oy * wq + ox`` of the sums, so every tap is one contiguous run over all of them
    (columns past ``ow`` computed, never stored): rows read one by one had run their loops scalar
    or paid a loop's overhead per short row (576 channels of 14x14: 0.8 GMAC/s). The epilogue
    takes the sums 32 at a time, storing only the real pixels."""
    n, c, h, wd = x.shape
    flat = oh * wq
    nblocks = (flat + LANES - 1) // LANES
    lo, hi, izp = qmin - yzp, qmax - yzp, np.int32(yzp)
    zx = np.uint8(xzp)
    total = n * c
    for chunk in numba.prange(nchunks):
        planes = np.empty(sh * sw * hq * wq, np.uint8)
        acc = np.zeros(nblocks * LANES, np.int32)
        vals = np.empty(LANES, np.float32)
        qb = np.empty(LANES, np.uint8)
        seg = np.empty((LANES, 3), np.int64)
        for t in range(chunk * total // nchunks, (chunk + 1) * total // nchunks):
            img, ch = t // c, t % c
            _phase_planes(x[img, ch], zx, sh, sw, ph, pw, hq, wq, planes)
            wts = taps[ch]
            for g in range(wts.size // GROUP):
                _nine_taps(acc, planes, offs, wts, g, flat)
            base = (img * c + ch) * oh * ow
            for blk in range(nblocks):
                ns = row_segments(blk * LANES, min(LANES, flat - blk * LANES), wq, ow, seg)
                epilogue_block(acc, blk * LANES, ibias[ch], scale[ch], fbias[ch], vals, seg, ns, base, z, has_z, code,
                               alpha, beta, amin, amax, quantize, inv_ys, lo, hi, izp, qb, yq, yf)


class DepthwisePlan(NamedTuple):
    """A depthwise convolution's geometry and its phase planes' layout (:func:`depthwise_plan`)."""

    oh: int
    ow: int
    sh: int
    sw: int
    ph: int
    pw: int
    hq: int  # the phase planes' rows
    wq: int  # and row width
    offs: np.ndarray  # each tap's start in them, GROUP-padded


@functools.lru_cache(maxsize=1024)
def depthwise_plan(h: int, wd: int, kh: int, kw: int, auto_pad: str, dilations, kernel_shape, pads,
                   strides) -> DepthwisePlan:
    """The plan of a depthwise convolution on (H, W) planes with a (kh, kw) window, attribute
    sequences as tuples (or None): worked out once per case, as the tile's ``conv_plan``."""
    win = window_geometry((h, wd), kernel_shape or (kh, kw), strides, dilations, pads, auto_pad, 0, "QConv")
    (oh, ow), (sh, sw), (dh, dw), (ph, pw) = win.out_shape, win.strides, win.dilations, win.pads_begin
    hq = ((oh - 1) * sh + (kh - 1) * dh) // sh + 2  # the rows the windows reach, one more for the runs' ends
    wq = max(ow, ((ow - 1) * sw + (kw - 1) * dw) // sw + 1)
    ntaps = kh * kw
    offs = np.zeros(-(-ntaps // GROUP) * GROUP, np.int64)
    for t in range(ntaps):
        a, b = (t // kw) * dh, (t % kw) * dw
        offs[t] = ((a % sh) * sw + b % sw) * hq * wq + (a // sh) * wq + b // sw
    offs.flags.writeable = False
    return DepthwisePlan(oh, ow, sh, sw, ph, pw, hq, wq, offs)


def prepared_taps(w: np.ndarray) -> tuple[np.ndarray, dict]:
    """int8 weights (C, 1, kh, kw) as int32 rows of whole ``GROUP``s, zero past the window's taps,
    and a slot holding each channel's sum (the zero point's share of the bias): built once per
    weight (``_prepack.prepacked``)."""
    c, ntaps = w.shape[0], w.shape[2] * w.shape[3]
    taps = np.zeros((c, -(-ntaps // GROUP) * GROUP), np.int32)
    taps[:, :ntaps] = w.reshape(c, ntaps)
    return taps, {"sums": taps.sum(axis=1, dtype=np.int32)}
