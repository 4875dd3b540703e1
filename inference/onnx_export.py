"""IR -> ONNX: write a :class:`inference.ir.Model` back as a standard ModelProto or file."""
from __future__ import annotations

import os

import onnx
from onnx import helper, numpy_helper

from inference.attributes import python_to_attr
from inference.ir import Graph, Model, Node, OptionalType, SequenceType, TensorType, Value, ValueType
from inference.kernels._prepack import source

_INTERNAL_DOMAINS = {"edgelearn.expand"}


def model_to_proto(model: Model, standard: bool = False) -> onnx.ModelProto:
    """The model as a ModelProto; ``standard``: our fused ops decomposed into standard ONNX (interop)."""
    if standard:
        from inference.decompose import decompose_to_standard

        model = decompose_to_standard(model)
    graph = graph_to_proto(model.graph)
    if model.ir_version < 4:  # that IR wants every initializer listed among the inputs too
        listed = {v.name for v in graph.input}
        for t in graph.initializer:
            if t.name not in listed:
                graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    used = _used_domains(model.graph)
    opsets = [helper.make_opsetid(d, v) for d, v in model.opset_imports.items()
              if d not in _INTERNAL_DOMAINS and (d == "" or d in used)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name=model.producer_name or "edgelearn",
                              producer_version=model.producer_version, doc_string=model.doc,
                              domain=model.domain, model_version=model.model_version)
    proto.ir_version = model.ir_version
    proto.functions.extend(model.functions)
    for k, v in model.metadata.items():
        proto.metadata_props.add(key=k, value=v)
    return proto


def _used_domains(graph: Graph) -> set[str]:
    used = set()
    for n in graph.nodes:
        used.add(n.domain)
        for g in n.subgraphs():
            used |= _used_domains(g)
    return used


def graph_to_proto(g: Graph) -> onnx.GraphProto:
    # source: a released weight's values (inference.weight_release)
    inits = [numpy_helper.from_array(source(arr), name) for name, arr in g.initializers.items()]
    io_names = set(g.input_names) | set(g.output_names)
    return helper.make_graph(
        nodes=[node_to_proto(n) for n in g.nodes], name=g.name,
        inputs=[value_to_proto(v) for v in g.inputs], outputs=[value_to_proto(v) for v in g.outputs],
        initializer=inits, doc_string=g.doc,
        value_info=[value_to_proto(v) for name, v in g.value_info.items() if name not in io_names and v.type])


def node_to_proto(n: Node) -> onnx.NodeProto:
    proto = helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name or None, domain=n.domain or None,
                             doc_string=n.doc or None)
    for name, value in n.attrs.items():
        proto.attribute.append(python_to_attr(name, value, n.attr_types.get(name), graph_to_proto))
    return proto


def value_to_proto(v: Value) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto(name=v.name, doc_string=v.doc)
    if v.type is not None:
        vi.type.CopyFrom(type_to_proto(v.type))
    return vi


def type_to_proto(t: ValueType) -> onnx.TypeProto:
    if isinstance(t, TensorType):
        return helper.make_tensor_type_proto(t.elem_type, None if t.shape is None else list(t.shape))
    if isinstance(t, SequenceType):
        return helper.make_sequence_type_proto(type_to_proto(t.elem) if t.elem else onnx.TypeProto())
    if isinstance(t, OptionalType):
        return helper.make_optional_type_proto(type_to_proto(t.elem) if t.elem else onnx.TypeProto())
    raise TypeError(f"cannot export value type {t!r}")


def save_model(model: Model, path: str | os.PathLike, external_data: bool | None = None,
               standard: bool = False) -> None:
    """Save as ONNX; weights go to an external data file when asked or when over protobuf's 2 GB.
    ``standard``: write our fused ops as the standard ops they stand for, so any runtime reads it."""
    proto = model_to_proto(model, standard=standard)
    if external_data is None:
        external_data = proto.ByteSize() > 1_800_000_000
    path = os.fspath(path)
    if external_data:
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data", size_threshold=0)
    else:
        onnx.save_model(proto, path)
