"""Build IR models in code: inputs, constants, ops, outputs, with names made for you."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from onnx import helper

from inference.ir import Dim, Graph, Model, Node, TensorType, Value


class GraphBuilder:
    """A small fluent builder; each ``op`` call appends a node and returns its output name(s)."""

    def __init__(self, name: str = "graph", opset: int = 17):
        self.graph = Graph(name=name)
        self.opset = opset
        self._counter = 0

    def _fresh(self, base: str) -> str:
        self._counter += 1
        return f"{base}_{self._counter}"

    def input(self, name: str, dtype: Any, shape: Sequence[Dim]) -> str:
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.graph.inputs.append(Value(name, TensorType(elem, tuple(shape))))
        return name

    def const(self, array: Any, name: str | None = None) -> str:
        name = name or self._fresh("const")
        self.graph.initializers[name] = np.asarray(array)
        return name

    def op(self, op_type: str, *inputs: str | None, outputs: int | Sequence[str] = 1, domain: str = "",
           name: str | None = None, **attrs: Any) -> Any:
        outs = [self._fresh(op_type.lower()) for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.graph.nodes.append(Node(op_type, [i or "" for i in inputs], outs, attrs, domain,
                                     name or self._fresh(op_type)))
        return outs[0] if len(outs) == 1 else outs

    def output(self, name: str, dtype: Any = None, shape: Sequence[Dim] | None = None, rename: str | None = None) -> str:
        if rename:
            name = self.op("Identity", name, outputs=[rename])
        t = None if dtype is None else TensorType(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                                   None if shape is None else tuple(shape))
        self.graph.outputs.append(Value(name, t))
        return name

    def build(self, **model_fields: Any) -> Model:
        self.graph.toposort()
        return Model(graph=self.graph, opset_imports={"": self.opset}, **model_fields)
