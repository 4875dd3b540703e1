"""Evaluate at load time every node whose inputs are all constants (ConstantOfShape weights,
shape arithmetic, Constant nodes) and keep the results as initializers."""
from __future__ import annotations

from inference.ir import Model, Node
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


def _keep_outputs_produced(model: Model) -> None:
    """A folded graph output stays an output: an Identity reads it from the initializer."""
    g = model.graph
    for v in g.outputs:
        if v.name in g.initializers and v.name not in g.input_names:
            const = f"{v.name}__folded"
            g.initializers[const] = g.initializers.pop(v.name)
            g.nodes.append(Node("Identity", [const], [v.name], name=f"{v.name}__folded_identity"))
