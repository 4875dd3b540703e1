"""Linear (de)quantization ops and the saturating cast the quantized conv/matmul ops share."""
from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import helper

from inference.errors import KernelError
from inference.ops.registry import register

_FLOAT8 = {np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                 ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz)}


def _int_range(dtype: np.dtype) -> tuple[int, int] | None:
    try:
        info = ml_dtypes.iinfo(dtype)
    except (TypeError, ValueError):
        return None
    return int(info.min), int(info.max)


def saturate_cast(values: np.ndarray, dtype: np.dtype, saturate: int = 1) -> np.ndarray:
    """Cast real ``values`` to quantized ``dtype``: integers round half to even and clip to range;
    float8 clips to the largest finite value when ``saturate`` (else overflows to inf/NaN)."""
    dtype = np.dtype(dtype)
    rng = _int_range(dtype)
    if rng is not None:
        return np.clip(np.rint(values), *rng).astype(dtype)
    if dtype in _FLOAT8 and not saturate:
        return values.astype(dtype)
    big = float(ml_dtypes.finfo(dtype).max)
    return np.clip(values, -big, big).astype(dtype)


def broadcast_param(param: np.ndarray, x_shape: tuple[int, ...], axis: int, block_size: int,
                    op: str) -> np.ndarray:
    """Scale or zero point reshaped to broadcast against ``x``: per tensor, per axis or blocked."""
    if param.ndim == 0 or (param.size == 1 and block_size == 0):
        return param.reshape(())
    rank = len(x_shape)
    if not -rank <= axis < rank:
        raise KernelError(f"{op}: axis {axis} out of range for input rank {rank}")
    axis %= rank
    if block_size <= 0:
        if param.ndim != 1 or param.shape[0] != x_shape[axis]:
            raise KernelError(f"{op}: per-axis scale must be 1-D of length {x_shape[axis]} "
                              f"(axis {axis}), got shape {param.shape}")
        shape = [1] * rank
        shape[axis] = -1
        return param.reshape(shape)
    expected = list(x_shape)
    expected[axis] = -(-x_shape[axis] // block_size)
    if list(param.shape) != expected:
        raise KernelError(f"{op}: blocked scale must have shape {tuple(expected)} for block_size "
                          f"{block_size} on axis {axis}, got {param.shape}")
    return np.repeat(param, block_size, axis=axis).take(np.arange(x_shape[axis]), axis=axis)


def _as_float(a: np.ndarray, dtype: np.dtype = np.dtype(np.float32)) -> np.ndarray:
    return a.astype(np.float32).astype(dtype) if a.dtype != dtype else a


@register("QuantizeLinear", since=10)
def quantize_linear(x, y_scale, y_zero_point=None, *, axis=1, block_size=0, output_dtype=0,
                    saturate=1, precision=0):
    if y_zero_point is not None:
        out_dtype = y_zero_point.dtype
    elif output_dtype:
        out_dtype = helper.tensor_dtype_to_np_dtype(output_dtype)
    else:
        out_dtype = np.dtype(np.uint8)
    calc = helper.tensor_dtype_to_np_dtype(precision) if precision else y_scale.dtype
    if calc not in (np.float32, np.float64):
        calc = np.dtype(np.float32)
    scale = broadcast_param(_as_float(y_scale, calc), x.shape, axis, block_size, "QuantizeLinear")
    y = _as_float(x, calc) / scale
    if np.dtype(out_dtype).kind in "iu" or "int" in str(out_dtype):
        y = np.rint(y)  # the spec rounds x / scale before the zero point is added
    if y_zero_point is not None:
        y = y + broadcast_param(_as_float(y_zero_point, calc), x.shape, axis, block_size, "QuantizeLinear")
    return saturate_cast(y, out_dtype, saturate)


@register("DequantizeLinear", since=10)
def dequantize_linear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    out_dtype = helper.tensor_dtype_to_np_dtype(output_dtype) if output_dtype else x_scale.dtype
    xf = _as_float(x)
    if x_zero_point is not None:
        xf = xf - broadcast_param(_as_float(x_zero_point), x.shape, axis, block_size, "DequantizeLinear")
    scale = broadcast_param(_as_float(x_scale), x.shape, axis, block_size, "DequantizeLinear")
    return np.asarray(xf * scale).astype(out_dtype)


def scale_and_zero_point(lo: np.float32, hi: np.float32) -> tuple[np.float32, np.float32]:
    """DynamicQuantizeLinear's scale and zero point (a whole float32) for the float32 range [lo, hi]
    (lo <= 0 <= hi), in float32 as the specification writes them: ``(hi - lo) / 255``, then
    ``rint(clip(-lo / scale, 0, 255))`` (onnxruntime and onnx.reference agree; a float64 scale had
    moved codes by one, up to 0.05 on a dynamically quantized encoder's output). An empty range (all
    zeros), where the formula divides by zero, gets scale 1 as onnxruntime's. Scalar float32
    arithmetic only: the fast kernel compiles this same function with numba."""
    if hi == lo:
        return np.float32(1.0), np.float32(0.0)
    scale = (hi - lo) / np.float32(255)
    zp = np.float32(0) - lo / scale
    if zp != zp:  # a NaN range: code 0, as numpy's NaN -> uint8 cast gives on x86
        return scale, np.float32(0.0)
    return scale, np.rint(min(max(zp, np.float32(0)), np.float32(255)))


def range_parameters(x: np.ndarray):
    """DynamicQuantizeLinear's scale and uint8 zero point for ``x``: those of [min(x, 0), max(x, 0)]
    (numpy's SIMD reductions: a NaN in ``x`` makes the scale NaN, as the specification's formula does)."""
    lo = np.float32(min(float(x.min(initial=0.0)), 0.0))
    hi = np.float32(max(float(x.max(initial=0.0)), 0.0))
    scale, zp = scale_and_zero_point(lo, hi)
    return np.float32(scale), np.asarray(zp, np.uint8)


@register("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(x):
    """uint8 quantization with scale and zero point chosen so the range [min(x,0), max(x,0)] fits."""
    scale, zero_point = range_parameters(x)
    y = saturate_cast(np.rint(x / scale) + zero_point.astype(np.float32), np.uint8)
    return y, np.asarray(scale), zero_point
