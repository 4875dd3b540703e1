"""Ops of our own domain that the fusion pass creates: ``edgelearn::FusedConv`` and ``FusedMatMul``.

``FusedConv(X, W, B?, Z?)`` = act(Conv(X, W) + B + Z) and ``FusedMatMul(X, W, B?, Z?)`` =
act(X @ W + B + Z), ``Z`` being a residual of the output's shape, ``activation`` one of
:data:`inference.kernels.activations.ACTIVATIONS` with its parameters in ``alpha``/``beta``
(Clip: min/max; LeakyRelu: alpha; HardSigmoid: alpha/beta). Each has a schema with a shape
rule (so a saved optimized model loads and plans without passes), a reference kernel composed of
the reference ops (the oracle) and a fast kernel.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.kernels import conv as fast_conv
from inference.kernels._applies import constant_float32_weight, float32_input
from inference.kernels._prepack import source
from inference.kernels.activations import (NO_RESIDUAL_2D, NONE, activate_row, activation_code, as_f32,
                                           epilogue_cols)
from inference.kernels.arena_slot import new_output
from inference.kernels.rows_gemm import PreparedGemm
from inference.kernels.tile_lanes import tile_epilogue
from inference.ops._memo import remember
from inference.ops._window import window_geometry
from inference.ops.conv import conv as reference_conv
from inference.ops.matmul import matmul as reference_matmul
from inference.ops.registry import lookup, register
from inference.schema import FormalParam, OpSchema, register_schema

_F32 = np.dtype(np.float32)

DOMAIN = "edgelearn"
CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
EPILOGUE_ATTRS = {"activation": "", "alpha": 0.0, "beta": 0.0}


def stage_epilogue(attrs: dict, stage: str) -> dict:
    """FusedConv's epilogue attributes of one stage of a fused block, whose attributes carry each
    stage's under a prefix (``stage``: "expand_", "reduce_" ...; "" for the block's last)."""
    return {k: attrs.get(f"{stage}{k}", v) for k, v in EPILOGUE_ATTRS.items()}


def prefixed_epilogue(attrs: dict, stage: str) -> dict:
    """The inverse of :func:`stage_epilogue`: a node's epilogue attributes (``attrs``, defaults for
    those absent) under the prefix of a fused block's ``stage``."""
    return {f"{stage}{k}": attrs.get(k, v) for k, v in EPILOGUE_ATTRS.items()}


# -- shape rules --------------------------------------------------------------------------------
def _conv_shape(node: Node, types: list) -> list:
    x, w = types[0], types[1] if len(types) > 1 else None
    if not isinstance(x, TensorType) or not isinstance(w, TensorType) or x.shape is None or w.shape is None:
        return [None]
    spatial = x.shape[2:]
    if all(isinstance(d, int) for d in spatial) and all(isinstance(d, int) for d in w.shape):
        a = node.attrs
        win = window_geometry(spatial, a.get("kernel_shape") or w.shape[2:], a.get("strides"),
                              a.get("dilations"), a.get("pads"), a.get("auto_pad", "NOTSET"), 0, "FusedConv")
        out = win.out_shape
    else:
        out = (None,) * len(spatial)
    return [TensorType(x.elem_type, (x.shape[0], w.shape[0]) + tuple(out))]


def _matmul_shape(node: Node, types: list) -> list:
    x, w = types[0], types[1] if len(types) > 1 else None
    if not isinstance(x, TensorType) or not isinstance(w, TensorType) or x.shape is None or w.shape is None:
        return [None]
    return [TensorType(x.elem_type, tuple(x.shape[:-1]) + (w.shape[-1],))]


_IO = (FormalParam("X"), FormalParam("W"), FormalParam("B", optional=True), FormalParam("Z", optional=True))
register_schema(OpSchema("FusedConv", DOMAIN, 1, _IO, (FormalParam("Y"),),
                         {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
                          "pads": None, "strides": None, **EPILOGUE_ATTRS}, shape_rule=_conv_shape))
register_schema(OpSchema("FusedMatMul", DOMAIN, 1, _IO, (FormalParam("Y"),), dict(EPILOGUE_ATTRS),
                         shape_rule=_matmul_shape))


# -- reference kernels: compositions of the reference ops ---------------------------------------
def reference_activation(y: np.ndarray, activation: str, alpha: float, beta: float) -> np.ndarray:
    """Apply ``activation`` with the reference kernel of the standard op it stands for."""
    activation_code(activation)  # rejects unknown names
    if activation == "":
        return y
    op = {"GeluTanh": "Gelu", "Silu": "Sigmoid"}.get(activation, activation)
    fn = lookup(op, "", 20).fn
    if op == "Clip":
        return fn(y, np.asarray(alpha, y.dtype), np.asarray(beta, y.dtype))
    if op == "LeakyRelu":
        return fn(y, alpha=alpha)
    if op == "HardSigmoid":
        return fn(y, alpha=alpha, beta=beta)
    if activation == "GeluTanh":
        return fn(y, approximate="tanh")
    if activation == "Silu":  # x * sigmoid(x), the Mul it was fused from
        return y * fn(y)
    return fn(y)


def _epilogue(y: np.ndarray, b: np.ndarray | None, z: np.ndarray | None, bias_shape: tuple,
              activation: str, alpha: float, beta: float) -> np.ndarray:
    if b is not None:
        y = y + b.reshape(bias_shape)
    if z is not None:
        if z.shape != y.shape:
            raise KernelError(f"residual Z has shape {z.shape}, the output {y.shape}")
        y = y + z
    return reference_activation(y.astype(y.dtype), activation, alpha, beta)


@register("FusedConv", since=1, domain=DOMAIN)
def fused_conv_reference(x, w, b=None, z=None, *, activation="", alpha=0.0, beta=0.0, **conv_attrs):
    y = reference_conv(x, w, None, **conv_attrs)
    return _epilogue(y, b, z, (1, -1) + (1,) * (x.ndim - 2), activation, alpha, beta).astype(x.dtype)


@register("FusedMatMul", since=1, domain=DOMAIN)
def fused_matmul_reference(x, w, b=None, z=None, *, activation="", alpha=0.0, beta=0.0):
    y = reference_matmul(x, w)
    return _epilogue(y, b, z, (-1,), activation, alpha, beta).astype(x.dtype)


# -- fast kernels ---------------------------------------------------------------------------------
def _conv_applies(node: Node, graph) -> bool:
    return fast_conv.handles(node, graph)


@register("FusedConv", since=1, domain=DOMAIN, kind=fast_conv.PACKED, applies=fast_conv.handles_constant,
          bind=fast_conv.packed_conv_binder)
@register("FusedConv", since=1, domain=DOMAIN, kind="fast", applies=_conv_applies, bind=fast_conv.conv_binder)
def fused_conv(x, w, b=None, z=None, *, activation="", alpha=0.0, beta=0.0, **conv_attrs):
    if not fast_conv.fast_path(x, w) or x.shape[1] != w.shape[1] * conv_attrs.get("group", 1):
        return fused_conv_reference(x, w, b, z, activation=activation, alpha=alpha, beta=beta, **conv_attrs)
    return fast_conv.fused_conv(x, w, b, z, activation=activation, alpha=alpha, beta=beta, **conv_attrs)


def _matmul_fast(x: np.ndarray, w: np.ndarray, z: np.ndarray | None) -> bool:
    if z is None and x.dtype is _F32 and w.dtype is _F32:  # the common case, in a third of the time
        return w.ndim == 2 and x.ndim >= 1
    return x.dtype == np.float32 and w.dtype == np.float32 and w.ndim == 2 and x.ndim >= 1 and (
        z is None or z.shape == x.shape[:-1] + (w.shape[1],))


def _matmul_run(x: np.ndarray, w: np.ndarray, b, z, code: int, alpha: float, beta: float) -> np.ndarray:
    """``act(x @ w + b + z)``: BLAS for the product, one numba pass for the rest (skipped if nothing to do)."""
    k, n = w.shape
    x2 = x.reshape(-1, k)
    y = np.matmul(x2, w, out=new_output((x2.shape[0], n)))
    if b is not None or z is not None or code != NONE:
        zz = as_f32(z, y.shape) if z is not None else NO_RESIDUAL_2D
        epilogue_cols(y, as_f32(b, (n,)), zz, z is not None, code, alpha, beta)
    return y.reshape(x.shape[:-1] + (n,)) if x.ndim != 2 else y


def matmul_weight_constant(node: Node, graph) -> bool:
    """A float32 product whose weight is a constant float32 matrix (a Predictor's initializer):
    the packed kind runs it on our tile, its weight panels kept from run to run."""
    return float32_input(node, graph) and constant_float32_weight(node, graph, 2) is not None


def _matmul_tile_call(x_shape: tuple, w_shape: tuple, code: int, alpha: float, beta: float):
    """The call ``(x, w, b, z) -> act(x @ w + b + z)`` for these shapes on the channels-last tile
    (:mod:`inference.kernels.rows_gemm`): bias, residual and a clamp in registers, other activations
    in one pass after. Why not BLAS: the same speed on one thread (the transformer's products:
    0.97-1.05x OpenBLAS with its epilogue pass, ``benchmarks/rows_gemm.py``), and then the whole
    model runs on numba's pool: at 2 threads the epilogues, LayerNorms and Softmaxes had stayed
    serial beside threaded BLAS. Prepared once per input shape: a batch-1 Dense layer's product
    (128 x 128: ~1 us) had paid ~3 us of Python per call deriving these."""
    k, n = w_shape
    gemm = PreparedGemm(math.prod(x_shape) // k, k, n)
    whole, amin, amax, act = tile_epilogue(code, alpha, beta)
    out_shape = x_shape[:-1] + (n,)

    def call(x, w, b, z):
        y = gemm(x, w, as_f32(b, (n,)), z, amin, amax, keep_for=w, act=act)
        if not whole:
            activate_row(y.reshape(-1), code, alpha, beta)
        return y.reshape(out_shape)

    return call


def _matmul_binder(fn, packed: bool = False):
    """Plan-time ``bind`` of the fast FusedMatMul: the activation resolved once per node. At batch 1
    the per-call attribute work and the epilogue's temporaries cost more than the 1x1568 @ 1568x10
    product of an MNIST classifier (10.9 us against 4.5 us for the matmul alone, measured).
    ``packed``: the packed kind (:func:`matmul_weight_constant`), on our tile, its calls prepared
    once per input shapes (:func:`_matmul_tile_call`)."""

    def bind(*, activation="", alpha=0.0, beta=0.0):
        code, alpha, beta = activation_code(activation), float(alpha), float(beta)
        attrs = dict(activation=activation, alpha=alpha, beta=beta)
        calls: dict = {}

        def run(x, w, b=None, z=None):
            if not _matmul_fast(x, w, z):
                return fused_matmul_reference(x, source(w), b, z, **attrs)
            if not packed:
                return _matmul_run(x, w, b, z, code, alpha, beta)
            call = calls.get((x.shape, w.shape))
            if call is None:
                call = remember(calls, (x.shape, w.shape), _matmul_tile_call(x.shape, w.shape, code, alpha, beta))
            return call(x, w, b, z)

        return run

    return bind


@register("FusedMatMul", since=1, domain=DOMAIN, kind=fast_conv.PACKED, applies=matmul_weight_constant,
          bind=functools.partial(_matmul_binder, packed=True))
@register("FusedMatMul", since=1, domain=DOMAIN, kind="fast", applies=float32_input, bind=_matmul_binder)
def fused_matmul(x, w, b=None, z=None, *, activation="", alpha=0.0, beta=0.0):
    if not _matmul_fast(x, w, z):
        return fused_matmul_reference(x, w, b, z, activation=activation, alpha=alpha, beta=beta)
    return _matmul_run(x, w, b, z, activation_code(activation), float(alpha), float(beta))
