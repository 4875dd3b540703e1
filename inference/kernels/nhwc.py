"""``edgelearn::FusedConvNHWC``: FusedConv on channels-last tensors, which the layout pass creates.

``FusedConvNHWC(X, W, B?, Z?)`` = act(Conv(X, W) + B + Z) with ``X`` (N, H, W, C), ``Z`` and ``Y``
(N, OH, OW, M), and ``W`` pre-arranged by the pass as HWIO (kh, kw, C/group, M); attributes are
FusedConv's. Why channels-last: a depthwise stencil's inner loop then runs over contiguous channels
(in NCHW it runs over a short output row, little to vectorise at 7x7 or 14x14), and a 1x1
convolution is one GEMM ``(N*H*W, C) @ (C, M)`` over the whole batch, on our tile with output
channels along its lanes and the epilogue in registers (:mod:`inference.kernels.rows_gemm`). kxk
and strided layers gather their patches from the zero-padded input in place (an implicit GEMM,
:func:`patch_geometry`): no im2col copy, whose buffer was 9x a 3x3 layer's input. Per ResNet-18 layer
(batch 1, one thread, layers in model order so weights arrive cold, min CPU time of 12 rounds,
``benchmarks/conv_layouts.py``), against onnxruntime: 3x3 on 64-256 channels 1.01-1.07x (the
NCHW tile 1.04-1.33x), strided 3x3 1.03-1.16x (1.23-1.33x), the 7x7/2 stem 0.98x (1.06x), 3x3
on 512x7x7 1.14-1.21x (1.15-1.16x), all 1.07x (1.16x).
Pointwise layers, measured against numpy's OpenBLAS GEMM plus the epilogue pass
on MobileNetV2's pointwise shapes, run in model order so each layer's weights arrive cold, one
thread: 0.79-1.11x per layer, 0.87-0.94x in all (``benchmarks/rows_gemm.py``). The depthwise
stencils are :mod:`inference.kernels.channels_last`'s. The reference kernel transposes to NCHW and
calls FusedConv's reference: it is the oracle.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.kernels import winograd
from inference.kernels._jit import threaded_kernel
from inference.kernels._prepack import source
from inference.kernels.activations import NO_RESIDUAL_4D, NONE, activate_row, activation_code, as_f32
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.channels_last import depthwise_nhwc_kernel
from inference.kernels.conv import PACKED, handles, handles_constant
from inference.kernels.fused import DOMAIN, EPILOGUE_ATTRS, fused_conv_reference
from inference.kernels.memcpy_ir import copy_run
from inference.kernels.rows_gemm import PreparedGemm, Rows
from inference.kernels.tile_lanes import tile_epilogue
from inference.ops._memo import remember
from inference.ops._window import Window, window_geometry
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema

OP = "FusedConvNHWC"
TO_NHWC, TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)
#: FusedConvNHWC's ``algorithm``: the implicit GEMM, or Winograd's F(2x2, 3x3) where it applies
#: (:mod:`inference.kernels.winograd`; :mod:`inference.passes.winograd` picks it)
DIRECT, WINOGRAD = "direct", "winograd"
HWIO = (2, 3, 1, 0)  # OIHW -> HWIO: the weight layout of FusedConvNHWC
OIHW = (3, 2, 0, 1)  # and back


def conv_window(spatial, w_shape, attrs: dict, where: str) -> Window:
    """The window of a FusedConvNHWC on a map of ``spatial`` (H, W) with an HWIO weight of ``w_shape``."""
    return window_geometry(spatial, attrs.get("kernel_shape") or w_shape[:2], attrs.get("strides"),
                           attrs.get("dilations"), attrs.get("pads"), attrs.get("auto_pad", "NOTSET"), 0, where)


def _shape(node: Node, types: list) -> list:
    x, w = types[0], types[1] if len(types) > 1 else None
    if not isinstance(x, TensorType) or not isinstance(w, TensorType) or x.rank != 4 or w.rank != 4:
        return [None]
    spatial = x.shape[2:4] if node.attrs.get("input_layout", "NHWC") == "NCHW" else x.shape[1:3]
    if all(isinstance(d, int) for d in spatial) and all(isinstance(d, int) for d in w.shape):
        out = conv_window(spatial, w.shape, node.attrs, f"{OP} {node.label()}").out_shape
    else:
        out = (None, None)
    return [TensorType(x.elem_type, (x.shape[0],) + tuple(out) + (w.shape[3],))]


register_schema(OpSchema(OP, DOMAIN, 1, (FormalParam("X"), FormalParam("W"), FormalParam("B", optional=True),
                                         FormalParam("Z", optional=True)), (FormalParam("Y"),),
                         {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
                          "pads": None, "strides": None, "input_order": None, "input_layout": "NHWC",
                          "algorithm": DIRECT,
                          **EPILOGUE_ATTRS}, shape_rule=_shape))


def _check(x: tuple, w: tuple, z: tuple | None, group: int) -> None:
    """Rank and channel agreement of the shapes ``x``, ``w``, ``z``, so a wrong feed is named
    instead of indexing out of bounds."""
    if len(x) != 4 or len(w) != 4:
        raise KernelError(f"{OP}: X must be (N, H, W, C) and W (kh, kw, C/group, M), got X {x}, W {w}")
    if group < 1 or x[3] != w[2] * group or w[3] % group:
        raise KernelError(f"{OP}: X {x} has {x[3]} channels, W {w} with group={group} "
                          f"expects {w[2] * group} and M divisible by the group")
    if z is not None and len(z) != 4:
        raise KernelError(f"{OP}: residual Z must be (N, OH, OW, M), got shape {z}")


@register(OP, since=1, domain=DOMAIN)
def fused_conv_nhwc_reference(x, w, b=None, z=None, *, activation="", alpha=0.0, beta=0.0, input_order=None,
                              input_layout="NHWC", algorithm=DIRECT, **conv_attrs):
    _check_algorithm(algorithm)
    x = _as_nhwc(x, input_layout)
    _check(x.shape, w.shape, None if z is None else z.shape, conv_attrs.get("group", 1))
    if input_order is not None:
        x = x[..., _order(input_order, x.shape[3])]
    zz = None if z is None else z.transpose(TO_NCHW)
    y = fused_conv_reference(x.transpose(TO_NCHW), w.transpose(OIHW), b, zz, activation=activation,
                             alpha=alpha, beta=beta, **conv_attrs)
    return np.ascontiguousarray(y.transpose(TO_NHWC))


def _check_layout(input_layout: str) -> None:
    if input_layout not in ("NHWC", "NCHW"):
        raise KernelError(f"{OP}: input_layout must be 'NHWC' or 'NCHW', got {input_layout!r}")


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in (DIRECT, WINOGRAD):
        raise KernelError(f"{OP}: algorithm must be {DIRECT!r} or {WINOGRAD!r}, got {algorithm!r}")


def _as_nhwc(x: np.ndarray, input_layout: str) -> np.ndarray:
    """X as (N, H, W, C): ``input_layout`` "NCHW" is an input read in place (the reference transposes)."""
    _check_layout(input_layout)
    if input_layout == "NCHW":
        if x.ndim != 4:
            raise KernelError(f"{OP}: X must be (N, C, H, W) with input_layout 'NCHW', got shape {x.shape}")
        return x.transpose(TO_NHWC)
    return x


def _order(input_order, c: int) -> np.ndarray:
    """``input_order`` checked: a permutation of the ``c`` channels of X."""
    order = np.asarray(input_order, np.int64)
    if order.shape != (c,) or not np.array_equal(np.sort(order), np.arange(c)):
        raise KernelError(f"{OP}: input_order must be a permutation of X's {c} channels, got {order.tolist()}")
    return order


@numba.njit(cache=True, error_model="numpy")
def _pad_row(x, i, yo, pt, pl, out):
    """Row ``yo`` of ``out``: row ``yo - pt`` of image ``i`` of ``x`` at column ``pl``, zeros around.
    Element loops over views: numba's slice assignments (``dst[a:b] = src``) ran this copy 2.2x
    slower than numpy's (a 160x160x16 map: 80 against 37 us)."""
    _, h, w, c = x.shape
    wp = out.shape[2]
    dst = out[i, yo].reshape(wp * c)
    if pt <= yo < pt + h:
        src = x[i, yo - pt].reshape(w * c)
        head, body, tail = dst[:pl * c], dst[pl * c:(pl + w) * c], dst[(pl + w) * c:]
        for k in range(head.size):
            head[k] = 0
        for k in range(body.size):
            body[k] = src[k]
        for k in range(tail.size):
            tail[k] = 0
    else:
        for k in range(dst.size):
            dst[k] = 0


@threaded_kernel()
def pad_nhwc(x, pt, pl, out):
    """Copy ``x`` (N, H, W, C) into ``out`` (N, Hp, Wp, C) at row ``pt``, column ``pl``; zero the rest."""
    hp = out.shape[1]
    for r in numba.prange(out.shape[0] * hp):
        _pad_row(x, r // hp, r % hp, pt, pl, out)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def pad_planes(x, pt, pl, out):
    """Copy each plane of ``x`` (P, H, W) into ``out`` (P, Hp, Wp) at row ``pt``, column ``pl``;
    zero the rest. Rows as ``memcpy`` runs (:mod:`~inference.kernels.memcpy_ir`): 3x224x224 padded
    by 1 in 14 us, numpy's slice assignments 16, 3x32x32 1.5 against 3.0. In numba, not numpy: a
    kernel replay (:mod:`inference.kernel_replay`) repeats only numba calls."""
    p, h, w = x.shape
    hp, wp = out.shape[1], out.shape[2]
    xf, of = x.reshape(-1), out.reshape(-1)
    for i in range(p):
        for r in range(hp):
            o = (i * hp + r) * wp
            if pt <= r < pt + h:
                for k in range(pl):
                    of[o + k] = 0
                copy_run(of, o + pl, xf, (i * h + r - pt) * w, w)
                for k in range(pl + w, wp):
                    of[o + k] = 0
            else:
                for k in range(wp):
                    of[o + k] = 0


class PatchGeometry(NamedTuple):
    """The implicit-GEMM view of a convolution's input, from its shapes alone: the zero-padded
    copy's shape and where the input lands in it (``padded`` None: unpadded, the input itself
    serves); where each output pixel's patch starts in it (``rows``); and each patch element's
    offset from that start, in HWIO order (the weight's rows). ``channels_first``: the input is
    NCHW (an RGB stem's, read in place: its output still comes out channels-last)."""

    padded: tuple[int, int, int, int] | None
    top: int
    left: int
    rows: Rows
    koff: np.ndarray
    channels_first: bool = False


def patch_geometry(x_shape: tuple[int, int, int, int], win: Window, group: int = 1,
                   order: np.ndarray | None = None, channels_first: bool = False) -> PatchGeometry:
    """``x_shape`` is (N, H, W, C) (also for ``channels_first``, whose buffer is (N, C, H, W));
    ``koff`` is (group, taps x C/group): group g's steps, its channels at each tap. ``order``: the
    conv's input channel c is channel ``order[c]`` of ``x`` (a channel shuffle folded in)."""
    n, h, wd, c = x_shape
    (pt, pl), (pb, pr) = win.pads_begin, win.padded_end((h, wd))  # end pads are >= 0
    hp, wp = pt + h + pb, pl + wd + pr
    (oh, ow), (sh, sw), (dh, dw) = win.out_shape, win.strides, win.dilations
    pixel, channel = (1, hp * wp) if channels_first else (c, 1)  # pitches of a column and a channel
    taps = (np.arange(win.kernel[0])[:, None] * (dh * wp) + np.arange(win.kernel[1])[None, :] * dw) * pixel
    channels = (np.arange(c) if order is None else np.asarray(order, np.int64)).reshape(group, 1, -1) * channel
    koff = (taps.reshape(1, -1, 1) + channels).reshape(group, -1).astype(np.int64)
    padded = None
    if pt or pl or pb or pr:
        padded = (n, c, hp, wp) if channels_first else (n, hp, wp, c)
    rows = Rows(n * oh * ow, oh * ow, ow, sw * pixel, sh * wp * pixel, hp * wp * c)
    return PatchGeometry(padded, pt, pl, rows, koff, channels_first)


def patch_source(x: np.ndarray, geo: PatchGeometry) -> np.ndarray:
    """The flat input a gathered GEMM reads: ``x`` zero-padded as ``geo`` says (or ``x`` itself)."""
    if geo.padded is None:
        return x.reshape(-1)
    if geo.channels_first:  # an RGB stem's few planes
        n, c, hp, wp = geo.padded
        xp = new_scratch(geo.padded)
        pad_planes(x.reshape(n * c, x.shape[2], x.shape[3]), geo.top, geo.left, xp.reshape(n * c, hp, wp))
        return xp.reshape(-1)
    xp = new_scratch(geo.padded)
    pad_nhwc(x, geo.top, geo.left, xp)
    return xp.reshape(-1)


# -- dispatch -------------------------------------------------------------------------------------
def is_depthwise(c: int, w_shape: tuple, group: int) -> bool:
    """A depthwise conv in HWIO terms: one input channel per group, one output per input channel."""
    return group == c and w_shape[2] == 1 and w_shape[3] == c


def supports(c: int, w_shape: tuple, group: int) -> bool:
    """Whether the fast kernel runs this conv (the pass converts only these): any whose groups
    divide its input and output channels (depthwise: the stencils; else the tile, groups in one
    gathered GEMM)."""
    return group >= 1 and c == w_shape[2] * group and w_shape[3] % group == 0


ConvCall = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"], np.ndarray]


def prepare_conv_nhwc(x_shape: tuple, w_shape: tuple, win: Window, group: int, code: int, alpha: float,
                      beta: float, constant_weight: bool = False, order: np.ndarray | None = None,
                      channels_first: bool = False, algorithm: str = DIRECT) -> ConvCall:
    """The call ``(x, w, b, z) -> act(conv(x, w) + b + z)`` for float32 NHWC ``x`` and HWIO ``w`` of these shapes
    (depthwise: the stencils; other groups: the tile), with everything that follows from the shapes settled
    here. Why: a run of MobileNetV2 makes 52 of these calls, and deriving the window, tile, patch offsets and
    argument shapes on each one cost ~30 us of Python per call (about a tenth of the model's time at batch 1);
    bound kernels prepare once per input shape. ``constant_weight``: ``w`` never changes (a Predictor's
    initializer), so the GEMM keeps its weight panels (:func:`~inference.kernels.rows_gemm.padded_weight`).
    ``order``: FusedConvNHWC's ``input_order`` (checked), read through the gathered GEMM's step table at no
    cost; a depthwise conv gathers a reordered copy first. ``channels_first``: ``x`` comes as (N, C, H, W)
    (``x_shape`` still (N, H, W, C)) and is read in place by the gathered GEMM (group 1 only: an RGB stem).
    ``algorithm`` :data:`WINOGRAD`: Winograd's F(2x2, 3x3) where :func:`~inference.kernels.winograd.applies`
    to these shapes (else, and for :data:`DIRECT`, the gathered GEMM)."""
    if channels_first and group != 1:
        raise KernelError(f"{OP}: input_layout 'NCHW' takes group 1 only, got group={group}")
    n, h, wd, c = x_shape
    kh, kw, _, m = w_shape
    oh, ow = win.out_shape
    out_shape = (n, oh, ow, m)
    p = n * oh * ow
    if is_depthwise(c, w_shape, group) and not channels_first:
        (sh, sw), (dh, dw), (ph, pw) = win.strides, win.dilations, win.pads_begin
        stencil = depthwise_nhwc_kernel(kh, kw)

        def depthwise(x, w, b, z):
            if order is not None:
                x = x[..., order]
            y = new_output(out_shape)
            zz = NO_RESIDUAL_4D if z is None else as_f32(z, out_shape)
            stencil(np.ascontiguousarray(x), as_f32(source(w), (kh, kw, m)), as_f32(b, (m,)), zz, z is not None,
                    sh, sw, dh, dw, ph, pw, y, code, alpha, beta)
            return y

        return depthwise
    whole, amin, amax, act = tile_epilogue(code, alpha, beta)
    k = kh * kw * (c // group)

    def finish(y: np.ndarray, tile_activated: bool = True) -> np.ndarray:
        """``y`` in the output's shape, activated (a pass over it unless the tile did all of it)."""
        if not (whole and (tile_activated or act == NONE)):
            activate_row(y.reshape(-1), code, alpha, beta)
        return y.reshape(out_shape)

    unstrided = win.pads_begin == (0, 0) and win.strides == (1, 1) and (oh, ow) == (h, wd)
    if order is None and not channels_first and group == 1 and kh == kw == 1 and unstrided:
        gemm = PreparedGemm(p, k, m)  # one GEMM over the batch's pixels

        def pointwise(x, w, b, z):
            y = gemm(x, as_f32(w, (k, m)), as_f32(b, (m,)), None if z is None else as_f32(z, out_shape), amin, amax,
                     w if constant_weight else None, act=act)
            return finish(y)

        return pointwise
    geo = patch_geometry(x_shape, win, group, order, channels_first)
    gemm = PreparedGemm(p, k, m, rows=geo.rows, koff=geo.koff, groups=group)

    def gathered(x, w, b, z):  # the patches gathered in place from the padded input
        y = gemm(patch_source(np.ascontiguousarray(x), geo), as_f32(w, (k, m)), as_f32(b, (m,)),
                 None if z is None else as_f32(z, out_shape), amin, amax, w if constant_weight else None, act=act)
        return finish(y)

    if not (algorithm == WINOGRAD and order is None and not channels_first and group == 1
            and winograd.applies(x_shape, w_shape, win)):
        return gathered
    wino = winograd.PreparedWinograd(x_shape, m, win.pads_begin, win.out_shape)

    def minimal(x, w, b, z):  # Winograd's F(2x2, 3x3) on the patches in place
        y = wino(x, as_f32(w, w_shape), as_f32(b, (m,)), None if z is None else as_f32(z, out_shape), amin, amax,
                 w if constant_weight else None)
        if y is None:  # an inf or NaN, which Winograd spreads
            return gathered(x, w, b, z)
        return finish(y, tile_activated=False)  # its output transform clamps, computes no Sigmoid or SiLU

    return minimal


def _prepare_checked(x_shape: tuple, w_shape: tuple, z_shape: tuple | None, attrs: dict, group: int, code: int,
                     alpha: float, beta: float, constant_weight: bool, input_order=None,
                     input_layout: str = "NHWC", algorithm: str = DIRECT) -> ConvCall:
    """:func:`prepare_conv_nhwc` after the shape checks (which name a wrong feed); ``x_shape`` as
    the input comes (NCHW for ``input_layout`` "NCHW")."""
    channels_first = input_layout == "NCHW"
    if channels_first and len(x_shape) == 4:
        x_shape = tuple(x_shape[i] for i in TO_NHWC)
    _check(x_shape, w_shape, z_shape, group)
    win = conv_window(x_shape[1:3], w_shape, attrs, OP)
    out = (x_shape[0],) + win.out_shape + (w_shape[3],)
    if z_shape is not None and z_shape != out:
        raise KernelError(f"{OP}: residual Z has shape {z_shape}, the output {out}")
    order = None if input_order is None else _order(input_order, x_shape[3])
    return prepare_conv_nhwc(x_shape, w_shape, win, group, code, alpha, beta, constant_weight, order, channels_first,
                             algorithm)


def nhwc_binder(fn, constant_weights: bool = False):
    """The plan-time ``bind`` of FusedConvNHWC's fast kernel ``fn``: attributes resolved once per
    node, the call prepared once per input shapes (:func:`prepare_conv_nhwc`); inputs off the fast
    path (not float32) go to the reference kernel. ``constant_weights``: the kind
    :data:`~inference.kernels.conv.PACKED` (weights never change, their panels are kept)."""

    def bind(*, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
             input_order=None, input_layout="NHWC", algorithm=DIRECT, activation="", alpha=0.0, beta=0.0):
        attrs = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
                     strides=strides)
        _check_layout(input_layout)
        _check_algorithm(algorithm)
        epilogue = dict(activation=activation, alpha=alpha, beta=beta)
        code, alpha, beta = activation_code(activation), float(alpha), float(beta)
        calls: dict[tuple, ConvCall] = {}

        def run(x, w, b=None, z=None):
            key = (x.shape, w.shape, None if z is None else z.shape)
            call = calls.get(key)
            if call is None:
                call = remember(calls, key, _prepare_checked(x.shape, w.shape, key[2], attrs, group, code, alpha,
                                                             beta, constant_weights, input_order, input_layout,
                                                             algorithm))
            if x.dtype != np.float32 or w.dtype != np.float32:
                return fused_conv_nhwc_reference(x, source(w), b, z, **epilogue, **attrs, input_order=input_order,
                                                 input_layout=input_layout, algorithm=algorithm)
            return call(x, w, b, z)

        return run

    return bind


@register(OP, since=1, domain=DOMAIN, kind="fast", applies=handles, bind=nhwc_binder)
def fused_conv_nhwc(x, w, b=None, z=None, **attrs):
    return nhwc_binder(fused_conv_nhwc)(**attrs)(x, w, b, z)


@register(OP, since=1, domain=DOMAIN, kind=PACKED, applies=handles_constant,
          bind=functools.partial(nhwc_binder, constant_weights=True))
def fused_conv_nhwc_packed(x, w, b=None, z=None, **attrs):
    """The weight is a constant initializer: its padded GEMM form is kept from run to run."""
    return nhwc_binder(fused_conv_nhwc_packed, constant_weights=True)(**attrs)(x, w, b, z)
