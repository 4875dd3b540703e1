"""Exception classes of the runtime: every failure a user can cause names what is wrong."""
from __future__ import annotations


class EdgelearnError(Exception):
    """Base of every error the runtime raises on purpose."""


class ModelLoadError(EdgelearnError):
    """The model file or bytes cannot be read or parsed (missing, truncated, corrupt)."""


class InvalidModelError(EdgelearnError):
    """The model parses but is not a valid graph (dangling names, cycles, bad attributes)."""


class UnsupportedOpError(EdgelearnError):
    """No kernel exists for an op at the model's opset."""

    def __init__(self, op_type: str, domain: str, opset: int, node: str = "", detail: str = ""):
        dom = domain or "ai.onnx"
        where = f" (node {node!r})" if node else ""
        msg = f"unsupported op {dom}::{op_type} at opset {opset}{where}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)
        self.op_type, self.domain, self.opset, self.node = op_type, domain, opset, node


class InputError(EdgelearnError):
    """A feed is missing, unknown, or has the wrong dtype or shape."""


class ShapeInferenceError(EdgelearnError):
    """Shapes or types of a node cannot be inferred from its inputs."""


class KernelError(EdgelearnError):
    """A kernel failed while running a node; the message names the node and its inputs."""


class ConfigError(EdgelearnError):
    """A Config option is invalid or asks for something unavailable (e.g. a device)."""
