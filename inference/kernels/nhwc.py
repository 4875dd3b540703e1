"""``edgelearn::FusedConvNHWC``: FusedConv on channels-last tensors, which the layout pass creates.

``FusedConvNHWC(X, W, B?, Z?)`` = act(Conv(X, W) + B + Z) with ``X`` (N, H, W, C), ``Z`` and ``Y``
(N, OH, OW, M), and ``W`` pre-arranged by the pass as HWIO (kh, kw, C/group, M); attributes are
FusedConv's. Why channels-last: a depthwise stencil's inner loop then runs over contiguous channels
(in NCHW it runs over a short output row, little to vectorise at 7x7 or 14x14), and a 1x1
convolution is one GEMM ``(N*H*W, C) @ (C, M)`` over the whole batch, on our tile with output
channels along its lanes and the epilogue in registers (:mod:`inference.kernels.rows_gemm`). kxk
and strided layers gather their patches from the zero-padded input in place (an implicit GEMM,
:func:`patch_rows`): no im2col copy, whose buffer was 9x a 3x3 layer's input. Per ResNet-18 layer
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

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.kernels._jit import threaded_kernel
from inference.kernels.activations import NO_RESIDUAL_4D, activate_row, activation_code, as_f32
from inference.kernels.channels_last import depthwise3x3_nhwc, depthwise_nhwc
from inference.kernels.conv import PACKED, handles, handles_constant
from inference.kernels.fused import DOMAIN, EPILOGUE_ATTRS, fused_conv_reference
from inference.kernels.rows_gemm import Rows, gemm_gathered, gemm_rows
from inference.kernels.tile_lanes import clamp_epilogue
from inference.ops._window import Window, window_geometry
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema

OP = "FusedConvNHWC"
TO_NHWC, TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)
HWIO = (2, 3, 1, 0)  # OIHW -> HWIO: the weight layout of FusedConvNHWC
OIHW = (3, 2, 0, 1)  # and back


def _geometry(spatial, w_shape, attrs: dict, where: str) -> Window:
    return window_geometry(spatial, attrs.get("kernel_shape") or w_shape[:2], attrs.get("strides"),
                           attrs.get("dilations"), attrs.get("pads"), attrs.get("auto_pad", "NOTSET"), 0, where)


def _shape(node: Node, types: list) -> list:
    x, w = types[0], types[1] if len(types) > 1 else None
    if not isinstance(x, TensorType) or not isinstance(w, TensorType) or x.rank != 4 or w.rank != 4:
        return [None]
    spatial = x.shape[1:3]
    if all(isinstance(d, int) for d in spatial) and all(isinstance(d, int) for d in w.shape):
        out = _geometry(spatial, w.shape, node.attrs, f"{OP} {node.label()}").out_shape
    else:
        out = (None, None)
    return [TensorType(x.elem_type, (x.shape[0],) + tuple(out) + (w.shape[3],))]


register_schema(OpSchema(OP, DOMAIN, 1, (FormalParam("X"), FormalParam("W"), FormalParam("B", optional=True),
                                         FormalParam("Z", optional=True)), (FormalParam("Y"),),
                         {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
                          "pads": None, "strides": None, **EPILOGUE_ATTRS}, shape_rule=_shape))


def _check(x: np.ndarray, w: np.ndarray, z: np.ndarray | None, group: int) -> None:
    """Rank and channel agreement, so a wrong feed is named instead of indexing out of bounds."""
    if x.ndim != 4 or w.ndim != 4:
        raise KernelError(f"{OP}: X must be (N, H, W, C) and W (kh, kw, C/group, M), got X {x.shape}, W {w.shape}")
    if group < 1 or x.shape[3] != w.shape[2] * group or w.shape[3] % group:
        raise KernelError(f"{OP}: X {x.shape} has {x.shape[3]} channels, W {w.shape} with group={group} "
                          f"expects {w.shape[2] * group} and M divisible by the group")
    if z is not None and z.ndim != 4:
        raise KernelError(f"{OP}: residual Z must be (N, OH, OW, M), got shape {z.shape}")


@register(OP, since=1, domain=DOMAIN)
def fused_conv_nhwc_reference(x, w, b=None, z=None, *, activation="", alpha=0.0, beta=0.0, **conv_attrs):
    _check(x, w, z, conv_attrs.get("group", 1))
    zz = None if z is None else z.transpose(TO_NCHW)
    y = fused_conv_reference(x.transpose(TO_NCHW), w.transpose(OIHW), b, zz, activation=activation,
                             alpha=alpha, beta=beta, **conv_attrs)
    return np.ascontiguousarray(y.transpose(TO_NHWC))


@numba.njit(cache=True, error_model="numpy")
def _pad_row(x, i, yo, pt, pl, out):
    _, h, w, c = x.shape
    wp = out.shape[2]
    dst = out[i, yo].reshape(wp * c)
    if pt <= yo < pt + h:
        src = x[i, yo - pt].reshape(w * c)
        dst[:pl * c] = 0
        dst[pl * c:(pl + w) * c] = src
        dst[(pl + w) * c:] = 0
    else:
        dst[:] = 0


@threaded_kernel()
def pad_nhwc(x, pt, pl, out):
    """Copy ``x`` (N, H, W, C) into ``out`` (N, Hp, Wp, C) at row ``pt``, column ``pl``; zero the rest."""
    hp = out.shape[1]
    for r in numba.prange(out.shape[0] * hp):
        _pad_row(x, r // hp, r % hp, pt, pl, out)


def patch_rows(x: np.ndarray, win: Window) -> tuple[np.ndarray, Rows, np.ndarray]:
    """The implicit-GEMM view of a channels-last convolution's input: ``x`` zero-padded (or ``x``
    itself when unpadded), flat; where each output pixel's patch starts in it; and each patch
    element's offset from that start, in HWIO order (the weight's rows)."""
    n, h, wd, c = x.shape
    (pt, pl), (pb, pr) = win.pads_begin, win.padded_end((h, wd))  # end pads are >= 0
    if pt or pl or pb or pr:
        xp = np.empty((n, pt + h + pb, pl + wd + pr, c), np.float32)
        pad_nhwc(x, pt, pl, xp)
    else:
        xp = x
    hp, wp = xp.shape[1:3]
    (oh, ow), (sh, sw), (dh, dw) = win.out_shape, win.strides, win.dilations
    taps = (np.arange(win.kernel[0])[:, None] * (dh * wp) + np.arange(win.kernel[1])[None, :] * dw) * c
    koff = (taps.reshape(-1, 1) + np.arange(c)).reshape(-1).astype(np.int64)
    return xp.reshape(-1), Rows(n * oh * ow, oh * ow, ow, sw * c, sh * wp * c, hp * wp * c), koff


# -- dispatch -------------------------------------------------------------------------------------
def is_depthwise(c: int, w_shape: tuple, group: int) -> bool:
    """A depthwise conv in HWIO terms: one input channel per group, one output per input channel."""
    return group == c and w_shape[2] == 1 and w_shape[3] == c


def conv2d_nhwc(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, z: np.ndarray | None, win: Window,
                group: int, code: int, alpha: float, beta: float, constant_weight: bool = False) -> np.ndarray:
    """``act(conv(x, w) + b + z)`` for float32 NHWC ``x`` and HWIO ``w``; depthwise or group 1.
    ``constant_weight``: ``w`` never changes (a Predictor's initializer), so the GEMM keeps its
    weight panels (:func:`~inference.kernels.rows_gemm.padded_weight`)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, h, wd, c = x.shape
    kh, kw, cg, m = w.shape
    oh, ow = win.out_shape
    (sh, sw), (dh, dw), (ph, pw) = win.strides, win.dilations, win.pads_begin
    bias = as_f32(b, (m,))
    zz = as_f32(z, (n, oh, ow, m)) if z is not None else NO_RESIDUAL_4D
    if is_depthwise(c, w.shape, group):
        y = np.empty((n, oh, ow, m), np.float32)
        kernel = depthwise3x3_nhwc if kh == kw == 3 else depthwise_nhwc
        kernel(x, as_f32(w, (kh, kw, m)), bias, zz, z is not None, sh, sw, dh, dw, ph, pw, y, code, alpha, beta)
        return y
    wm = as_f32(w, (kh * kw * c, m))
    keep_for = w if constant_weight else None
    clamps, amin, amax = clamp_epilogue(code, alpha, beta)
    npix = oh * ow
    z2 = zz.reshape(n * npix, m) if z is not None else None
    if kh == kw == 1 and ph == pw == 0 and sh == sw == 1 and (oh, ow) == (h, wd):  # pointwise: one GEMM
        y = gemm_rows(x.reshape(n * npix, c), wm, bias, z2, amin, amax, keep_for)
    else:  # the patches gathered in place from the padded input
        xp, rows, koff = patch_rows(x, win)
        y = gemm_gathered(xp, rows, koff, wm, bias, z2, amin, amax, keep_for)
    if not clamps:
        activate_row(y.reshape(-1), code, alpha, beta)
    return y.reshape(n, oh, ow, m)


def supports(c: int, w_shape: tuple, group: int) -> bool:
    """Whether the fast kernel runs this conv (the pass converts only these): depthwise or group 1."""
    return group == 1 or is_depthwise(c, w_shape, group)


def _fast(x, w, b, z, constant_weight: bool, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
          strides=None, activation="", alpha=0.0, beta=0.0):
    _check(x, w, z, group)
    attrs = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
                 strides=strides)
    if x.dtype != np.float32 or w.dtype != np.float32 or not supports(x.shape[3], w.shape, group):
        return fused_conv_nhwc_reference(x, w, b, z, activation=activation, alpha=alpha, beta=beta, **attrs)
    win = _geometry(x.shape[1:3], w.shape, attrs, OP)
    if z is not None and z.shape != (x.shape[0],) + win.out_shape + (w.shape[3],):
        raise KernelError(f"{OP}: residual Z has shape {z.shape}, the output "
                          f"{(x.shape[0],) + win.out_shape + (w.shape[3],)}")
    return conv2d_nhwc(x, w, b, z, win, group, activation_code(activation), float(alpha), float(beta),
                       constant_weight)


@register(OP, since=1, domain=DOMAIN, kind="fast", applies=handles)
def fused_conv_nhwc(x, w, b=None, z=None, **attrs):
    return _fast(x, w, b, z, False, **attrs)


@register(OP, since=1, domain=DOMAIN, kind=PACKED, applies=handles_constant)
def fused_conv_nhwc_packed(x, w, b=None, z=None, **attrs):
    """The weight is a constant initializer: its padded GEMM form is kept from run to run."""
    return _fast(x, w, b, z, True, **attrs)
