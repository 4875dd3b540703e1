"""``edgelearn::QAdd``: DequantizeLinear(A) + DequantizeLinear(B) -> QuantizeLinear, in one pass.

Why: a quantized network's residual Add arrives as two DequantizeLinear, a float Add and a
QuantizeLinear (onnxruntime's QDQ files; its QOperator files' QLinearAdd imports as the same), four
passes over the tensor with three float32 intermediates: 0.49 ms of a quantized MobileNetV2's ~5.5
(one thread, batch 1; onnxruntime's QLinearAdd ~0.07). One pass reads the two 8-bit tensors and
writes the 8-bit sum, with the very arithmetic of those four kernels (:mod:`inference.kernels.int8_qdq`):
``(float(a) - a_zp) * a_scale + (float(b) - b_zp) * b_scale``, then ``rint(sum / y_scale) + y_zp``
clipped to the output type, so the fused graph's bytes are the unfused graph's.

``QAdd(A, a_scale, a_zero_point, B, b_scale, b_zero_point, y_scale, y_zero_point)``: per-tensor
parameters, A and B of one shape (``inference.passes.quantized_add`` fuses nothing else).
"""
from __future__ import annotations

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.kernels._applies import input_of_type
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.kernels.fused import DOMAIN
from inference.kernels.int8_qdq import dequantized, quantized
from inference.ops.quantize import dequantize_linear, quantize_linear
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema

OP = "QAdd"
_INPUTS = ("A", "a_scale", "a_zero_point", "B", "b_scale", "b_zero_point", "y_scale", "y_zero_point")


def _shape(node: Node, types_: list) -> list:
    a, yzp = types_[0], types_[7] if len(types_) > 7 else None
    if not isinstance(a, TensorType) or not isinstance(yzp, TensorType):
        return [None]
    return [TensorType(yzp.elem_type, a.shape)]


register_schema(OpSchema(OP, DOMAIN, 1, tuple(FormalParam(n) for n in _INPUTS), (FormalParam("Y"),), {},
                         shape_rule=_shape))


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise KernelError(f"{OP}: A {a.shape} and B {b.shape} must have one shape")


@register(OP, since=1, domain=DOMAIN)
def qadd_reference(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    _check(a, b)
    total = dequantize_linear(a, a_scale, a_zero_point) + dequantize_linear(b, b_scale, b_zero_point)
    return quantize_linear(total, y_scale, y_zero_point)


@threaded_kernel()
def _qadd(a, za, sa, b, zb, sb, sy, zy, lo, hi, out):
    for i in numba.prange(a.size):
        out[i] = quantized(dequantized(a[i], za, sa) + dequantized(b[i], zb, sb), sy, zy, lo, hi)


def _scalar(v) -> np.float32:
    return np.float32(np.asarray(v).reshape(-1)[0])


@register(OP, since=1, domain=DOMAIN, kind="fast", applies=lambda n, g: input_of_type(n, g, (2, 3)))
def qadd_fast(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    _check(a, b)
    params = (a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point)
    if any(np.asarray(p).size != 1 for p in params) or a.dtype != a_zero_point.dtype \
            or b.dtype != b_zero_point.dtype:
        return qadd_reference(a, *params[:2], b, *params[2:])
    info = np.iinfo(y_zero_point.dtype)
    out = new_output(a.shape, y_zero_point.dtype)
    _qadd(np.ascontiguousarray(a).reshape(-1), _scalar(a_zero_point), _scalar(a_scale),
          np.ascontiguousarray(b).reshape(-1), _scalar(b_zero_point), _scalar(b_scale), _scalar(y_scale),
          _scalar(y_zero_point), np.float32(info.min), np.float32(info.max), out.reshape(-1))
    return out
