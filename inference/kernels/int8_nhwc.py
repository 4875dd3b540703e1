"""int8 convolutions channels-last: ``edgelearn::QConvNHWC``, a QConv on (N, H, W, C) tensors.

Why: onnxruntime runs a quantized MobileNetV2 channels-last, and in NCHW ours paid twice where it
did not (one thread, batch 1): its depthwise layers on 14x14 and 7x7 maps ran one short plane at a
time (960 channels of 7x7: 200 us against onnxruntime's 26), and its 1x1 layers interleaved their
input by 4 channels on every call and finished each 32-pixel block of one channel through a scratch
epilogue (96 x 112 x 112 expansion: 552 us against 196). Channels-last, a 1x1 convolution is the
matrix product of the (pixels, C) rows as they lie with the weight, on the channels-lanes tile of
:mod:`inference.kernels.int8_channels_ir` (epilogue in registers, one masked store per 16 output
channels); a depthwise one sums 4 taps of 64 channels a ``vpdpbusd`` on the depthwise tile of
:mod:`inference.kernels.int8_depthwise_ir` (the same epilogue), windows inside the image read in
place, border ones from zero-point-padded bands. ``inference.passes.layout`` puts chains of them channels-last.

What runs here: depthwise convolutions (any window, stride, dilation) and group-1 ones; a group-1
convolution other than a stride-1 unpadded 1x1 on a multiple of 4 channels first gathers its
patches (im2col, each tap's run of channels copied whole; padding reads the zero point). QMatMul
runs here too: the rows of X are a 1x1 convolution's pixels. The epilogue is QConv's
(:mod:`inference.kernels.int8`): ``act((sum + corr) * scale + fbias [+ Z])``, requantized or
float32, with the same per-channel constants, the same operations in the same order, so with
Relu, Clip or no activation (and any activation on a depthwise one) its bytes equal the NCHW
kernel's. The tile's other activations (Sigmoid, SiLU, HardSwish) are vector IR; any other (Gelu,
LeakyRelu, ...) runs after the tile's float sums, vectorised (:func:`activate_requantize`).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.kernels._applies import input_of_type
from inference.kernels._jit import numba_threads, parallel_chunks, threaded_kernel
from inference.kernels._prepack import prepacked
from inference.kernels.activations import CLIP, NONE, RELU, activate_row
from inference.kernels.arena_slot import new_scratch
from inference.kernels.int8_channels_ir import make_channels_qtile
from inference.kernels.int8_depthwise_ir import TAPS, make_depthwise_qtile, pack_depthwise_taps
from inference.kernels.int8_depthwise_ir import WIDTH as DW_WIDTH
from inference.kernels.memcpy_ir import copy_run
from inference.kernels.int8 import (DOMAIN, QCONV_SCHEMA, _as_uint8, _cached_constants, _Epilogue,
                                   _tuple, int8_fast_ok, qconv_reference, qconv_shape_rule, qmatmul_reference,
                                   zero_point_source, zero_point_terms)
from inference.kernels.nhwc import TO_NCHW, TO_NHWC
from inference.kernels.tile_lanes import tile_epilogue
from inference.ops._window import window_geometry
from inference.ops.registry import register
from inference.schema import OpSchema, register_schema

MR = 6  # pixels per channels tile
WIDTH, HALF = 64, 32  # output channels per tile: whole blocks of 64, a last one of <= 32 on a half-width tile
DW_MR = 4  # pixels per depthwise tile (64 channels each)

_qtile = make_channels_qtile(MR, WIDTH // 16)
_qtile_half = make_channels_qtile(MR, HALF // 16)
_dw_tile = make_depthwise_qtile(DW_MR)


class Plan(NamedTuple):
    """One convolution's geometry: output size, strides, dilations, begin pads, and whether its
    patches are the input's rows as they lie (a stride-1 unpadded 1x1 on a multiple of 4 channels)."""

    oh: int
    ow: int
    sh: int
    sw: int
    dh: int
    dw: int
    ph: int
    pw: int
    in_place: bool


@functools.lru_cache(maxsize=1024)
def plan(h: int, w: int, c: int, kh: int, kw: int, auto_pad: str, dilations, kernel_shape, pads, strides) -> Plan:
    win = window_geometry((h, w), kernel_shape or (kh, kw), strides, dilations, pads, auto_pad, 0, "QConvNHWC")
    (oh, ow), (sh, sw), (dh, dw), (ph, pw) = win.out_shape, win.strides, win.dilations, win.pads_begin
    in_place = kh == kw == 1 and (sh, sw) == (1, 1) and not any(win.pads_begin + win.pads_end) and c % 4 == 0
    return Plan(oh, ow, sh, sw, dh, dw, ph, pw, in_place)


# -- group-1: the channels-lanes GEMM ---------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def run_terms(xs, xzp, xshift, ibias, sums, ws):
    """This run's zero-point correction and scale per channel, from the activations' scale and zero
    point as their one-element arrays hold them (:func:`~inference.kernels.int8.zero_point_terms`)."""
    corr, scale = np.empty(ibias.size, np.int32), np.empty(ws.size, np.float32)
    zero_point_terms(np.float32(xs[0]), np.int32(xzp[0]) + np.int32(xshift), ibias, sums, ws, corr, scale)
    return corr, scale


@numba.njit(cache=True, nogil=True)
def channel_blocks(m):
    """(whole WIDTH-channel blocks, channels of a last half-width block: 0 or 1..HALF) for ``m``
    output channels: 96 -> (1, 32), 24 -> (0, 24), 144 -> (2, 16), 40 -> (1, 0) (one block, 24 idle)."""
    full, rest = m // WIDTH, m % WIDTH
    return (full, rest) if rest <= HALF else (full + 1, 0)


#: the relative cost of a tile of a whole channel block and of a half-width one (alone, one thread: 16 ->
#: 64 channels on 112 x 112 165 us, 16 -> 32 87; 576 -> 64 on 14 x 14 47, -> 32 30). The parallel runs
#: are cut at equal cost, not equal tile counts: 96 channels (a block and a half one) had given one
#: thread the whole block and the other the half (16 -> 96 on 112 x 112 1.44x faster on two threads)
FULL_COST, HALF_COST = 8, 5


@numba.njit(cache=True, nogil=True, inline="always")
def _tile_at(cost: int, whole: int, whole_tiles: int) -> int:
    """The first tile starting at or past ``cost`` (whole-block tiles first, ``whole`` their cost)."""
    if cost <= whole:
        return -(-cost // FULL_COST)
    return whole_tiles + -(-(cost - whole) // HALF_COST)


@numba.njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def qgemm_nhwc(x, k4, npix, wcols, koff, koff_half, mcols, xs, xzp, xshift, ibias, sums, ws, fbias, z, has_z, y,
               quantize, inv_ys, lo, hi, izp, act, nchunks):
    """``y`` (npix, mcols) flat = the epilogue (:func:`epilogue_constants`) of ``x`` (npix, k4)
    int32 rows (4 uint8 channels each) times the packed weight ``wcols``
    (:func:`pack_weight_panels`); tiles of MR pixels x WIDTH channels, a last block of at most
    HALF channels on the half-width tile; channel blocks outermost (a block's weight panel stays in
    cache across its pixels), cut into ``nchunks`` parallel runs. The activations' scale and zero
    point are read here from their one-element arrays ``xs`` and ``xzp`` (plus ``xshift``), so a
    dynamically quantized product (a new scale each run) costs no Python and replays."""
    corr, scale = run_terms(xs, xzp, xshift, ibias, sums, ws)
    full, rest = channel_blocks(mcols)
    pbs = (npix + MR - 1) // MR
    whole = full * pbs * FULL_COST  # the cost of the whole-block tiles, which come first
    total = whole + (pbs * HALF_COST if rest > 0 else 0)
    for ch in numba.prange(nchunks):
        for t in range(_tile_at(ch * total // nchunks, whole, full * pbs),
                       _tile_at((ch + 1) * total // nchunks, whole, full * pbs)):
            nb, pb = t // pbs, t % pbs
            p0, n0 = pb * MR, nb * WIDTH
            rows, at = min(MR, npix - p0), p0 * mcols + n0
            if nb < full:
                _qtile(x, p0 * k4, wcols, nb * k4 * WIDTH, koff, k4, rows, corr, scale, fbias, n0,
                       min(WIDTH, mcols - n0), z, has_z, y, at, mcols, quantize, inv_ys, lo, hi, izp, act)
            else:
                _qtile_half(x, p0 * k4, wcols, nb * k4 * WIDTH, koff_half, k4, rows, corr, scale, fbias, n0, rest, z,
                            has_z, y, at, mcols, quantize, inv_ys, lo, hi, izp, act)


@threaded_kernel()
def im2col_nhwc(x, zp, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, out):
    """Patches of ``x`` (N, H, W, C) uint8 as the rows of ``out`` (N * oh * ow, K4 * 4): tap (ky,
    kx)'s C channels at columns ``(ky * kw + kx) * C``, the zero point where the tap is padding and
    in the columns past kh * kw * C. Taps adjacent along a row (dilation 1) are one contiguous run
    of the input's row, copied whole where the window lies inside it: by ``memcpy`` when long, a
    byte loop when short (an RGB stem's 9 bytes: slice copies had cost ~60 ns a pixel)."""
    n, h, w, c = x.shape
    kc, width = kh * kw * c, out.shape[1]
    xf = x.reshape(-1)
    for t in numba.prange(n * oh):
        img, oy = t // oh, t % oh
        for ox in range(ow):
            at = (t * ow + ox) * width
            row = out[t * ow + ox]
            for q in range(kc, width):
                row[q] = zp
            ix0 = ox * sw - pw
            inside = dw == 1 and ix0 >= 0 and ix0 + kw <= w
            for ky in range(kh):
                iy = oy * sh - ph + ky * dh
                k0 = ky * kw * c
                if iy < 0 or iy >= h:
                    for q in range(kw * c):
                        row[k0 + q] = zp
                elif inside:
                    src = ((img * h + iy) * w + ix0) * c
                    if kw * c >= 64:
                        copy_run(out, at + k0, x, src, kw * c)
                    else:
                        for q in range(kw * c):
                            row[k0 + q] = xf[src + q]
                else:
                    for kx in range(kw):
                        ix = ix0 + kx * dw
                        src = ((img * h + iy) * w + ix) * c
                        for q in range(c):
                            row[k0 + kx * c + q] = xf[src + q] if 0 <= ix < w else zp


def pack_weight_panels(w_nk: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """int8 (M, K) -> (int32 panels flat, row sums (M,), k4): per :func:`channel_blocks` block
    [K/4][width channels][4 taps] (width WIDTH, or HALF for a last half block), zero past M and K."""
    m, k = w_nk.shape
    full, rest = channel_blocks(m)
    k4 = -(-k // 4)
    panels = []
    for n0, width in [(b * WIDTH, WIDTH) for b in range(full)] + ([(full * WIDTH, HALF)] if rest else []):
        block = np.zeros((width, k4 * 4), np.int8)
        part = w_nk[n0:n0 + width]
        block[:part.shape[0], :k] = part
        panels.append(block.reshape(width, k4, 4).transpose(1, 0, 2).reshape(-1))
    packed = np.ascontiguousarray(np.concatenate(panels)).view(np.int32)
    return packed, w_nk.astype(np.int32).sum(axis=1), k4


def _packed_panels(w_nk: np.ndarray) -> tuple[tuple, dict]:
    """An (M, K) int8 weight (a convolution's in the im2col row order (ky, kx, c)) packed, its row
    sums, k4 and the tiles' step offsets; and a slot for the call sites' constants."""
    packed, sums, k4 = pack_weight_panels(np.ascontiguousarray(w_nk))
    steps = np.arange(k4, dtype=np.int64)
    return (packed, sums, k4, steps * WIDTH, steps * HALF), {}


# -- depthwise ----------------------------------------------------------------------------------------
@numba.njit(cache=True, error_model="numpy", nogil=True)
def _band(x, img, h, w, c, iy0, rows, j0, j1, pw, zp, band, wq):
    """``band`` (rows, wq, C) flat, columns [j0, j1) of the zero-point-padded image ``img`` of ``x``
    (N, H, W, C) flat, from input row ``iy0`` on: the zero point outside the image, the rest one
    ``memcpy`` per row."""
    for r in range(rows):
        at, iy = r * wq * c, iy0 + r
        a, b = max(j0, pw), min(j1, w + pw)  # the padded columns that hold image pixels
        if iy < 0 or iy >= h or a >= b:
            band[at + j0 * c:at + j1 * c] = zp
            continue
        band[at + j0 * c:at + a * c] = zp
        band[at + b * c:at + j1 * c] = zp
        copy_run(band, at + a * c, x, ((img * h + iy) * w + a - pw) * c, (b - a) * c)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _requantize_row(vals, inv_ys, lo, hi, izp, out):
    """``out = rint(clip(vals * inv_ys, lo, hi)) + izp``: :func:`tile_lanes.requantized`'s steps, a
    NaN clipping to ``lo``."""
    for i in range(vals.size):
        v = vals[i] * inv_ys
        v = v if v > lo else lo
        v = v if v < hi else hi
        out[i] = np.int32(np.rint(v)) + izp


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _dw_pixels(src, at, xstep, offs, ox0, ox1, y_at, c, wts, steps, corr, scale, fbias, z, has_z, y, quantize, inv_ys,
               lo, hi, izp, act):
    """Output pixels [ox0, ox1) of a row (its pixel ox0 at ``y_at``), each window's corner at ``src[at
    + (ox - ox0) * xstep]``, its taps at ``offs``: DW_MR pixels x 64 channels a tile."""
    for ox in range(ox0, ox1, DW_MR):
        rows = min(DW_MR, ox1 - ox)
        x_at, o_at = at + (ox - ox0) * xstep, y_at + (ox - ox0) * c
        for n0 in range(0, c, DW_WIDTH):
            _dw_tile(src, x_at + n0, xstep, wts, n0 * steps, offs, steps, rows, corr, scale, fbias, n0, c - n0, z,
                     has_z, y, o_at + n0, c, quantize, inv_ys, lo, hi, izp, act)


@numba.njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def qdepthwise_nhwc(x, n, h, w, c, ph, pw, sh, sw, oh, ow, span_h, span_w, wq, zp, wts, steps, offs_x, offs_band, xs,
                    xzp, xshift, ibias, sums, ws, fbias, z, has_z, y, quantize, inv_ys, lo, hi, izp, act, nchunks):
    """``x`` uint8 flat (N, H, W, C); output pixel (oy, ox)'s window (``span_h`` x ``span_w`` pixels)
    has its corner at input (oy * sh - ph, ox * sw - pw), tap t at ``offs_x[t]`` from there. A window
    inside the image is read where it lies; the row's border pixels (and whole rows whose windows
    cross the top or bottom) read a zero-point-padded band of the rows they need (:func:`_band`,
    ``wq`` pixels wide, taps at ``offs_band``), built per row in each thread's scratch (a padded copy
    of the whole image first: an int8 MobileNetV2 3.8-3.9 ms, without it 3.5-3.6). ``wts`` the packed taps
    (:func:`pack_depthwise_taps`, ``steps`` groups of 4); outputs flat (N, oh, ow, C) in ``y``
    through the channels tile's epilogue (constants as :func:`qgemm_nhwc`'s). Parallel over runs of
    output rows. (Units of (row, channel block) instead, for a 7x7 map's 7 rows on two threads: no
    faster, kernel alone 11.6-20.4 us against 12.1-21.7.)"""
    corr, scale = run_terms(xs, xzp, xshift, ibias, sums, ws)
    total = n * oh
    first_in = min(ow, (pw + sw - 1) // sw)  # the first output column whose window starts inside
    last_in = max(first_in, min(ow, (w + pw - span_w) // sw + 1))  # past the last whose window ends inside
    whole = c % DW_WIDTH == 0  # else a tile reads up to 63 bytes past a pixel: not past x's last row
    for ch in numba.prange(nchunks):
        band = np.empty(span_h * wq * c + DW_WIDTH, np.uint8)
        for t in range(ch * total // nchunks, (ch + 1) * total // nchunks):
            img, oy = t // oh, t % oh
            iy0 = oy * sh - ph
            inside = iy0 >= 0 and iy0 + span_h <= h and (whole or img < n - 1 or iy0 + span_h < h)
            first, last = (first_in, last_in) if inside else (ow, ow)
            y_at = t * ow * c
            if first > 0:
                _band(x, img, h, w, c, iy0, span_h, 0, (first - 1) * sw + span_w, pw, zp, band, wq)
                _dw_pixels(band, 0, sw * c, offs_band, 0, first, y_at, c, wts, steps, corr, scale, fbias, z, has_z, y,
                           quantize, inv_ys, lo, hi, izp, act)
            if last > first:
                at = ((img * h + iy0) * w + first * sw - pw) * c
                _dw_pixels(x, at, sw * c, offs_x, first, last, y_at + first * c, c, wts, steps, corr, scale, fbias, z,
                           has_z, y, quantize, inv_ys, lo, hi, izp, act)
            if last < ow:
                _band(x, img, h, w, c, iy0, span_h, last * sw, (ow - 1) * sw + span_w, pw, zp, band, wq)
                _dw_pixels(band, last * sw * c, sw * c, offs_band, last, ow, y_at + last * c, c, wts, steps, corr,
                           scale, fbias, z, has_z, y, quantize, inv_ys, lo, hi, izp, act)


def _depthwise_taps(w: np.ndarray) -> tuple[np.ndarray, dict]:
    """The packed taps (:func:`pack_depthwise_taps`) and a slot holding each channel's sum (the
    zero point's share of the bias)."""
    c, ntaps = w.shape[0], w.shape[2] * w.shape[3]
    return pack_depthwise_taps(w), {"sums": w.reshape(c, ntaps).sum(axis=1, dtype=np.int32)}


@functools.lru_cache(maxsize=1024)
def _tap_offsets(kh: int, kw: int, dh: int, dw: int, wq: int, c: int) -> np.ndarray:
    """Each tap's start from its window's corner in an image (or band) with rows of ``wq`` pixels of
    ``c`` channels, flat, padded to whole groups of TAPS (zero-weight taps read a real pixel)."""
    n = kh * kw
    offs = np.zeros(-(-n // TAPS) * TAPS, np.int64)
    for t in range(n):
        offs[t] = ((t // kw) * dh * wq + (t % kw) * dw) * c
    offs[n:] = offs[0]
    offs.flags.writeable = False
    return offs


def qconv2d_nhwc(x, x_scale, x_zp, w, w_scale, b=None, z=None, y_scale=None, y_zp=None, *, auto_pad="NOTSET",
                 dilations=None, group=1, kernel_shape=None, pads=None, strides=None, activation="", alpha=0.0,
                 beta=0.0) -> np.ndarray:
    """QConv on NHWC ``x`` (N, H, W, C) with the OIHW int8 weight ``w``: the output (N, oh, ow, M)."""
    xu, xzp = _as_uint8(x, x_zp)
    n, h, wd, c = xu.shape
    m, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    depthwise = group == m == c and group > 1 and w.shape[1] == 1
    if not depthwise and (group != 1 or w.shape[1] != c):
        raise KernelError(f"QConvNHWC: X {x.shape} (NHWC), W {w.shape}, group={group}: depthwise or group 1 only")
    strides = _tuple(strides)
    pl = plan(h, wd, c, kh, kw, auto_pad, _tuple(dilations), _tuple(kernel_shape), _tuple(pads), strides)
    params = (x_scale, w_scale, b, y_scale, y_zp)
    epi = (z, activation, alpha, beta, (n, pl.oh, pl.ow, m))
    if depthwise:
        return _depthwise(xu, xzp, zero_point_source(x, x_zp), w, pl, params, epi)
    packed, slot = prepacked(w, ("int8", "nhwc_panels"),
                             lambda v: _packed_panels(v.transpose(0, 2, 3, 1).reshape(v.shape[0], -1)))
    return _on_tile(xu, xzp, zero_point_source(x, x_zp), packed, slot, pl, kh, kw, params, epi)


def qmatmul(x, x_scale, x_zp, w, w_scale, b=None, z=None, y_scale=None, y_zp=None, *, transB=0, activation="",
            alpha=0.0, beta=0.0) -> np.ndarray:
    """int8 ``X (..., K) @ W (K, N)`` (``W (N, K)`` when ``transB``) with QConv's epilogue: the rows
    of X are the pixels of a channels-last 1x1 convolution on the channels tile (read in place when
    K is a multiple of 4), so each output row's N channels are stored contiguously."""
    xu, xzp = _as_uint8(x, x_zp)
    k = xu.shape[-1]
    nout = w.shape[0] if transB else w.shape[1]
    if (w.shape[1] if transB else w.shape[0]) != k:
        raise KernelError(f"QMatMul: X {x.shape} and W {w.shape} (transB={transB}) do not chain")
    rows = xu.reshape(-1, 1, 1, k)
    packed, slot = prepacked(w, ("int8", "matmul_panels", bool(transB)), lambda v: _packed_panels(v if transB else v.T))
    pl = plan(1, 1, k, 1, 1, "NOTSET", None, None, None, None)
    epi = (z, activation, alpha, beta, x.shape[:-1] + (nout,))
    return _on_tile(rows, xzp, zero_point_source(x, x_zp), packed, slot, pl, 1, 1, (x_scale, w_scale, b, y_scale, y_zp),
                    epi)


def _on_tile(xu, xzp, zp_at, packed, slot, pl: Plan, kh: int, kw: int, params: tuple, epi: tuple) -> np.ndarray:
    """A group-1 convolution of NHWC ``xu`` (uint8, zero point ``xzp``, read by the kernel from
    ``zp_at``: :func:`~inference.kernels.int8.zero_point_source`) on the channels tile: its rows in
    place or its im2col patches, times the packed weight; ``epi`` = (Z, activation, alpha, beta,
    output shape)."""
    wcols, sums, k4, koff, koff_half = packed
    m = sums.size
    consts = _cached_constants(slot, [packed[:3]], params[1:])
    ep = _Epilogue(consts, *epi)
    ec = epilogue_constants(consts, ep.code, ep.alpha, ep.beta)
    weight_side = _laid_out(slot, consts, (consts.ibias, consts.sums, consts.ws, consts.fbias),
                            -(-m // WIDTH) * WIDTH)
    xs = np.asarray(params[0]).reshape(-1)
    npix = xu.shape[0] * pl.oh * pl.ow
    if pl.in_place:
        rows = xu.reshape(-1).view(np.int32)
    else:
        cols = new_scratch((npix, k4 * 4), np.uint8)
        im2col_nhwc(xu, np.uint8(xzp), kh, kw, pl.sh, pl.sw, pl.dh, pl.dw, pl.ph, pl.pw, pl.oh, pl.ow, cols)
        rows = cols.reshape(-1).view(np.int32)
    chunks = parallel_chunks(_blocks(m) * -(-npix // MR), numba_threads())
    return _finished(consts, ep, ec, npix, m, lambda y, quantize, lo, hi, act: qgemm_nhwc(
        rows, k4, npix, wcols, koff, koff_half, m, xs, *zp_at, *weight_side, ep.z, ep.has_z, y, quantize,
        consts.inv_ys, lo, hi, ec.izp, act, chunks))


def _finished(consts, ep: _Epilogue, ec: EpilogueConstants, npix: int, m: int, tile) -> np.ndarray:
    """``ep``'s result from a channels tile's run ``tile(y, quantize, lo, hi, act)``: straight into it,
    or, for an activation the tile does not compute (Gelu, LeakyRelu, ...), the tile's float sums
    (into the result itself when that is float32), then :func:`activate_requantize`."""
    if ec.act is not None:
        tile(ep.result.reshape(-1), consts.quantize, ec.lo, ec.hi, ec.act)
        return ep.result
    t = new_scratch(ep.result.shape, np.float32) if consts.quantize else ep.result
    inf = np.float32(np.inf)
    tile(t.reshape(-1), False, -inf, inf, NONE)
    lo, hi = np.float32(consts.qmin - consts.yzp), np.float32(consts.qmax - consts.yzp)
    activate_requantize(t.reshape(npix, m), ep.code, ep.alpha, ep.beta, consts.quantize, consts.inv_ys, lo, hi, ec.izp,
                        ep.result.reshape(npix, m))
    return ep.result


@threaded_kernel()
def activate_requantize(t, code, alpha, beta, quantize, inv_ys, lo, hi, izp, y):
    """Each row of ``t`` through the float kernels' vectorised activation ``code`` in place
    (:func:`~inference.kernels.activations.activate_row`: Gelu lane by lane had cost 10 ns an
    output), then, with ``quantize``, into ``y``: ``rint(clip(. * inv_ys, lo, hi)) + izp`` (a float
    result is ``t`` itself: a dynamic transformer's Gelu products had made a copy of 128 x 1024)."""
    for r in numba.prange(t.shape[0]):
        row = t[r]
        activate_row(row, code, alpha, beta)
        if quantize:
            _requantize_row(row, inv_ys, lo, hi, izp, y[r])


def _depthwise(xu, xzp, zp_at, w, pl: Plan, params: tuple, epi: tuple) -> np.ndarray:
    """A depthwise convolution of NHWC ``xu`` on the depthwise tile, windows inside the image read in
    place, the others from zero-point-padded bands (:func:`qdepthwise_nhwc`). (The image's phase
    planes, where a strided window reads contiguous pixels, cost more to build than they saved: the
    tile loads each pixel's taps apart anyway; 96 channels at 112x112, stride 2: 187 against 161 us,
    one thread.)"""
    n, h, wd, c = xu.shape
    kh, kw = w.shape[2], w.shape[3]
    span_h, span_w = (kh - 1) * pl.dh + 1, (kw - 1) * pl.dw + 1
    wq = max(wd + pl.pw, (pl.ow - 1) * pl.sw + span_w)
    wts, slot = prepacked(w, ("int8", "depthwise_nhwc"), _depthwise_taps)
    consts = _cached_constants(slot, [(None, slot["sums"], 0)], params[1:])
    ep = _Epilogue(consts, *epi)
    ec = epilogue_constants(consts, ep.code, ep.alpha, ep.beta)
    weight_side = _laid_out(slot, consts, (consts.ibias, consts.sums, consts.ws, consts.fbias),
                            -(-c // DW_WIDTH) * DW_WIDTH)
    offs_x, offs_band = _tap_offsets(kh, kw, pl.dh, pl.dw, wd, c), _tap_offsets(kh, kw, pl.dh, pl.dw, wq, c)
    chunks = parallel_chunks(n * pl.oh, numba_threads())
    xs = np.asarray(params[0]).reshape(-1)
    return _finished(consts, ep, ec, n * pl.oh * pl.ow, c, lambda y, quantize, lo, hi, act: qdepthwise_nhwc(
        xu.reshape(-1), n, h, wd, c, pl.ph, pl.pw, pl.sh, pl.sw, pl.oh, pl.ow, span_h, span_w, wq, np.uint8(xzp), wts,
        offs_x.size // TAPS, offs_x, offs_band, xs, *zp_at, *weight_side, ep.z, ep.has_z, y, quantize, consts.inv_ys,
        lo, hi, ec.izp, act, chunks))


@functools.lru_cache(maxsize=1024)
def _blocks(m: int) -> int:  # remembered: channel_blocks is compiled, ~1 us a call from Python
    full, rest = channel_blocks(m)
    return full + (rest > 0)


class EpilogueConstants(NamedTuple):
    """The scalars of the channels tile's epilogue (:mod:`inference.kernels.int8_channels_ir`)."""

    lo: np.float32
    hi: np.float32
    izp: np.int32
    act: int | None  # the tile's activation code (NONE: a clamp, folded into [lo, hi]); None: not the tile's


@functools.lru_cache(maxsize=256)
def _epilogue_constants(quantize: bool, inv_ys: float, qmin: float, qmax: float, yzp: float, code: int, alpha: float,
                        beta: float) -> EpilogueConstants:
    whole, amin, amax, act = tile_epilogue(code, alpha, beta)
    if not quantize:
        return EpilogueConstants(amin, amax, np.int32(0), act if whole else None)
    f32 = np.float32
    lo, hi = f32(qmin - yzp), f32(qmax - yzp)
    if code in (NONE, RELU, CLIP):  # what the NCHW tile computes as clip(t, amin, amax) * inv_ys, exactly
        lo, hi = max(lo, f32(amin * f32(inv_ys))), min(hi, f32(amax * f32(inv_ys)))
    return EpilogueConstants(lo, hi, np.int32(yzp), act if whole else None)


def epilogue_constants(consts, code: int, alpha, beta) -> EpilogueConstants:
    """[lo, hi], the zero point and the tile's activation code for QConv's epilogue constants
    ``consts`` (:class:`inference.kernels.int8._Constants`) and activation ``code``."""
    return _epilogue_constants(bool(consts.quantize), float(consts.inv_ys), float(consts.qmin), float(consts.qmax),
                               float(consts.yzp), int(code), float(alpha), float(beta))


def _laid_out(slot: dict, source, per_channel: tuple, width: int) -> tuple:
    """The per-channel arrays ``per_channel`` zero-padded to ``width`` (the tiles' whole channel
    blocks); kept in the packing's slot while they come from the same ``source`` (the constants
    object they belong to)."""
    held = slot.get("laid_out")
    if held is None or held[0] is not source or held[1] != width:
        arrays = []
        for v in per_channel:
            padded = np.zeros(width, v.dtype)
            padded[:v.size] = v
            arrays.append(padded)
        held = slot["laid_out"] = (source, width, tuple(arrays))
    return held[2]


# -- the op: schema, reference (QConv's, transposed about it), fast kernel --------------------------------
OP = "QConvNHWC"


def _shape(node: Node, types_: list) -> list:
    x, w = types_[0], types_[3] if len(types_) > 3 else None
    if not isinstance(x, TensorType) or not isinstance(w, TensorType) or x.rank != 4 or w.rank != 4:
        return [None]
    nchw = TensorType(x.elem_type, tuple(x.shape[i] for i in TO_NCHW))
    out = qconv_shape_rule(node, [nchw] + list(types_[1:]))[0]
    return [None if out is None else TensorType(out.elem_type, tuple(out.shape[i] for i in TO_NHWC))]


register_schema(OpSchema(OP, DOMAIN, 1, QCONV_SCHEMA.inputs, QCONV_SCHEMA.outputs, QCONV_SCHEMA.attributes,
                         shape_rule=_shape))


def _nchw(v):
    return None if v is None else np.ascontiguousarray(v.transpose(TO_NCHW))


@register(OP, since=1, domain=DOMAIN)
def qconv_nhwc_reference(x, x_scale, x_zero_point, w, w_scale, b=None, z=None, y_scale=None, y_zero_point=None,
                         **attrs):
    if x.ndim != 4:
        raise KernelError(f"{OP}: X must be (N, H, W, C), got shape {x.shape}")
    y = qconv_reference(_nchw(x), x_scale, x_zero_point, w, w_scale, b, _nchw(z), y_scale, y_zero_point, **attrs)
    return np.ascontiguousarray(y.transpose(TO_NHWC))


def runs_here(c: int, w_shape: tuple, group: int) -> bool:
    """Whether :func:`qconv2d_nhwc` computes such a QConv: depthwise or group 1."""
    if group > 1:
        return group == c == w_shape[0] and w_shape[1] == 1
    return w_shape[1] == c


@register(OP, since=1, domain=DOMAIN, kind="fast", applies=lambda n, g: input_of_type(n, g, (2, 3)))
def qconv_nhwc_fast(x, x_scale, x_zero_point, w, w_scale, b=None, z=None, y_scale=None, y_zero_point=None, **attrs):
    if x.ndim != 4 or w.dtype != np.int8 or not runs_here(x.shape[3], w.shape, attrs.get("group", 1)):
        return qconv_nhwc_reference(x, x_scale, x_zero_point, w, w_scale, b, z, y_scale, y_zero_point, **attrs)
    return qconv2d_nhwc(x, x_scale, x_zero_point, w, w_scale, b, z, y_scale, y_zero_point, **attrs)


@register("QMatMul", since=1, domain=DOMAIN, kind="fast", applies=int8_fast_ok)
def qmatmul_fast(x, x_scale, x_zero_point, w, w_scale, b=None, z=None, y_scale=None, y_zero_point=None, **attrs):
    if w.ndim != 2 or w.dtype != np.int8 or x.ndim < 1:
        return qmatmul_reference(x, x_scale, x_zero_point, w, w_scale, b, z, y_scale, y_zero_point, **attrs)
    return qmatmul(x, x_scale, x_zero_point, w, w_scale, b, z, y_scale, y_zero_point, **attrs)
