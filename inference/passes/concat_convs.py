"""Merge channels-last convolutions that read one tensor and are concatenated into one convolution.

SqueezeNet's fire module (and Inception's branches) runs a 1x1 and a 3x3 convolution on the same
input and concatenates their outputs along the channels. Channels-last, that Concat is a strided
copy of both outputs (each pixel's two runs of channels): 0.6-0.9 ms of squeezenet's batch-1 run in
per-node profiles, 0.2 ms of its 55x55 fire module alone (0.77 -> 0.60 ms merged, thread time).
Here the branches become one ``edgelearn::FusedConvNHWC`` whose weight is theirs side by side, each
branch's kernel placed in the largest window at the offset its padding implies (a 1x1 with no
padding is the centre tap of a 3x3 with padding 1: the same sums). The product then writes each
pixel's channels in their concatenated order, no copy, from one padded input. The zero taps cost
nothing: the gathered GEMM skips a constant weight's all-zero rows per panel of output channels
(:meth:`~inference.kernels.rows_gemm.PreparedGemm`), so each branch keeps its own number of steps
where its channels fill whole panels, which this pass checks before merging.

Merged: a Concat along axis 3 of two or more ``FusedConvNHWC`` outputs, each read by it alone,
all from the same input with the same strides, dilations 1, group 1, no residual, no
``input_order``, the same epilogue, constant weights and biases, the same output size.
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.fused import DOMAIN
from inference.kernels.nhwc import OP as CONV
from inference.kernels.nhwc import conv_window
from inference.kernels.rows_gemm import LANES, gathered_shape
from inference.passes._rewrite import constant_value, drop_unused_initializers, fresh_name, fuse_nodes

_SHARED = ("strides", "activation", "alpha", "beta", "input_layout")


def _branches(g: Graph, concat: Node, producers: dict[str, Node], consumers: dict[str, list[Node]]
              ) -> list[Node] | None:
    """The FusedConvNHWC nodes the Concat's inputs come from, if they can merge (else None)."""
    if len(concat.inputs) < 2 or len(set(concat.inputs)) != len(concat.inputs):
        return None
    convs = [producers.get(name) for name in concat.inputs]
    if any(n is None or (n.domain, n.op_type) != (DOMAIN, CONV) for n in convs):
        return None
    first = convs[0]
    for n in convs:
        a = n.attrs
        if (n.inputs[0] != first.inputs[0] or len(consumers.get(n.outputs[0], ())) != 1
                or n.outputs[0] in g.output_names or (len(n.inputs) > 3 and n.inputs[3])
                or int(a.get("group", 1)) != 1 or a.get("input_order") is not None
                or any(int(d) != 1 for d in a.get("dilations") or ())
                or any(a.get(k) != first.attrs.get(k) for k in _SHARED)):
            return None
        w = constant_value(g, n.inputs[1])
        bias = n.input_at(2)
        if w is None or w.ndim != 4 or w.dtype != np.float32 or (bias and constant_value(g, bias) is None):
            return None
    return convs


def _windows(g: Graph, convs: list[Node]) -> tuple[tuple[int, int], list] | None:
    """The input's (H, W) and each branch's resolved window, if that size is known and the outputs
    agree."""
    x = g.type_of(convs[0].inputs[0])
    if not isinstance(x, TensorType) or x.rank != 4:
        return None
    nchw = convs[0].attrs.get("input_layout", "NHWC") == "NCHW"
    spatial = tuple(x.shape[2:4] if nchw else x.shape[1:3])
    if not all(isinstance(d, int) for d in spatial):
        return None
    wins = [conv_window(spatial, constant_value(g, n.inputs[1]).shape, n.attrs, n.label()) for n in convs]
    return (spatial, wins) if len({w.out_shape for w in wins}) == 1 else None


def _merged_window(wins: list, spatial: tuple[int, int]) -> tuple[list[int], list[int], list[tuple]] | None:
    """(kernel, pads, each branch's offset in the kernel) of one window giving every branch's
    sums, or None when that window would need a negative end pad (every branch stops short of the
    map's last rows or columns)."""
    top = [max(w.pads_begin[a] for w in wins) for a in (0, 1)]
    offsets = [tuple(top[a] - w.pads_begin[a] for a in (0, 1)) for w in wins]
    kernel = [max(o[a] + w.kernel[a] for o, w in zip(offsets, wins)) for a in (0, 1)]
    out, strides = wins[0].out_shape, wins[0].strides
    end = [(out[a] - 1) * strides[a] + kernel[a] - spatial[a] - top[a] for a in (0, 1)]
    if min(end) < 0:
        return None
    return kernel, top + end, offsets


def _aligned(widths: list[int], pixels: int) -> bool:
    """Whether every branch boundary falls on a panel boundary of the tile the merged GEMM will
    use at ``pixels`` (one image's), so no panel mixes a short branch's rows with a long one's.
    At other batch sizes the tile may differ: that costs skipped rows, never the sums."""
    nl = gathered_shape(pixels, sum(widths))[1] * LANES
    return all(edge % nl == 0 for edge in np.cumsum(widths)[:-1])


def _merge(g: Graph, concat: Node, convs: list[Node], spatial: tuple[int, int], wins: list) -> Node | None:
    window = _merged_window(wins, spatial)
    weights = [constant_value(g, n.inputs[1]) for n in convs]
    widths = [w.shape[3] for w in weights]
    if window is None or not _aligned(widths, int(np.prod(wins[0].out_shape))):
        return None
    kernel, pads, offsets = window
    merged = np.zeros((kernel[0], kernel[1], weights[0].shape[2], sum(widths)), np.float32)
    bias = np.zeros(sum(widths), np.float32)
    col = 0
    for n, w, (oy, ox) in zip(convs, weights, offsets):
        merged[oy:oy + w.shape[0], ox:ox + w.shape[1], :, col:col + w.shape[3]] = w
        if len(n.inputs) > 2 and n.inputs[2]:
            bias[col:col + w.shape[3]] = constant_value(g, n.inputs[2])
        col += w.shape[3]
    base = concat.outputs[0]
    names = tuple(fresh_name(g, f"{base}__merged_{what}") for what in "WB")
    g.initializers[names[0]], g.initializers[names[1]] = merged, bias
    attrs = {k: v for k, v in convs[0].attrs.items() if k in _SHARED}
    attrs.update(kernel_shape=kernel, pads=pads, group=1)
    node = Node(CONV, [convs[0].inputs[0], *names], [base], attrs, DOMAIN,
                "+".join(n.label() for n in convs))
    return fuse_nodes(g, concat, node, convs)


def merge_concat_convs(model: Model) -> bool:
    g, changed = model.graph, False
    producers = {o: n for n in g.nodes for o in n.outputs}
    consumers = g.consumers()
    for concat in [n for n in g.nodes if (n.domain, n.op_type) == ("", "Concat")]:
        t = g.type_of(concat.outputs[0])
        if not isinstance(t, TensorType) or t.rank != 4 or int(concat.attrs.get("axis", 1)) not in (3, -1):
            continue
        convs = _branches(g, concat, producers, consumers)
        found = None if convs is None else _windows(g, convs)
        merged = None if found is None else _merge(g, concat, convs, *found)
        if merged is not None:
            producers[concat.outputs[0]] = merged
            changed = True
    if changed:
        drop_unused_initializers(g)
    return changed
