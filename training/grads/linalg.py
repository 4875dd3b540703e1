"""Gradient rules of Gemm and MatMul (batched, broadcast, 1-D operands).

The 2-D cases become single Gemm nodes with transpose flags (no Transpose node, no copy);
a batched activation times a 2-D weight folds the batch into the rows before one Gemm, so the
weight gradient is one BLAS call rather than a batched product and a reduction.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from inference.ir import Node
from training.grads.registry import GradBuilder, grad_rule
from training.grads.shape import ints, rank_of, reshape_like, unsqueeze

Grads = Sequence[str | None]


@grad_rule("Gemm")
def _gemm(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """Y = alpha * A' B' + beta * C with A' = A or A^T (transA), B' likewise."""
    a, w = node.inputs[:2]
    c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    dy = dys[0]
    alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    scale = {"alpha": alpha} if alpha != 1.0 else {}
    da = dw = dc = None
    if b.needs(a):  # dA' = alpha dY B'^T, then transposed back when transA
        da = (b.op("Gemm", w, dy, transA=tb, transB=1, **scale) if ta
              else b.op("Gemm", dy, w, transB=1 - tb, **scale))
    if b.needs(w):  # dB' = alpha A'^T dY, then transposed back when transB
        dw = (b.op("Gemm", dy, a, transA=1, transB=ta, **scale) if tb
              else b.op("Gemm", a, dy, transA=1 - ta, **scale))
    if c is not None and b.needs(c):
        dyc = dy if beta == 1.0 else b.op("Mul", dy, b.const(np.asarray(beta, b.type_of(c).dtype)))
        dc = b.reduce_to_shape_of(dyc, c)
    return [da, dw] + ([dc] if len(node.inputs) > 2 else [])


def _swap_last(b: GradBuilder, x: str, rank: int) -> str:
    return b.op("Transpose", x, perm=list(range(rank - 2)) + [rank - 1, rank - 2])


@grad_rule("MatMul")
def _matmul(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    a, w = node.inputs
    dy = dys[0]
    ra, rw = rank_of(b, a, node), rank_of(b, w, node)
    if ra == 2 and rw == 2:
        return [b.op("Gemm", dy, w, transB=1) if b.needs(a) else None,
                b.op("Gemm", a, dy, transA=1) if b.needs(w) else None]
    wt = b.type_of(w)
    if rw == 2 and ra > 2 and wt.is_static():  # (..., m, k) @ (k, n): fold the batch into the rows
        k, n = wt.shape
        da = b.op("MatMul", dy, b.op("Transpose", w, perm=[1, 0])) if b.needs(a) else None
        dw = (b.op("Gemm", b.op("Reshape", a, ints(b, [-1, k])), b.op("Reshape", dy, ints(b, [-1, n])), transA=1)
              if b.needs(w) else None)
        return [da, dw]
    # general case: 1-D operands become matrices (and dY gets their unit axes), then broadcast back
    a2 = a if ra > 1 else unsqueeze(b, a, [0])
    w2 = w if rw > 1 else unsqueeze(b, w, [-1])
    dy2 = dy if rw > 1 else unsqueeze(b, dy, [-1])
    dy2 = dy2 if ra > 1 else unsqueeze(b, dy2, [-2])
    da = dw = None
    if b.needs(a):
        da = b.reduce_to_shape_of(b.op("MatMul", dy2, _swap_last(b, w2, max(rw, 2))), a2)
        da = da if ra > 1 else reshape_like(b, da, a)
    if b.needs(w):
        dw = b.reduce_to_shape_of(b.op("MatMul", _swap_last(b, a2, max(ra, 2)), dy2), w2)
        dw = dw if rw > 1 else reshape_like(b, dw, w)
    return [da, dw]
