"""Plan-time predicates the fast kernels share (``applies=`` of ``inference.ops.registry.register``)."""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Node, TensorType
from inference.kernels._prepack import constant_weight


def input_of_type(node: Node, graph: Graph, elems: tuple[int, ...]) -> bool:
    """The node's first input has one of the ONNX element types ``elems``, or its type is only
    known at run time (checked again there)."""
    t = graph.type_of(node.inputs[0])
    return not isinstance(t, TensorType) or t.elem_type in elems


def float32_input(node: Node, graph: Graph) -> bool:
    """The node's first input is float32, or its type is only known at run time (checked again there)."""
    return input_of_type(node, graph, (1,))


def constant_float32_weight(node: Node, graph: Graph, rank: int) -> np.ndarray | None:
    """Input 1 of ``node`` when it is a float32 initializer of ``rank`` that no feed overrides (a
    weight a kernel may prepack and keep), else None."""
    if len(node.inputs) < 2:
        return None
    w = constant_weight(graph, node.inputs[1])
    return w if w is not None and w.dtype == np.float32 and w.ndim == rank else None
