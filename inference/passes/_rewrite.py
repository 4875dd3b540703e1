"""Graph surgery shared by the passes: rewiring uses of a value, reading constants."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from inference.ir import Graph, Node


def replace_uses(graph: Graph, old: str, new: str) -> None:
    """Make every reader of ``old`` (subgraphs included) read ``new`` instead."""
    for node in graph.nodes:
        node.inputs = [new if i == old else i for i in node.inputs]
        for sub in node.subgraphs():
            if old not in sub.input_names and old not in sub.initializers:
                replace_uses(sub, old, new)
    for v in graph.outputs:
        if v.name == old:
            v.name = new


def constant_value(graph: Graph, name: str) -> np.ndarray | None:
    """The value of ``name`` if it is an initializer that no feed can override."""
    if name in graph.initializers and name not in graph.input_names:
        return graph.initializers[name]
    return None


def constant_scalars(graph: Graph, names) -> bool:
    """Every given (non-empty) input is a one-element constant (a per-tensor scale or zero point,
    a Clip bound)."""
    return all((v := constant_value(graph, i)) is not None and v.size == 1 for i in names if i)


def taken_names(graph: Graph) -> set[str]:
    """Every value name ``graph`` has: initializers, value infos, inputs, node outputs."""
    taken = set(graph.initializers) | set(graph.value_info) | set(graph.input_names)
    return taken | {o for n in graph.nodes for o in n.outputs}


def fresh_name(graph: Graph, base: str, sep: str = "", taken: set[str] | None = None) -> str:
    """``base``, or ``base<sep><i>`` (the first i = 1, 2, ... free) if the graph already has a value
    of that name: for the constants and tensors a pass adds beside the ones it leaves. A pass that
    names several values before adding them passes ``taken`` (from :func:`taken_names`), which
    the chosen name joins."""
    if taken is None:
        taken = taken_names(graph)
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}{sep}{i}"
    taken.add(name)
    return name


def fuse_nodes(graph: Graph, place: Node, node: Node, absorbed: list[Node]) -> Node:
    """Put ``node`` where ``place`` was and drop the ``absorbed`` nodes with their outputs' types:
    a fusion's rewrite, the fused node taking the last one's place in the order."""
    graph.nodes[graph.nodes.index(place)] = node
    for n in absorbed:
        graph.nodes.remove(n)
        graph.value_info.pop(n.outputs[0], None)
    return node


def readers(graph: Graph, name: str) -> list[Node]:
    return [n for n in graph.nodes if name in n.inputs]


def single_reader(graph: Graph, name: str) -> Node | None:
    """The only node reading ``name``, if exactly one does and it is not a graph output."""
    if name in graph.output_names:
        return None
    found = readers(graph, name)
    return found[0] if len(found) == 1 else None


def other_input(node: Node, x: str) -> str | None:
    """The input of the two-input ``node`` that is not ``x`` (None if ``x`` is not one of them, or
    is both)."""
    if len(node.inputs) != 2 or x not in node.inputs or node.inputs[0] == node.inputs[1]:
        return None
    return node.inputs[1] if node.inputs[0] == x else node.inputs[0]


def is_plain(node: Node | None, op: str) -> bool:
    """``node`` is ``op`` of the default domain with one output."""
    return node is not None and node.op_type == op and node.domain == "" and len(node.outputs) == 1


def next_plain(graph: Graph, node: Node, op: str) -> Node | None:
    """The single reader of ``node``'s output if it is a plain ``op`` (:func:`is_plain`)."""
    nxt = single_reader(graph, node.outputs[0])
    return nxt if is_plain(nxt, op) else None


def scalar_is(graph: Graph, name: str, value: float, rtol: float = 0.0) -> bool:
    """``name`` is a one-element float constant within ``rtol`` of ``value``, or ``value`` rounded to
    float16 or bfloat16: what a half-precision model holds for it (widened to float32 by
    ``inference.passes.widen_float16``), as exact as that model's arithmetic (torch's GELU in a
    half export divides by 1.4140625)."""
    v = constant_value(graph, name)
    if v is None or v.size != 1 or v.dtype.kind != "f":
        return False
    x = float(v.reshape(()))
    return abs(x - value) <= rtol * abs(value) or x in (float(np.float16(value)), float(ml_dtypes.bfloat16(value)))


def drop_unused_initializers(graph: Graph) -> None:
    used = {i for n in graph.nodes for i in n.inputs} | set(graph.output_names) | set(graph.input_names)
    used |= {i for n in graph.nodes for sub in n.subgraphs() for i in _all_reads(sub)}
    for name in [k for k in graph.initializers if k not in used]:
        del graph.initializers[name]


def _all_reads(g: Graph) -> set[str]:
    out = {i for n in g.nodes for i in n.inputs} | set(g.output_names)
    for n in g.nodes:
        for sub in n.subgraphs():
            out |= _all_reads(sub)
    return out
