"""Gradient rules of Softmax and LogSoftmax, written in terms of the output y.

Before opset 13 both ops normalize over all axes from ``axis`` on (the input is coerced to 2-D),
from opset 13 over the single ``axis``; the rules reduce over the same axes.
"""
from __future__ import annotations

from typing import Sequence

from inference.ir import Node
from training.grads.registry import GradBuilder, grad_rule
from training.grads.shape import rank_of, reduce_sum

Grads = Sequence[str | None]


def _axes(b: GradBuilder, node: Node) -> list[int]:
    if b.opset() >= 13:
        return [int(node.attrs.get("axis", -1))]
    rank = rank_of(b, node.inputs[0], node)
    return list(range(int(node.attrs.get("axis", 1)) % rank, rank))


@grad_rule("Softmax")
def _softmax(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """dx = y * (dy - sum(dy * y))."""
    y, dy = node.outputs[0], dys[0]
    dot = reduce_sum(b, b.op("Mul", dy, y), _axes(b, node), keepdims=1)
    return [b.op("Mul", y, b.op("Sub", dy, dot))]


@grad_rule("LogSoftmax")
def _log_softmax(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """dx = dy - exp(y) * sum(dy)."""
    y, dy = node.outputs[0], dys[0]
    total = reduce_sum(b, dy, _axes(b, node), keepdims=1)
    return [b.op("Sub", dy, b.op("Mul", b.op("Exp", y), total))]
