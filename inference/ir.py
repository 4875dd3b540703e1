"""The intermediate representation: a small, mutable mirror of an ONNX model.

Passes, autograd and the session all work on these types; ONNX protobufs appear only at the
edges (``inference.onnx_import`` / ``inference.onnx_export``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Union

import numpy as np
from onnx import TensorProto, helper

from inference.errors import InvalidModelError

Dim = Union[int, str, None]  # a fixed size, a symbolic name, or unknown


@dataclass(frozen=True)
class TensorType:
    """Element type (an ONNX ``TensorProto.DataType``) and a shape; ``shape=None`` means unknown rank."""

    elem_type: int
    shape: tuple[Dim, ...] | None = None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.elem_type))

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        name = TensorProto.DataType.Name(self.elem_type).lower()
        dims = "?" if self.shape is None else ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{name}[{dims}]"


@dataclass(frozen=True)
class SequenceType:
    elem: "ValueType | None"

    def __str__(self) -> str:
        return f"seq({self.elem})"


@dataclass(frozen=True)
class OptionalType:
    elem: "ValueType | None"

    def __str__(self) -> str:
        return f"optional({self.elem})"


ValueType = Union[TensorType, SequenceType, OptionalType]


@dataclass
class Value:
    """A named value of the graph (input, output or intermediate) with its type when known."""

    name: str
    type: ValueType | None = None
    doc: str = ""


@dataclass
class Node:
    """One op application. ``inputs`` may hold "" for an omitted optional input."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    name: str = ""
    attr_types: dict[str, int] = field(default_factory=dict)  # AttributeProto types, for export
    doc: str = ""

    def subgraphs(self) -> Iterator["Graph"]:
        for v in self.attrs.values():
            if isinstance(v, Graph):
                yield v
            elif isinstance(v, list):
                yield from (g for g in v if isinstance(g, Graph))

    def has_subgraphs(self) -> bool:
        """Whether this node carries a graph (If, Loop, Scan): control flow, run outside any plan."""
        return any(True for _ in self.subgraphs())

    def input_at(self, i: int) -> str:
        """The name of input ``i``, "" when it is omitted or past the inputs given."""
        return self.inputs[i] if len(self.inputs) > i else ""

    def label(self) -> str:
        """How errors name this node: its name if it has one, else op type and first output."""
        return self.name or f"{self.op_type}->{self.outputs[0] if self.outputs else '?'}"


@dataclass
class Graph:
    """Nodes in topological order, graph inputs/outputs, initializers (name -> ndarray), value infos."""

    nodes: list[Node] = field(default_factory=list)
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    value_info: dict[str, Value] = field(default_factory=dict)
    name: str = "graph"
    doc: str = ""

    # -- queries ---------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.outputs]

    def feed_inputs(self) -> list[Value]:
        """Graph inputs a caller must (or may) feed: those not backed by an initializer."""
        return [v for v in self.inputs if v.name not in self.initializers]

    def type_of(self, name: str) -> ValueType | None:
        for v in self.inputs + self.outputs:
            if v.name == name and v.type is not None:
                return v.type
        vi = self.value_info.get(name)
        if vi is not None and vi.type is not None:
            return vi.type
        if name in self.initializers:
            arr = self.initializers[name]
            return TensorType(helper.np_dtype_to_tensor_dtype(arr.dtype), tuple(arr.shape))
        return None

    def concrete_shape(self, name: str, batch: int = 1) -> tuple[int, ...] | None:
        """The static shape of tensor ``name`` with every symbolic or unknown dim taken as ``batch``."""
        t = self.type_of(name)
        if not isinstance(t, TensorType) or t.shape is None:
            return None
        return tuple(d if isinstance(d, int) else batch for d in t.shape)

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in set(n.inputs) | outer_names(n):
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            key = f"{n.domain}::{n.op_type}" if n.domain else n.op_type
            hist[key] = hist.get(key, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def parameter_count(self) -> int:
        return int(sum(a.size for a in self.initializers.values()))

    # -- checks ----------------------------------------------------------------------------
    def toposort(self, outer: set[str] | frozenset[str] = frozenset()) -> None:
        """Order nodes so every input is produced before use; raise on cycles or dangling names."""
        available = set(self.input_names) | set(self.initializers) | set(outer) | {""}
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            progressed, rest = False, []
            for n in pending:
                if all(i in available for i in n.inputs) and outer_names(n) <= available | _all_outputs(pending):
                    ordered.append(n)
                    available.update(n.outputs)
                    progressed = True
                else:
                    rest.append(n)
            if not progressed:
                n = rest[0]
                missing = [i for i in n.inputs if i not in available]
                raise InvalidModelError(
                    f"graph {self.name!r}: node {n.label()} ({n.op_type}) reads {missing}, which no "
                    "graph input, initializer or earlier node provides (or the graph has a cycle)")
            pending = rest
        self.nodes = ordered


def _all_outputs(nodes: list[Node]) -> set[str]:
    return {o for n in nodes for o in n.outputs}


def outer_names(node: Node) -> set[str]:
    """Names a node's subgraphs read from the enclosing scopes (implicit inputs)."""
    names: set[str] = set()
    for g in node.subgraphs():
        local = set(g.input_names) | set(g.initializers) | {o for n in g.nodes for o in n.outputs}
        for n in g.nodes:
            names.update(i for i in n.inputs if i and i not in local)
            names.update(i for i in outer_names(n) if i not in local)
        names.update(o for o in g.output_names if o not in local)
    return names


@dataclass
class Model:
    """A graph plus what ONNX keeps around it: opsets, model-local functions, metadata."""

    graph: Graph
    opset_imports: dict[str, int] = field(default_factory=lambda: {"": 17})
    ir_version: int = 8
    producer_name: str = "edgelearn"
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    functions: list[Any] = field(default_factory=list)  # onnx.FunctionProto kept for export

    def opset(self, domain: str = "") -> int:
        d = "" if domain == "ai.onnx" else domain
        if d not in self.opset_imports:
            raise InvalidModelError(f"model uses domain {domain or 'ai.onnx'!r} but imports no opset for it")
        return self.opset_imports[d]
