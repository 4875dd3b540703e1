"""The contracts between the pieces of a training step, so each can be written on its own.

A training step is one IR graph: forward -> loss -> backward -> optimizer update, run by the
inference session. ``training.graph.build_training_graph`` assembles it; it asks a :class:`Loss`
to emit the loss and an :class:`Optimizer` to emit the update of each trainable parameter,
both through a :class:`StepBuilder`.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from inference.ir import TensorType

TRAIN_DOMAIN = "edgelearn.train"  # optimizer update ops and other training-only ops


class StepBuilder(Protocol):
    """Emits nodes into the training-step graph."""

    def op(self, op_type: str, *inputs: str | None, domain: str = "", outputs: int = 1, **attrs: Any) -> Any:
        """Append a node; return its output name (a list of names when outputs > 1)."""

    def const(self, value: Any, dtype: Any = None) -> str:
        """A constant initializer."""

    def type_of(self, name: str) -> TensorType | None:
        """Static type of a value of the graph."""

    def input(self, name: str, dtype: Any, shape: tuple) -> str:
        """A graph input fed every step (targets, sample weights, the learning rate...)."""

    def state(self, name: str, init: np.ndarray) -> str:
        """A persistent buffer (momentum, Adam moments, step count, BN running stats) that update
        kernels modify in place; it is saved in checkpoints with the parameters."""


class Loss(Protocol):
    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        """Emit the loss of ``prediction`` against the ``target`` input; return the scalar's name."""


class Optimizer(Protocol):
    def emit_update(self, b: StepBuilder, param: str, grad: str, lr: str) -> None:
        """Emit the in-place update of one parameter given its gradient and the learning-rate input."""
