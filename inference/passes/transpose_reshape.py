"""Shorten layout chains: Transpose∘Transpose -> one Transpose (or none), Reshape/Flatten/Squeeze/
Unsqueeze chains -> one Reshape, and Reshapes that keep the shape -> nothing.

Why: exporters and attention blocks emit these chains (split heads, then transpose K again for
``Q @ K^T``); each link copies the whole tensor in a numpy runtime (a transpose is made contiguous
by the next kernel), so two transposes cost two copies where one does. A Transpose of a constant
needs no rule here: constant folding evaluates it at load time.

Safety: a link is only absorbed when its output has no other reader and is not a graph output;
a no-op whose output is a graph output becomes an Identity (the graph keeps the name, and
``eliminate_identity`` decides whether the name can move to the producer).
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.passes._rewrite import drop_unused_initializers, replace_uses, single_reader

RESHAPE_LIKE = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
MIN_RESHAPE_INPUT_OPSET = 5  # Reshape takes its shape as an input from opset 5 on


def simplify_transpose_reshape(model: Model) -> bool:
    """Run both rewrites; returns whether the graph changed."""
    changed = compose_transposes(model)
    changed = merge_reshapes(model) or changed
    if changed:
        drop_unused_initializers(model.graph)
    return changed


# -- Transpose chains -----------------------------------------------------------------------------
def perm_of(g: Graph, node: Node) -> list[int] | None:
    """The node's permutation; ONNX's default (reversed axes) needs the input's rank."""
    if "perm" in node.attrs:
        return [int(p) for p in node.attrs["perm"]]
    t = g.type_of(node.inputs[0])
    if not isinstance(t, TensorType) or t.rank is None:
        return None
    return list(range(t.rank))[::-1]


def _is(node: Node | None, ops: tuple[str, ...]) -> bool:
    return node is not None and node.domain == "" and node.op_type in ops


def compose_transposes(model: Model) -> bool:
    """Transpose(Transpose(x, p1), p2) = Transpose(x, p1[p2]); dropped when that is the identity."""
    g, changed = model.graph, False
    producers = g.producers()
    for outer in list(g.nodes):
        if not _is(outer, ("Transpose",)) or outer not in g.nodes:
            continue
        inner = producers.get(outer.inputs[0])
        if not _is(inner, ("Transpose",)):
            continue
        p1, p2 = perm_of(g, inner), perm_of(g, outer)
        if p1 is None or p2 is None or len(p1) != len(p2):
            continue
        composed = [p1[j] for j in p2]
        identity = composed == list(range(len(composed)))
        if single_reader(g, inner.outputs[0]) is outer:
            g.nodes.remove(inner)
            g.value_info.pop(inner.outputs[0], None)
        elif not identity:
            continue  # the inner result is needed anyway: composing would not save a copy
        outer.inputs = [inner.inputs[0]]
        outer.attrs = {"perm": composed}
        outer.attr_types = {}
        producers[outer.outputs[0]] = outer
        if identity:
            _bypass(g, outer)
        changed = True
    return changed


def _bypass(g: Graph, node: Node) -> None:
    """Remove a node that passes its input through unchanged."""
    src, dst = node.inputs[0], node.outputs[0]
    if dst in g.output_names:
        node.op_type, node.inputs, node.attrs, node.attr_types = "Identity", [src], {}, {}
        return
    g.nodes.remove(node)
    g.value_info.pop(dst, None)
    replace_uses(g, dst, src)


# -- Reshape chains -------------------------------------------------------------------------------
def _shape(g: Graph, name: str) -> tuple | None:
    t = g.type_of(name)
    return t.shape if isinstance(t, TensorType) and t.shape is not None else None


def reshape_target(in_shape: tuple, out_shape: tuple) -> list[int] | None:
    """A Reshape ``shape`` input giving ``out_shape`` from any tensor of ``in_shape``.

    Static dims are written as is; a symbolic dim equal to the input's at the same position is
    copied (0); at most one other unknown dim is inferred (-1). None when that cannot express it
    (two unknown dims, or a static 0 that Reshape would read as "copy").
    """
    dims: list[int] = []
    for i, d in enumerate(out_shape):
        if isinstance(d, int):
            if d == 0:
                return None
            dims.append(d)
        elif d is not None and i < len(in_shape) and in_shape[i] == d:
            dims.append(0)
        else:
            dims.append(-1)
    return dims if dims.count(-1) <= 1 else None


def _same_shape(a: tuple | None, b: tuple | None) -> bool:
    """Provably equal: same rank and every dim the same int or the same symbolic name."""
    return a is not None and b is not None and a == b and None not in a


def _new_const(g: Graph, base: str, value: np.ndarray) -> str:
    name, i = base, 0
    while name in g.initializers or name in g.value_info:
        i += 1
        name = f"{base}_{i}"
    g.initializers[name] = value
    return name


def merge_reshapes(model: Model) -> bool:
    """A chain of reshape-like nodes becomes one Reshape; a reshape that keeps the shape goes."""
    g, changed = model.graph, False
    producers = g.producers()
    removed: set[int] = set()
    can_reshape = model.opset_imports.get("", 1) >= MIN_RESHAPE_INPUT_OPSET
    for tail in reversed(list(g.nodes)):
        if id(tail) in removed or not _is(tail, RESHAPE_LIKE) or not tail.inputs:
            continue
        chain = [tail]
        while True:
            p = producers.get(chain[0].inputs[0])
            if not _is(p, RESHAPE_LIKE) or id(p) in removed or single_reader(g, p.outputs[0]) is not chain[0]:
                break
            chain.insert(0, p)
        src, dst = chain[0].inputs[0], tail.outputs[0]
        in_shape, out_shape = _shape(g, src), _shape(g, dst)
        if in_shape is None or out_shape is None:
            continue
        if _same_shape(in_shape, out_shape):
            for n in chain[:-1]:
                g.nodes.remove(n)
                g.value_info.pop(n.outputs[0], None)
                removed.add(id(n))
            tail.inputs = [src] + tail.inputs[1:]
            _bypass(g, tail)
            removed.add(id(tail))
            changed = True
            continue
        target = reshape_target(in_shape, out_shape)
        if len(chain) < 2 or target is None or not can_reshape:
            continue
        for n in chain[:-1]:
            g.nodes.remove(n)
            g.value_info.pop(n.outputs[0], None)
            removed.add(id(n))
        shape = _new_const(g, f"{dst}__shape", np.array(target, np.int64))
        tail.op_type, tail.inputs, tail.attrs, tail.attr_types = "Reshape", [src, shape], {}, {}
        changed = True
    return changed
