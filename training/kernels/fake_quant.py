"""Fake quantization for quantization-aware training: float in, float out, int8 rounding inside.

A QuantizeLinear -> DequantizeLinear pair cannot sit in a training graph: its middle value is an
integer tensor, which no gradient crosses. These ops compute the same quantize-dequantize in
one float-to-float step, with the scale and zero point of ``compress.quantize`` (its functions
are called, so QAT and post-training quantization cannot drift apart):

* ``edgelearn.train::FakeQuantize(x; lo, hi, dtype)``: an activation with a fixed calibrated
  range, ``activation_params(lo, hi, dtype)`` (asymmetric uint8 or symmetric int8).
* ``edgelearn.train::FakeQuantizeWeight(w; axis, per_channel)``: a weight, with its symmetric int8
  scale recomputed from the current values on every run (``weight_params``), as conversion will.
* ``edgelearn.train::FakeQuantizeBias(b, w; lo, hi, dtype, axis, per_channel)``: a bias, rounded
  as conversion stores it: int32 at scale x_scale * w_scale (``bias_params``), x_scale that of the
  layer's input range [lo, hi], w_scale that of the current weight ``w``. With per-tensor weights
  and one wide filter, that step can reach an activation step: float biases would then train a
  model the int8 one does not compute.
* ``edgelearn.grad::FakeQuantizeGrad(dy, x; lo, hi, dtype)``: the straight-through estimator of
  ``FakeQuantize``: ``dy`` where ``round(x / scale) + zero_point`` lies inside the integer range
  (the value was rounded, not clipped), 0 where it saturated.
"""
from __future__ import annotations

import numpy as np

from compress.quantize import activation_params, bias_params, weight_params
from inference.errors import KernelError
from inference.ir import Node
from inference.ops.quantize import dequantize_linear, quantize_linear
from inference.schema import FormalParam, OpSchema, register_schema
from inference.ops.registry import register
from training.grads.registry import GRAD_DOMAIN
from training.protocols import TRAIN_DOMAIN

ACTIVATION_DTYPES = {"uint8": np.uint8, "int8": np.int8}


def _same_as_first(node: Node, types: list) -> list:
    return [types[0] if types else None]


register_schema(OpSchema("FakeQuantize", TRAIN_DOMAIN, 1, (FormalParam("x"),), (FormalParam("y"),),
                         {"lo": None, "hi": None, "dtype": "uint8"}, _same_as_first))
register_schema(OpSchema("FakeQuantizeWeight", TRAIN_DOMAIN, 1, (FormalParam("w"),), (FormalParam("y"),),
                         {"axis": 0, "per_channel": 1}, _same_as_first))
register_schema(OpSchema("FakeQuantizeBias", TRAIN_DOMAIN, 1, (FormalParam("b"), FormalParam("w")), (FormalParam("y"),),
                         {"lo": None, "hi": None, "dtype": "uint8", "axis": 0, "per_channel": 1}, _same_as_first))
register_schema(OpSchema("FakeQuantizeGrad", GRAD_DOMAIN, 1, (FormalParam("dy"), FormalParam("x")),
                         (FormalParam("dx"),), {"lo": None, "hi": None, "dtype": "uint8"}, _same_as_first))


def activation_qparams(lo: float, hi: float, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of a FakeQuantize node (compress' scheme), checking the dtype name."""
    if dtype not in ACTIVATION_DTYPES:
        raise KernelError(f"FakeQuantize: dtype must be one of {sorted(ACTIVATION_DTYPES)}, got {dtype!r}")
    return activation_params(float(lo), float(hi), dtype)


@register("FakeQuantize", since=1, domain=TRAIN_DOMAIN)
def fake_quantize(x: np.ndarray, *, lo: float, hi: float, dtype: str = "uint8") -> np.ndarray:
    """DequantizeLinear(QuantizeLinear(x)) at the scale/zero point of the range [lo, hi]."""
    scale, zp = activation_qparams(lo, hi, dtype)
    return dequantize_linear(quantize_linear(x, scale, zp), scale, zp).astype(x.dtype, copy=False)


@register("FakeQuantizeWeight", since=1, domain=TRAIN_DOMAIN)
def fake_quantize_weight(w: np.ndarray, *, axis: int = 0, per_channel: int = 1) -> np.ndarray:
    """The weight as int8 inference will see it: symmetric, per output channel (or per tensor)."""
    q, scale = fake_weight_scale(w, axis, per_channel)
    return dequantize_linear(q, scale, axis=axis % w.ndim).astype(w.dtype, copy=False)


@register("FakeQuantizeBias", since=1, domain=TRAIN_DOMAIN)
def fake_quantize_bias(b: np.ndarray, w: np.ndarray, *, lo: float, hi: float, dtype: str = "uint8", axis: int = 0,
                       per_channel: int = 1) -> np.ndarray:
    """The bias as int8 inference adds it: int32 at scale x_scale * w_scale."""
    x_scale, _ = activation_qparams(lo, hi, dtype)
    _, w_scale = fake_weight_scale(w, axis, per_channel)
    q, scale = bias_params(b, x_scale, w_scale)
    return dequantize_linear(q, scale, axis=0).reshape(b.shape).astype(b.dtype, copy=False)


def fake_weight_scale(w: np.ndarray, axis: int, per_channel: int) -> tuple[np.ndarray, np.ndarray]:
    """``weight_params`` of a fake-quantized weight, checking the axis."""
    if per_channel and not -w.ndim <= axis < w.ndim:
        raise KernelError(f"FakeQuantizeWeight: axis {axis} out of range for a weight of shape {list(w.shape)}")
    return weight_params(w, axis % w.ndim, bool(per_channel))


@register("FakeQuantizeGrad", since=1, domain=GRAD_DOMAIN)
def fake_quantize_grad(dy: np.ndarray, x: np.ndarray, *, lo: float, hi: float, dtype: str = "uint8") -> np.ndarray:
    """Straight-through estimator: pass ``dy`` where x was inside the representable range."""
    scale, zp = activation_qparams(lo, hi, dtype)
    info = np.iinfo(ACTIVATION_DTYPES[dtype])
    q = np.rint(x.astype(np.float32, copy=False) / scale) + np.float32(zp)  # as QuantizeLinear rounds
    inside = (q >= info.min) & (q <= info.max)
    return np.where(inside, dy, dy.dtype.type(0))
