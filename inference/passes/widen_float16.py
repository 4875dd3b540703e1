"""Compute float16 (and bfloat16) graphs in float32, rounding back at the graph's outputs.

Why: a model converted to half precision (``model.half()`` exported, onnxconverter's
``convert_float_to_float16``) has every weight and activation in float16, and this CPU class has
no half-precision arithmetic numpy or OpenBLAS can use: numpy emulates float16 element by
element, so such a MobileNetV2 took 1404 ms a run where its float32 twin takes 7. Widened, the
graph runs on the float32 kernels (every fusion sees it as a float32 model) and its results
are closer to the exact ones than op-by-op half rounding. The graph's interface does not change:
half inputs are widened by a Cast at the start, half outputs rounded by a Cast at the end, under
their own names. The weights are held in float32 (twice their bytes in the file), as
onnxruntime's CPU provider holds the ones it casts. Off (``passes={"widen_float16": False}``):
each op computes and rounds in half precision, as the model says, at numpy's emulated speed.
"""
from __future__ import annotations

import numpy as np
from onnx import AttributeProto, TensorProto

from inference.ir import Graph, Model, Node, OptionalType, SequenceType, TensorType, Value, ValueType
from inference.passes._rewrite import fresh_name, replace_uses

HALF_TYPES = frozenset({TensorProto.FLOAT16, TensorProto.BFLOAT16})
#: attributes that name the element type a node makes (Cast's ``to``, the generators' ``dtype``,
#: the window functions' ``output_datatype``)
_TYPE_ATTRS = ("to", "dtype", "output_datatype", "output_dtype")
_INT = int(AttributeProto.INT)


def widen_float16(model: Model) -> bool:
    """Make every half-precision value of ``model`` float32 (its inputs and outputs keep their types)."""
    g = model.graph
    consumers, producers = g.consumers(), g.producers()
    rounding = _rounding_casts(g, consumers)
    inputs = [v for v in g.inputs if _is_half_tensor(v)
              and any(not _widening_cast(n) for n in consumers.get(v.name, []))]
    outputs = [v for v in g.outputs if _is_half_tensor(v) and v.name in producers
               and id(producers[v.name]) not in rounding]
    constants = [v for v in g.outputs if _is_half_tensor(v) and v.name in g.initializers
                 and v.name not in g.input_names and v.name in consumers]
    if not (_widen_graph(g, rounding, top=True) or inputs or outputs or constants):
        return False  # nothing half inside (a model widened before keeps only its Casts at the edges)
    _widen_inputs(g, inputs)
    _round_outputs(g, outputs, producers)
    _widen_constant_outputs(g, constants)
    _drop_float_casts(g)
    return True


def _is_half_tensor(v: Value) -> bool:
    return isinstance(v.type, TensorType) and v.type.elem_type in HALF_TYPES


def _widening_cast(n: Node) -> bool:
    return n.op_type == "Cast" and n.domain == "" and n.attrs.get("to") == TensorProto.FLOAT


def _rounding_casts(g: Graph, consumers: dict[str, list[Node]]) -> set[int]:
    """The ids of the Casts that round a float32 value into a half graph output no node reads:
    what this pass leaves at the end (the model's own such Casts stay, too)."""
    outputs = {v.name: v.type.elem_type for v in g.outputs if _is_half_tensor(v)}
    found = set()
    for n in g.nodes:
        if (n.op_type == "Cast" and n.domain == "" and n.outputs[0] in outputs and n.outputs[0] not in consumers
                and n.attrs.get("to") == outputs[n.outputs[0]]):
            source = g.type_of(n.inputs[0])
            if isinstance(source, TensorType) and source.elem_type == TensorProto.FLOAT:
                found.add(id(n))
    return found


def _is_half(t: ValueType | None) -> bool:
    if isinstance(t, TensorType):
        return t.elem_type in HALF_TYPES
    if isinstance(t, (SequenceType, OptionalType)):
        return _is_half(t.elem)
    return False


def _widened(t: ValueType | None) -> ValueType | None:
    if isinstance(t, TensorType) and t.elem_type in HALF_TYPES:
        return TensorType(TensorProto.FLOAT, t.shape)
    if isinstance(t, SequenceType):
        return SequenceType(_widened(t.elem))
    if isinstance(t, OptionalType):
        return OptionalType(_widened(t.elem))
    return t


def _half_array(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind in "fV" and a.dtype.itemsize == 2


def _widen_graph(g: Graph, rounding: set[int] = frozenset(), top: bool = False) -> bool:
    """Widen the types, constants and type attributes of ``g`` and its subgraphs but the ``rounding``
    Casts; whether any was half. The top graph's inputs and outputs (and their constants) keep
    their types: the Casts around them convert."""
    interface = set(g.input_names) | set(g.output_names) if top else set()
    changed = False
    for name, a in list(g.initializers.items()):
        if _half_array(a) and name not in interface:
            g.initializers[name] = a.astype(np.float32)
            changed = True
    values = list(g.value_info.values()) + ([] if top else g.inputs + g.outputs)  # a subgraph's carried values too
    for v in values:
        if v.name not in interface and _is_half(v.type):
            v.type = _widened(v.type)
            changed = True
    for n in g.nodes:
        if id(n) in rounding:
            continue
        changed = _widen_node(n) or changed
        for sub in n.subgraphs():
            changed = _widen_graph(sub) or changed
            _drop_float_casts(sub)
    return changed


def _drop_float_casts(g: Graph) -> None:
    """Casts between halves and float32 that now convert float32 to float32 (a model that kept some
    ops in float32 had Casts around them) become Identity, for ``eliminate_identity`` to remove."""
    for n in g.nodes:
        if _widening_cast(n):
            source = g.type_of(n.inputs[0])
            if isinstance(source, TensorType) and source.elem_type == TensorProto.FLOAT:
                n.op_type, n.attrs, n.attr_types = "Identity", {}, {}


def _widen_node(n: Node) -> bool:
    """Widen ``n``'s type attributes and half constants; whether it had any."""
    changed = False
    for key in _TYPE_ATTRS:
        if isinstance(n.attrs.get(key), int) and n.attrs[key] in HALF_TYPES:
            n.attrs[key] = TensorProto.FLOAT
            changed = True
    for key, v in n.attrs.items():
        if _half_array(v):
            n.attrs[key] = v.astype(np.float32)
            changed = True
        elif isinstance(v, list) and any(_half_array(a) for a in v):
            n.attrs[key] = [a.astype(np.float32) if _half_array(a) else a for a in v]
            changed = True
    return changed


def _widen_inputs(g: Graph, inputs: list[Value]) -> None:
    """Each half input is read through a Cast to float32 at the start (its feeds stay half)."""
    casts = []
    for v in inputs:
        wide = fresh_name(g, f"{v.name}_float32", "_")
        _read_instead(g, v.name, wide)
        casts.append(Node("Cast", [v.name], [wide], {"to": TensorProto.FLOAT}, name=f"{wide}_Cast",
                          attr_types={"to": _INT}))
        g.value_info[wide] = Value(wide, _widened(v.type))
    g.nodes[:0] = casts


def _round_outputs(g: Graph, outputs: list[Value], producers: dict[str, Node]) -> None:
    """Each half output a node makes is made float32 under a new name, then rounded into its own."""
    for v in {v.name: v for v in outputs}.values():
        wide = fresh_name(g, f"{v.name}_float32", "_")
        node = producers[v.name]
        node.outputs = [wide if o == v.name else o for o in node.outputs]
        _read_instead(g, v.name, wide)
        g.value_info[wide] = Value(wide, _widened(v.type))
        g.value_info.pop(v.name, None)
        g.nodes.append(Node("Cast", [wide], [v.name], {"to": v.type.elem_type}, name=f"{v.name}_Cast",
                            attr_types={"to": _INT}))


def _widen_constant_outputs(g: Graph, constants: list[Value]) -> None:
    """A constant graph output stays half; the nodes that read it read a float32 copy."""
    for v in {v.name: v for v in constants}.values():
        wide = fresh_name(g, f"{v.name}_float32", "_")
        g.initializers[wide] = g.initializers[v.name].astype(np.float32)
        _read_instead(g, v.name, wide)


def _read_instead(g: Graph, old: str, new: str) -> None:
    """Every node (subgraphs included) reads ``new`` for ``old``; the graph's outputs keep their names."""
    names = [v.name for v in g.outputs]
    replace_uses(g, old, new)
    for v, name in zip(g.outputs, names):
        v.name = name
