"""Op schemas: inputs, outputs, attributes with defaults, and a shape rule.

Standard ONNX ops take their schema from ``onnx.defs`` (the specification itself); ops of our own
domains (fused kernels, training ops) register an :class:`OpSchema` here with a shape rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import onnx
import onnx.defs

from inference.attributes import attr_to_python
from inference.errors import UnsupportedOpError

# (node, input types) -> output types; types are inference.ir value types (or None if unknown)
ShapeRule = Callable[..., list]


@dataclass(frozen=True)
class FormalParam:
    name: str
    optional: bool = False
    variadic: bool = False


@dataclass(frozen=True)
class OpSchema:
    op_type: str
    domain: str
    since: int
    inputs: tuple[FormalParam, ...]
    outputs: tuple[FormalParam, ...]
    attributes: dict[str, Any] = field(default_factory=dict)  # name -> default (None: required/no default)
    shape_rule: ShapeRule | None = None  # our own ops only; standard ops use onnx's inference

    @property
    def is_standard(self) -> bool:
        return self.shape_rule is None


_CUSTOM: dict[tuple[str, str], list[OpSchema]] = {}


def register_schema(schema: OpSchema) -> OpSchema:
    """Declare an op of one of our own domains (fused ops, training ops)."""
    _CUSTOM.setdefault((schema.domain, schema.op_type), []).append(schema)
    _CUSTOM[(schema.domain, schema.op_type)].sort(key=lambda s: s.since)
    return schema


def get_schema(op_type: str, domain: str = "", opset: int = 10**6) -> OpSchema:
    """The schema of ``domain::op_type`` in force at ``opset``."""
    custom = [s for s in _CUSTOM.get((domain, op_type), []) if s.since <= opset]
    if custom:
        return custom[-1]
    try:
        s = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        raise UnsupportedOpError(op_type, domain, opset, detail="no schema known for this op") from None
    return OpSchema(
        op_type=op_type, domain=domain, since=s.since_version,
        inputs=tuple(_formal(p) for p in s.inputs), outputs=tuple(_formal(p) for p in s.outputs),
        attributes={name: (attr_to_python(a.default_value) if a.default_value.type else None)
                    for name, a in s.attributes.items()})


def _formal(p: Any) -> FormalParam:
    opt = onnx.defs.OpSchema.FormalParameterOption
    return FormalParam(p.name, p.option == opt.Optional, p.option == opt.Variadic)
