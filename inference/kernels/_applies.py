"""Plan-time predicates the fast kernels share (``applies=`` of ``inference.ops.registry.register``)."""
from __future__ import annotations

from inference.ir import Graph, Node, TensorType


def float32_input(node: Node, graph: Graph) -> bool:
    """The node's first input is float32, or its type is only known at run time (checked again there)."""
    t = graph.type_of(node.inputs[0])
    return not isinstance(t, TensorType) or t.elem_type == 1
