"""Per-tensor QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear in one pass each.

Why: what stays of a QDQ model after ``fuse_qdq`` is the input's QuantizeLinear and the
DequantizeLinear of each residual branch; the reference ops make 4-5 numpy passes with temporaries
(~1.5 ms of ResNet-18's ~25 ms int8 run). Same arithmetic as the reference, so results are equal:
quantize ``rint(x / scale) + zp`` (float32 division, half to even) clipped to the output type;
dequantize ``(float(x) - float(zp)) * scale``; DynamicQuantizeLinear (the activation quantizer of
dynamic int8 models) one compiled call: a vector pass for the range, one for the values. Anything
else (per-axis or blocked scales, other dtypes, float8, ``precision``) runs the reference.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.kernels._applies import input_of_type
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.kernels.range_ir import range_with_zero
from inference.ops.quantize import dequantize_linear, dynamic_quantize_linear, quantize_linear, scale_and_zero_point
from inference.ops.registry import register

_EIGHT_BIT = (np.dtype(np.uint8), np.dtype(np.int8))


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def quantized(v, scale, zp, lo, hi):
    """One value quantized: ``rint(v / scale) + zp`` in float32, clipped to [lo, hi]."""
    return min(max(np.rint(v / scale) + zp, lo), hi)


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def dequantized(q, zp, scale):
    """One 8-bit value dequantized: ``(float(q) - zp) * scale`` in float32."""
    return (np.float32(q) - zp) * scale


@threaded_kernel()
def _quantize(x, scale, zp, lo, hi, out):
    for i in numba.prange(x.size):
        out[i] = quantized(x[i], scale, zp, lo, hi)


@threaded_kernel()
def _dequantize(x, zp, scale, out):
    for i in numba.prange(x.size):
        out[i] = dequantized(x[i], zp, scale)


def _per_tensor(*params) -> bool:
    return all(p is None or (p.size == 1 and p.dtype in (np.float32, *_EIGHT_BIT)) for p in params)


@register("QuantizeLinear", since=10, kind="fast", applies=lambda n, g: input_of_type(n, g, (1,)))
def quantize_linear_fast(x, y_scale, y_zero_point=None, *, axis=1, block_size=0, output_dtype=0, saturate=1,
                         precision=0):
    zdt = np.dtype(np.uint8) if y_zero_point is None else y_zero_point.dtype
    if x.dtype != np.float32 or y_scale.dtype != np.float32 or zdt not in _EIGHT_BIT or block_size or precision \
            or (y_zero_point is None and output_dtype) or not _per_tensor(y_scale, y_zero_point):
        return quantize_linear(x, y_scale, y_zero_point, axis=axis, block_size=block_size, output_dtype=output_dtype,
                               saturate=saturate, precision=precision)
    info = np.iinfo(zdt)
    out = new_output(x.shape, zdt)
    zp = 0 if y_zero_point is None else int(y_zero_point.reshape(-1)[0])
    _quantize(np.ascontiguousarray(x).reshape(-1), np.float32(y_scale.reshape(-1)[0]), np.float32(zp),
              np.float32(info.min), np.float32(info.max), out.reshape(-1))
    return out


@register("DequantizeLinear", since=10, kind="fast", applies=lambda n, g: input_of_type(n, g, (2, 3)))
def dequantize_linear_fast(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    if x.dtype not in _EIGHT_BIT or x_scale.dtype != np.float32 or block_size or output_dtype not in (0, 1) \
            or not _per_tensor(x_scale, x_zero_point):
        return dequantize_linear(x, x_scale, x_zero_point, axis=axis, block_size=block_size, output_dtype=output_dtype)
    out = new_output(x.shape)
    zp = 0 if x_zero_point is None else int(x_zero_point.reshape(-1)[0])
    _dequantize(np.ascontiguousarray(x).reshape(-1), np.float32(zp), np.float32(x_scale.reshape(-1)[0]),
                out.reshape(-1))
    return out


_scale_and_zero_point = numba.njit(cache=True, nogil=True)(scale_and_zero_point)


@threaded_kernel()
def _dynamic_quantize(x, out, scale_out, zp_out):
    """``out`` = ``x`` quantized to uint8 over its range with zero; its scale and zero point into the
    one-element ``scale_out`` and ``zp_out``: the whole op in one compiled call (replayable)."""
    lo, hi = range_with_zero(x, 0, x.size)
    scale, zp = _scale_and_zero_point(lo, hi)
    scale_out[0], zp_out[0] = scale, np.uint8(zp)
    for i in numba.prange(x.size):
        out[i] = quantized(x[i], scale, zp, np.float32(0), np.float32(255))


@register("DynamicQuantizeLinear", since=11, kind="fast", applies=lambda n, g: input_of_type(n, g, (1,)))
def dynamic_quantize_linear_fast(x):
    """Same arithmetic as the reference (which makes five passes over the tensor): the range
    including 0 (:func:`~inference.kernels.range_ir.range_with_zero`), then float32 ``x / scale``
    rounded half to even, plus the zero point, clipped."""
    if x.dtype != np.float32:
        return dynamic_quantize_linear(x)
    flat = np.ascontiguousarray(x).reshape(-1)
    out, scale, zp = np.empty(flat.size, np.uint8), np.empty(1, np.float32), np.empty(1, np.uint8)
    _dynamic_quantize(flat, out, scale, zp)
    return out.reshape(x.shape), scale.reshape(()), zp.reshape(())
