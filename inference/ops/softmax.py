"""Softmax, LogSoftmax, Hardmax; before opset 13 they act on the input flattened to 2-D at axis."""
from __future__ import annotations

from typing import Callable

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _hardmax(x: np.ndarray, axis: int) -> np.ndarray:
    """One-hot of the first maximum along ``axis``."""
    first = np.expand_dims(x.argmax(axis=axis), axis)
    y = np.zeros_like(x)
    np.put_along_axis(y, first, 1, axis=axis)
    return y


def _check_axis(x: np.ndarray, axis: int, op: str) -> int:
    rank = max(x.ndim, 1)
    if not -rank <= axis < rank:
        raise KernelError(f"{op}: axis {axis} out of range for input of rank {x.ndim}")
    return axis % rank


def _on_axis(fn: Callable[[np.ndarray, int], np.ndarray], x: np.ndarray, axis: int, op: str) -> np.ndarray:
    """Opset >= 13: normalise along one axis."""
    return np.asarray(fn(x, _check_axis(x, axis, op))).astype(x.dtype, copy=False)


def _on_flattened(fn: Callable[[np.ndarray, int], np.ndarray], x: np.ndarray, axis: int, op: str) -> np.ndarray:
    """Opset < 13: view x as 2-D (prod(shape[:axis]), prod(shape[axis:])) and normalise rows."""
    axis = _check_axis(x, axis, op) if x.ndim else 0
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    y = fn(x.reshape(rows, -1), 1)
    return np.asarray(y).reshape(x.shape).astype(x.dtype, copy=False)


def _register_family(op: str, fn: Callable[[np.ndarray, int], np.ndarray]) -> None:
    """Register ``op`` twice: flattening semantics (opset 1) and single-axis semantics (opset 13)."""

    def flattened(x, *, axis=1):
        return _on_flattened(fn, x, axis, op)

    def single_axis(x, *, axis=-1):
        return _on_axis(fn, x, axis, op)

    flattened.__qualname__ = flattened.__name__ = f"{op}_flattened"
    single_axis.__qualname__ = single_axis.__name__ = op
    register(op, since=1)(flattened)
    register(op, since=13)(single_axis)


_register_family("Softmax", _softmax)
_register_family("LogSoftmax", log_softmax)
_register_family("Hardmax", _hardmax)
