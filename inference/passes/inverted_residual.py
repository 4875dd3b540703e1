"""Fuse MobileNetV2's and EfficientNet's inverted residual blocks (1x1 expansion, depthwise 3x3 or
5x5, 1x1 projection and its residual) into one ``edgelearn::InvertedResidualNHWC``, which runs
them a band of rows at a time with the expanded rows in cache
(:mod:`inference.kernels.inverted_residual`: why and by how much).

Fused, after the layout pass: a ``FusedConvNHWC`` 1x1 projection (group 1, stride 1, no padding,
clamp activation, residual or not) whose input is read only by it and comes from a depthwise 3x3
or 5x5 ``FusedConvNHWC`` (dilation 1, no residual, any activation), whose input in turn, when it is read
only by the depthwise and comes from a 1x1 expansion (group 1, stride 1, no padding, clamp
activation, no residual), is that expansion's; else the block has none (MobileNetV2's first).
Channels-last float32 inputs of known height and width, no ``input_order``, NHWC inputs only.
"""
from __future__ import annotations

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.activations import activation_code
from inference.kernels.fused import DOMAIN, prefixed_epilogue, stage_epilogue
from inference.kernels.inverted_residual import KERNELS, OP
from inference.kernels.nhwc import OP as CONV
from inference.kernels.nhwc import conv_window, is_depthwise
from inference.kernels.tile_lanes import clamp_epilogue
from inference.passes._nhwc_match import plain_nhwc_conv, residual_input, static_weight_shape
from inference.passes._rewrite import fuse_nodes


def _clamps(n: Node) -> bool:
    return clamp_epilogue(activation_code(n.attrs.get("activation", "")), float(n.attrs.get("alpha", 0.0)),
                          float(n.attrs.get("beta", 0.0)))[0]


def _pointwise(g: Graph, n: Node) -> bool:
    """A 1x1 conv of group 1, stride 1, no padding, whose activation is a clamp."""
    w = static_weight_shape(g, n)
    x = g.type_of(n.inputs[0])
    if not plain_nhwc_conv(n) or w is None or w[:2] != (1, 1) or int(n.attrs.get("group", 1)) != 1 or not _clamps(n):
        return False
    if not isinstance(x, TensorType) or x.rank != 4 or not all(isinstance(d, int) for d in x.shape[1:]):
        return False
    win = conv_window(x.shape[1:3], w, n.attrs, n.label())
    return win.strides == (1, 1) and win.pads_begin == (0, 0) and win.out_shape == tuple(x.shape[1:3])


def _depthwise(g: Graph, n: Node) -> bool:
    """A depthwise 3x3 or 5x5 (dilation 1) on a float32 NHWC input of known size, no residual."""
    w = static_weight_shape(g, n)
    x = g.type_of(n.inputs[0])
    if not plain_nhwc_conv(n) or w is None or w[:2] not in [(k, k) for k in KERNELS] or residual_input(n):
        return False
    if not isinstance(x, TensorType) or x.rank != 4 or x.elem_type != 1 or not all(isinstance(d, int)
                                                                                   for d in x.shape[1:]):
        return False
    conv_window(x.shape[1:3], w, n.attrs, n.label())  # an impossible window is named here, not at run time
    return is_depthwise(x.shape[3], w, int(n.attrs.get("group", 1)))


def _producer(g: Graph, name: str, producers: dict[str, Node], consumers: dict[str, list[Node]]) -> Node | None:
    """The node making ``name`` when ``name`` has that one reader and is no graph output. The
    counts hold through the pass: a fused node reads what its first stage read and the residual,
    as the stages it replaces did."""
    if name in g.output_names or len(consumers.get(name, ())) != 1:
        return None
    return producers.get(name)


def _fuse(g: Graph, project: Node, dw: Node, expand: Node | None) -> Node:
    attrs = {"strides": dw.attrs.get("strides"), "pads": dw.attrs.get("pads")}
    if dw.attrs.get("auto_pad", "NOTSET") != "NOTSET":  # resolved to explicit pads: the op has no auto_pad
        x = g.type_of(dw.inputs[0])
        win = conv_window(x.shape[1:3], static_weight_shape(g, dw)[:2], dw.attrs, dw.label())
        attrs["pads"] = list(win.pads_begin) + list(win.padded_end(tuple(x.shape[1:3])))
    for stage, n in (("expand_", expand), ("depthwise_", dw), ("", project)):
        if n is not None:
            attrs.update(prefixed_epilogue(n.attrs, stage))
    attrs = {k: v for k, v in attrs.items() if v is not None}
    first = expand or dw
    inputs = [first.inputs[0], expand.inputs[1] if expand else "", expand.input_at(2) if expand else "", dw.inputs[1],
              dw.input_at(2), project.inputs[1], project.input_at(2), residual_input(project)]
    while inputs and not inputs[-1]:
        inputs.pop()
    node = Node(OP, inputs, list(project.outputs), attrs, DOMAIN,
                "+".join(n.label() for n in (expand, dw, project) if n is not None))
    return fuse_nodes(g, project, node, [n for n in (expand, dw) if n is not None])


def fuse_inverted_residual(model: Model) -> bool:
    g, changed = model.graph, False
    producers = {o: n for n in g.nodes for o in n.outputs}
    consumers = g.consumers()  # once: per candidate, a scan of every node made the pass quadratic
    for project in [n for n in g.nodes if (n.domain, n.op_type) == (DOMAIN, CONV)]:
        if not _pointwise(g, project):
            continue
        dw = _producer(g, project.inputs[0], producers, consumers)
        if dw is None or not _depthwise(g, dw):
            continue
        expand = _producer(g, dw.inputs[0], producers, consumers)
        if expand is not None and (not _pointwise(g, expand) or residual_input(expand)):
            expand = None
        node = _fuse(g, project, dw, expand)
        producers[node.outputs[0]] = node
        changed = True
    if changed:
        model.opset_imports.setdefault(DOMAIN, 1)
    return changed


# -- interop: the block as standard ONNX --------------------------------------------------------------------
def _decompose(e, n: Node) -> None:
    """The (two or) three FusedConvNHWC it fused, each decomposed in turn."""
    from inference.decompose import decompose_conv_stage

    x = n.input_at(0)
    if n.input_at(1):
        x = e.fresh("expanded")
        decompose_conv_stage(e, n, n.input_at(0), (1, 2), x, stage_epilogue(n.attrs, "expand_"), "expand")
    kh, kw, _, c = e.g.initializers[n.input_at(3)].shape
    d = e.fresh("depthwise")
    dw = {"group": c, "kernel_shape": [kh, kw], **{k: n.attrs[k] for k in ("strides", "pads") if k in n.attrs}}
    decompose_conv_stage(e, n, x, (3, 4), d, {**dw, **stage_epilogue(n.attrs, "depthwise_")}, "depthwise")
    decompose_conv_stage(e, n, d, (5, 6, 7), n.outputs[0], stage_epilogue(n.attrs, ""), "project")


def _register_decomposition() -> None:
    from inference.decompose import register_decomposition

    register_decomposition(OP, _decompose)


_register_decomposition()
