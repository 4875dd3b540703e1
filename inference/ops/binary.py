"""Broadcasting binary and variadic elementwise ops: arithmetic, bitwise, logic, comparison, Where.

Why: one tiny numpy expression per op, with the two ONNX rules numpy does not follow by itself:
the output keeps the exact input dtype (no promotion, 0-d arrays not scalars), and opsets 1-6
broadcast the second input from ``axis`` only when ``broadcast=1``.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from inference.errors import KernelError, ShapeInferenceError
from inference.ops._dtypes import as_dtype, is_float, widen
from inference.ops.registry import register

Binary = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _legacy_align(a: np.ndarray, b: np.ndarray, broadcast: int, axis: int | None) -> np.ndarray:
    """Opset < 7 broadcasting: ``b`` matches a contiguous run of ``a``'s dims starting at ``axis``."""
    if not broadcast:
        if a.shape != b.shape:
            raise ShapeInferenceError(f"shapes {a.shape} and {b.shape} differ and broadcast=0")
        return b
    start = a.ndim - b.ndim if axis is None else (axis + a.ndim if axis < 0 else axis)
    if start < 0 or start + b.ndim > a.ndim:
        raise ShapeInferenceError(f"cannot broadcast shape {b.shape} into {a.shape} at axis {axis}")
    return b.reshape(b.shape + (1,) * (a.ndim - start - b.ndim))


def _apply(fn: Binary, a: np.ndarray, b: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
    """``fn(a, b)`` on widened operands (bfloat16... go through float32), as ``dtype`` or ``a``'s."""
    with np.errstate(all="ignore"):
        return as_dtype(fn(widen(a), widen(b)), a.dtype if dtype is None else dtype)


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncating toward zero, as in C (numpy's ``//`` floors)."""
    q = np.floor_divide(a, b)
    inexact = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return q + inexact.astype(q.dtype)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _int_div(a, b) if a.dtype.kind in "iu" else np.divide(a, b)


def _broadcasting(op_type: str, since: int, fn: Binary, dtype: type | None = None,
                  legacy: bool = False) -> None:
    """Register ``op_type`` as ``fn`` with numpy broadcasting, output ``dtype`` (default: the
    input's); ``legacy`` also registers the opset-1 form with ``broadcast``/``axis``."""

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _apply(fn, a, b, dtype)

    def kernel_1(a: np.ndarray, b: np.ndarray, *, broadcast: int = 0, axis: int | None = None,
                 consumed_inputs: list | None = None) -> np.ndarray:
        return _apply(fn, a, _legacy_align(a, b, broadcast, axis), dtype)

    kernel.__name__ = op_type.lower()
    kernel_1.__name__ = f"{op_type.lower()}_1"
    register(op_type, since=since)(kernel)
    if legacy:
        register(op_type, since=1)(kernel_1)


for _name, _fn in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", _divide),
                   ("And", np.logical_and), ("Or", np.logical_or), ("Xor", np.logical_xor)):
    _broadcasting(_name, 7, _fn, legacy=True)
for _name, _fn in (("BitwiseAnd", np.bitwise_and), ("BitwiseOr", np.bitwise_or),
                   ("BitwiseXor", np.bitwise_xor)):
    _broadcasting(_name, 18, _fn)
for _name, _fn in (("Equal", np.equal), ("Greater", np.greater), ("Less", np.less)):
    _broadcasting(_name, 7, _fn, np.bool_, legacy=True)
for _name, _fn in (("GreaterOrEqual", np.greater_equal), ("LessOrEqual", np.less_equal)):
    _broadcasting(_name, 12, _fn, np.bool_)


@register("Pow", since=7)
def pow_(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x ** y`` in the type of ``x`` (``y`` may have another numeric type)."""
    if x.dtype.kind in "iu" and y.dtype.kind in "iu" and (y < 0).any():
        raise KernelError("Pow: integer base with a negative integer exponent")
    base = x.astype(np.float64) if x.dtype.kind in "iu" and y.dtype.kind not in "iu" else x
    return _apply(np.power, base, y, x.dtype)


@register("Pow", since=1)
def pow_1(x: np.ndarray, y: np.ndarray, *, broadcast: int = 0, axis: int | None = None) -> np.ndarray:
    return pow_(x, _legacy_align(x, y, broadcast, axis))


@register("Mod", since=10)
def mod(a: np.ndarray, b: np.ndarray, *, fmod: int = 0) -> np.ndarray:
    """``fmod=0``: remainder with the sign of ``b`` (Python ``%``); ``fmod=1``: C ``fmod``."""
    if fmod not in (0, 1):
        raise KernelError(f"Mod: fmod must be 0 or 1, got {fmod}")
    return _apply(np.fmod if fmod else np.mod, a, b)


@register("BitShift", since=11)
def bit_shift(x: np.ndarray, y: np.ndarray, *, direction: str) -> np.ndarray:
    """Shift by ``y`` bits; shifts outside [0, bits) leave only the sign fill (0 or -1)."""
    if direction not in ("LEFT", "RIGHT"):
        raise KernelError(f"BitShift: direction must be 'LEFT' or 'RIGHT', got {direction!r}")
    bits = x.dtype.itemsize * 8
    valid = (y >= 0) & (y < bits)
    amount = np.where(valid, y, 0).astype(x.dtype)
    shifted = np.left_shift(x, amount) if direction == "LEFT" else np.right_shift(x, amount)
    sign_fill = np.where((x < 0) & (direction == "RIGHT"), -1, 0).astype(x.dtype)
    return as_dtype(np.where(valid, shifted, sign_fill), x.dtype)


@register("Not", since=1)
def not_(x: np.ndarray) -> np.ndarray:
    return as_dtype(np.logical_not(x), np.bool_)


@register("BitwiseNot", since=18)
def bitwise_not(x: np.ndarray) -> np.ndarray:
    return as_dtype(np.invert(x), x.dtype)


def _fold(op_type: str, inputs: tuple[np.ndarray, ...], fn: Binary) -> np.ndarray:
    """``fn`` applied left to right over all inputs (broadcasting), in the first input's dtype."""
    if not inputs:
        raise KernelError(f"{op_type} needs at least one input")
    return as_dtype(functools.reduce(functools.partial(_apply, fn), inputs), inputs[0].dtype)


@register("Max", since=6)
def max_(*inputs: np.ndarray) -> np.ndarray:
    return _fold("Max", inputs, np.maximum)


@register("Min", since=6)
def min_(*inputs: np.ndarray) -> np.ndarray:
    return _fold("Min", inputs, np.minimum)


@register("Sum", since=6)
def sum_(*inputs: np.ndarray) -> np.ndarray:
    return _fold("Sum", inputs, np.add)


@register("Mean", since=6)
def mean(*inputs: np.ndarray) -> np.ndarray:
    total = _fold("Mean", inputs, np.add)
    if not is_float(total.dtype):
        raise KernelError(f"Mean: inputs must be floating point, got {total.dtype}")
    return as_dtype(widen(total) / widen(total).dtype.type(len(inputs)), total.dtype)


@register("Where", since=9)
def where(condition: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return as_dtype(np.where(condition, x, y), x.dtype)
