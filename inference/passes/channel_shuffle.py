"""Reshape -> Transpose -> Reshape that shuffles channels -> one ``edgelearn::ChannelShuffle``.

ShuffleNet spells its channel shuffle as X (N, C, H, W) -> Reshape (N, G, C/G, H, W) -> Transpose
swapping those two axes -> Reshape back to (N, C, H, W). As one op (:mod:`inference.kernels.
channel_shuffle`) the 5-D intermediates go, and the layout pass can keep the shuffle inside a
channels-last region (``axis`` 3) instead of ending the region at every shuffle unit. The chain
matches on inferred shapes: the first Reshape splits exactly one axis into two, the Transpose swaps
just those, the second Reshape restores the input's shape, and nothing else reads the
intermediates.
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.channel_shuffle import OP
from inference.kernels.fused import DOMAIN
from inference.passes._rewrite import drop_unused_initializers, single_reader


def _split_axis(x: tuple, y: tuple) -> tuple[int, int] | None:
    """(axis, groups) if ``y`` is ``x`` with one static axis C split into (groups, C / groups)."""
    if len(y) != len(x) + 1:
        return None
    for a in range(len(x)):
        g, cg = y[a], y[a + 1]
        if (y[:a] == x[:a] and y[a + 2:] == x[a + 1:] and isinstance(x[a], int) and isinstance(g, int)
                and isinstance(cg, int) and g > 1 and cg > 1 and g * cg == x[a]):
            return a, g
    return None


def _match(g: Graph, first: Node) -> tuple[Node, Node, int, int] | None:
    """(transpose, last reshape, axis, groups) of a shuffle chain starting at ``first``."""
    x, mid = g.type_of(first.inputs[0]), g.type_of(first.outputs[0])
    if not isinstance(x, TensorType) or not isinstance(mid, TensorType) or x.shape is None or mid.shape is None:
        return None
    split = _split_axis(x.shape, mid.shape)
    t = single_reader(g, first.outputs[0])
    if split is None or t is None or (t.domain, t.op_type) != ("", "Transpose"):
        return None
    a, groups = split
    swap = list(range(len(mid.shape)))
    swap[a], swap[a + 1] = a + 1, a
    last = single_reader(g, t.outputs[0])
    if list(t.attrs.get("perm", [])) != swap or last is None or (last.domain, last.op_type) != ("", "Reshape"):
        return None
    out = g.type_of(last.outputs[0])
    if not isinstance(out, TensorType) or out.shape != x.shape:
        return None
    return t, last, a, groups


def fuse_channel_shuffle(model: Model) -> bool:
    g, changed = model.graph, False
    for first in list(g.nodes):
        if (first.domain, first.op_type) != ("", "Reshape") or first not in g.nodes:
            continue
        found = _match(g, first)
        if found is None:
            continue
        t, last, axis, groups = found
        shuffle = Node(OP, [first.inputs[0]], list(last.outputs), {"axis": axis, "group": groups}, DOMAIN,
                       last.name or last.outputs[0])
        for gone in (first, t):
            g.value_info.pop(gone.outputs[0], None)
            g.nodes.remove(gone)
        g.nodes[g.nodes.index(last)] = shuffle
        changed = True
    if changed:
        model.opset_imports.setdefault(DOMAIN, 1)
        drop_unused_initializers(g)
    return changed


# -- interop: ChannelShuffle as standard ONNX ---------------------------------------------------------
def _decompose(e, n: Node) -> None:
    """Reshape splitting the axis into (groups, C / groups) with the dims before it copied and those
    after it flattened, the Transpose of the two new axes, Reshape back to the input's shape."""
    x = n.inputs[0]
    t = e.g.type_of(x)
    axis, groups = int(n.attrs.get("axis", 1)) % t.rank, int(n.attrs["group"])
    split = e.op("Reshape", [x, e.const(np.array([0] * axis + [groups, t.shape[axis] // groups, -1], np.int64))])
    perm = list(range(axis + 3))
    perm[axis], perm[axis + 1] = axis + 1, axis
    moved = e.op("Transpose", [split], perm=perm)
    e.op("Reshape", [moved, e.op("Shape", [x])], n.outputs[0])


def _register_decomposition() -> None:
    from inference.decompose import register_decomposition

    register_decomposition(OP, _decompose)


_register_decomposition()
