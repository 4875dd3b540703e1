"""Gradient rules, tinygrad-style: a table from (domain, op type) to a rule emitting IR.

A rule receives a :class:`GradBuilder`, the forward node, and the names of the gradients of
the node's outputs (``None`` where an output does not reach the loss). It returns one entry per
node input: the name of that input's gradient, or ``None`` (not differentiable, or not needed:
``builder.needs(name)`` says whether an input lies on a path to a parameter being trained).

Rules only *emit nodes*; they never compute. Backward-only kernels (ConvGrad..., MaxPoolGrad...)
are ordinary ops of the ``edgelearn.grad`` domain, registered in ``inference.ops.registry`` with
a schema (``inference.schema.register_schema``) so the session plans and runs them like any op.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np

from inference.ir import Node, TensorType

GRAD_DOMAIN = "edgelearn.grad"


class GradBuilder(Protocol):
    """What a rule may use to emit the backward graph (implemented by training.autograd)."""

    def op(self, op_type: str, *inputs: str | None, domain: str = "", outputs: int = 1,
           **attrs: Any) -> Any:
        """Append a node; return its output name (or list of names when outputs > 1)."""

    def const(self, value: Any, dtype: Any = None) -> str:
        """A constant initializer (scalars become 0-d arrays of ``dtype``)."""

    def type_of(self, name: str) -> TensorType | None:
        """The static type of a forward value (shape may hold symbolic dims)."""

    def needs(self, name: str) -> bool:
        """Whether a gradient for this forward value is needed at all."""

    def reduce_to_shape_of(self, grad: str, like: str) -> str:
        """Sum ``grad`` over the axes broadcasting added, so it gets the shape of ``like``."""

    def opset(self, domain: str = "") -> int:
        """The model's opset for a domain (rules emit ops valid at that opset)."""


Rule = Callable[[GradBuilder, Node, Sequence[str | None]], Sequence[str | None]]

_RULES: dict[tuple[str, str], Rule] = {}


def grad_rule(op_type: str, domain: str = "") -> Callable[[Rule], Rule]:
    """Register the gradient rule of ``domain::op_type``."""

    def deco(fn: Rule) -> Rule:
        key = (domain, op_type)
        if key in _RULES:
            raise ValueError(f"gradient rule for {domain or 'ai.onnx'}::{op_type} registered twice")
        _RULES[key] = fn
        return fn

    return deco


def get_rule(op_type: str, domain: str = "") -> Rule | None:
    return _RULES.get(("" if domain == "ai.onnx" else domain, op_type))


def registered_rules() -> list[tuple[str, str]]:
    return sorted(_RULES)


def scalar(value: float, like_dtype: np.dtype) -> np.ndarray:
    """A 0-d array of the forward dtype, for constants inside rules."""
    return np.asarray(value, dtype=like_dtype)
