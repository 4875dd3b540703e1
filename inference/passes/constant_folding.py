"""Evaluate at load time every node whose inputs are all constants (ConstantOfShape weights,
shape arithmetic, Constant nodes) and keep the results as initializers.

``Shape`` and ``Size`` of a tensor whose inferred shape is fully static count as constants too:
PyTorch's exporter computes reshape targets and the attention scale from ``Shape`` at run time
(a 2-layer ``nn.TransformerEncoder`` at opset 14 carries 4 Shape nodes feeding ~30 Slice, Concat,
Cast, Sqrt and Div nodes), all of it fixed once the input's shape is. The Predictor refuses feeds
of another shape than the declared one, so the fold holds for every run it makes.

With a dynamic batch the shape is not fully static, but a ``Shape`` whose start and end leave the
batch out, or a ``Gather`` or ``Slice`` of a shape that picks static dims only, is a constant all
the same: ``chunk`` in a YOLO-style C2f block exports as
``Shape -> Gather(1) -> Add -> Div -> Mul -> Slice`` on the channel dim. And a fold can make a
shape static that the loaded model's inference left unknown (the channels out of those Slices,
then the next block's ``Shape``): nodes downstream of a fold have their types inferred again as the
pass reaches them, so one pass folds the whole chain of blocks.
"""
from __future__ import annotations

import numpy as np

from inference.errors import ShapeInferenceError
from inference.ir import Graph, Model, Node, TensorType, Value
from inference.passes._rewrite import constant_value, drop_unused_initializers

NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Bernoulli", "Multinomial", "Dropout"}
MAX_FOLDED_ELEMENTS = 50_000_000  # never materialise a constant larger than this


def fold_constants(model: Model) -> bool:
    g, changed = model.graph, False
    shapes = {n.outputs[0]: n for n in g.nodes if n.op_type == "Shape" and n.outputs}
    touched: set[str] = set()  # values folded or typed again in this pass
    for node in list(g.nodes):
        if touched.intersection(node.inputs):
            touched.update(_infer_again(model, node))
        if node.op_type in NONDETERMINISTIC or node.domain != "" or node.has_subgraphs():
            continue
        values = [constant_value(g, i) if i else None for i in node.inputs]
        if node.op_type == "Size" and values[0] is None:
            values[0] = _shape_stand_in(g, node.inputs[0])
        partial = bool(values) and values[0] is None and (
            node.op_type == "Shape" or (node.op_type in ("Gather", "Slice") and node.inputs[0] in shapes))
        if node.op_type == "Shape" and partial:  # static, or its start and end leave the symbolic dims out
            outs = [_partial_shape(g, node)]
        else:
            if partial:
                values[0] = _partial_shape(g, shapes[node.inputs[0]])
            if any(i and v is None for i, v in zip(node.inputs, values)):
                continue
            outs = _evaluated(model, node, values)
            if outs is None:
                continue
        if partial and any(o is None or np.any(np.asarray(o) <= _SYMBOLIC) for o in outs):
            continue  # it holds a symbolic dim
        _keep_folded(g, node, outs)
        touched.update(node.outputs)
        changed = True
    if changed:
        _keep_outputs_produced(model)
        drop_unused_initializers(g)
    return changed


def lift_constant_nodes(model: Model) -> bool:
    """Only the ``Constant`` nodes as initializers, what folding makes of them: a pass of its own
    ahead of the passes that must run before folding (``fuse_qdq``: folding would widen a QDQ model's
    int8 weights), which read constants as initializers. An exporter's ``Constant`` nodes had kept a
    quantized decoder's tanh GELU out of its QMatMuls (nine steps a layer)."""
    g, changed = model.graph, False
    for node in [n for n in g.nodes if n.op_type == "Constant" and n.domain == "" and not n.inputs]:
        outs = _evaluated(model, node, [])
        if outs is not None:
            _keep_folded(g, node, outs)
            changed = True
    if changed:
        _keep_outputs_produced(model)
    return changed


def _evaluated(model: Model, node: Node, values: list) -> tuple | None:
    """``node``'s outputs on the constant ``values`` by its reference kernel; None when it cannot be
    folded now (it still runs at run time) or an output is past :data:`MAX_FOLDED_ELEMENTS`."""
    from inference.session import call_kernel, select_kernel

    try:
        entry = select_kernel(model, model.graph, node, kinds=("reference",))
        outs = call_kernel(entry, node, values, None, model.opset_imports.get(node.domain, 1))
    except Exception:  # noqa: BLE001 - an op we cannot fold now still runs at run time
        return None
    if any(getattr(o, "size", MAX_FOLDED_ELEMENTS + 1) > MAX_FOLDED_ELEMENTS for o in outs):
        return None
    return outs


def _keep_folded(g: Graph, node: Node, outs: tuple) -> None:
    """``node``'s outputs become initializers of the values ``outs``, and the node goes."""
    for name, value in zip(node.outputs, outs):
        if name:
            g.initializers[name] = value
            g.value_info.pop(name, None)
    g.nodes.remove(node)


def _shape_stand_in(g: Graph, name: str) -> np.ndarray | None:
    """An array of ``name``'s static shape and dtype (no memory: every element one zero), or None
    where a dim is symbolic or unknown."""
    t = g.type_of(name)
    if not isinstance(t, TensorType) or t.shape is None or not all(isinstance(d, int) and d >= 0 for d in t.shape):
        return None
    return np.broadcast_to(np.zeros((), t.dtype), t.shape)


_SYMBOLIC = -(1 << 40)  # and below: a symbolic dim's stand-in; no dim, index or step reaches it


def _partial_shape(g: Graph, shape: Node) -> np.ndarray | None:
    """What ``Shape`` node ``shape`` returns, each symbolic or unknown dim a distinct number at or
    below :data:`_SYMBOLIC`; None if the input's rank is unknown."""
    t = g.type_of(shape.inputs[0])
    if not isinstance(t, TensorType) or t.shape is None:
        return None
    dims = [d if isinstance(d, int) and d >= 0 else _SYMBOLIC - i for i, d in enumerate(t.shape)]
    start, end = shape.attrs.get("start", 0), shape.attrs.get("end")
    return np.array(dims[start:end], np.int64)  # Python's slice clamps as the op's start/end do


def _infer_again(model: Model, node: Node) -> list[str]:
    """Infer ``node``'s output types again from what the graph knows now; returns the outputs
    whose type changed. An output whose type inference cannot tell keeps the one it had."""
    from inference.shape_inference import infer_node_types

    g, changed = model.graph, []
    try:
        types = infer_node_types(model, g, node)
    except ShapeInferenceError:
        return changed
    for name, t in types.items():
        if name not in g.output_names and _refines(t, g.type_of(name)):
            g.value_info[name] = Value(name, t)
            changed.append(name)
    return changed


def _refines(new, old) -> bool:
    """Whether type ``new`` tells more than ``old`` and contradicts nothing it says: it only
    replaces symbolic or unknown dims (or an unknown shape), some of them by static ones the fold
    made known (no type is traded for one that only names its symbolic dims otherwise)."""
    if not isinstance(new, TensorType) or new.shape is None or new == old:
        return False
    if not isinstance(old, TensorType) or old.shape is None:
        return old is None or (isinstance(old, TensorType) and old.elem_type in (0, new.elem_type))
    pairs = list(zip(old.shape, new.shape))
    return (old.elem_type == new.elem_type and len(old.shape) == len(new.shape)
            and all(o == n or not isinstance(o, int) for o, n in pairs)
            and any(isinstance(n, int) and not isinstance(o, int) for o, n in pairs))


def _keep_outputs_produced(model: Model) -> None:
    """A folded graph output stays an output: an Identity reads it from the initializer."""
    g = model.graph
    for v in g.outputs:
        if v.name in g.initializers and v.name not in g.input_names:
            const = f"{v.name}__folded"
            g.initializers[const] = g.initializers.pop(v.name)
            g.nodes.append(Node("Identity", [const], [v.name], name=f"{v.name}__folded_identity"))
