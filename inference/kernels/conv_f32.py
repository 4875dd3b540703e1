"""float32 convolution as an implicit GEMM on our own register tile: no im2col, no BLAS.

Why: im2col + OpenBLAS ran ResNet-18's 3x3 convolutions at 60-90 GFLOP/s on one core here (the
GEMM itself 80-100, im2col on top), onnxruntime's MLAS at 105-150 in the same process. The tile
(:mod:`inference.kernels.tile_ir`, float FMA: 6 output channels x 64 pixels in 24 zmm
accumulators; 8 x 32 ran ~15% slower) reads its pixel vectors straight from the zero-padded
input, a per-step offset table saying where tap (channel, ky, kx) is. Flat positions run along
the padded rows, so a tile may span output rows; the padding columns it computes are never
stored. Strided convolutions run as stride-1 ones over the input's s*s phases (each phase with its
own taps), a strided 1x1 without padding as a subsampling, and an unpadded 1x1 reads ``x`` in
place. The geometry is the int8 kernel's (:mod:`inference.kernels.tile_plan`, one channel per
step). The tile finishes its outputs in registers (bias, residual, clamp, masked stores of the
real row segments).

Measured against onnxruntime in one process, one thread (min of 30-40 interleaved calls; the
ranges span runs on this noisy VM): 3x3 on 64x56x56 1.09-1.27x, on 128x28x28 1.20-1.43x, on
256x14x14 1.28-1.5x (64-pixel tiles over 14-pixel rows of 15 waste 23% of their lanes), on
512x7x7 1.02-1.16x, on squeezenet's 64x13x13 1.11-1.14x; ResNet's 7x7/2 stem 0.97-0.99x; 1x1 in
place 0.81x (128x55x55 -> 16) and 0.92x (64x56x56 -> 256). In a hot loop on one register tile's
data the tile peaks at ~120 GFLOP/s here (6x4; 8x3, 4x6, 12x2, 7x4 shapes and a 2x unrolled K loop
all 110-129): the gap to MLAS's 130-150 is the kernel's, not the memory's (cutting K into
L1-sized slices changed nothing).

At n threads the GEMM runs threaded when numba is the graph's pool (``inference.thread_policy``:
every CNN here); in a graph of BLAS products (a transformer) it stays serial so only one pool
spins (MobileNetV2, when its pointwise layers were still BLAS GEMMs, at batch 1 on 2 threads:
32.6 ms with this GEMM threaded regardless, 12.4 ms serial).
"""
from __future__ import annotations

import functools
from typing import Callable

import numba
import numpy as np

from inference.kernels._jit import parallel_chunks, threaded_kernel
from inference.kernels._prepack import prepacked
from inference.kernels.activations import NONE, activate_row
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.tile_ir import make_out_tile
from inference.kernels.tile_lanes import row_segments, tile_epilogue
from inference.kernels.tile_plan import ConvPlan, conv_plan, conv_weight_rows, phase_weight_rows
from inference.ops._window import Window

MR, NV = 6, 4  # register tile: MR output channels x NV*16 pixels (24 zmm accumulators)
NP = NV * 16  # pixels per tile
_tile = make_out_tile(MR, NV, residual=False)
_tile_z = make_out_tile(MR, NV, residual=True)
_NO_Z = np.zeros(1, np.float32)
IMAGE_BYTES = 1 << 20  # padded input per GEMM call: the images one call sweeps stay in L2


def supports(plan: ConvPlan) -> bool:
    """Whether the tile runs this plan (dilated strided convolutions keep im2col + BLAS)."""
    return plan.layout != "im2col"


def plan_for(x_shape: tuple, w_shape: tuple, group: int, win: Window) -> ConvPlan:
    """The float tile's plan (one channel per step) of a convolution whose window is resolved."""
    return conv_plan(tuple(x_shape), tuple(w_shape), group, "NOTSET", win.dilations, win.kernel,
                     tuple(win.pads_begin) + tuple(win.pads_end), win.strides, chans=1)


# -- input layout -------------------------------------------------------------------------------
def pad_phases(x: np.ndarray, c0: int, cg: int, s: int, ph: int, pw: int, wrow: int, out: np.ndarray) -> None:
    """Channels [c0, c0+cg) of ``x`` (N, C, H, W) as the s*s phases of the zero-padded input:
    ``out`` (N, s*s*cg, plane), plane (phase (a, b), channel) row i column j holding
    x[.., s*i + a - ph, s*j + b - pw] (zero outside ``x`` and past the last row). With s = 1 it
    is the padded input itself."""
    _fill_planes(np.ascontiguousarray(x, dtype=np.float32), c0, cg, s, ph, pw, wrow, out)


@threaded_kernel()
def _fill_planes(x, c0, cg, s, ph, pw, wrow, out):
    n, c_all, h, w = x.shape
    groups = out.shape[1]
    xf = x.reshape(n, c_all, h * w)
    for t in numba.prange(n * groups):
        img, gi = t // groups, t % groups
        _fill_plane(xf[img, c0 + gi % cg], h, w, s, (gi // cg) // s, (gi // cg) % s, ph, pw, wrow, out[img, gi])


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _fill_plane(src, h, w, s, a, b, ph, pw, wrow, o):
    """``o`` := phase (a, b) of the zero-padded image ``src`` (flat H*W): row i column j of ``o``
    (rows ``wrow`` apart) holds src[s*i + a - ph, s*j + b - pw], zero outside it and past the
    last row.

    Zeroes the whole plane, then copies rows through views indexed by the loop's own counter:
    numba vectorises that. Zeroing only the gaps between rows, flat offsets, or slice assignment
    (numba's generic path) ran 3-6x slower: 1-5 GB/s, up to a third of a small convolution's time."""
    plane = o.size
    if s == 1 and ph == 0 and pw == 0 and wrow == w:  # unpadded: the plane is one run
        for j in range(h * w):
            o[j] = src[j]
        for j in range(h * w, plane):
            o[j] = 0
        return
    for j in range(plane):
        o[j] = 0
    rows = plane // wrow
    j0 = min(wrow, max(0, -(-(pw - b) // s)))  # columns [j0, j1) and rows [i0, i1) come from src
    j1 = max(j0, min(wrow, (w - b + pw + s - 1) // s))
    i0 = min(rows, max(0, -(-(ph - a) // s)))
    i1 = max(i0, min(rows, (h - a + ph + s - 1) // s))
    for i in range(i0, i1):
        dst = o[i * wrow + j0:i * wrow + j1]
        seg = src[(s * i + a - ph) * w + s * j0 + b - pw:]
        if s == 1:
            for j in range(j1 - j0):
                dst[j] = seg[j]
        elif s == 2:  # a constant stride: twice as fast
            for j in range(j1 - j0):
                dst[j] = seg[2 * j]
        else:
            for j in range(j1 - j0):
                dst[j] = seg[s * j]


# -- the GEMM with its epilogue -------------------------------------------------------------------
@threaded_kernel()
def fgemm(wp, steps, m, ngroups, cflat, img_stride, group_stride, koff, nimg, pbs, nflat, wrow, ow, bias, z, has_z,
          amin, amax, y, sm, sn, nchunks, weights_outer, act):
    """The tiles of (conv group, image, pixel block, channel block), in ``nchunks`` parallel runs.

    Group ``g`` has ``m`` output channels, its packed weights at ``wp[g * wp.size / ngroups:]``
    and its input planes from ``cflat[g * group_stride:]``; there, pixel block ``pb`` of image
    ``img`` starts at ``img*img_stride + pb*NP``; its flat positions f (< nflat) are (oy, ox) =
    divmod(f, wrow), columns ox >= ow padding (never stored). Each tile finishes its outputs
    itself: ``act(acc + bias + z)`` (``act`` NONE: a clamp to [amin, amax], for Relu, Clip or
    none; SIGMOID or SILU computed in the tile; other activations follow in a pass of their
    own), stored to output (img, channel c, p) at ``y[img*sn + c*sm + p]`` (and read from ``z``
    there). ``weights_outer`` (deep layers, whose weights outgrow L2) puts the
    channel block outermost: each block's weights then stay cached while it sweeps the pixels."""
    mbs = wp.size // (ngroups * steps * MR)
    npx = nimg * pbs
    per_group = npx * mbs
    for ch in numba.prange(nchunks):
        seg = np.empty((NP, 3), np.int64)
        ns, last_px = 0, -1
        for t in range(ch * ngroups * per_group // nchunks, (ch + 1) * ngroups * per_group // nchunks):
            g, tt = t // per_group, t % per_group
            if weights_outer:
                mb, px = tt // npx, tt % npx
            else:
                px, mb = tt // mbs, tt % mbs
            img, pb = px // pbs, px % pbs
            if px != last_px:  # the real output row pieces of this pixel block
                ns = row_segments(pb * NP, min(NP, nflat - pb * NP), wrow, ow, seg)
                last_px = px
            c0 = g * m + mb * MR
            w_off, c_off = (g * mbs + mb) * steps * MR, g * group_stride + img * img_stride + pb * NP
            if has_z:
                _tile_z(wp, w_off, cflat, c_off, koff, steps, bias, c0, min(MR, m - mb * MR), amin, amax, z, y,
                        img * sn + c0 * sm, sm, seg, ns, act)
            else:
                _tile(wp, w_off, cflat, c_off, koff, steps, bias, c0, min(MR, m - mb * MR), amin, amax, z, y,
                      img * sn + c0 * sm, sm, seg, ns, act)


# -- packed weights -----------------------------------------------------------------------------
def pack_rows(w2d: np.ndarray) -> np.ndarray:
    """float (M, K) -> [M/MR][K][MR] flat, M zero-padded to a multiple of MR."""
    m, k = w2d.shape
    mp = -(-m // MR) * MR
    full = np.zeros((mp, k), np.float32)
    full[:m] = w2d
    return np.ascontiguousarray(full.reshape(mp // MR, MR, k).transpose(0, 2, 1)).reshape(-1)


def packed_weights(w: np.ndarray, group: int, layout: str, keep: bool = True) -> np.ndarray:
    """``w``'s rows in the tap order of ``layout`` ("direct" or "s2d<s>"), packed for the tile,
    group after group. ``keep``: ``w`` never changes (a Predictor's initializer), so the packing
    is kept while ``w`` lives (:func:`~inference.kernels._prepack.prepacked`); otherwise it is
    packed on every call."""

    def build(w: np.ndarray) -> np.ndarray:
        mg = w.shape[0] // group
        if layout.startswith("s2d"):
            rows = lambda wg: phase_weight_rows(wg, int(layout[3:]), chans=1)  # noqa: E731
        else:
            rows = lambda wg: conv_weight_rows(wg, True, chans=1)  # noqa: E731
        return np.concatenate([pack_rows(np.asarray(rows(w[g * mg:(g + 1) * mg]), np.float32))
                               for g in range(group)])

    return prepacked(w, ("f32", group, layout), build) if keep else build(w)


@functools.lru_cache(maxsize=256)
def _plane_offsets(channels: int, plane: int) -> np.ndarray:
    """The K steps of a 1x1 conv over ``channels`` planes ``plane`` apart (read-only)."""
    koff = np.arange(channels, dtype=np.int64) * plane
    koff.flags.writeable = False
    return koff


def _pointwise_in_place(x_shape: tuple, m: int, group: int) -> Callable[..., None]:
    """The GEMM of a stride-1 1x1 conv without padding, prepared for ``x_shape``: it reads its
    pixel vectors from ``x`` itself (its padded copy had been a third of a squeeze layer's time).
    Whole 64-pixel blocks come straight from ``x``; the last, partial one from a zero-padded copy
    of its columns, since its vectors would read past the end of ``x``. Flat positions are output
    positions, so each block's outputs are one run (the plane seen as a single row)."""
    n, c, h, w = x_shape
    npix = h * w
    mg, cg = m // group, c // group
    mbs = -(-mg // MR)
    full, rem = divmod(npix, NP)
    parts = ([(False, npix, full, 0)] if full else []) + ([(True, NP, 1, full * NP)] if rem else [])
    per_call = max(1, min(n, IMAGE_BYTES // (c * npix * 4)))
    calls = []  # (from the tail copy, plane, pixel blocks, first pixel, images, first output, koff, tiles)
    for from_tail, plane, pbs, p0 in parts:
        for i0 in range(0, n, per_call):  # a few images per call: their inputs stay in L2 across the weights
            i1 = min(n, i0 + per_call)
            calls.append((from_tail, plane, pbs, p0, i0, i1, i0 * m * npix + p0, _plane_offsets(cg, plane),
                          group * (i1 - i0) * pbs * mbs))

    def gemm(x, wp, bias, zz, has_z, y, amin, amax, act):
        planes = x.reshape(n, c, npix)
        tail = None
        if rem:
            tail = new_scratch((n, c, NP))
            _copy_tail(planes, full * NP, tail)
        yf = y.reshape(-1)
        for from_tail, plane, pbs, p0, i0, i1, first, koff, tiles in calls:
            src = (tail if from_tail else planes)[i0:i1].reshape(-1)
            fgemm(wp, cg, mg, group, src, c * plane, cg * plane, koff, i1 - i0, pbs, min(pbs * NP, npix - p0), npix,
                  npix, bias, zz[first:] if has_z else zz, has_z, amin, amax, yf[first:], npix, m * npix,
                  parallel_chunks(tiles), wp.size > src.size, act)

    return gemm


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _copy_tail(planes, first, tail):
    """``tail[i, k]`` = ``planes[i, k, first:]`` then zeros (N, C, NP). In numba: numpy's copy, a
    step outside the kernels, kept every model with such a layer from being replayed (a 1-D
    keyword or TCN model's 200-step maps)."""
    n, c, npix = planes.shape
    rem = npix - first
    for i in range(n):
        for k in range(c):
            src, dst = planes[i, k], tail[i, k]
            for j in range(rem):
                dst[j] = src[first + j]
            for j in range(rem, dst.size):
                dst[j] = 0.0


def _gemm_on_padded(x: np.ndarray, wp: np.ndarray, bias: np.ndarray, zz: np.ndarray, has_z: bool, y: np.ndarray,
                    amin: np.float32, amax: np.float32, act: int, plan: ConvPlan, group: int) -> None:
    """The GEMM over the plan's padded (or phase) copy of ``x``. Direct plans pad all groups'
    channels in one pass and run every group in one GEMM call (shufflenet's grouped 1x1
    convolutions: one call, not one per group); phase layouts go group by group."""
    n, m, oh, ow = y.shape
    mg, npix, pbs = m // group, oh * ow, -(-plan.nflat // NP)
    gemm_groups = group if plan.s2d is None else 1
    planes = plan.groups * plan.plane  # per image and group
    xi = new_scratch((n, gemm_groups, planes))
    per_call = max(1, min(n, IMAGE_BYTES // (xi[0].size * 4)))
    if plan.s2d is None:
        pad_phases(x, 0, x.shape[1], 1, plan.ph, plan.pw, plan.wrow, xi.reshape(n, -1, plan.plane))
    for g in range(group // gemm_groups):
        if plan.s2d is not None:
            pad_phases(x, g * plan.cg, plan.cg, plan.s2d[0], plan.s2d[1], plan.s2d[2], plan.wrow,
                       xi.reshape(n, -1, plan.plane))
        wg = wp[g * wp.size // group:(g + gemm_groups) * wp.size // group] if gemm_groups != group else wp
        for i0 in range(0, n, per_call):  # a few images per call: their inputs stay in L2 across the weights
            i1 = min(n, i0 + per_call)
            xs, ys = (xi, y) if i1 - i0 == n else (xi[i0:i1], y[i0:i1])
            first = i0 * m * npix + g * mg * npix  # of this call's outputs (and residuals)
            fgemm(wg, wg.size // (gemm_groups * -(-mg // MR) * MR), mg, gemm_groups, xs.reshape(-1),
                  gemm_groups * planes, planes, plan.koff, i1 - i0, pbs, plan.nflat, plan.wrow, ow,
                  bias[g * mg:] if g else bias, zz[first:] if first and has_z else zz, has_z,
                  amin, amax, ys.reshape(-1)[g * mg * npix:] if g else ys.reshape(-1), npix, m * npix,
                  parallel_chunks(gemm_groups * (i1 - i0) * pbs * -(-mg // MR)), wg.size > xs.size, act)


TileConv = Callable[[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


def prepare_tiles(x_shape: tuple, w_shape: tuple, plan: ConvPlan, group: int, code: int = NONE, alpha: float = 0.0,
                  beta: float = 0.0, keep_packing: bool = False) -> TileConv:
    """The call ``(x, w, bias, z) -> act(conv(x, w) + bias + z)`` on the tile (``supports(plan)``)
    for float32 NCHW ``x`` and ``w`` of these shapes, ``bias`` float32 (M,), ``z`` (optional) the
    output's shape, with what follows from the shapes settled here: a bound layer prepares once per
    input shape (on squeezenet's and shufflenet's 26-30 convolutions per run, deriving it per call
    had cost ~5-8 us each, measured with the kernels stubbed out). ``keep_packing``: ``w`` is
    constant (see :func:`packed_weights`). Unpadded stride-1 1x1 layers read ``x`` in place, the
    others a padded copy."""
    n, m = x_shape[0], w_shape[0]
    oh, ow = plan.oh, plan.ow
    out_shape = (n, m, oh, ow)
    whole, amin, amax, act = tile_epilogue(code, alpha, beta)
    sub = plan.subsample
    if plan.s2d is None and plan.kh == plan.kw == 1 and plan.ph == plan.pw == 0 and plan.wrow == ow:
        gemm = _pointwise_in_place((n, x_shape[1], oh, ow), m, group)
    else:
        gemm = functools.partial(_gemm_on_padded, plan=plan, group=group)

    def run(x, w, bias, z):
        y = new_output(out_shape)
        if sub is not None:
            x = x[:, :, ::sub[0], ::sub[1]][:, :, :oh, :ow]
        zz = np.ascontiguousarray(z, dtype=np.float32).reshape(-1) if z is not None else _NO_Z
        wp = packed_weights(w, group, plan.weight_layout, keep_packing)
        gemm(np.ascontiguousarray(x, dtype=np.float32), wp, bias, zz, z is not None, y, amin=amin, amax=amax,
             act=act)
        if not whole:
            activate_row(y.reshape(-1), code, alpha, beta)
        return y

    return run


def conv2d_tiles(x: np.ndarray, w: np.ndarray, bias: np.ndarray, z: np.ndarray | None, plan: ConvPlan, group: int,
                 code: int = NONE, alpha: float = 0.0, beta: float = 0.0, keep_packing: bool = False) -> np.ndarray:
    """:func:`prepare_tiles` for one call."""
    return prepare_tiles(x.shape, w.shape, plan, group, code, alpha, beta, keep_packing)(x, w, bias, z)
