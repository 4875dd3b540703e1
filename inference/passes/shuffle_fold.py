"""Fold a channels-last ``ChannelShuffle`` into the convolutions that read it: no copy at all.

ShuffleNet's shuffle feeds a depthwise conv, which feeds a grouped 1x1 conv. A depthwise conv (no
residual) works channel by channel, so it can run on the unshuffled tensor with its weights and
bias permuted alike; its output is then still "shuffled pending", and the permutation moves on to
its readers. A conv that mixes channels takes the permutation as its ``input_order``
(``edgelearn::FusedConvNHWC`` reads its input through a step table, so the order costs nothing);
a group-1 conv gets its weight rows permuted instead, keeping its plain GEMM. Why: shufflenet's
16 shuffles cost ~0.9 ms of a ~7 ms run channels-last (each a strided scatter of the whole map,
the 56x56x112 one ~0.3 ms). A shuffle with any other reader, or read as a residual, stays.
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.channel_shuffle import OP as SHUFFLE
from inference.kernels.fused import DOMAIN
from inference.kernels.nhwc import OP as CONV
from inference.kernels.nhwc import is_depthwise
from inference.passes._rewrite import constant_value, drop_unused_initializers, fresh_name, replace_uses


def shuffle_order(c: int, group: int) -> np.ndarray:
    """``order[q]``: the input channel that output channel q of a ``group``-way shuffle reads."""
    return np.arange(c).reshape(group, c // group).T.reshape(-1)


def _plan(g: Graph, shuffle: Node, consumers: dict[str, list[Node]]) -> list[tuple[Node, str]] | None:
    """(node, "depthwise" | "reorder") for every conv the shuffle's order reaches, or None if a
    reader cannot take it (then the shuffle stays)."""
    steps: list[tuple[Node, str]] = []
    frontier = [shuffle.outputs[0]]
    while frontier:
        t = frontier.pop()
        if t in g.output_names or not consumers.get(t):
            return None
        for n in consumers[t]:
            if (n.domain, n.op_type) != (DOMAIN, CONV) or n.inputs[0] != t or t in n.inputs[1:]:
                return None
            w = constant_value(g, n.inputs[1])
            bias = n.input_at(2)
            if w is None or w.ndim != 4:
                return None
            if is_depthwise(w.shape[3], w.shape, int(n.attrs.get("group", 1))) and "input_order" not in n.attrs:
                if (bias and constant_value(g, bias) is None) or (len(n.inputs) > 3 and n.inputs[3]):
                    return None
                steps.append((n, "depthwise"))
                frontier.append(n.outputs[0])
            else:
                steps.append((n, "reorder"))
    return steps


def _scatter_constant(g: Graph, n: Node, index: int, axis: int, order: np.ndarray) -> None:
    """Input ``index`` of ``n`` becomes a fresh initializer: the constant with entry q of its
    ``axis`` moved to ``order[q]`` (the other readers of the old one keep it)."""
    value = constant_value(g, n.inputs[index])
    scattered = np.empty_like(value)
    scattered[(slice(None),) * axis + (order,)] = value
    n.inputs[index] = fresh_name(g, f"{n.inputs[index]}__shuffled")
    g.initializers[n.inputs[index]] = scattered


def _apply(g: Graph, steps: list[tuple[Node, str]], order: np.ndarray) -> None:
    for n, kind in steps:
        if kind == "depthwise":  # channel order[q] of the unshuffled input gets channel q's weights, bias
            _scatter_constant(g, n, 1, 3, order)
            if len(n.inputs) > 2 and n.inputs[2]:
                _scatter_constant(g, n, 2, 0, order)
        elif int(n.attrs.get("group", 1)) == 1 and "input_order" not in n.attrs:
            _scatter_constant(g, n, 1, 2, order)  # input channel order[c] of the weight gets its row c
        else:
            before = n.attrs.get("input_order")
            n.attrs["input_order"] = [int(v) for v in (order if before is None else order[np.asarray(before)])]


def fold_channel_shuffle(model: Model) -> bool:
    g, changed = model.graph, False
    for s in [n for n in g.nodes if (n.domain, n.op_type) == (DOMAIN, SHUFFLE)]:
        t = g.type_of(s.inputs[0])
        if (not isinstance(t, TensorType) or t.rank != 4 or int(s.attrs.get("axis", 1)) not in (3, -1)
                or not isinstance(t.shape[3], int)):
            continue
        steps = _plan(g, s, g.consumers())
        if steps is None:
            continue
        _apply(g, steps, shuffle_order(t.shape[3], int(s.attrs["group"])))
        g.nodes.remove(s)
        g.value_info.pop(s.outputs[0], None)
        replace_uses(g, s.outputs[0], s.inputs[0])
        changed = True
    if changed:
        drop_unused_initializers(g)
    return changed
