"""Split a convolution whose output is only Split along the channels into one convolution per part.

YOLOv8's C2f block (and other CSP designs) runs a 1x1 convolution and splits its output in two
along the channels: one half goes on through the bottlenecks, both are concatenated at the end.
The Split is a copy of the whole map, and channels-last a strided one (each pixel's run of
channels cut in two): in a YOLOv8-style body at 320x320 the six Splits took 0.30 ms (onnxruntime,
on its blocked layout: 0.05), the first alone 116 us after a 180 us product. A convolution per
part computes the same sums (output channel j depends on the weight's row j alone) straight into
separate tensors: no copy, and each part's product is as long as the whole one's was.

Split: a Split along axis 1 of a rank-4 tensor (any opset's form: sizes from the ``split``
attribute or input, or equal parts) whose input is the output of a ``Conv`` or
``edgelearn::FusedConv`` of group 1 with a constant weight and bias and no residual, read by the
Split alone. Runs before the layout pass, which then sees the parts as convolutions of their own.
"""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.fused import DOMAIN
from inference.ops._axes import split_sizes
from inference.ops.layout import check_split18
from inference.passes._rewrite import constant_value, drop_unused_initializers, fresh_name, single_reader

_CONVS = (("", "Conv"), (DOMAIN, "FusedConv"))


def _sizes(g: Graph, split: Node, channels: int, opset: int) -> list[int] | None:
    """The channels of each of the Split's outputs, or None if not constant and valid."""
    if opset < 13:
        if len(split.inputs) > 1 and split.inputs[1]:  # Split-1's sizes as an input: left as it is
            return None
        given = split.attrs.get("split")
    else:
        given_name = split.input_at(1)
        value = constant_value(g, given_name) if given_name else None
        if given_name and value is None:
            return None
        given = None if value is None else [int(v) for v in value.reshape(-1)]
    num_outputs = split.attrs.get("num_outputs") if opset >= 18 else None
    try:
        if opset >= 18:
            check_split18(given is not None, num_outputs, len(split.outputs))
        sizes = split_sizes(channels, None if given is None else list(given), len(split.outputs),
                            num_outputs is not None)
    except KernelError:  # an invalid Split is left for its kernel to name
        return None
    return sizes if all(s > 0 for s in sizes) else None


def _splittable_conv(g: Graph, split: Node, producers: dict[str, Node]) -> Node | None:
    conv = producers.get(split.inputs[0]) if split.inputs else None
    if conv is None or (conv.domain, conv.op_type) not in _CONVS or single_reader(g, conv.outputs[0]) is not split:
        return None
    t = g.type_of(split.inputs[0])
    if not isinstance(t, TensorType) or t.rank != 4 or int(split.attrs.get("axis", 0)) not in (1, -3):
        return None
    w = constant_value(g, conv.inputs[1]) if len(conv.inputs) > 1 else None
    bias = conv.input_at(2)
    if (w is None or w.ndim != 4 or int(conv.attrs.get("group", 1)) != 1 or (len(conv.inputs) > 3 and conv.inputs[3])
            or (bias and constant_value(g, bias) is None)):
        return None
    return conv


def _parts(g: Graph, conv: Node, split: Node, sizes: list[int]) -> list[Node]:
    w = constant_value(g, conv.inputs[1])
    bias_name = conv.input_at(2)
    bias = constant_value(g, bias_name) if bias_name else None
    nodes, first = [], 0
    for i, (size, out) in enumerate(zip(sizes, split.outputs)):
        w_name = fresh_name(g, f"{conv.inputs[1]}__part{i}")
        g.initializers[w_name] = np.ascontiguousarray(w[first:first + size])
        inputs = [conv.inputs[0], w_name]
        if bias is not None:
            b_name = fresh_name(g, f"{bias_name}__part{i}")
            g.initializers[b_name] = np.ascontiguousarray(bias[first:first + size])
            inputs.append(b_name)
        nodes.append(Node(conv.op_type, inputs, [out], dict(conv.attrs), conv.domain, f"{conv.label()}/part{i}",
                          dict(conv.attr_types), conv.doc))
        first += size
    return nodes


def split_conv_outputs(model: Model) -> bool:
    g = model.graph
    opset = model.opset_imports.get("", 1)
    producers = {o: n for n in g.nodes for o in n.outputs}
    changed = False
    for split in [n for n in g.nodes if (n.domain, n.op_type) == ("", "Split")]:
        conv = _splittable_conv(g, split, producers)
        sizes = None if conv is None else _sizes(g, split, constant_value(g, conv.inputs[1]).shape[0], opset)
        if sizes is None:
            continue
        at = g.nodes.index(split)
        g.nodes[at:at + 1] = _parts(g, conv, split, sizes)
        g.nodes.remove(conv)
        g.value_info.pop(conv.outputs[0], None)
        changed = True
    if changed:
        drop_unused_initializers(g)
    return changed
