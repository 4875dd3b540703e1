"""int8 convolution and matrix product: VNNI GEMM tiles with int32 accumulation, fused requantization.

The ops (our domain; ``inference.passes.qdq_fusion`` creates them from the QDQ pattern that
``compress.quantize`` and onnxruntime's quantizer write):

* ``edgelearn::QConv(X, x_scale, x_zero_point, W, w_scale, B?, Z?, y_scale?, y_zero_point?)``
* ``edgelearn::QMatMul(X, x_scale, x_zero_point, W, w_scale, B?, Z?, y_scale?, y_zero_point?)``

Why our own ops rather than QLinearConv/QLinearMatMul: those must requantize their output and
cannot carry a residual or an activation. Ours take the 8-bit input (uint8 or int8, per-tensor
zero point), symmetric int8 weights (per tensor or per output channel), an int32 bias (scale
x_scale * w_scale, as QDQ files store it) or a float one, and in one pass over the int32
accumulators scale to real, add bias and residual ``Z``, apply the activation, then requantize to
``y_zero_point``'s type or write float32 (when a float op reads the result).

Why this GEMM: ``vpdpbusd`` multiplies 64 uint8 x int8 pairs and sums them in fours into 16 int32
lanes: 4x the multiply-adds of an fp32 FMA. LLVM does not emit it from plain loops (numba 0.68 /
LLVM 22 on this Sapphire/Emerald Rapids CPU turns an int8 dot loop into ``vpmovsxbd`` +
``vpdpwssd`` on ymm, one product per int32 lane), so the register tile is written in LLVM IR
(:mod:`inference.kernels.tile_ir`) with the intrinsic: 8 output channels x 32 pixels = 16 zmm
accumulators; per step one broadcast int32 (4 taps) of weights per channel and two 64-byte pixel
vectors (16 pixels x 4 taps). A table of per-step offsets says where the pixel vectors are, so the
same tile runs

* direct convolution (stride 1): the input, padded with its zero point and interleaved by 4
  channels, is read in place: no im2col;
* strided convolution as stride-1 ones over the s*s phases of the input (space-to-depth), each
  phase with only its own taps (a 3x3/2 has the 9 taps per channel of a 3x3/1, not 16); strided
  1x1 as subsampling; only dilated strided ones pack im2col columns;
* (matrix products run on the channels-last tile, :mod:`inference.kernels.int8_nhwc`: rows of X are
  its pixels, read in place).

A depthwise convolution (one channel a group) would leave 7 of the tile's 8 channels idle: it runs
as a direct stencil with the same epilogue (:mod:`inference.kernels.int8_depthwise`).

The epilogue runs on whole 32-lane blocks in vector IR (:mod:`inference.kernels.tile_lanes`),
storing each output row segment with one masked store; geometry, packed weights and epilogue
constants are derived on a node's first call and reused (:mod:`inference.kernels.tile_plan`).

On a CPU without AVX512-VNNI the tile is emitted as generic vector IR (widen, multiply, add in
fours) that LLVM lowers for the target; numba's cache is keyed by the CPU, so both coexist.
uint8 activations are what ``vpdpbusd`` multiplies; int8 ones are shifted by 128 (and their zero
point). The zero point folds into the bias: ``sum((x - zx) w) = sum(x w) - zx * sum(w)``.
"""
from __future__ import annotations

import functools

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.kernels._jit import numba_threads, parallel_chunks, threaded_kernel
from inference.kernels._prepack import prepacked
from inference.kernels.activations import activation_code
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.fused import reference_activation
from inference.kernels.int8_depthwise import depthwise_plan, prepared_taps, qdepthwise
from inference.kernels.strided import copy_into
from inference.kernels.tile_plan import conv_plan, conv_weight_rows, phase_weight_rows
from inference.kernels.tile_lanes import clamp_range, epilogue_block, row_segments
from inference.kernels.tile_ir import has_vnni, make_tile  # noqa: F401  (has_vnni: re-exported)
from inference.ops.conv import conv as reference_conv
from inference.ops.quantize import dequantize_linear, quantize_linear
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema

DOMAIN = "edgelearn"
CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
MR, NV, LANES = 8, 2, 16  # register tile: MR output channels x NV*LANES pixels
NP = NV * LANES


_tile = make_tile(MR, NV)


# -- packing ------------------------------------------------------------------------------------
def pack_weights(w2d: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """int8 (M, K) -> (packed int32 [M/MR][K/4][MR] flat, per-row sums int32 (M,), k4); M and K
    are zero-padded to multiples of MR and 4, so padded taps contribute nothing."""
    m, k = w2d.shape
    mp, k4 = -(-m // MR) * MR, -(-k // 4)
    full = np.zeros((mp, k4 * 4), np.int8)
    full[:m, :k] = w2d
    packed = np.ascontiguousarray(full.reshape(mp // MR, MR, k4, 4).transpose(0, 2, 1, 3))
    return packed.view(np.int32).reshape(-1), w2d.astype(np.int32).sum(axis=1), k4


@threaded_kernel()
def interleave_phases(x, c0, cg, s, ph, pw, zp, out, wp_):
    """Channels [c0, c0+cg) of uint8 ``x`` (N, C, H, W) cut into the s*s phases of the padded
    input, interleaved by 4 channels: ``out`` (N, s*s*ceil(cg/4), plane) uint32, group (phase
    (a, b), channel block) row i column j holding x[.., s*i + a - ph, s*j + b - pw] (the zero
    point outside ``x``). A stride-s conv is then a stride-1 one per phase, read in place."""
    n, _, h, w = x.shape
    cb = -(-cg // 4)
    groups, plane = out.shape[1], out.shape[2]
    rows = plane // wp_
    zp4 = np.uint32(zp) * np.uint32(0x01010101)
    for t in numba.prange(n * groups):
        img, gi = t // groups, t % groups
        a, b = (gi // cb) // s, (gi // cb) % s
        c = c0 + 4 * (gi % cb)
        nc = min(4, c0 + cg - c)
        o = out[img, gi]
        o[:] = zp4
        j0 = max(0, -(-(pw - b) // s))
        j1 = min(wp_, (w - b + pw + s - 1) // s)
        for i in range(rows):
            sy = s * i + a - ph
            if sy < 0 or sy >= h:
                continue
            row = o[i * wp_:(i + 1) * wp_]
            if nc == 4:
                r0, r1, r2, r3 = x[img, c, sy], x[img, c + 1, sy], x[img, c + 2, sy], x[img, c + 3, sy]
                for j in range(j0, j1):
                    sx = s * j + b - pw
                    row[j] = (np.uint32(r0[sx]) | (np.uint32(r1[sx]) << np.uint32(8))
                              | (np.uint32(r2[sx]) << np.uint32(16)) | (np.uint32(r3[sx]) << np.uint32(24)))
            else:  # a partial channel block: missing channels read the zero point
                for j in range(j0, j1):
                    v = zp4
                    for k in range(nc):
                        sh = np.uint32(8 * k)
                        v = (v & ~(np.uint32(0xFF) << sh)) | (np.uint32(x[img, c + k, sy, s * j + b - pw]) << sh)
                    row[j] = v


@threaded_kernel()
def interleave_channels(x, c0, cg, ph, pw, wp_, zp, out):
    """Channels [c0, c0+cg) of uint8 ``x`` (N, C, H, W) into ``out`` (N, ceil(cg/4), plane) uint32:
    zero-point padded planes of width ``wp_`` whose pixels hold 4 consecutive channels (one per
    byte, lowest first), so 16 neighbouring pixels of one channel group are one 64-byte vector
    (the direct conv's operand). A full group's pixel is composed as one 32-bit word: contiguous
    loads and stores, which vectorise (a byte store per channel did not)."""
    n, _, h, w = x.shape
    groups = out.shape[1]
    zp4 = np.uint32(zp) * np.uint32(0x01010101)
    for t in numba.prange(n * groups):
        b, c4 = t // groups, t % groups
        o = out[b, c4]
        o[:] = zp4
        c = c0 + 4 * c4
        nc = min(4, cg - 4 * c4)
        for iy in range(h):
            row = o[(iy + ph) * wp_ + pw:(iy + ph) * wp_ + pw + w]
            if nc == 4:
                r0, r1, r2, r3 = x[b, c, iy], x[b, c + 1, iy], x[b, c + 2, iy], x[b, c + 3, iy]
                for ix in range(w):
                    row[ix] = (np.uint32(r0[ix]) | (np.uint32(r1[ix]) << np.uint32(8))
                               | (np.uint32(r2[ix]) << np.uint32(16)) | (np.uint32(r3[ix]) << np.uint32(24)))
            else:  # the last, partial group: missing channels read the zero point
                for ix in range(w):
                    v = zp4
                    for j in range(nc):
                        sh = np.uint32(8 * j)
                        v = (v & ~(np.uint32(0xFF) << sh)) | (np.uint32(x[b, c + j, iy, ix]) << sh)
                    row[ix] = v


@threaded_kernel()
def pack_conv_columns(x, c0, cg, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, zp, cp):
    """im2col of channels [c0, c0+cg) of uint8 ``x`` (N, C, H, W) straight into the tile layout
    ``cp`` (N, P/32, k4, 32, 4) (strided convolutions); taps in the padding read the zero point."""
    n, _, h, w = x.shape
    pbs, k4 = cp.shape[1], cp.shape[2]
    npix = oh * ow
    for t in numba.prange(n * pbs):
        b, pb = t // pbs, t % pbs
        iy0 = np.empty(NP, np.int64)
        ix0 = np.empty(NP, np.int64)
        for q in range(NP):
            p = pb * NP + q
            iy0[q] = (p // ow) * sh - ph if p < npix else -(1 << 40)
            ix0[q] = (p % ow) * sw - pw
        blk = cp[b, pb]
        kidx = 0
        for ci in range(cg):
            for ky in range(kh):
                for kx in range(kw):
                    k, j = kidx >> 2, kidx & 3
                    for q in range(NP):
                        iy, ix = iy0[q] + ky * dh, ix0[q] + kx * dw
                        blk[k, q, j] = x[b, c0 + ci, iy, ix] if 0 <= iy < h and 0 <= ix < w else zp
                    kidx += 1
        while kidx < k4 * 4:
            for q in range(NP):
                blk[kidx >> 2, q, kidx & 3] = zp
            kidx += 1


@threaded_kernel()
def _flip_sign_bit(x, out):
    for i in numba.prange(x.size):
        out[i] = x[i] ^ np.uint8(0x80)


# -- the GEMM with its epilogue -------------------------------------------------------------------
# The GEMMs are always multi-threaded (an int8 graph calls no BLAS, so numba's is the only busy
# pool, and they are ~90% of its time); the packing kernels around them follow the serial-by-default
# policy of ``_jit``: each parallel region is one more barrier, and on a loaded 2-core machine a
# barrier waits for a descheduled worker (ResNet-18, load 13: median 926 -> 580 ms when serial).
@numba.njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def qgemm(wp, k4, m, cflat, img_stride, pb_stride, koff, nimg, pbs, nflat, wrow, ow, corr, scale, fbias, z,
          has_z, code, alpha, beta, amin, amax, inv_ys, yzp, qmin, qmax, quantize, yq, yf, m0, sm, sn, nchunks):
    """Tiles over (image, pixel block, channel block), cut into ``nchunks`` runs of consecutive
    tiles (one per parallel iteration: scratch is allocated and row segments found once per run,
    not per tile). Pixel block ``pb`` of image ``img`` starts at ``cflat[img*img_stride +
    pb*pb_stride]``; its flat positions f (< nflat) are (oy, ox) = divmod(f, wrow), and columns
    ox >= ow are padding, skipped. Each int32 tile goes through the epilogue ``act((acc + corr[m])
    * scale[m] + fbias[m] + z)`` over whole 32-lane blocks, then only the real pixels are stored:
    as float32 in ``yf`` or requantized in ``yq``; output (img, m, p) sits at ``img*sn + (m0+m)*sm
    + p`` of the flat outputs (and of ``z``)."""
    mbs = wp.size // (k4 * MR)
    total = nimg * pbs * mbs
    lo, hi, izp = qmin - yzp, qmax - yzp, np.int32(yzp)
    for ch in numba.prange(nchunks):
        buf = np.empty(MR * NP, np.int32)
        vals = np.empty(NP, np.float32)
        qb = np.empty(NP, np.uint8)
        seg = np.empty((NP, 3), np.int64)
        last_px, ns = -1, 0
        for t in range(ch * total // nchunks, (ch + 1) * total // nchunks):
            px, mb = t // mbs, t % mbs  # px = img * pbs + pb
            img, pb = px // pbs, px % pbs
            if px != last_px:
                ns = row_segments(pb * NP, min(NP, nflat - pb * NP), wrow, ow, seg)
                last_px = px
            _tile(wp, mb * k4 * MR, cflat, img * img_stride + pb * pb_stride, koff, k4, buf)
            for r in range(min(MR, m - mb * MR)):
                mi = mb * MR + r
                epilogue_block(buf, r * NP, corr[mi], scale[mi], fbias[mi], vals, seg, ns, img * sn + (m0 + mi) * sm,
                               z, has_z, code, alpha, beta, amin, amax, quantize, inv_ys, lo, hi, izp, qb, yq, yf)


# -- host side: cached packed weights, argument normalisation -----------------------------------
def _prepared(w: np.ndarray, group: int, layout: str) -> tuple[list, dict]:
    """Per-group (packed, rowsums, k4) of weight ``w`` for ``layout`` ("im2col", "direct" or
    "s2d<s>"), and a slot for its call sites' epilogue constants (:func:`_constants`); packed once
    per weight array (:func:`~inference.kernels._prepack.prepacked`)."""

    def build(w: np.ndarray) -> tuple[list, dict]:
        mg = w.shape[0] // group
        rows = (lambda wg: phase_weight_rows(wg, int(layout[3:]))) if layout.startswith("s2d") \
            else (lambda wg: conv_weight_rows(wg, layout != "im2col"))
        return [pack_weights(np.ascontiguousarray(rows(w[g * mg:(g + 1) * mg]))) for g in range(group)], {}

    return prepacked(w, ("int8", group, layout), build)


def _packed(w: np.ndarray, group: int, layout: str) -> list:
    return _prepared(w, group, layout)[0]


def _as_uint8(x: np.ndarray, zp: np.ndarray | None) -> tuple[np.ndarray, int]:
    """uint8 activations and zero point; int8 ones are shifted by 128 (vpdpbusd wants unsigned)."""
    z = 0 if zp is None else int(np.asarray(zp).item(0))
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x), z
    if x.dtype == np.int8:
        out = new_scratch(x.shape, np.uint8)  # read by the kernel only
        _flip_sign_bit(np.ascontiguousarray(x).view(np.uint8).reshape(-1), out.reshape(-1))
        return out, z + 128
    raise KernelError(f"quantized input must be uint8 or int8, got {x.dtype}")


def zero_point_source(x: np.ndarray, zp: np.ndarray | None) -> tuple[np.ndarray, int]:
    """The one-element array holding ``x``'s zero point and what :func:`_as_uint8` adds to it (128
    for int8): what a kernel reads to fold in a zero point a DynamicQuantizeLinear sets each run."""
    return (_NO_ZP if zp is None else np.asarray(zp).reshape(-1)), 128 if x.dtype == np.int8 else 0


@numba.njit(cache=True, nogil=True)
def zero_point_terms(xs, xzp, ibias, sums, ws, corr, scale):
    """The per-channel epilogue terms of an activation scale ``xs`` and zero point ``xzp``:
    ``corr = ibias - xzp * sums`` (the zero point's share of each sum, folded into the int32 bias:
    ``sum((x - zx) w) = sum(x w) - zx sum(w)``, wrapping as int32) and ``scale = xs * ws`` (float32)."""
    for n in range(corr.size):
        corr[n] = ibias[n] - xzp * sums[n]
        scale[n] = xs * ws[n]


class _Constants:
    """What the epilogue needs besides the accumulators and the activations' scale and zero point,
    per channel and per call site: derived from the weight's and output's quantization parameters
    once, then reused while the session passes the same arrays."""

    def __init__(self, packs: list, w_scale, b, y_scale, y_zp):
        self.sums = np.ascontiguousarray(np.concatenate([p[1] for p in packs]), dtype=np.int32)
        m = self.sums.size
        self.group_size = m // len(packs)
        self.ws = np.ascontiguousarray(np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (m,)))
        self.ibias, self.fbias = np.zeros(m, np.int32), np.zeros(m, np.float32)
        if b is not None:
            if b.dtype == np.int32:
                self.ibias = np.ascontiguousarray(b.reshape(m))
            else:
                self.fbias = np.ascontiguousarray(b.reshape(m), dtype=np.float32)
        self.quantize = y_scale is not None
        self.ydt = np.dtype(y_zp.dtype) if y_zp is not None else np.dtype(np.uint8)
        info = np.iinfo(self.ydt)
        self.qmin, self.qmax = np.float32(info.min), np.float32(info.max)
        self.inv_ys = np.float32(1.0) / np.float32(np.asarray(y_scale).reshape(-1)[0]) if self.quantize \
            else np.float32(1)
        self.yzp = np.float32(0 if y_zp is None else int(np.asarray(y_zp).reshape(-1)[0]))

    def terms(self, x_scale, xzp: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per group: (zero-point correction, scale, float bias) for this activation scale and zero point."""
        corr, scale = np.empty(self.sums.size, np.int32), np.empty(self.sums.size, np.float32)
        zero_point_terms(np.float32(np.asarray(x_scale).reshape(-1)[0]), np.int32(xzp), self.ibias, self.sums,
                         self.ws, corr, scale)
        mg = self.group_size
        return [(corr[g * mg:(g + 1) * mg], scale[g * mg:(g + 1) * mg], self.fbias[g * mg:(g + 1) * mg])
                for g in range(self.sums.size // mg)]


def _constants(w: np.ndarray, layout: str, group: int, xzp: int, params: tuple) -> tuple[list, _Constants, list]:
    """Packed weights, epilogue constants and their per-group terms for one call site, cached
    with the packing: rebuilt only when the quantization parameters are other arrays (dynamic
    quantization) or zero point."""
    packs, slot = _prepared(w, group, layout)
    consts = _cached_constants(slot, packs, params[1:])
    return packs, consts, _cached_terms(slot, consts, params[0], xzp)


def _cached_constants(slot: dict, packs: list, params: tuple) -> _Constants:
    """The epilogue constants kept in a packing's ``slot`` while ``params`` (w_scale, B, y_scale,
    y_zero_point) are the same arrays."""
    held = slot.get("consts")
    if held is not None:
        kept = held[0]  # compared one by one: a generator over the pairs cost ~1 us a call
        if kept[0] is params[0] and kept[1] is params[1] and kept[2] is params[2] and kept[3] is params[3]:
            return held[1]
    held = slot["consts"] = (params, _Constants(packs, *params))
    return held[1]


def _cached_terms(slot: dict, consts: _Constants, x_scale, xzp: int) -> list:
    """``consts.terms(x_scale, xzp)``, kept in ``slot`` while they are the same (static quantization)."""
    held = slot.get("terms")
    if held is None or held[0] is not consts or held[1] is not x_scale or held[2] != xzp:
        held = slot["terms"] = (consts, x_scale, xzp, consts.terms(x_scale, xzp))
    return held[3]


class _Epilogue:
    """The per-call part of the epilogue: residual, activation, output buffer."""

    def __init__(self, consts: _Constants, z, activation, alpha, beta, out_shape, terms: list | None = None):
        self.c, self.terms = consts, terms
        if z is not None and z.size != int(np.prod(out_shape)):
            raise KernelError(f"residual Z has shape {z.shape}, the output {out_shape}")
        self.z = _NO_Z if z is None else np.ascontiguousarray(z, dtype=np.float32).reshape(-1)
        self.has_z = z is not None
        self.code, self.alpha, self.beta, self.clamp = _activation_terms(activation, float(alpha), float(beta))
        # the result in the step's arena slot (the other a shared one-element stand-in the kernels
        # never write: they write the one ``quantize`` picks)
        self.yq = new_output(out_shape, consts.ydt) if consts.quantize else _stand_in(consts.ydt)
        self.yf = _NO_YF if consts.quantize else new_output(out_shape)

    def run(self, g, pack, cflat, img_stride, pb_stride, koff, nimg, nflat, wrow, ow, m0, m, sm, sn) -> None:
        wp, _, k4 = pack
        corr, scale, fbias = self.terms[g]
        pbs = -(-nflat // NP)
        c = self.c
        qgemm(wp, k4, m, cflat, img_stride, pb_stride, koff, nimg, pbs, nflat, wrow, ow, corr, scale, fbias, self.z,
              self.has_z, self.code, self.alpha, self.beta, *self.clamp, c.inv_ys, c.yzp, c.qmin, c.qmax, c.quantize,
              self.yq.reshape(-1), self.yf.reshape(-1), m0, sm, sn, 
              parallel_chunks(nimg * pbs * (wp.size // (k4 * MR)), numba_threads()))

    @property
    def result(self) -> np.ndarray:
        return self.yq if self.c.quantize else self.yf


@functools.lru_cache(maxsize=256)
def _activation_terms(activation: str, alpha: float, beta: float) -> tuple:
    """(code, alpha, beta as float32, clamp range) of a call site's activation: the same every run
    (derived per call, ~3 us of a one-row QMatMul's ~10 us of Python)."""
    code, a, b = activation_code(activation), np.float32(alpha), np.float32(beta)
    return code, a, b, clamp_range(code, a, b)


_NO_Z = np.empty(1, np.float32)
_NO_ZP = np.zeros(1, np.uint8)
_NO_YF = np.empty(1, np.float32)
_NO_YQ = {np.dtype(t): np.empty(1, t) for t in (np.uint8, np.int8)}


def _stand_in(dtype: np.dtype) -> np.ndarray:
    found = _NO_YQ.get(dtype)
    return found if found is not None else np.empty(1, dtype)


def _tuple(v):
    return None if v is None else tuple(v)


def qconv2d(x, x_scale, x_zp, w, w_scale, b=None, z=None, y_scale=None, y_zp=None, *, auto_pad="NOTSET",
            dilations=None, group=1, kernel_shape=None, pads=None, strides=None, activation="", alpha=0.0,
            beta=0.0) -> np.ndarray:
    """int8 2-D convolution (NCHW) with the fused epilogue; see the module docstring.

    Stride-1 convolutions run direct (implicit GEMM over the channel-interleaved padded input: no
    im2col, 1/(kh*kw) of its memory traffic). A strided 1x1 without padding is a subsampling then
    a stride-1 1x1; other strided convolutions run as stride-1 ones over the input's phases, each
    with its own taps (no im2col, no zero taps); only dilated strided ones pack im2col columns.
    The geometry (:mod:`inference.kernels.tile_plan`), packed weights
    and epilogue constants are worked out on the first call and reused.
    """
    xu, xzp = _as_uint8(x, x_zp)
    n = xu.shape[0]
    m = w.shape[0]
    if group > 1 and group == m == xu.shape[1] and w.shape[1] == 1:
        return _qdepthwise2d(xu, xzp, w, (x_scale, w_scale, b, y_scale, y_zp), z, activation, alpha, beta,
                             auto_pad, _tuple(dilations), _tuple(kernel_shape), _tuple(pads), _tuple(strides))
    pl = conv_plan(xu.shape, w.shape, group, auto_pad, _tuple(dilations), _tuple(kernel_shape), _tuple(pads),
                   _tuple(strides))
    packs, consts, terms = _constants(w, pl.weight_layout, group, xzp, (x_scale, w_scale, b, y_scale, y_zp))
    ep = _Epilogue(consts, z, activation, alpha, beta, (n, m, pl.oh, pl.ow), terms)
    if pl.subsample is not None:
        picked = new_scratch(xu.shape[:2] + (pl.oh, pl.ow), np.uint8)  # in numba: a replay repeats the copy
        view = xu[:, :, ::pl.subsample[0], ::pl.subsample[1]][:, :, :pl.oh, :pl.ow]
        if not copy_into(view, picked):
            picked[...] = view
        xu = picked
    mg, cg, npix = m // group, pl.cg, pl.oh * pl.ow
    for g, pack in enumerate(packs):
        if pl.layout != "im2col":
            xi = new_scratch((n, pl.groups, pl.plane), np.uint32)
            if pl.s2d is not None:
                interleave_phases(xu, g * cg, cg, pl.s2d[0], pl.s2d[1], pl.s2d[2], xzp, xi, pl.wrow)
            else:
                interleave_channels(xu, g * cg, cg, pl.ph, pl.pw, pl.wrow, xzp, xi)
            ep.run(g, pack, xi.reshape(-1).view(np.int32), pl.groups * pl.plane, NP, pl.koff, n, pl.nflat, pl.wrow,
                   pl.ow, g * mg, mg, npix, m * npix)
        else:
            cp = new_scratch((n, -(-npix // NP), pl.k4, NP, 4), np.uint8)
            pack_conv_columns(xu, g * cg, cg, pl.kh, pl.kw, pl.sh, pl.sw, pl.dh, pl.dw, pl.ph, pl.pw, pl.oh, pl.ow,
                              np.uint8(xzp), cp)
            ep.run(g, pack, cp.reshape(-1).view(np.int32), cp.shape[1] * pl.k4 * NP, pl.k4 * NP, pl.koff, n, npix,
                   pl.ow, pl.ow, g * mg, mg, npix, m * npix)
    return ep.result


def _qdepthwise2d(xu, xzp, w, params, z, activation, alpha, beta, auto_pad, dilations, kernel_shape, pads,
                  strides) -> np.ndarray:
    """A depthwise QConv (one channel a group) as the direct stencil of
    :mod:`inference.kernels.int8_depthwise`, with the tile's epilogue constants (the zero point's
    share, ``x_zero_point * sum(w)``, folded into the bias as there)."""
    n, c, h, wd = xu.shape
    pl = depthwise_plan(h, wd, *w.shape[2:], auto_pad, dilations, kernel_shape, pads, strides)
    taps, slot = prepacked(w, ("int8", "depthwise"), prepared_taps)
    consts = _cached_constants(slot, [(None, slot["sums"], 0)], params[1:])
    ep = _Epilogue(consts, z, activation, alpha, beta, (n, c, pl.oh, pl.ow))
    ibias, scale, fbias = _cached_terms(slot, consts, params[0], xzp)[0]
    qdepthwise(xu, xzp, taps, pl.offs, pl.sh, pl.sw, pl.ph, pl.pw, pl.hq, pl.wq, pl.oh, pl.ow, ibias, scale, fbias,
               ep.z, ep.has_z, ep.code, ep.alpha, ep.beta, *ep.clamp, consts.inv_ys, consts.yzp, consts.qmin,
               consts.qmax, consts.quantize, ep.yq.reshape(-1), ep.yf.reshape(-1),
               parallel_chunks(n * c, numba_threads()))
    return ep.result


# -- schemas, reference kernels (the oracle: the QDQ graph's own meaning) and fast kernels --------
def _shape_rule(is_conv: bool):
    from inference.kernels.fused import _conv_shape, _matmul_shape

    def rule(node: Node, types_: list) -> list:
        out = (_conv_shape if is_conv else _matmul_shape)(node, [types_[0], types_[3]])[0]
        if is_conv is False and node.attrs.get("transB", 0) and out is not None and isinstance(types_[3], TensorType):
            w = types_[3]
            out = TensorType(out.elem_type, tuple(out.shape[:-1]) + (w.shape[0],))
        if out is None:
            return [None]
        yzp = types_[8] if len(types_) > 8 else None
        elem = yzp.elem_type if isinstance(yzp, TensorType) else (2 if len(node.inputs) > 7 and node.inputs[7] else 1)
        return [TensorType(elem, out.shape)]
    return rule


_INPUTS = tuple(FormalParam(n, optional=i >= 5) for i, n in enumerate(
    ("X", "x_scale", "x_zero_point", "W", "w_scale", "B", "Z", "y_scale", "y_zero_point")))
_EPI = {"activation": "", "alpha": 0.0, "beta": 0.0}
qconv_shape_rule = _shape_rule(True)
QCONV_SCHEMA = OpSchema("QConv", DOMAIN, 1, _INPUTS, (FormalParam("Y"),),
                        {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None,
                         "strides": None, **_EPI}, shape_rule=qconv_shape_rule)
register_schema(QCONV_SCHEMA)
register_schema(OpSchema("QMatMul", DOMAIN, 1, _INPUTS, (FormalParam("Y"),), {"transB": 0, **_EPI},
                         shape_rule=_shape_rule(False)))


def _reference(y_of, x, x_scale, x_zp, w, w_scale, b, z, y_scale, y_zp, activation, alpha, beta, w_axis):
    """Dequantize, compute in float32 with the reference ops, requantize: what the QDQ graph means."""
    xf = dequantize_linear(x, x_scale, x_zp)
    wf = dequantize_linear(w, w_scale, None, axis=w_axis)
    y = y_of(xf, wf)
    if b is not None:
        bf = dequantize_linear(b, (np.float32(x_scale) * w_scale).astype(np.float32), None, axis=0) \
            if b.dtype == np.int32 else b.astype(np.float32)
        y = y + bf.reshape((1, -1) + (1,) * (y.ndim - 2) if w_axis == 0 else (-1,))
    if z is not None:
        y = y + z
    y = reference_activation(y.astype(np.float32), activation, alpha, beta)
    return y if y_scale is None else quantize_linear(y, y_scale, y_zp)


def _mm(xf, wf):
    return np.matmul(xf, wf)


@register("QConv", since=1, domain=DOMAIN)
def qconv_reference(x, x_scale, x_zero_point, w, w_scale, b=None, z=None, y_scale=None, y_zero_point=None, *,
                    activation="", alpha=0.0, beta=0.0, **conv_attrs):
    conv = lambda xf, wf: reference_conv(xf, wf, None, **conv_attrs)  # noqa: E731
    return _reference(conv, x, x_scale, x_zero_point, w, w_scale, b, z, y_scale, y_zero_point, activation,
                      alpha, beta, 0)


@register("QMatMul", since=1, domain=DOMAIN)
def qmatmul_reference(x, x_scale, x_zero_point, w, w_scale, b=None, z=None, y_scale=None, y_zero_point=None, *,
                      transB=0, activation="", alpha=0.0, beta=0.0):
    wt = w.T if transB else w
    return _reference(_mm, x, x_scale, x_zero_point, wt, w_scale, b, z, y_scale, y_zero_point, activation,
                      alpha, beta, 1)


def int8_fast_ok(node: Node, graph) -> bool:
    """Fast when the activations are 8-bit and the 2-D (conv) layout is known or unknown."""
    t = graph.type_of(node.inputs[0])
    if isinstance(t, TensorType) and t.elem_type not in (2, 3):  # uint8, int8
        return False
    return node.op_type != "QConv" or not isinstance(t, TensorType) or t.rank in (4, None)


@register("QConv", since=1, domain=DOMAIN, kind="fast", applies=int8_fast_ok)
def qconv_fast(x, x_scale, x_zero_point, w, w_scale, b=None, z=None, y_scale=None, y_zero_point=None, **attrs):
    if x.ndim != 4 or w.dtype != np.int8:
        return qconv_reference(x, x_scale, x_zero_point, w, w_scale, b, z, y_scale, y_zero_point, **attrs)
    return qconv2d(x, x_scale, x_zero_point, w, w_scale, b, z, y_scale, y_zero_point, **attrs)
