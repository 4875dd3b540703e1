"""Dtype helpers shared by the elementwise, activation and cast kernels.

Why: numpy returns scalars for 0-d results and promotes mixed operands; ONNX wants arrays of one
exact dtype. The float8 / int4 family comes from ``ml_dtypes``, as ``onnx.numpy_helper`` does.
"""
from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
from onnx import helper

from inference.errors import KernelError

#: float8 types whose Cast obeys the ``saturate`` attribute (clamp to +-max instead of inf/NaN)
FLOAT8_SATURATING = tuple(np.dtype(t) for t in (
    ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz))
E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)

#: dtypes numpy cannot compute with directly: arithmetic goes through float32
_EXOTIC_FLOATS = FLOAT8_SATURATING + (E8M0, np.dtype(ml_dtypes.bfloat16), np.dtype(ml_dtypes.float4_e2m1fn))


def onnx_to_numpy(elem_type: int) -> np.dtype:
    """The numpy dtype of an ONNX ``TensorProto.DataType`` value."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError) as e:
        raise KernelError(f"unknown ONNX tensor data type {elem_type}") from e


def is_float(dtype: np.dtype) -> bool:
    """True for every floating dtype, ml_dtypes ones (bfloat16, float8, float4) included."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype in _EXOTIC_FLOATS


def is_exotic_float(dtype: np.dtype) -> bool:
    """True for the ml_dtypes floats (bfloat16, float8, float4) which numpy ufuncs handle poorly."""
    return np.dtype(dtype) in _EXOTIC_FLOATS


def as_dtype(value, dtype: np.dtype) -> np.ndarray:
    """``value`` as an ndarray of ``dtype`` (0-d numpy scalars become 0-d arrays)."""
    return np.asarray(value).astype(dtype, copy=False)


def widen(x: np.ndarray) -> np.ndarray:
    """``x`` in a dtype numpy computes with: float32 for the ml_dtypes floats, else unchanged."""
    return x.astype(np.float32) if is_exotic_float(x.dtype) else x


def keeps_dtype(fn):
    """Decorator for ``fn(x, *rest, **attrs)``: compute on ``widen(x)``, return ``x``'s dtype."""

    @functools.wraps(fn)
    def run(x: np.ndarray, *rest, **attrs) -> np.ndarray:
        with np.errstate(all="ignore"):
            return as_dtype(fn(widen(x), *rest, **attrs), x.dtype)

    return run
