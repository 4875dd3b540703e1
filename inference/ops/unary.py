"""Elementwise math functions (Abs, Exp, Erf, trigonometry, IsNaN...) on one tensor.

Why: each op is one numpy ufunc returning the input dtype; ``erf`` is computed natively here
(numpy has none) and reused by Gelu.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from inference.ops._dtypes import as_dtype, keeps_dtype, widen
from inference.ops.registry import register

_TWO_OVER_SQRT_PI = 2.0 / np.sqrt(np.pi)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function in float64, to double precision.

    Uses the everywhere-convergent series with positive terms (no cancellation)
    ``erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (1*3*...*(2n+1))``
    for ``|x| < 6``; beyond, ``erf`` is +-1 in double precision.
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.clip(np.abs(np.nan_to_num(x)), 0.0, 6.0)
    two_a2 = 2.0 * a * a
    term = a.copy()
    total = a.copy()
    for n in range(200):  # series terms, not elements: at most ~130 are needed at |x| = 6
        term = term * two_a2 / (2 * n + 3)
        total += term
        if not (term > total * 1e-17).any():
            break
    result = np.where(a >= 6.0, 1.0, _TWO_OVER_SQRT_PI * np.exp(-a * a) * total)
    return np.where(np.isnan(x), np.nan, np.copysign(result, x))


def _unary(op_type: str, since: int, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    """Register ``op_type`` as ``fn`` applied elementwise, keeping the input dtype."""

    def kernel(x: np.ndarray) -> np.ndarray:
        return fn(x)

    kernel.__name__ = op_type.lower()
    register(op_type, since=since)(keeps_dtype(kernel))


for _name, _since, _fn in (
    ("Abs", 6, np.abs), ("Neg", 6, np.negative), ("Sign", 9, np.sign),
    ("Reciprocal", 6, np.reciprocal), ("Floor", 6, np.floor), ("Ceil", 6, np.ceil),
    ("Round", 11, np.round),  # numpy rounds half to even, as ONNX requires
    ("Sqrt", 6, np.sqrt), ("Exp", 6, np.exp), ("Log", 6, np.log), ("Erf", 9, erf),
    ("Sin", 7, np.sin), ("Cos", 7, np.cos), ("Tan", 7, np.tan),
    ("Asin", 7, np.arcsin), ("Acos", 7, np.arccos), ("Atan", 7, np.arctan),
    ("Sinh", 9, np.sinh), ("Cosh", 9, np.cosh), ("Tanh", 6, np.tanh),
    ("Asinh", 9, np.arcsinh), ("Acosh", 9, np.arccosh), ("Atanh", 9, np.arctanh),
):
    _unary(_name, _since, _fn)


@register("IsNaN", since=9)
def is_nan(x: np.ndarray) -> np.ndarray:
    return as_dtype(np.isnan(widen(x)), np.bool_)


@register("IsInf", since=10)
def is_inf(x: np.ndarray, *, detect_negative: int = 1, detect_positive: int = 1) -> np.ndarray:
    x = widen(x)
    found = np.isinf(x)
    if not detect_negative:
        found &= x > 0
    if not detect_positive:
        found &= x < 0
    return as_dtype(found, np.bool_)
