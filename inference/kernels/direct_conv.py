"""Direct 3x3 convolution (stride 1, any dilation/padding, one group) with the fused epilogue.

Why: on small problems (a batch-1 CNN's first layer with one input channel, or a few channels on a
14x14 map) im2col + a BLAS call cost more in fixed work than the arithmetic: Conv 1->16 on 28x28 is
0.1 MFLOP but took ~15 us that way. Here each input channel is copied once into a zero-bordered
plane of row pitch ``wp``; output (yo, xo) then reads tap (i, j) at ``(yo + i*dh)*wp + xo + j*dw``
of every plane, so 16 output columns of a row load as one vector per tap, and a register tile of
8 output channels x 2 such pieces sums them over the input channels
(:mod:`~inference.kernels.direct_ir`). :func:`prefer_direct` is the measured size rule.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.kernels._jit import threaded_kernel
from inference.kernels.activations import activate_row
from inference.kernels.direct_ir import CHANNELS, ITEMS, direct3x3_tiles
from inference.kernels.tile_ir import LANES

# The size rule, from ``benchmarks/small_kernels.py`` (1 thread, batch 1, 3x3 pad 1, C_in 1-64, C_out
# 8-128, maps 7-112; tile / direct time): against im2col + BLAS the direct kernel won every row, so a
# weight that changes (training) always runs it. Against the tile with its packing kept (a constant
# weight): one input channel 1.2-9.4x (the tile's K of 9 runs its 64-lane panels nearly idle);
# rows of at most 16 columns (one vector each) 1.2-2.4x up to C_in*C_out = 512 at any width and
# 1.08-1.5x up to 8192 where at least 12 of the 16 lanes are live (10x10 at 64x64: 0.81x); wider
# rows up to 32x32 maps 1.05-2.1x up to C_in*C_out = 256 with 3/4 of the lanes live (20x20, 10 of
# 16 lanes per vector: 0.79-0.97x); 2-3 input channels on maps up to 56x56 0.96-3.7x. Outside
# those the tile is even or ahead (56x56 maps at 16+ channels 0.82-0.90x).
DIRECT_ONE_VECTOR_MAX = 512  # C_in * C_out on rows of at most 16 columns, any lanes live
DIRECT_ONE_VECTOR_LIVE_MAX = 8192  # ... with at least 12 of the 16 lanes live
DIRECT_WIDE_MAX = 256  # C_in * C_out on wider rows, maps up to DIRECT_MAX_PIXELS
DIRECT_MAX_PIXELS = 1024
DIRECT_FEW_CHANNELS_PIXELS = 3136  # 2-3 input channels: maps up to 56x56


def prefer_direct(c: int, m: int, kh: int, kw: int, sh: int, sw: int, oh: int, ow: int, group: int,
                  packed: bool = True) -> bool:
    """Whether :func:`direct_conv3x3` runs this (per-image) problem: a 3x3 stride-1 one-group
    convolution whose shape is in the rule above. ``packed``: the alternative is the tile with a
    constant weight's packing kept; else im2col + BLAS, which the direct kernel always beats."""
    if (kh, kw, sh, sw, group) != (3, 3, 1, 1, 1):
        return False
    if not packed or c == 1:
        return True
    live = ow / (LANES * -(-ow // LANES)) >= 0.75
    if ow <= LANES:
        return c * m <= DIRECT_ONE_VECTOR_MAX or (live and c * m <= DIRECT_ONE_VECTOR_LIVE_MAX)
    if c <= 3:
        return oh * ow <= DIRECT_FEW_CHANNELS_PIXELS
    return live and oh * ow <= DIRECT_MAX_PIXELS and c * m <= DIRECT_WIDE_MAX


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _padded_planes(x, ph, pw, hp, wp):
    """``x`` (N, C, H, W) copied into zero-bordered planes of ``hp`` rows ``wp`` apart, one after
    another in a flat buffer, :data:`~inference.kernels.tile_ir.LANES` zeros past the last (the
    tile's whole-vector loads of a last row's columns reach up to 15 floats past its plane)."""
    n, c, h, w = x.shape
    pad = np.zeros(n * c * hp * wp + LANES, np.float32)
    for p in range(n * c):
        src = x[p // c, p % c]
        for i in range(h):
            base = p * hp * wp + (ph + i) * wp + pw
            for j in range(w):
                pad[base + j] = src[i, j]
    return pad


@threaded_kernel()
def direct_conv3x3(x, w, bias, z, has_z, dh, dw, ph, pw, y, parts, clamps, amin, amax, code, alpha, beta):
    """``y = act(conv3x3(x, w) + bias + z)``, stride 1: ``x`` (N, C, H, W), ``w`` (M, C, 3, 3), ``y``
    (N, M, OH, OW). The register tile (:func:`~inference.kernels.direct_ir.direct3x3_tiles`) runs
    each image's blocks of :data:`~inference.kernels.direct_ir.CHANNELS` output channels, their
    16-column row pieces cut into ``parts`` parallel runs; ``clamps``: the activation is the
    tile's clamp to [amin, amax], else ``code`` runs over each run's outputs after it."""
    n, c = x.shape[0], x.shape[1]
    m = w.shape[0]
    oh, ow = y.shape[2], y.shape[3]
    hp, wp = oh + 2 * dh, ow + 2 * dw
    pad = _padded_planes(x, ph, pw, hp, wp)
    nxb = (ow + LANES - 1) // LANES
    items = oh * nxb
    groups = (m + CHANNELS - 1) // CHANNELS
    plane = oh * ow
    yf, zf, wf = y.reshape(-1), z.reshape(-1), w.reshape(-1)
    for r in numba.prange(n * groups * parts):
        b, g, part = r // (groups * parts), (r // parts) % groups, r % parts
        m0, m1 = g * CHANNELS, min(m, (g + 1) * CHANNELS)
        i0, i1 = part * items // parts, (part + 1) * items // parts
        direct3x3_tiles(pad, wf, bias, zf, yf, has_z, b * c * hp * wp, b * m * plane, c, hp * wp, wp, dh, dw, m0, m1,
                        i0, i1, oh, ow, amin, amax)
        if not clamps and i1 > i0:  # the outputs of items [i0, i1): one run of each channel's plane
            first = (i0 // nxb) * ow + (i0 % nxb) * LANES
            last = ((i1 - 1) // nxb) * ow + min((i1 - 1) % nxb * LANES + LANES, ow)
            for mi in range(m0, m1):
                at = (b * m + mi) * plane
                activate_row(yf[at + first:at + last], code, alpha, beta)


def direct_parts(n: int, m: int, oh: int, ow: int, threads: int) -> int:
    """The parallel runs each (image, channel block) of :func:`direct_conv3x3` is cut into: enough
    runs for a few per thread, none smaller than one tile."""
    if threads <= 1:
        return 1
    tasks = n * -(-m // CHANNELS)
    tiles = max(1, oh * -(-ow // LANES) // ITEMS)
    return max(1, min(tiles, -(-4 * threads // tasks)))
