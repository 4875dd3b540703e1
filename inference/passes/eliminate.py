"""Remove what inference never needs: Identity, inference-mode Dropout, and dead nodes."""
from __future__ import annotations

from inference.ir import Graph, Model, outer_names
from inference.passes._rewrite import constant_value, drop_unused_initializers, readers, replace_uses


def eliminate_identity(model: Model) -> bool:
    """Bypass Identity nodes (and Dropout that cannot be in training mode) on tensors."""
    g, changed = model.graph, False
    for node in list(g.nodes):
        if node.op_type == "Dropout" and node.domain == "" and _dropout_is_identity(g, node):
            pass
        elif not (node.op_type == "Identity" and node.domain == ""):
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst in g.output_names and (src in g.input_names or src in g.output_names or src in g.initializers):
            continue  # the graph needs this name as a distinct output
        g.nodes.remove(node)
        if dst in g.output_names:
            _rename_output_producer(g, src, dst)
        else:
            replace_uses(g, dst, src)
        changed = True
    return changed


def _dropout_is_identity(g: Graph, node) -> bool:
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    if mask and (mask in g.output_names or readers(g, mask)):
        return False  # the mask is read: keep the node
    if len(node.inputs) >= 3 and node.inputs[2]:  # opset 12+: training_mode input
        mode = constant_value(g, node.inputs[2])
        return mode is not None and not bool(mode)
    return True  # no training_mode: an inference runtime runs Dropout as identity


def _rename_output_producer(g: Graph, src: str, dst: str) -> None:
    """Let the producer of ``src`` write the graph output ``dst`` directly."""
    for node in g.nodes:
        node.outputs = [dst if o == src else o for o in node.outputs]
    replace_uses(g, src, dst)


def eliminate_dead_nodes(model: Model) -> bool:
    """Drop nodes none of whose outputs reach a graph output."""
    g = model.graph
    live = set(g.output_names)
    kept = []
    for node in reversed(g.nodes):
        if any(o in live for o in node.outputs if o):
            kept.append(node)
            live.update(i for i in node.inputs if i)
            live.update(outer_names(node))
    changed = len(kept) != len(g.nodes)
    g.nodes = list(reversed(kept))
    drop_unused_initializers(g)
    return changed
