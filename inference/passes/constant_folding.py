"""Evaluate at load time every node whose inputs are all constants (ConstantOfShape weights,
shape arithmetic, Constant nodes) and keep the results as initializers.

``Shape`` and ``Size`` of a tensor whose inferred shape is fully static count as constants too:
PyTorch's exporter computes reshape targets and the attention scale from ``Shape`` at run time
(a 2-layer ``nn.TransformerEncoder`` at opset 14 carries 4 Shape nodes feeding ~30 Slice, Concat,
Cast, Sqrt and Div nodes), all of it fixed once the input's shape is. The Predictor refuses feeds
of another shape than the declared one, so the fold holds for every run it makes.
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.passes._rewrite import constant_value, drop_unused_initializers

NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Bernoulli", "Multinomial", "Dropout"}
MAX_FOLDED_ELEMENTS = 50_000_000  # never materialise a constant larger than this


def fold_constants(model: Model) -> bool:
    from inference.session import call_kernel, select_kernel

    g, changed = model.graph, False
    for node in list(g.nodes):
        if node.op_type in NONDETERMINISTIC or node.domain != "" or node.has_subgraphs():
            continue
        values = [constant_value(g, i) if i else None for i in node.inputs]
        if node.op_type in ("Shape", "Size") and values[0] is None:
            values[0] = _shape_stand_in(g, node.inputs[0])
        if any(i and v is None for i, v in zip(node.inputs, values)):
            continue
        try:
            entry = select_kernel(model, g, node, kinds=("reference",))
            outs = call_kernel(entry, node, values, None, model.opset_imports.get(node.domain, 1))
        except Exception:  # noqa: BLE001 - an op we cannot fold now still runs at run time
            continue
        if any(getattr(o, "size", MAX_FOLDED_ELEMENTS + 1) > MAX_FOLDED_ELEMENTS for o in outs):
            continue
        for name, value in zip(node.outputs, outs):
            if name:
                g.initializers[name] = value
                g.value_info.pop(name, None)
        g.nodes.remove(node)
        changed = True
    if changed:
        _keep_outputs_produced(model)
        drop_unused_initializers(g)
    return changed


def _shape_stand_in(g: Graph, name: str) -> np.ndarray | None:
    """An array of ``name``'s static shape and dtype (no memory: every element one zero), or None
    where a dim is symbolic or unknown."""
    t = g.type_of(name)
    if not isinstance(t, TensorType) or t.shape is None or not all(isinstance(d, int) and d >= 0 for d in t.shape):
        return None
    return np.broadcast_to(np.zeros((), t.dtype), t.shape)


def _keep_outputs_produced(model: Model) -> None:
    """A folded graph output stays an output: an Identity reads it from the initializer."""
    g = model.graph
    for v in g.outputs:
        if v.name in g.initializers and v.name not in g.input_names:
            const = f"{v.name}__folded"
            g.initializers[const] = g.initializers.pop(v.name)
            g.nodes.append(Node("Identity", [const], [v.name], name=f"{v.name}__folded_identity"))
