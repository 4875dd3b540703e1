"""Fused quadratic-penalty kernels: ``EWCPenalty`` and its gradient in one pass each.

Written with standard ops, ``sum F (w - a)^2`` and its gradient ``2 dy F (w - a)`` cost several
temporaries the size of the parameter per step, and constant folding turns the backward of the
final ReduceSum into a parameter-sized constant array. A device running EWC pays that memory on
every parameter; these loops read the three arrays once and allocate nothing (the forward) or
only the gradient itself (the backward). The sum accumulates in float64.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema
from training.grads.registry import GRAD_DOMAIN
from training.protocols import TRAIN_DOMAIN


def _scalar_like_first(node: Node, types: list) -> list:
    w = types[0] if types else None
    return [None if w is None else TensorType(w.elem_type, ())]


def _like_second(node: Node, types: list) -> list:
    return [types[1] if len(types) > 1 else None]


register_schema(OpSchema("EWCPenalty", TRAIN_DOMAIN, 1, (FormalParam("W"), FormalParam("F"), FormalParam("A")),
                         (FormalParam("penalty"),), {}, _scalar_like_first))
register_schema(OpSchema("EWCPenaltyGrad", GRAD_DOMAIN, 1,
                         (FormalParam("dy"), FormalParam("W"), FormalParam("F"), FormalParam("A")),
                         (FormalParam("dW"),), {}, _like_second))


@njit(cache=True, error_model="numpy")
def _penalty(w, f, a):
    s = 0.0
    for i in range(w.size):
        d = float(w[i]) - float(a[i])
        s += float(f[i]) * d * d
    return s


@njit(cache=True, error_model="numpy")
def _penalty_grad(w, f, a, scale, out):
    for i in range(w.size):
        out[i] = scale * f[i] * (w[i] - a[i])


def _flat3(op: str, w: np.ndarray, f: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, ...]:
    if f.shape != w.shape or a.shape != w.shape:
        raise KernelError(f"{op}: Fisher {list(f.shape)} and anchor {list(a.shape)} must have the parameter's "
                          f"shape {list(w.shape)}")
    return tuple(np.ascontiguousarray(v, dtype=w.dtype).reshape(-1) for v in (w, f, a))


@register("EWCPenalty", since=1, domain=TRAIN_DOMAIN)
def ewc_penalty(w: np.ndarray, f: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``sum F (W - A)^2`` as a scalar of ``W``'s dtype."""
    return np.asarray(_penalty(*_flat3("EWCPenalty", w, f, a)), dtype=w.dtype)


@register("EWCPenaltyGrad", since=1, domain=GRAD_DOMAIN)
def ewc_penalty_grad(dy: np.ndarray, w: np.ndarray, f: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``2 dy F (W - A)``: the gradient of ``dy * EWCPenalty(W, F, A)`` with respect to ``W``."""
    if np.size(dy) != 1:
        raise KernelError(f"EWCPenaltyGrad: the incoming gradient must be a scalar, got shape {list(np.shape(dy))}")
    out = np.empty(w.shape, w.dtype)
    _penalty_grad(*_flat3("EWCPenaltyGrad", w, f, a), w.dtype.type(2.0 * float(np.asarray(dy).reshape(()))),
                  out.reshape(-1))
    return out
