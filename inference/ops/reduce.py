"""Reduce* ops: one numpy reduction each, sharing axis handling (attribute before opset 13/18, input after).

Each op is registered twice: the attribute form (``axes`` attribute, opset 1..) and the input form
(``axes`` as an optional second input, opset 13 for ReduceSum, 18 for the others). Reductions over
an empty set give the identity of the reduction (0, 1, -inf, +inf), as the schemas require.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register

Reduction = Callable[[np.ndarray, tuple, bool], np.ndarray]  # (data, axes, keepdims) -> result


def _normalize_axes(axes: Sequence[int] | np.ndarray | None, rank: int, op: str) -> tuple[int, ...] | None:
    """Axes as sorted non-negative ints; None when no axis is given (empty list or absent)."""
    if axes is None:
        return None
    axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    if not axes:
        return None
    lim = max(rank, 1)
    for a in axes:
        if not -lim <= a < lim:
            raise KernelError(f"{op}: axis {a} is out of range for a tensor of rank {rank}")
    return tuple(sorted({a % lim for a in axes})) if rank else ()


def _apply(op: str, fn: Reduction, data: np.ndarray, axes, keepdims: int, noop_with_empty_axes: int) -> np.ndarray:
    """Run ``fn`` over the normalized axes, honouring noop_with_empty_axes, in the input dtype."""
    data = np.asarray(data)
    norm = _normalize_axes(axes, data.ndim, op)
    if norm is None:
        if noop_with_empty_axes:
            return data.copy()
        norm = tuple(range(data.ndim))
    out = fn(data, norm, bool(keepdims))
    return np.asarray(out).astype(data.dtype, copy=False)


def _float(x: np.ndarray) -> np.ndarray:
    """Integers and low-precision floats are computed in float64 and cast back afterwards."""
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def _extreme(data: np.ndarray, largest: bool) -> np.generic:
    """The identity of max (smallest value of the dtype) or of min (largest value)."""
    if data.dtype == np.bool_:
        return np.bool_(not largest)
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        return info.min if largest else info.max
    return -np.inf if largest else np.inf


def _max(x, axes, keep):
    return np.max(x, axis=axes, keepdims=keep, initial=_extreme(x, True))


def _min(x, axes, keep):
    return np.min(x, axis=axes, keepdims=keep, initial=_extreme(x, False))


def _sum(x, axes, keep):
    return np.sum(x, axis=axes, keepdims=keep, dtype=x.dtype)


def _mean(x, axes, keep):
    return np.mean(_float(x), axis=axes, keepdims=keep)


def _prod(x, axes, keep):
    return np.prod(x, axis=axes, keepdims=keep, dtype=x.dtype)


def _l1(x, axes, keep):
    return np.sum(np.abs(x), axis=axes, keepdims=keep, dtype=x.dtype)


def _l2(x, axes, keep):
    xf = _float(x)
    return np.sqrt(np.sum(xf * xf, axis=axes, keepdims=keep))


def _sum_square(x, axes, keep):
    return np.sum(x * x, axis=axes, keepdims=keep, dtype=x.dtype)


def _log_sum(x, axes, keep):
    with np.errstate(divide="ignore"):
        return np.log(np.sum(_float(x), axis=axes, keepdims=keep))


def _log_sum_exp(x, axes, keep):
    """Stable log(sum(exp(x))): shift by the max (taken as 0 where it is infinite or the set empty)."""
    xf = _float(x)
    m = np.max(xf, axis=axes, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(xf - m), axis=axes, keepdims=True)) + m
    return out if keep else np.squeeze(out, axis=axes)


_REDUCTIONS: dict[str, tuple[Reduction, int]] = {  # op -> (reduction, opset where axes became an input)
    "ReduceMax": (_max, 18),
    "ReduceMin": (_min, 18),
    "ReduceSum": (_sum, 13),
    "ReduceMean": (_mean, 18),
    "ReduceProd": (_prod, 18),
    "ReduceL1": (_l1, 18),
    "ReduceL2": (_l2, 18),
    "ReduceSumSquare": (_sum_square, 18),
    "ReduceLogSum": (_log_sum, 18),
    "ReduceLogSumExp": (_log_sum_exp, 18),
}


def _make_kernels(op: str, fn: Reduction, input_since: int) -> None:
    """Register the attribute-axes kernel (opset 1) and the input-axes kernel (``input_since``)."""

    def with_axes_attr(data, *, axes=None, keepdims=1):
        return _apply(op, fn, data, axes, keepdims, 0)

    def with_axes_input(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        return _apply(op, fn, data, axes, keepdims, noop_with_empty_axes)

    for kernel, kind in ((with_axes_attr, "attr"), (with_axes_input, "input")):
        kernel.__name__ = kernel.__qualname__ = f"{op.lower()}_axes_{kind}"
        kernel.__doc__ = f"{op} with axes given as an {'attribute' if kind == 'attr' else 'optional input'}."
    register(op, since=1)(with_axes_attr)
    register(op, since=input_since)(with_axes_input)


for _op, (_fn, _since) in _REDUCTIONS.items():
    _make_kernels(_op, _fn, _since)
