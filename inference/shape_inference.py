"""Shape and type inference over the IR, node by node in plan order.

Standard ops use onnx's own per-node inference (``onnx.shape_inference.infer_node_outputs``),
fed with the values of small constant inputs so shape-computing chains (Shape -> Gather ->
Reshape) resolve; ops of our own domains use the shape rule of their schema. Symbolic dims
(a dynamic batch) flow through as names.
"""
from __future__ import annotations

import onnx
import onnx.defs
from onnx import numpy_helper, shape_inference

from inference.errors import ShapeInferenceError, UnsupportedOpError
from inference.ir import Graph, Model, TensorType, Value
from inference.onnx_export import node_to_proto, type_to_proto
from inference.onnx_import import type_from_proto
from inference.schema import get_schema

_CONST_LIMIT = 1024  # elements: constant inputs up to this size are handed to onnx for propagation


def infer_shapes(model: Model, strict: bool = False) -> Model:
    """Fill ``graph.value_info`` with every intermediate's type; returns the same model."""
    g = model.graph
    types = {v.name: v.type for v in g.inputs if v.type is not None}
    for name in g.initializers:
        types.setdefault(name, g.type_of(name))
    for node in g.nodes:
        try:
            out = infer_node_types(model, g, node, types)
        except ShapeInferenceError:
            if strict:
                raise
            out = {}
        for name, t in out.items():
            if t is not None:
                types[name] = t
                if name not in g.output_names:
                    g.value_info[name] = Value(name, t)
    for v in g.outputs:
        if v.type is None and types.get(v.name) is not None:
            v.type = types[v.name]
    return model


def infer_node_types(model: Model, g: Graph, node, known: dict | None = None) -> dict:
    """Output types of one node from its inputs' types (taken from ``known``, else from ``g``)."""
    lookup = known.get if known is not None else g.type_of
    in_types = {i: t for i in node.inputs if i and (t := lookup(i)) is not None}
    opsets = [onnx.helper.make_opsetid(d, v) for d, v in model.opset_imports.items()]
    return _infer_node(model, g, node, in_types, opsets)


def _infer_node(model: Model, g: Graph, node, in_types: dict, opsets) -> dict:
    try:
        schema = get_schema(node.op_type, node.domain, model.opset_imports.get(node.domain, 1))
    except UnsupportedOpError:
        return {}  # unknown op: the session names it (with its node) when it plans the graph
    if schema.shape_rule is not None:
        outs = schema.shape_rule(node, [in_types.get(i) for i in node.inputs])
        return dict(zip(node.outputs, outs))
    if node.has_subgraphs():
        return {}  # onnx's per-node API cannot see the subgraph's outer scope; left to run time
    onnx_schema = onnx.defs.get_schema(node.op_type, model.opset_imports.get(node.domain, 1), node.domain)
    data = {i: numpy_helper.from_array(g.initializers[i], i) for i in node.inputs
            if i in g.initializers and g.initializers[i].size <= _CONST_LIMIT}
    try:
        result = shape_inference.infer_node_outputs(
            onnx_schema, node_to_proto(node), {k: type_to_proto(t) for k, t in in_types.items()},
            input_data=data, opset_imports=opsets)
    except Exception as e:  # noqa: BLE001 - onnx raises InferenceError and friends
        raise ShapeInferenceError(f"node {node.label()} ({node.op_type}): {e}") from e
    return {name: type_from_proto(tp) for name, tp in result.items()}


def output_types(model: Model) -> dict[str, TensorType]:
    """Name -> type of every value whose type is known after inference."""
    g = model.graph
    names = [v.name for v in g.inputs] + [o for n in g.nodes for o in n.outputs]
    return {n: t for n in names if (t := g.type_of(n)) is not None}
