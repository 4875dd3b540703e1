"""Gradient rules of the fused penalty ops (``training.kernels.penalties``)."""
from __future__ import annotations

from typing import Sequence

import training.kernels.penalties  # noqa: F401 - registers EWCPenalty / EWCPenaltyGrad
from inference.ir import Node
from training.grads.registry import GRAD_DOMAIN, GradBuilder, grad_rule
from training.protocols import TRAIN_DOMAIN

Grads = Sequence[str | None]


@grad_rule("EWCPenalty", domain=TRAIN_DOMAIN)
def _ewc_penalty(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """Only the parameter gets a gradient: the Fisher and the anchor are state, never trained."""
    w, f, a = node.inputs
    return [b.op("EWCPenaltyGrad", dys[0], w, f, a, domain=GRAD_DOMAIN) if b.needs(w) else None, None, None]
