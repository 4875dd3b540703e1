"""Run 1-D convolution chains as 2-D ones of height 1: (N, C, L) becomes (N, C, 1, L).

Why: audio and sensor models (keyword spotting on raw waveforms, ECG, accelerometer windows) are
built from ``Conv1d``/``MaxPool1d`` layers, and every fast conv and pool kernel, the epilogue
fusions and the channels-last layout are written for 2-D maps: a 1-D Conv went to the reference
(im2col in numpy, its Relu a separate step). A 1-D window is a 2-D window one row high, so the
pass gives such ops a height axis and the 2-D passes after it take them as they are.

Regions, as the layout pass forms them: starting from each 1-D Conv (constant 3-D float32 weight)
or Max/Average pool, the pass follows the values they make through ops that work the same on the
lifted tensor (activations, BatchNormalization, elementwise ops whose other operand is lifted or
a constant, Concat, global pools, more convs and pools). A lifted node writes ``<name>__2d``; an
``Unsqueeze`` (axis 2) goes in once per outside tensor a region reads, a ``Squeeze`` back under
the original name once per region tensor something else reads or the graph outputs.
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType, Value, outer_names
from inference.passes._epilogue import FUSABLE_ACTIVATIONS
from inference.passes._rewrite import constant_value, fresh_name

#: ops with a 1-D window whose attributes gain a leading height entry
WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool"})
#: ops that take (N, C, 1, L) as they take (N, C, L), attributes unchanged
SAME_ON_LIFTED = frozenset(FUSABLE_ACTIVATIONS) | {"BatchNormalization", "GlobalAveragePool", "GlobalMaxPool", "Tanh", "Elu",
                                        "Selu", "Softplus", "Neg", "Abs", "Exp", "Log", "Sqrt", "Erf"}
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"})
_WINDOW_ATTRS = {"kernel_shape": 1, "strides": 1, "dilations": 1}  # their height entry


def lift_1d_to_2d(model: Model) -> bool:
    """Rewrite each region of 1-D convolutions and pools to 2-D ops of height 1 (module doc)."""
    g = model.graph
    lifted = _grow_regions(g)  # ids of the nodes to lift
    if not lifted:
        return False
    twin = {o: fresh_name(g, f"{o}__2d") for n in g.nodes if id(n) in lifted for o in n.outputs}
    entering: dict[str, str] = {}  # outside 3-D tensor -> its lifted twin
    new_nodes: list[Node] = []
    kept: list[Node] = []
    for node in g.nodes:
        if id(node) not in lifted:
            new_nodes.append(node)
            kept.append(node)
            continue
        inputs = []
        for pos, name in enumerate(node.inputs):
            if not name or not _is_data_input(node, pos):
                inputs.append(name)
            elif name in twin:
                inputs.append(twin[name])
            elif constant_value(g, name) is not None and node.op_type in ELEMENTWISE:
                inputs.append(_lifted_constant(g, name))
            else:
                if name not in entering:
                    entering[name] = fresh_name(g, f"{name}__2d")
                    new_nodes.append(_axis_node(model, "Unsqueeze", name, entering[name]))
                    _set_type(g, entering[name], _lift_shape(_shape(g, name)))
                inputs.append(entering[name])
        new_nodes.append(_lifted_node(g, node, inputs, [twin[o] for o in node.outputs]))
        for o in node.outputs:
            _set_type(g, twin[o], _lift_shape(_shape(g, o)))
    readers = {i for n in kept for i in [*n.inputs, *outer_names(n)]} | set(g.output_names)
    for o, t in twin.items():
        if o in readers:
            new_nodes.append(_axis_node(model, "Squeeze", t, o))
        else:
            g.value_info.pop(o, None)
    g.nodes = new_nodes
    g.toposort()
    return True


def _grow_regions(g: Graph) -> set[int]:
    """The ids of the nodes to lift: every seed (:func:`_seed`) and whatever reads what a lifted
    node makes and works on the lifted tensor (:func:`_follows`), to a fixed point."""
    consumers = g.consumers()
    frontier = [n for n in g.nodes if _seed(g, n)]
    lifted = {id(n) for n in frontier}
    while frontier:
        node = frontier.pop()
        for o in node.outputs:
            for reader in consumers.get(o, []):
                if id(reader) not in lifted and _follows(g, reader, o):
                    lifted.add(id(reader))
                    frontier.append(reader)
    return lifted


def _rank3_float(g: Graph, name: str) -> bool:
    t = g.type_of(name)
    return isinstance(t, TensorType) and t.elem_type == 1 and t.rank == 3


def _seed(g: Graph, n: Node) -> bool:
    if n.domain != "" or n.op_type not in WINDOWED or len(n.outputs) != 1 or not _rank3_float(g, n.inputs[0]):
        return False
    if n.op_type == "Conv":
        w = constant_value(g, n.input_at(1))
        return w is not None and w.ndim == 3 and w.dtype == np.float32
    return True


def _follows(g: Graph, n: Node, via: str) -> bool:
    """Whether ``n``, reading the lifted ``via``, computes the same on the lifted tensor."""
    if n.domain != "" or len(n.outputs) != 1 or not _rank3_float(g, n.outputs[0]) or n.has_subgraphs():
        return False
    if n.op_type in WINDOWED:
        return _seed(g, n) and n.inputs[0] == via
    if n.op_type in SAME_ON_LIFTED:
        return n.inputs[0] == via
    if n.op_type == "Concat":
        return all(_rank3_float(g, i) for i in n.inputs)
    if n.op_type in ELEMENTWISE and len(n.inputs) == 2:
        return all(_rank3_float(g, i) or _liftable_constant(g, i) for i in n.inputs)
    return False


def _liftable_constant(g: Graph, name: str) -> bool:
    c = constant_value(g, name)
    return c is not None and c.ndim <= 3


def _is_data_input(node: Node, pos: int) -> bool:
    """Inputs that are activations of the region's layout (not weights, bias, BN statistics)."""
    if node.op_type in ("Conv", "BatchNormalization") or node.op_type in SAME_ON_LIFTED:
        return pos == 0
    return True


def _lifted_node(g: Graph, node: Node, inputs: list[str], outputs: list[str]) -> Node:
    attrs = dict(node.attrs)
    if node.op_type in WINDOWED:
        for key, height in _WINDOW_ATTRS.items():
            if key in attrs:
                attrs[key] = [height] + list(attrs[key])
        if "pads" in attrs:
            b, e = attrs["pads"]
            attrs["pads"] = [0, b, 0, e]
        if node.op_type == "Conv":
            w = constant_value(g, inputs[1])
            inputs[1] = fresh_name(g, f"{inputs[1]}__2d")
            g.initializers[inputs[1]] = np.ascontiguousarray(w[:, :, None, :])
            if "kernel_shape" not in attrs:
                attrs["kernel_shape"] = [1, w.shape[2]]
    elif node.op_type == "Concat":
        axis = attrs.get("axis", 1) % 3
        attrs["axis"] = axis + 1 if axis == 2 else axis
    return Node(node.op_type, inputs, outputs, attrs, node.domain, node.name, dict(node.attr_types), node.doc)


def _lifted_constant(g: Graph, name: str) -> str:
    """A constant operand broadcast against (N, C, L), reshaped to broadcast against (N, C, 1, L)."""
    c = constant_value(g, name)
    if c.ndim <= 1:
        return name
    lifted = fresh_name(g, f"{name}__2d")
    g.initializers[lifted] = c.reshape((1,) * (3 - c.ndim) + c.shape)[:, :, None, :]
    return lifted


def _axis_node(model: Model, op: str, src: str, dst: str) -> Node:
    """``Unsqueeze``/``Squeeze`` of axis 2 in the form the model's opset reads."""
    g = model.graph
    if model.opset() >= 13:
        axes = fresh_name(g, f"{dst}__axes")
        g.initializers[axes] = np.array([2], np.int64)
        return Node(op, [src, axes], [dst], {}, "", dst)
    return Node(op, [src], [dst], {"axes": [2]}, "", dst)


def _shape(g: Graph, name: str) -> tuple:
    return g.type_of(name).shape


def _lift_shape(shape: tuple) -> tuple:
    return shape[:2] + (1,) + shape[2:]


def _set_type(g: Graph, name: str, shape: tuple) -> None:
    g.value_info[name] = Value(name, TensorType(1, shape))
