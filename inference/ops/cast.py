"""Cast, CastLike and BitCast between every ONNX tensor type, strings and 8/4/2-bit ones included.

Why: numpy and ml_dtypes do the plain conversions (round-to-nearest-even, integer wrap-around);
ONNX adds saturation for float8, the power-of-two rounding modes of float8e8m0, and string
parsing/formatting, which are written out here.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import TensorProto

from inference.errors import KernelError
from inference.ops._dtypes import E8M0, FLOAT8_SATURATING, as_dtype, onnx_to_numpy, widen
from inference.ops.registry import register

_ROUND_MODES = ("up", "down", "nearest")
_F32_MANTISSA_HALF = 0x400000  # top mantissa bit of a float32: the value is >= 1.5 * 2**e


def _to_string(x: np.ndarray) -> np.ndarray:
    """Numbers as their shortest plain representation ("314.15926"), in an object array."""
    return widen(x).astype(np.str_).astype(object)


def _from_string(x: np.ndarray, target: np.dtype) -> np.ndarray:
    """Parse numeric strings ("1e-5", "INF", "-inf", "NaN"), integers exactly when they are ones."""
    if target == object:
        return x.astype(object)
    if target.kind in "iub":
        try:
            return as_dtype(x.astype(np.int64), target)
        except (ValueError, OverflowError):
            pass
    try:
        values = x.astype(np.float64)
    except ValueError as e:
        raise KernelError(f"Cast: cannot parse string tensor as numbers ({e})") from e
    return cast_array(values, target)


def _to_e8m0(x: np.ndarray, saturate: int, round_mode: str) -> np.ndarray:
    """float -> float8e8m0 (a bare power of two, bias 127, 0xFF = NaN), on float32 bit fields.

    The biased exponent of a float32 is the e8m0 code of the power of two at or below it; the
    mantissa decides rounding up. Subnormal float32s lie below 2**-127 (code 0) when their
    mantissa is under half.
    """
    if round_mode not in _ROUND_MODES:
        raise KernelError(f"Cast: round_mode must be one of {_ROUND_MODES}, got {round_mode!r}")
    bits = np.array(x, dtype=np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.int32)
    mantissa = bits & 0x7FFFFF
    normal = exponent > 0
    if round_mode == "up":
        bump = np.where(normal, mantissa != 0, mantissa > _F32_MANTISSA_HALF)
    elif round_mode == "nearest":
        bump = np.where(normal, mantissa >= _F32_MANTISSA_HALF, mantissa >= 3 * _F32_MANTISSA_HALF // 2)
    else:
        bump = np.zeros(exponent.shape, bool)
    code = exponent + bump
    is_nan = (exponent == 0xFF) & (mantissa != 0)
    is_inf = (exponent == 0xFF) & (mantissa == 0)
    if saturate:
        code = np.minimum(np.where(is_inf, 0xFE, code), 0xFE)
    else:
        too_small = (exponent == 0) & (mantissa < _F32_MANTISSA_HALF)
        code = np.where((code > 0xFE) | too_small, 0xFF, code)
    code = np.where(is_nan, 0xFF, code)
    return code.astype(np.uint8).view(E8M0)


def cast_array(x: np.ndarray, target: np.dtype, saturate: int = 1, round_mode: str = "up") -> np.ndarray:
    """``x`` converted to ``target`` following the ONNX Cast rules."""
    target = np.dtype(target)
    if x.dtype == target:
        return x
    if x.dtype == object:
        return _from_string(x, target)
    if target == object:
        return _to_string(x)
    if target == E8M0:
        return _to_e8m0(widen(x), saturate, round_mode)
    source = widen(x)
    if saturate and target in FLOAT8_SATURATING:
        limit = float(ml_dtypes.finfo(target).max)
        source = np.clip(source, -limit, limit)  # inf -> +-max; NaN stays NaN
    with np.errstate(invalid="ignore", over="ignore"):
        return as_dtype(source, target)


@register("Cast", since=1)
def cast_1(x: np.ndarray, *, to: str) -> np.ndarray:
    """Opset 1 names the target type as a string ("FLOAT", "INT64"...)."""
    if to.upper() not in TensorProto.DataType.keys():
        raise KernelError(f"Cast: unknown target type {to!r}")
    return cast_array(x, onnx_to_numpy(TensorProto.DataType.Value(to.upper())))


@register("Cast", since=6)
def cast(x: np.ndarray, *, to: int, saturate: int = 1, round_mode: str = "up") -> np.ndarray:
    return cast_array(x, onnx_to_numpy(to), saturate, round_mode)


@register("CastLike", since=15)
def cast_like(x: np.ndarray, target_type: np.ndarray, *, saturate: int = 1,
              round_mode: str = "up") -> np.ndarray:
    return cast_array(x, target_type.dtype, saturate, round_mode)


@register("BitCast", since=26)
def bit_cast(x: np.ndarray, *, to: int) -> np.ndarray:
    """Reinterpret the bits of each element as type ``to`` (same bit width, shape unchanged)."""
    target = onnx_to_numpy(to)
    if x.dtype == object or target == object:
        raise KernelError("BitCast: string tensors have no fixed bit width")
    if target.itemsize != x.dtype.itemsize:
        raise KernelError(f"BitCast: {x.dtype} ({8 * x.dtype.itemsize} bits) and {target} "
                          f"({8 * target.itemsize} bits) differ in width")
    return x.view(target)
