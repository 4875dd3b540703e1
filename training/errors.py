"""Exception classes of training: each names what is wrong and where (op, node, parameter, file)."""
from __future__ import annotations

from inference.errors import EdgelearnError


class TrainingError(EdgelearnError):
    """Base of the errors raised on purpose by ``training`` (bad loss/wrt names, bad step graphs)."""


class MissingGradientRuleError(TrainingError):
    """A node on the path from the loss to a trained value has no gradient rule."""

    def __init__(self, op_type: str, domain: str, node: str, detail: str = ""):
        dom = domain or "ai.onnx"
        msg = (f"no gradient rule for {dom}::{op_type} (node {node!r}), which lies on the path from the "
               "loss to a trained value; register one with training.grads.grad_rule or freeze the "
               "parameters behind it")
        if detail:
            msg += f": {detail}"
        super().__init__(msg)
        self.op_type, self.domain, self.node = op_type, domain, node


class NotDifferentiableError(TrainingError):
    """A rule exists but cannot differentiate this use of the op (a mode or input it does not cover)."""


class TrainableError(TrainingError):
    """The trainable-parameter selection is empty, matches nothing, or names a non-float tensor."""


class CheckpointError(TrainingError):
    """A checkpoint file is missing, truncated, corrupt, or does not match the model."""
