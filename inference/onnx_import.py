"""ONNX -> IR: read a model file, bytes or ModelProto into :class:`inference.ir.Model`.

Model-local functions and standard ops we have no kernel for but which ONNX defines as a
function of other ops are inlined here, so the runtime only ever sees ops with kernels.
"""
from __future__ import annotations

import math
import os
from typing import Union

import numpy as np
import onnx
from google.protobuf.message import DecodeError
import onnx.inliner
from onnx import helper, numpy_helper, shape_inference

from inference import ops as _ops  # noqa: F401  (kernels must be registered before expansion)
from inference.attributes import attr_to_python, sparse_to_dense
from inference.errors import EdgelearnError, InvalidModelError, ModelLoadError
from inference.ir import Graph, Model, Node, OptionalType, SequenceType, TensorType, Value, ValueType
from inference.ops.registry import lookup

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto, Model]
_EXPAND_DOMAIN = "edgelearn.expand"


def load_proto(source: ModelSource) -> onnx.ModelProto:
    """Parse a path, bytes or ModelProto into a ModelProto with external data resolved."""
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(source))
        except (DecodeError, RuntimeWarning, ValueError) as e:
            raise ModelLoadError(f"model bytes ({len(source)} bytes) are not a valid ONNX model: {e}") from e
        _check_parsed(proto, "<bytes>")
        return proto
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ModelLoadError(f"model file {path!r} does not exist")
    try:
        proto = onnx.load(path, load_external_data=True)
    except (DecodeError, ValueError, OSError, RuntimeWarning) as e:
        raise ModelLoadError(f"cannot read ONNX model {path!r}: {type(e).__name__}: {e}") from e
    except Exception as e:  # protobuf/onnx raise a variety of types on garbage input
        raise ModelLoadError(f"cannot read ONNX model {path!r}: {type(e).__name__}: {e}") from e
    _check_parsed(proto, path)
    return proto


def _check_parsed(proto: onnx.ModelProto, where: str) -> None:
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise ModelLoadError(f"{where}: parsed, but holds no graph (empty, truncated or not an ONNX model)")
    if not proto.opset_import:
        raise ModelLoadError(f"{where}: model declares no opset_import")


def load_model(source: ModelSource) -> Model:
    """Import a model into the IR, with functions inlined and shapes inferred."""
    if isinstance(source, Model):
        return source
    proto = load_proto(source)
    try:
        proto = expand_functions(proto)
    except Exception as e:  # noqa: BLE001 - onnx raises many types on malformed protos
        raise InvalidModelError(f"cannot inline functions of the model: {type(e).__name__}: {e}") from e
    try:
        proto = with_inferred_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is a bonus; the session re-checks at run time
        pass
    try:
        model = model_from_proto(proto)
    except EdgelearnError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed fields surface as assorted errors
        raise InvalidModelError(f"model cannot be imported: {type(e).__name__}: {e}") from e
    from inference.passes.qlinear_to_qdq import expand_contrib_ops

    expand_contrib_ops(model)  # onnxruntime's quantized ops run in the QDQ form they mean
    return model


SHAPE_DATA_LIMIT = 1024  # elements: initializers this small keep their values for onnx's shape inference


def with_inferred_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with onnx's inferred value types, run on a copy whose large initializers are typed
    graph inputs instead. Why: onnx serializes the whole model, weights included, to infer shapes
    in C++ and parses the result back, 70 ms of MobileNetV2's 0.15 s load; its shape rules only
    read the values of small tensors (shapes, axes, pads), which stay."""
    g = proto.graph
    small, large = [], []
    for t in g.initializer:
        (large if math.prod(t.dims) > SHAPE_DATA_LIMIT else small).append(t)
    if not large:
        return shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    light = onnx.ModelProto(ir_version=proto.ir_version)
    light.opset_import.extend(proto.opset_import)
    light.functions.extend(proto.functions)
    lg = light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    lg.sparse_initializer.extend(g.sparse_initializer)
    lg.initializer.extend(small)
    listed = {v.name for v in g.input}
    lg.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in large
                    if t.name not in listed)
    inferred = shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    del inferred.graph.input[len(g.input):]
    inferred.graph.initializer.extend(large)
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(inferred, field, getattr(proto, field))
    inferred.metadata_props.extend(proto.metadata_props)
    return inferred


def model_from_proto(proto: onnx.ModelProto) -> Model:
    opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in proto.opset_import}
    graph = graph_from_proto(proto.graph)
    if proto.ir_version < 4:
        # Before IR 4 every initializer also had to be listed as a graph input; such models
        # mean them as constants (as onnxruntime treats them), not as inputs to feed.
        graph.inputs = [v for v in graph.inputs if v.name not in graph.initializers]
    graph.toposort()
    _check_io_types(graph)
    _check_nodes(graph, opsets)
    return Model(
        graph=graph, opset_imports=opsets, ir_version=int(proto.ir_version),
        producer_name=proto.producer_name, producer_version=proto.producer_version,
        domain=proto.domain, model_version=int(proto.model_version), doc=proto.doc_string,
        metadata={p.key: p.value for p in proto.metadata_props}, functions=list(proto.functions))


_TENSOR_TYPES = frozenset(helper.get_all_tensor_dtypes())


def _check_io_types(graph: Graph) -> None:
    """The graph's inputs and outputs declare element types ONNX defines (feeds are checked
    against them); an intermediate's undefined type is only forgotten."""
    for v in graph.inputs + graph.outputs:
        if isinstance(v.type, TensorType) and v.type.elem_type not in _TENSOR_TYPES:
            raise InvalidModelError(f"graph {graph.name!r}: {v.name!r} declares element type {v.type.elem_type}, "
                                    "which ONNX does not define")
    for name, v in list(graph.value_info.items()):
        if isinstance(v.type, TensorType) and v.type.elem_type not in _TENSOR_TYPES:
            v.type = None


def _check_nodes(graph: Graph, opsets: dict[str, int]) -> None:
    """Every standard node has as many inputs and outputs as its op takes at the model's opset, and
    its attributes the types the op declares, subgraphs included. Why: a node short of a required
    input had failed deep in planning (an IndexError from the kernel chooser), an INT attribute
    stored as a string in a pass (a ValueError), instead of saying which node is malformed."""
    for n in graph.nodes:
        for sub in n.subgraphs():
            _check_nodes(sub, opsets)
        if n.domain != "" or "" not in opsets:
            continue
        try:
            s = onnx.defs.get_schema(n.op_type, opsets[""], "")
        except onnx.defs.SchemaError:
            continue  # an unknown op: the session names it (UnsupportedOpError)
        where = f"graph {graph.name!r}: node {n.label()} ({n.op_type}, opset {opsets['']})"
        for what, have, low, high in (("inputs", len(n.inputs), s.min_input, s.max_input),
                                      ("outputs", len(n.outputs), s.min_output, s.max_output)):
            if not low <= have <= high:
                takes = f"{low}" if low == high else f"{low} to {high if high < 2**31 - 1 else 'any number'}"
                raise InvalidModelError(f"{where} has {have} {what}; the op takes {takes}")
        for name, kind in n.attr_types.items():
            declared = s.attributes.get(name)
            if declared is not None and int(declared.type) != kind:
                raise InvalidModelError(f"{where}: attribute {name!r} is {_attr_type_name(kind)}, the op declares "
                                        f"{declared.type.name}")
        _check_kernel_shape(n, graph, where)


#: the input holding each convolution's weight (its spatial dims from the third on)
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3}


def _check_kernel_shape(n, graph: Graph, where: str) -> None:
    """A convolution's ``kernel_shape`` is its weight's spatial shape where the weight is an
    initializer. Why: the kernels size their window by the attribute, so a disagreeing one gave
    an output of the wrong shape, silently (onnxruntime refuses it when it runs)."""
    at = _WEIGHT_INPUT.get(n.op_type)
    kernel = n.attrs.get("kernel_shape")
    if at is None or kernel is None or len(n.inputs) <= at:
        return
    w = graph.initializers.get(n.inputs[at])
    if w is not None and tuple(int(k) for k in kernel) != tuple(w.shape[2:]):
        raise InvalidModelError(f"{where}: kernel_shape {list(kernel)} does not match its weight "
                                f"{n.inputs[at]!r} of shape {list(w.shape)} (spatial {list(w.shape[2:])})")


def _attr_type_name(kind: int) -> str:
    try:
        return onnx.AttributeProto.AttributeType.Name(kind)
    except ValueError:
        return f"of undefined type {kind}"


def graph_from_proto(g: onnx.GraphProto) -> Graph:
    inits: dict[str, np.ndarray] = {}
    for t in g.initializer:
        try:
            inits[t.name] = numpy_helper.to_array(t)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"initializer {t.name!r} cannot be decoded (dims {list(t.dims)}): {e}") from e
    for sp in g.sparse_initializer:
        inits[sp.values.name] = sparse_to_dense(sp)
    nodes = [node_from_proto(n) for n in g.node]
    return Graph(
        nodes=nodes,
        inputs=[value_from_proto(v) for v in g.input],
        outputs=[value_from_proto(v) for v in g.output],
        initializers=inits,
        value_info={v.name: value_from_proto(v) for v in g.value_info},
        name=g.name or "graph", doc=g.doc_string)


def node_from_proto(n: onnx.NodeProto) -> Node:
    try:
        attrs = {a.name: attr_to_python(a, graph_from_proto) for a in n.attribute}
    except ValueError as e:
        raise InvalidModelError(f"node {n.name or n.op_type!r}: {e}") from e
    return Node(op_type=n.op_type, inputs=list(n.input), outputs=list(n.output), attrs=attrs,
                domain="" if n.domain == "ai.onnx" else n.domain, name=n.name,
                attr_types={a.name: int(a.type) for a in n.attribute}, doc=n.doc_string)


def value_from_proto(v: onnx.ValueInfoProto) -> Value:
    return Value(v.name, type_from_proto(v.type) if v.HasField("type") else None, v.doc_string)


def type_from_proto(tp: onnx.TypeProto) -> ValueType | None:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        tt = tp.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        return TensorType(int(tt.elem_type), shape)
    if kind == "sequence_type":
        return SequenceType(type_from_proto(tp.sequence_type.elem_type))
    if kind == "optional_type":
        return OptionalType(type_from_proto(tp.optional_type.elem_type))
    return None


# -- function inlining ----------------------------------------------------------------------

def expand_functions(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Inline model-local functions, then standard ops lacking a kernel but defined as functions."""
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    for _ in range(4):  # expanded bodies may themselves hold function ops
        if not _mark_schema_functions(proto):
            break
        proto = onnx.inliner.inline_local_functions(proto)
    return proto


def _mark_schema_functions(proto: onnx.ModelProto) -> bool:
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    types = None
    added = []
    for i, node in enumerate(proto.graph.node):
        domain = "" if node.domain == "ai.onnx" else node.domain
        opset = opsets.get(domain)
        if opset is None or lookup(node.op_type, domain, opset) is not None:
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, domain)
        except onnx.defs.SchemaError:
            continue
        if types is None:
            types = _value_types(proto)
        fn = _schema_function(schema, node, opset, types)
        if fn is None:
            continue
        fn.name = f"{node.op_type}__{i}"
        fn.domain = _EXPAND_DOMAIN
        node.op_type, node.domain = fn.name, _EXPAND_DOMAIN
        added.append(fn)
    if not added:
        return False
    proto.functions.extend(added)
    if all(o.domain != _EXPAND_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(_EXPAND_DOMAIN, 1))
    return True


def _value_types(proto: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    try:
        inferred = shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:  # noqa: BLE001
        inferred = proto
    g = inferred.graph
    types = {v.name: v.type for v in list(g.input) + list(g.value_info) + list(g.output)}
    for t in g.initializer:
        types.setdefault(t.name, onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)))
    return types


def _schema_function(schema, node: onnx.NodeProto, opset: int, types) -> onnx.FunctionProto | None:
    fn = onnx.FunctionProto()
    if schema.has_function:
        versions = [v for v in schema.function_opset_versions if v <= opset]
        if not versions:
            return None
        raw = schema.get_function_with_opset_version(max(versions))
    elif schema.has_context_dependent_function:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
        if not versions or any(i and i not in types for i in node.input):
            return None
        in_types = [types[i].SerializeToString() if i else onnx.TypeProto().SerializeToString()
                    for i in node.input]
        try:
            raw = schema.get_context_dependent_function_with_opset_version(
                max(versions), node.SerializeToString(), in_types)
        except Exception:  # noqa: BLE001 - onnx cannot build the body for these types
            return None
    else:
        return None
    if not raw:
        return None
    fn.ParseFromString(raw if isinstance(raw, bytes) else raw.SerializeToString())
    return fn
