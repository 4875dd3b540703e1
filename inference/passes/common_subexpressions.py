"""Merge nodes that compute the same values: the same op and attributes on the same inputs (a small
constant counted by its value, whatever its name), so the graph computes them once.

Why: exporters write a block's shape arithmetic anew in every block. torch.onnx gives each
attention layer of a GPT its own ``Shape -> Gather -> Unsqueeze -> Concat`` reshape targets and
its own ``Cast`` of the causal mask: a 6-layer KV-cache decoder carried 62 of its 291 nodes more
than once, all run step by step at each new cache length (and the Casts at every step). Folding
removes such arithmetic only where the shapes are static; here they follow the sequence length.

What is never merged: random ops (each draws anew), nodes with subgraphs, ops of a domain other than
ONNX's and ours, and a node whose outputs the graph returns (its names are the model's).
"""
from __future__ import annotations

from typing import Any, Hashable

import numpy as np

from inference.ir import Graph, Model, Node
from inference.kernels.int8 import DOMAIN
from inference.passes._rewrite import constant_value, drop_unused_initializers, replace_uses
from inference.passes.constant_folding import NONDETERMINISTIC

#: constants up to this many elements count by their value (a scale, an axis, a shape); larger ones
#: by name only (hashing a weight's bytes to find another copy of it is not worth a load's time)
MAX_COMPARED_ELEMENTS = 4096
_DOMAINS = ("", DOMAIN)


def eliminate_common_subexpressions(model: Model) -> bool:
    """Each node that repeats an earlier one's computation goes, its readers reading the earlier
    node's outputs; returns whether the graph changed."""
    g = model.graph
    kept_outputs = set(g.output_names)
    first: dict[Hashable, Node] = {}
    same: dict[str, str] = {}  # a dropped output -> the name it is read as now
    dropped: list[Node] = []
    for node in g.nodes:
        key = _key(g, node, same)
        if key is None:
            continue
        earlier = first.setdefault(key, node)
        if earlier is node or kept_outputs.intersection(node.outputs):
            continue
        for old, new in zip(node.outputs, earlier.outputs):
            if old:
                same[old] = new
        dropped.append(node)
    if not dropped:
        return False
    gone = {id(n) for n in dropped}
    g.nodes = [n for n in g.nodes if id(n) not in gone]
    for old, new in same.items():
        replace_uses(g, old, new)
        g.value_info.pop(old, None)
    drop_unused_initializers(g)
    return True


def _key(g: Graph, node: Node, same: dict[str, str]) -> Hashable | None:
    """What ``node`` computes: its op, attributes, which outputs it names and its inputs (each read
    through ``same``); None for a node never merged."""
    if node.domain not in _DOMAINS or node.op_type in NONDETERMINISTIC or node.has_subgraphs():
        return None
    inputs = tuple(_input_key(g, same.get(name, name)) for name in node.inputs)
    attrs = tuple(sorted((name, _frozen(value)) for name, value in node.attrs.items()))
    return node.domain, node.op_type, inputs, attrs, tuple(bool(o) for o in node.outputs)


def _input_key(g: Graph, name: str) -> Hashable:
    value = constant_value(g, name) if name else None
    if value is None or value.size > MAX_COMPARED_ELEMENTS:
        return name
    return ("constant", value.dtype.str, value.shape, value.tobytes())


def _frozen(value: Any) -> Hashable:
    """An attribute value as a key: arrays by their bytes, lists as tuples, numbers by type and
    repr (-0.0 is not 0.0; a NaN matches no other NaN and merges with nothing, as NaN compares)."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, float):
        return ("float", repr(value)) if value == value else ("nan", object())
    if isinstance(value, (int, str, bytes, bool)) or value is None:
        return (type(value).__name__, value)
    return ("object", id(value))  # anything else only equals itself
