"""Fast 2-D convolution: im2col + BLAS GEMM, 1x1 as a plain GEMM, depthwise (flat NCHW planes,
channels-last on small and strided maps, NCHW rows for strided 3x3 on large ones), small 3x3
(``direct_conv``), fused epilogue; constant weights run the implicit-GEMM tile (``conv_f32``).

Why this shape: in NCHW, ``W (M, C*K) @ cols (C*K, P)`` is already the output image (M, P), so no
transpose follows the GEMM, and a 1x1 stride-1 convolution needs no im2col at all. numpy's matmul
hands the GEMM to OpenBLAS (10-35 GMAC/s on one core here, below onnxruntime's MLAS: that gap is
most of the remaining distance to it); numba does the memory-bound parts (building columns, the
depthwise stencil, bias + residual + activation in one pass over the output).
Geometry (pads, auto_pad, output size) comes from ``inference.ops._window`` like the reference.
"""
from __future__ import annotations

import functools

import numba
import numpy as np

from inference.ir import Graph, Node, TensorType
from inference.kernels import conv_f32
from inference.kernels._jit import kernel_threads, parallel_chunks, threaded_kernel
from inference.kernels._applies import constant_float32_weight
from inference.kernels._prepack import prepacked
from inference.kernels.activations import NO_RESIDUAL_4D, NONE, activate_row, activation_code, as_f32, epilogue_rows
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.channels_last import depthwise_nhwc_kernel, valid_range
from inference.kernels.direct_conv import direct_conv3x3, direct_parts, prefer_direct
from inference.kernels.patchify import PatchifyConv, is_patchify
from inference.kernels.tile_lanes import clamp_epilogue
from inference.kernels.tile_plan import ConvPlan
from inference.kernels.transpose import swap_last_two
from inference.ops._memo import remember
from inference.ops._window import Window, window_geometry
from inference.ops.conv import conv as reference_conv
from inference.ops.registry import register


@threaded_kernel()
def im2col(x, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, cols):
    """Fill ``cols`` (C*kh*kw, oh*ow) from one image ``x`` (C, H, W); taps outside are zero.

    Each output row is a (strided) slice of an input row: the in-range part is a plain copy,
    only the pad columns at either end are zero-filled. Stride 1 reads a unit-step slice in its own
    branch, so numba types it contiguous and vectorises the copy (one variable for both strides made
    it a generic strided view: 1.5-2x slower, from 1x28x28 to 64x56x56, measured).
    """
    c, h, w = x.shape
    for r in numba.prange(c * kh * kw):
        ci, t = r // (kh * kw), r % (kh * kw)
        i, j = t // kw, t % kw
        lo, hi = valid_range(pw, j * dw, sw, w, ow)
        start = lo * sw - pw + j * dw
        crow = cols[r]
        for y in range(oh):
            dst = crow[y * ow:(y + 1) * ow]
            iy = y * sh - ph + i * dh
            if iy < 0 or iy >= h:
                dst[:] = 0
                continue
            for k in range(lo):
                dst[k] = 0
            for k in range(hi, ow):
                dst[k] = 0
            if sw == 1:
                src = x[ci, iy, start:start + hi - lo]
                for k in range(hi - lo):
                    dst[lo + k] = src[k]
            else:
                strided = x[ci, iy, start::sw]
                for k in range(hi - lo):
                    dst[lo + k] = strided[k]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _finish_row(out, z, has_z, b, ch, yo, code, alpha, beta):
    """Add the residual row (if any) and apply the activation to one finished output row."""
    if has_z:
        zr = z[b, ch, yo]
        for xo in range(out.size):
            out[xo] += zr[xo]
    activate_row(out, code, alpha, beta)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _sum9(out, a0, a1, a2, b0, b1, b2, c0, c1, c2, w, bv):
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    for xo in range(out.size):
        out[xo] = (bv + w00 * a0[xo] + w01 * a1[xo] + w02 * a2[xo]
                   + w10 * b0[xo] + w11 * b1[xo] + w12 * b2[xo]
                   + w20 * c0[xo] + w21 * c1[xo] + w22 * c2[xo])


@numba.njit(cache=True, error_model="numpy", inline="always")
def phase_planes(x, b, ch, ph, pw, hp, wp, sw, fill=0.0):
    """The zero-padded plane split by column phase: ``planes[q][i, k] = padded[i, k*sw + q]``.

    With stride ``sw`` a tap at column offset ``d`` reads phase ``d % sw`` from ``d // sw`` on,
    contiguously, so strided depthwise loops vectorise like stride 1 ones (a strided slice gathers
    and ran ~4x slower per output).
    """
    h, w = x.shape[2], x.shape[3]
    wq = (wp + sw - 1) // sw
    planes = np.full((sw, hp, wq), fill, dtype=np.float32)
    for q in range(sw):
        j0 = (q - pw) % sw  # first input column landing in phase q
        k0 = (pw + j0) // sw
        cnt = (w - j0 + sw - 1) // sw
        for i in range(h):
            src = x[b, ch, i, j0::sw]
            dst = planes[q, ph + i, k0:k0 + cnt]
            for k in range(cnt):
                dst[k] = src[k]
    return planes


@threaded_kernel(fastmath=True)
def depthwise3x3(x, wt, bias, z, has_z, sh, sw, dh, dw, ph, pw, y, code, alpha, beta):
    """Strided depthwise 3x3 on large maps (see :func:`depthwise_kernel`), fused epilogue: all
    nine taps summed in one loop over output columns.

    Each tap is read through a contiguous slice starting at its offset (in the plane of its column
    phase), so every index in the column loop is the loop counter itself: numba drops the
    negative-index fix-up and the loop vectorises (``row[xo + off]`` ran ~2x slower).
    """
    n, c, h, w = x.shape
    _, _, oh, ow = y.shape
    hp = max(h + ph, (oh - 1) * sh + 2 * dh + 1)
    wp = max(w + pw, (ow - 1) * sw + 2 * dw + 1) + sw
    q0, q1, q2 = 0, dw % sw, (2 * dw) % sw
    o0, o1, o2 = 0, dw // sw, (2 * dw) // sw
    for r in numba.prange(n * c):
        b, ch = r // c, r % c
        planes = phase_planes(x, b, ch, ph, pw, hp, wp, sw)
        p0, p1, p2 = planes[q0], planes[q1], planes[q2]
        wc = wt[ch]
        for yo in range(oh):
            y0, y1, y2 = yo * sh, yo * sh + dh, yo * sh + 2 * dh
            out = y[b, ch, yo]
            _sum9(out, p0[y0, o0:], p1[y0, o1:], p2[y0, o2:], p0[y1, o0:], p1[y1, o1:], p2[y1, o2:],
                  p0[y2, o0:], p1[y2, o1:], p2[y2, o2:], wc, bias[ch])
            _finish_row(out, z, has_z, b, ch, yo, code, alpha, beta)


@threaded_kernel(fastmath=True)
def depthwise_flat(xi, c, plane, toff, wt, bias, z, has_z, nflat, wrow, y, code, alpha, beta, nchunks):
    """Stride-1 depthwise conv over zero-padded flat planes ``xi`` (N*C planes of ``plane``, rows
    ``wrow`` apart; ``conv_f32.pad_phases``' layout): each output plane is computed as one run of
    ``nflat`` flat positions, tap ``t`` read at offset ``toff[t]``, then its real columns are
    copied out with residual and activation. No per-row views in the arithmetic: a per-row NCHW
    stencil spent more on them than on the math. ``nchunks`` parallel runs, each with one scratch
    run (one per channel cost ~0.1 ms on 960 channels of 7x7)."""
    n, _, oh, ow = y.shape
    taps = toff.size
    per_image = xi.size // n
    for chunk in numba.prange(nchunks):
        acc = np.empty(nflat, np.float32)
        for r in range(chunk * n * c // nchunks, (chunk + 1) * n * c // nchunks):
            img, ch = r // c, r % c
            bv, base = bias[ch], img * per_image + ch * plane
            if taps == 9:  # 3x3: all taps in one pass
                w = wt[ch]
                s0, s1, s2 = xi[base + toff[0]:], xi[base + toff[1]:], xi[base + toff[2]:]
                s3, s4, s5 = xi[base + toff[3]:], xi[base + toff[4]:], xi[base + toff[5]:]
                s6, s7, s8 = xi[base + toff[6]:], xi[base + toff[7]:], xi[base + toff[8]:]
                w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
                for f in range(nflat):
                    acc[f] = (bv + w0 * s0[f] + w1 * s1[f] + w2 * s2[f] + w3 * s3[f] + w4 * s4[f] + w5 * s5[f]
                              + w6 * s6[f] + w7 * s7[f] + w8 * s8[f])
            else:
                for f in range(nflat):
                    acc[f] = bv
                for t in range(taps):
                    wv, src = wt[ch, t], xi[base + toff[t]:base + toff[t] + nflat]
                    for f in range(nflat):
                        acc[f] += wv * src[f]
            yc = y[img, ch]
            for oy in range(oh):
                row, dst = acc[oy * wrow:oy * wrow + ow], yc[oy]
                if has_z:
                    zr = z[img, ch, oy]
                    for ox in range(ow):
                        dst[ox] = row[ox] + zr[ox]
                else:
                    for ox in range(ow):
                        dst[ox] = row[ox]
            activate_row(yc.reshape(-1), code, alpha, beta)


#: output pixels up to which a stride-1 depthwise conv runs channels-last: per layer against the
#: flat NCHW kernel, 0.40-0.49x the time at 7x7 (544-960 channels), 0.73-0.86x at 14x14,
#: 1.3-2.2x at 28x28 and 56x56 (the transposes cost more than the lanes gain)
CHANNELS_LAST_MAX_PIXELS = 16 * 16
#: input pixels up to which a strided 3x3 depthwise conv runs channels-last rather than
#: :func:`depthwise3x3`: 0.2-0.8x its time at 14x14 to 56x56, 1.3-2x at 64x64 to 112x112
STRIDED_CHANNELS_LAST_MAX_PIXELS = 56 * 56


def depthwise_kernel(hw: tuple, win: Window) -> str:
    """Which depthwise kernel runs a window over an ``hw`` input: ``"flat"``
    (:func:`depthwise_flat`, stride 1 on larger maps), ``"rows"`` (:func:`depthwise3x3`, strided
    3x3 on large maps) or ``"channels_last"`` (transposed around
    ``inference.kernels.channels_last``: small maps and the other strided layers)."""
    oh, ow = win.out_shape
    if win.strides == (1, 1):
        return "flat" if oh * ow > CHANNELS_LAST_MAX_PIXELS else "channels_last"
    if win.kernel == (3, 3) and hw[0] * hw[1] > STRIDED_CHANNELS_LAST_MAX_PIXELS:
        return "rows"
    return "channels_last"


def _depthwise_flat_planes(x: np.ndarray, w: np.ndarray, bias: np.ndarray, z: np.ndarray | None, win: Window,
                           code: int, alpha: float, beta: float) -> np.ndarray:
    """:func:`depthwise_flat` on the tile plan's padded layout (one channel per plane)."""
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    plan = conv_f32.plan_for((n, 1, h, wd), (1, 1, kh, kw), 1, win)
    xi = new_scratch((n, c, plan.plane))
    conv_f32.pad_phases(x, 0, c, 1, plan.ph, plan.pw, plan.wrow, xi)
    y = new_output((n, c, plan.oh, plan.ow))
    zz = as_f32(z, y.shape) if z is not None else NO_RESIDUAL_4D
    depthwise_flat(xi.reshape(-1), c, plan.plane, plan.koff, as_f32(w, (c, kh * kw)), bias, zz, z is not None,
                   plan.nflat, plan.wrow, y, code, alpha, beta, parallel_chunks(n * c))
    return y


def _depthwise_channels_last(x: np.ndarray, w: np.ndarray, bias: np.ndarray, z: np.ndarray | None, win: Window,
                             code: int, alpha: float, beta: float, keep: bool = False) -> np.ndarray:
    """The channels-last depthwise kernels on NCHW tensors: transposed in, run, transposed back
    (``keep``: ``w`` is constant, its (kh, kw, C) form is kept from call to call). The transposes
    are numba's, into the step's workspace: numpy's had kept every model with such a layer from
    being replayed (a TCN's depthwise Conv1d layers)."""
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    (oh, ow), (sh, sw), (dh, dw), (ph, pw) = win.out_shape, win.strides, win.dilations, win.pads_begin
    xt = _channels_last(x, new_scratch((n, h, wd, c)))
    hwc = lambda v: np.ascontiguousarray(as_f32(v, (c, kh, kw)).transpose(1, 2, 0))  # noqa: E731
    wt = prepacked(w, "hwc", hwc) if keep else hwc(w)
    zt = _channels_last(as_f32(z, (n, c, oh, ow)), new_scratch((n, oh, ow, c))) if z is not None else NO_RESIDUAL_4D
    y = new_scratch((n, oh, ow, c))
    kernel = depthwise_nhwc_kernel(kh, kw)
    kernel(xt, wt, bias, zt, z is not None, sh, sw, dh, dw, ph, pw, y, code, alpha, beta)
    out = new_output((n, c, oh, ow))
    swap_last_two(y.reshape(n, oh * ow, c), out.reshape(n, c, oh * ow))
    return out


def _channels_last(x: np.ndarray, into: np.ndarray) -> np.ndarray:
    """NCHW ``x`` written channels-last ``into`` (N, H, W, C)."""
    n, c, h, w = x.shape
    swap_last_two(np.ascontiguousarray(x, dtype=np.float32).reshape(n, c, h * w), into.reshape(n, h * w, c))
    return into


def _geometry(x: np.ndarray, w: np.ndarray, auto_pad, dilations, kernel_shape, pads, strides) -> Window:
    return _window(x.shape[2:], tuple(kernel_shape or w.shape[2:]), _tuple(strides), _tuple(dilations),
                   _tuple(pads), auto_pad)


def _tuple(v):
    return None if v is None else tuple(v)


@functools.lru_cache(maxsize=256)
def _window(spatial: tuple, kernel: tuple, strides, dilations, pads, auto_pad: str) -> Window:
    """Memoised: resolving pads and output size cost more than a batch-1 conv's GEMM on small layers."""
    return window_geometry(spatial, kernel, strides, dilations, pads, auto_pad, 0, "Conv")


_NO_RESIDUAL_3D = NO_RESIDUAL_4D.reshape(1, 1, 1)


def tile_plan(x_shape: tuple, w_shape: tuple, win: Window, group: int) -> ConvPlan | None:
    """The implicit-GEMM plan of a convolution when our float32 tile runs it, else None (depthwise
    convolutions keep their stencil kernel, dilated strided ones im2col + BLAS)."""
    c, (m, cg) = x_shape[1], w_shape[:2]
    if group == c and m == c and cg == 1:
        return None
    plan = conv_f32.plan_for(x_shape, w_shape, group, win)
    return plan if conv_f32.supports(plan) else None


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, z: np.ndarray | None, win: Window, group: int,
           code: int = NONE, alpha: float = 0.0, beta: float = 0.0, allow_direct: bool = True,
           tiles: ConvPlan | None | bool = True, keep_packing: bool = False) -> np.ndarray:
    """``act(conv(x, w) + b + z)`` for float32 NCHW ``x``; ``z`` (optional) has the output's shape.

    ``allow_direct=False`` keeps small 3x3 problems off the direct kernel and ``tiles=False`` off
    the implicit-GEMM tile (to compare kernels, or when the caller's plan has already chosen:
    ``tiles`` may be that plan, or None for "not the tile"). ``keep_packing``: ``w`` is a constant
    array, so the tile's packing of it is kept for later calls with the same array; without it
    the tile runs only when ``tiles`` is a plan (repacking ResNet-18's weights on every run made
    it 2x slower than im2col + BLAS)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh, ow = win.out_shape
    (sh, sw), (dh, dw), (ph, pw) = win.strides, win.dilations, win.pads_begin
    if allow_direct and prefer_direct(c, m, kh, kw, sh, sw, oh, ow, group, packed=keep_packing):
        return conv2d_direct(x, w, b, z, win, code, alpha, beta)
    if tiles is True:  # only a constant weight's packing pays: packed per call it cost more than im2col
        tiles = tile_plan(x.shape, w.shape, win, group) if keep_packing else None
    if tiles:
        return conv_f32.conv2d_tiles(x, np.ascontiguousarray(w, dtype=np.float32), as_f32(b, (m,)), z, tiles, group,
                                     code, alpha, beta, keep_packing)
    bias = as_f32(b, (m,))
    zz = as_f32(z, (n, m, oh, ow)) if z is not None else NO_RESIDUAL_4D
    if group == c and m == c and cg == 1:
        kind = depthwise_kernel((h, wd), win)
        if kind == "flat":
            return _depthwise_flat_planes(x, w, bias, z, win, code, alpha, beta)
        if kind == "channels_last":
            return _depthwise_channels_last(x, w, bias, z, win, code, alpha, beta, keep_packing)
        y = new_output((n, m, oh, ow))
        depthwise3x3(x, as_f32(w, (m, kh, kw)), bias, zz, z is not None, sh, sw, dh, dw, ph, pw, y, code, alpha, beta)
        return y
    y = new_output((n, m, oh * ow))
    mg, kk = m // group, cg * kh * kw
    wm = as_f32(w, (group, mg, kk))
    pointwise = kh == kw == 1 and sh == sw == 1 and ph == pw == 0 and (oh, ow) == (h, wd)
    cols = None if pointwise else new_scratch((c * kh * kw, oh * ow))
    for i in range(n):
        if pointwise:
            src = x[i].reshape(c, h * wd)
        else:
            im2col(x[i], kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, cols)
            src = cols
        if group == 1:  # no per-group slicing: on batch-1 small layers each view costs like the math
            np.matmul(wm[0], src, out=y[i])
            continue
        for g in range(group):
            np.matmul(wm[g], src[g * kk:(g + 1) * kk], out=y[i, g * mg:(g + 1) * mg])
    z3 = zz.reshape(n, m, oh * ow) if z is not None else _NO_RESIDUAL_3D
    epilogue_rows(y, bias, z3, z is not None, code, alpha, beta)
    return y.reshape(n, m, oh, ow)


def conv2d_direct(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, z: np.ndarray | None, win: Window,
                  code: int = NONE, alpha: float = 0.0, beta: float = 0.0) -> np.ndarray:
    """:func:`conv2d` on the :mod:`~inference.kernels.direct_conv` kernel (3x3, stride 1, one group)."""
    n, m = x.shape[0], w.shape[0]
    oh, ow = win.out_shape
    (dh, dw), (ph, pw) = win.dilations, win.pads_begin
    y = new_output((n, m, oh, ow))
    zz = as_f32(z, y.shape) if z is not None else NO_RESIDUAL_4D
    clamps, amin, amax = clamp_epilogue(code, alpha, beta)
    direct_conv3x3(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(w, dtype=np.float32),
                   as_f32(b, (m,)), zz, z is not None, dh, dw, ph, pw, y, direct_parts(n, m, oh, ow, kernel_threads()),
                   clamps, amin, amax, code, alpha, beta)
    return y


def _plan(x: np.ndarray, w: np.ndarray, group: int, kernel_shape, dims: tuple, packed: bool
          ) -> tuple[Window, bool, ConvPlan | None]:
    """The window of a (shapes, attributes) case, whether it runs the direct kernel (``packed``: a
    constant weight, whose alternative is the tile), and the tile's plan if the tile runs it."""
    win = _window(x.shape[2:], tuple(kernel_shape or w.shape[2:]), *dims)
    (kh, kw), (sh, sw), (oh, ow) = win.kernel, win.strides, win.out_shape
    direct = prefer_direct(x.shape[1], w.shape[0], kh, kw, sh, sw, oh, ow, group, packed)
    return win, direct, None if direct else tile_plan(x.shape, w.shape, win, group)


def handles(node: Node, graph: Graph) -> bool:
    """2-D float32 convolutions (or ones whose type is not known until run time: checked again there)."""
    t = graph.type_of(node.inputs[0])
    return not isinstance(t, TensorType) or (t.elem_type == 1 and t.rank in (4, None))


def fast_path(x: np.ndarray, w: np.ndarray) -> bool:
    return x.ndim == 4 and w.ndim == 4 and x.dtype == np.float32 and w.dtype == np.float32


def conv_binder(fn, constant_weights: bool = False):
    """The plan-time ``bind`` of a fast conv kernel ``fn`` (Conv, or FusedConv with its epilogue).

    Attributes and the activation code are resolved once per node and the window once per input
    shape, so a run only checks the fast path applies and calls :func:`conv2d` (the unbound
    kernel's attribute handling cost ~3 us per call, a fifth of a batch-1 MNIST conv), and with it
    the choice of the direct 3x3 kernel. Inputs off the fast path go to ``fn`` itself.
    ``constant_weights``: the weight is an initializer that never changes (kind :data:`PACKED`), so
    the implicit-GEMM tile runs the conv and keeps its packing from run to run; otherwise (kind
    "fast": training rewrites weights in place) convolutions keep im2col + BLAS.
    """

    def bind(*, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
             activation="", alpha=0.0, beta=0.0, **extra):
        attrs = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
                     strides=strides, **extra)
        if activation or alpha or beta:
            attrs.update(activation=activation, alpha=alpha, beta=beta)
        code, alpha, beta = activation_code(activation), float(alpha), float(beta)
        dims = (_tuple(strides), _tuple(dilations), _tuple(pads), auto_pad)
        plans: dict[tuple, tuple[Window, bool, ConvPlan | None, conv_f32.TileConv | None]] = {}

        def run(x, w, b=None, z=None):
            if not fast_path(x, w) or x.shape[1] != w.shape[1] * group:
                return fn(x, w, b, z, **attrs) if z is not None else fn(x, w, b, **attrs)
            plan = plans.get((x.shape, w.shape))
            if plan is None:
                win, direct, tiles = _plan(x, w, group, kernel_shape, dims, constant_weights)
                prepared = None
                if constant_weights and is_patchify(win.kernel, win.strides, win.dilations,
                                                    tuple(win.pads_begin) + tuple(win.pads_end), group):
                    direct, prepared = False, PatchifyConv(x.shape, w.shape, win.out_shape, code, alpha, beta)
                elif tiles is not None and constant_weights:  # the tile with the weight's packing kept
                    prepared = conv_f32.prepare_tiles(x.shape, w.shape, tiles, group, code, alpha, beta, True)
                plan = remember(plans, (x.shape, w.shape), (win, direct, tiles, prepared))
            if plan[1]:  # the direct kernel: skips conv2d's dispatch, ~1 us of a 10 us batch-1 conv
                return conv2d_direct(x, w, b, z, plan[0], code, alpha, beta)
            if plan[3] is not None and (z is None or not isinstance(plan[3], PatchifyConv)):
                return plan[3](x, w, as_f32(b, (w.shape[0],)), z)
            # the plan already ruled the direct kernel out and chose for the tile: conv2d need not ask again
            return conv2d(x, w, b, z, plan[0], group, code, alpha, beta, allow_direct=False,
                          tiles=plan[2] if constant_weights else None, keep_packing=constant_weights)

        return run

    return bind


def handles_constant(node: Node, graph: Graph) -> bool:
    """:func:`handles`, and the weight is a float32 initializer no feed overrides: a Predictor's
    graph, whose packed weights may be kept (training rewrites its parameters in place between
    runs: its sessions never plan this kind)."""
    return handles(node, graph) and constant_float32_weight(node, graph, 4) is not None


PACKED = "packed"  # the kind of kernels that pack a constant weight once (``session.CONSTANT_WEIGHT_KINDS``)
packed_conv_binder = functools.partial(conv_binder, constant_weights=True)


@register("Conv", since=1, kind=PACKED, applies=handles_constant, bind=packed_conv_binder)
@register("Conv", since=1, kind="fast", applies=handles, bind=conv_binder)
def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    if not fast_path(x, w) or x.shape[1] != w.shape[1] * group:
        return reference_conv(x, w, b, auto_pad=auto_pad, dilations=dilations, group=group,
                              kernel_shape=kernel_shape, pads=pads, strides=strides)
    win = _geometry(x, w, auto_pad, dilations, kernel_shape, pads, strides)
    return conv2d(x, w, b, None, win, group)


def fused_conv(x, w, b=None, z=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
               pads=None, strides=None, activation="", alpha=0.0, beta=0.0) -> np.ndarray:
    """Fast ``edgelearn::FusedConv`` (registered in ``inference.kernels.fused``)."""
    win = _geometry(x, w, auto_pad, dilations, kernel_shape, pads, strides)
    return conv2d(x, w, b, z, win, group, activation_code(activation), float(alpha), float(beta))
