"""3x3 stride-1 channels-last convolutions by Winograd's minimal filtering F(2x2, 3x3).

Why: a 3x3 convolution computes each output from 9 multiply-adds per (input, output) channel
pair; F(2x2, 3x3) computes a 2x2 block of outputs from its 4x4 input patch in 16, so 4 per output
instead of 9 (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016). The
patch and the weight are each carried into the 16-point domain by additions alone (``B^T d B``,
``G g G^T``, the weight's once per constant weight), where the 16 points are 16 independent
products ``V[xi] (tiles, C) @ U[xi] (C, M)``: our matrix tile (:func:`rows_gemm.matrix_tiles`) runs
them, and the output transform ``A^T m A`` adds bias, residual and clamp on the way out. Its
constants are 1 and 1/2 (in the weight's transform only), so the result differs from the direct
sum by rounding alone. Not so for an inf or NaN: it reaches all four outputs of its patch, not only
those whose window holds it, and an inf meets its own negation (inf - inf = NaN). So the output
transform counts the sums that are not finite, and a call with any returns None: the caller runs
the direct algorithm instead (:mod:`inference.kernels.nhwc`), whose outputs are the reference's.
The count costs one subtraction and compare per output, in the vectorised epilogue.

Work goes in units of (a channel panel of the output, a block of tiles): the block's patches are
transformed into ``V`` (16, rows, C), multiplied by the panel's 16 weights into ``mm`` (16, rows,
panel), and transformed out, all within L2 (:data:`BLOCK_BYTES`). Units run panel by panel, so a
panel's weights stay cached over its blocks; a block's patches are transformed again per panel
(about 1/(2 * panel width) of the block's multiply-adds). No zero-padded copy of the input: the
patches read it in place, out-of-range rows and columns as zeros.
"""
from __future__ import annotations

import weakref

import numba
import numpy as np

from inference.errors import KernelError
from inference.kernels._jit import kernel_threads, parallel_chunks, threaded_kernel
from inference.kernels._prepack import NO_REF, prepacked
from inference.kernels.arena_slot import new_output
from inference.kernels.rows_gemm import LANES, matrix_tiles, padded_weight, panel_row_offsets, tile_shape

POINTS = 16  # the 4x4 transformed patch
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
#: what a unit's patches and products may take (of the 1 MB L2 a core has here; the weight panel
#: streams through beside them)
BLOCK_BYTES = 512 * 1024


def tiles_per_image(oh: int, ow: int) -> int:
    """The 2x2 output tiles covering an ``oh`` x ``ow`` output (odd sizes: the last row or column of
    tiles half used)."""
    return ((oh + 1) // 2) * ((ow + 1) // 2)


def multiply_ratio(oh: int, ow: int) -> float:
    """Direct multiply-adds over Winograd's for an ``oh`` x ``ow`` output: 9 per output against 16
    per 2x2 tile."""
    return 9 * oh * ow / (POINTS * tiles_per_image(oh, ow))


#: channels below this run on the direct tile: the transforms then weigh more than the multiply-adds
#: saved (squeezenet's 16 -> 64 on 55x55 ran 1.24-1.57x the tile's time, its 32 -> 128 on 27x27
#: 0.99-1.36x, in ``benchmarks/winograd.py``'s runs)
MIN_CHANNELS = 64
#: below this :func:`multiply_ratio` a map's half-used tiles leave too little saved
MIN_RATIO = 1.5
#: a weight with more than this share of all-zero (tap, output) planes stays on the direct tile,
#: which skips them (a 1x1 convolution merged into a 3x3 one by :mod:`inference.passes.concat_convs`)
MAX_ZERO_PLANES = 0.1


#: below this many (tiles x input channels) in a call the direct tile was as fast or faster, its
#: weight (9/16 of the transformed one's bytes) arriving from L3 or DRAM beside less work: ResNet-18's
#: 512 -> 512 on 7x7 at batch 1 (16 tiles, 8192) 0.93-1.07x, squeezenet-shaped 64 -> 256 on 13x13
#: (49 tiles, 3136) 0.98-1.27x the direct time, in model order (``benchmarks/winograd.py``);
#: 256 -> 256 on 14x14 (49 tiles, 12544) 0.75-0.84x
MIN_TILE_CHANNELS = 10_000


def eligible(c: int, w_shape: tuple, win) -> bool:
    """Whether a group-1 channels-last convolution of ``c`` input channels and this HWIO weight
    shape and window may run here, whatever the batch: 3x3, stride 1, dilation 1, at least
    :data:`MIN_CHANNELS` in, a map whose tiles save enough (what the pass marks)."""
    return (tuple(w_shape[:2]) == (3, 3) and tuple(win.strides) == (1, 1) and tuple(win.dilations) == (1, 1)
            and c >= MIN_CHANNELS and multiply_ratio(*win.out_shape) >= MIN_RATIO)


def applies(x_shape: tuple, w_shape: tuple, win) -> bool:
    """:func:`eligible`, and a call of this input shape has work enough (:data:`MIN_TILE_CHANNELS`)."""
    n, c = x_shape[0], x_shape[3]
    return eligible(c, w_shape, win) and n * tiles_per_image(*win.out_shape) * c >= MIN_TILE_CHANNELS


def zero_plane_share(w: np.ndarray) -> float:
    """The share of the HWIO weight's (tap, output) planes that are all zero."""
    kh, kw, c, m = w.shape
    return float((~np.asarray(w).reshape(kh * kw, c, m).any(axis=1)).mean())


def transformed_weight(w: np.ndarray, nl: int, keep_for: np.ndarray | None = None) -> np.ndarray:
    """The HWIO weight ``w`` (3, 3, C, M) as ``G g G^T`` per (c, m), each of the 16 points' (C, M)
    laid out as :func:`~inference.kernels.rows_gemm.padded_weight`'s panels of ``nl`` columns,
    point after point, flat. Computed in float64, kept with the constant ``keep_for``."""
    _, _, c, m = w.shape

    def build(values: np.ndarray) -> np.ndarray:
        g = np.asarray(values, np.float64).reshape(3, 3, c * m)
        u = np.tensordot(np.tensordot(_G, g, axes=(1, 0)), _G, axes=(1, 1))  # (4, C*M, 4)
        u = u.transpose(0, 2, 1).reshape(POINTS, c, m).astype(np.float32)
        return np.concatenate([padded_weight(u[xi], nl)[0] for xi in range(POINTS)])

    return build(w) if keep_for is None else prepacked(keep_for, ("winograd", nl), build)


def block_rows(c: int, nl: int, mr: int) -> int:
    """Tiles per block: as many as keep the block's patches and products within :data:`BLOCK_BYTES`,
    whole tile rows of ``mr``."""
    fits = BLOCK_BYTES // (POINTS * 4 * (c + nl))
    return max(mr, fits // mr * mr)


class PreparedWinograd:
    """``clamp(conv3x3(x, w) + bias + z)`` for a fixed channels-last input shape, stride 1, dilation 1,
    group 1 and pads ``pads_begin`` (the end pads follow from ``out_shape``)."""

    __slots__ = ("x_shape", "dims", "c", "m", "nl", "units", "koff", "zero", "_weight")

    def __init__(self, x_shape: tuple[int, int, int, int], m: int, pads_begin: tuple[int, int],
                 out_shape: tuple[int, int]):
        n, h, w, c = x_shape
        oh, ow = out_shape
        mr, nv = tile_shape(m)
        self.nl = nv * LANES
        rows = block_rows(c, self.nl, mr)
        tiles = n * tiles_per_image(oh, ow)
        rows = min(rows, -(-tiles // mr) * mr)
        self.x_shape, self.c, self.m = tuple(x_shape), c, m
        self.units = -(-m // self.nl) * -(-tiles // rows)
        self.dims = np.array([n, h, w, c, m, oh, ow, pads_begin[0], pads_begin[1], rows, mr, nv, 0], np.int64)
        self.koff = panel_row_offsets(c, self.nl)  # the product's K is the channels
        self.zero = np.zeros(self.nl, np.float32)
        self._weight: tuple = (NO_REF, None)  # (the constant weight's weakref, its transform)

    def __call__(self, x: np.ndarray, w: np.ndarray, bias: np.ndarray, z: np.ndarray | None, amin: np.float32,
                 amax: np.float32, keep_for: np.ndarray | None = None) -> np.ndarray | None:
        """The output, or None when a sum came out inf or NaN (the direct algorithm says which)."""
        if x.shape != self.x_shape or w.shape != (3, 3, self.c, self.m):
            raise KernelError(f"winograd: X {x.shape} and W {w.shape}, prepared for X {self.x_shape} and W "
                              f"{(3, 3, self.c, self.m)}")
        if keep_for is not None and self._weight[0]() is keep_for:
            up = self._weight[1]
        else:
            up = transformed_weight(w, self.nl, keep_for)
            if keep_for is not None:
                self._weight = (weakref.ref(keep_for), up)  # weak: a released weight goes
        n, oh, ow = self.dims[0], self.dims[5], self.dims[6]
        y = new_output((n, oh, ow, self.m))
        zz = self.zero if z is None else np.ascontiguousarray(z, dtype=np.float32).reshape(-1)
        threads = kernel_threads()
        kernel = _winograd.parallel if threads > 1 else _winograd.serial
        lims = np.array([amin, amax, -np.inf, np.inf], np.float32)
        chunks = parallel_chunks(self.units, threads)
        bad = np.zeros(chunks, np.int64)
        kernel(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), self.dims, up, self.koff, self.zero,
               np.ascontiguousarray(bias, dtype=np.float32), zz, z is not None, lims, y.reshape(-1), bad, chunks)
        return None if bad.any() else y


# B^T's rows as (first patch line, its sign, second line, its sign): point (a, b) of the transformed
# patch is the sum over the two lines of row a and the two of row b, signs multiplied
_BT = np.array([[0, 1, 2, -1], [1, 1, 2, 1], [2, 1, 1, -1], [1, 1, 3, -1]], np.int64)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _input_tiles(x, h, w, c, pt, pl, th, tw, g0, count, p, rows, v, patch, bt):
    """``v[xi, t, :]`` = point xi of tile ``g0 + t``'s transformed patch for t < count; rows
    [count, p) zero (the last tile row's padding). ``patch`` (16 * c): a border patch, its padding
    zero-filled (interior patches are read in place). Each point is its own loop over the channels
    (one store, four loads, on views indexed from 0): one loop writing all sixteen points stayed
    scalar in LLVM (the 56x56 64-channel layer's patches in 571 us; flat-indexed per-point loops
    1310 us, numba's negative-index fix-up on each index; these 173 us)."""
    per_image = th * tw
    plane = rows * c
    off = np.empty(POINTS, np.int64)
    zero = np.float32(0.0)
    for t in range(p):
        if t >= count:
            for xi in range(POINTS):
                row = v[xi * plane + t * c:xi * plane + (t + 1) * c]
                for ch in range(c):
                    row[ch] = zero
            continue
        g = g0 + t
        img, r = g // per_image, g % per_image
        iy, ix = 2 * (r // tw) - pt, 2 * (r % tw) - pl
        src = x
        if 0 <= iy and iy + 3 < h and 0 <= ix and ix + 3 < w:
            for i in range(4):
                for j in range(4):
                    off[i * 4 + j] = ((img * h + iy + i) * w + ix + j) * c
        else:  # a border patch: copied with its padding as zeros
            src = patch
            for i in range(4):
                for j in range(4):
                    q = (i * 4 + j) * c
                    off[i * 4 + j] = q
                    into = patch[q:q + c]
                    if 0 <= iy + i < h and 0 <= ix + j < w:
                        o = ((img * h + iy + i) * w + ix + j) * c
                        pixel = x[o:o + c]
                        for ch in range(c):
                            into[ch] = pixel[ch]
                    else:
                        for ch in range(c):
                            into[ch] = zero
        for a in range(4):
            i1, si, i2, si2 = bt[a, 0], bt[a, 1], bt[a, 2], bt[a, 3]
            for b in range(4):
                j1, sj, j2, sj2 = bt[b, 0], bt[b, 1], bt[b, 2], bt[b, 3]
                o11, o12, o21, o22 = off[i1 * 4 + j1], off[i1 * 4 + j2], off[i2 * 4 + j1], off[i2 * 4 + j2]
                s11, s12, s21, s22 = (np.float32(si * sj), np.float32(si * sj2), np.float32(si2 * sj),
                                      np.float32(si2 * sj2))
                dst = (a * 4 + b) * plane + t * c
                out, d11, d12, d21, d22 = (v[dst:dst + c], src[o11:o11 + c], src[o12:o12 + c], src[o21:o21 + c],
                                           src[o22:o22 + c])
                for ch in range(c):
                    out[ch] = (s11 * d11[ch] + s12 * d12[ch]) + (s21 * d21[ch] + s22 * d22[ch])


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _output_tiles(mm, rows, nl, g0, count, th, tw, oh, ow, m, m0, cols, bias, z, has_z, amin, amax, y, s):
    """Tiles [g0, g0 + count)'s 2x2 outputs, channels [m0, m0 + cols), from their 16 products in
    ``mm`` (16, rows, nl): ``clamp(A^T m A + bias + z)``, the outputs past an odd edge left out.
    ``s`` (8 * nl): ``A^T m``, a loop per line for the same reason as the input's. Returns how many
    sums (before the clamp) were inf or NaN (``val - val`` is 0 for any finite value)."""
    per_image = th * tw
    plane = rows * nl
    bad = 0
    zero = np.float32(0.0)
    for t in range(count):
        g = g0 + t
        img, r = g // per_image, g % per_image
        oy, ox = 2 * (r // tw), 2 * (r % tw)
        q = t * nl
        for b in range(4):  # s[0, b] = m0b + m1b + m2b, s[1, b] = m1b - m2b - m3b
            p0, p1, p2, p3 = b * plane + q, (4 + b) * plane + q, (8 + b) * plane + q, (12 + b) * plane + q
            m0b, m1b, m2b, m3b = mm[p0:p0 + cols], mm[p1:p1 + cols], mm[p2:p2 + cols], mm[p3:p3 + cols]
            top, bottom = s[b * nl:b * nl + cols], s[(4 + b) * nl:(4 + b) * nl + cols]
            for j in range(cols):
                top[j] = m0b[j] + m1b[j] + m2b[j]
            for j in range(cols):
                bottom[j] = m1b[j] - m2b[j] - m3b[j]
        for a in range(2):
            if oy + a >= oh:
                break
            for e in range(2):
                if ox + e >= ow:
                    break
                o = ((img * oh + oy + a) * ow + ox + e) * m + m0
                f = 4 * a * nl
                s0, s1, s2, s3 = s[f:f + cols], s[f + nl:f + nl + cols], s[f + 2 * nl:f + 2 * nl + cols], \
                    s[f + 3 * nl:f + 3 * nl + cols]
                out, bj, zj = y[o:o + cols], bias[m0:m0 + cols], z[o:o + cols] if has_z else z[:cols]
                if e == 0:  # column 0: s0 + s1 + s2
                    for j in range(cols):
                        val = s0[j] + s1[j] + s2[j] + bj[j]
                        if has_z:
                            val += zj[j]
                        bad += (val - val) != zero
                        out[j] = min(max(val, amin), amax)
                else:  # column 1: s1 - s2 - s3
                    for j in range(cols):
                        val = s1[j] - s2[j] - s3[j] + bj[j]
                        if has_z:
                            val += zj[j]
                        bad += (val - val) != zero
                        out[j] = min(max(val, amin), amax)
    return bad


@threaded_kernel()
def _winograd(x, dims, up, koff, zero, bias, z, has_z, lims, y, bad, nchunks):
    """The units (panel, block) in ``nchunks`` parallel runs, panel-major. ``dims``: n, h, w, c, m, oh,
    ow, pad top, pad left, rows per block, tile rows, tile vectors, 0. ``up``: the 16 points' weight
    panels (:func:`transformed_weight`); ``lims``: the clamp, then an open one for the products;
    ``bad[run]``: the sums that run found not finite."""
    n, h, w, c, m, oh, ow, pt, pl, rows, mr, nv = (dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6],
                                                     dims[7], dims[8], dims[9], dims[10], dims[11])
    no_z = dims[12] != 0  # a value, not a literal False: numba would compile the tiles again for a literal
    nl = nv * LANES
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    tiles = n * th * tw
    blocks = -(-tiles // rows)
    mbs = -(-m // nl)
    units = mbs * blocks
    psize = c * nl
    for ch in numba.prange(nchunks):
        v = np.empty(POINTS * rows * c, np.float32)
        mm = np.empty(POINTS * rows * nl, np.float32)
        patch = np.empty(POINTS * c, np.float32)
        s = np.empty(8 * nl, np.float32)
        last = -1  # the block whose patches are in v
        for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
            mb, blk = u // blocks, u % blocks
            g0 = blk * rows
            count = min(rows, tiles - g0)
            p = -(-count // mr) * mr
            if blk != last:
                _input_tiles(x, h, w, c, pt, pl, th, tw, g0, count, p, rows, v, patch, _BT)
                last = blk
            for xi in range(POINTS):
                wo = (xi * mbs + mb) * psize
                matrix_tiles(v, xi * rows * c, zero, p, koff, up[wo:wo + psize], zero, zero, no_z, lims[2], lims[3],
                             mm, xi * rows * nl, nl, mr, nv, 0, p // mr, no_z)
            m0 = mb * nl
            bad[ch] += _output_tiles(mm, rows, nl, g0, count, th, tw, oh, ow, m, m0, min(nl, m - m0), bias, z,
                                     has_z, lims[0], lims[1], y, s)
