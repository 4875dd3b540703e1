"""Matrix products: MatMul, Gemm and the integer / quantized MatMul variants."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.quantize import saturate_cast
from inference.ops.registry import register


@register("MatMul", since=1)
def matmul(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise KernelError(f"MatMul: inputs must have rank >= 1, got shapes {a.shape} and {b.shape}")
    return np.asarray(np.matmul(a, b)).astype(np.result_type(a, b), copy=False)  # bfloat16 stays bfloat16


@register("Gemm", since=1)
def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0):
    if a.ndim != 2 or b.ndim != 2:
        raise KernelError(f"Gemm: A and B must be 2-D, got shapes {a.shape} and {b.shape}")
    a = a.T if transA else a
    b = b.T if transB else b
    y = np.matmul(a, b)
    if alpha != 1.0:
        y = y * y.dtype.type(alpha)
    if c is not None and beta != 0.0:
        y = y + (c * c.dtype.type(beta) if beta != 1.0 else c)
    return y.astype(a.dtype, copy=False)


def _row_param(p: np.ndarray | None) -> np.ndarray | int:
    """A scalar, or a 1-D per-row parameter (length M of an (..., M, K) operand) shaped (M, 1)."""
    if p is None:
        return 0
    return p.reshape(-1, 1) if p.size > 1 else p.reshape(())


def _col_param(p: np.ndarray | None) -> np.ndarray | int:
    """A scalar, or a 1-D per-column parameter (length N of an (..., K, N) operand)."""
    if p is None:
        return 0
    return p if p.size > 1 else p.reshape(())


def _integer_matmul(a, a_zero_point, b, b_zero_point) -> np.ndarray:
    a32 = a.astype(np.int32) - np.asarray(_row_param(a_zero_point)).astype(np.int32)
    b32 = b.astype(np.int32) - np.asarray(_col_param(b_zero_point)).astype(np.int32)
    return np.matmul(a32, b32).astype(np.int32)


@register("MatMulInteger", since=10)
def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    return _integer_matmul(a, a_zero_point, b, b_zero_point)


@register("QLinearMatMul", since=10)
def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    acc = _integer_matmul(a, a_zero_point, b, b_zero_point).astype(np.float32)
    scale = (_row_param(a_scale) * _col_param(b_scale)).astype(np.float32)
    real = acc * (scale / _col_param(y_scale).astype(np.float32))
    return saturate_cast(real + np.asarray(_col_param(y_zero_point)).astype(np.float32), y_zero_point.dtype)
