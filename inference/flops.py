"""Floating-point operation counts from inferred shapes, for `edgelearn info` and benchmarks."""
from __future__ import annotations

import math

from inference.ir import Graph, Model, Node, TensorType

#: every op that is a convolution, ONNX's and ours (FusedConv, FusedConvNHWC, int8 QConv)
CONVOLUTIONS = ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "FusedConv", "FusedConvNHWC", "QConv")


#: ops that move or describe data and compute nothing: 0 FLOPs whatever their shapes. Why not
#: their element counts: shape inference often loses the shapes of a transformer's head splits
#: (reshape targets computed at run time), and one unknown count left a whole ViT's total unknown,
#: so its thread policy threaded batch 1 (0.15 ms at two threads against 0.08 at one)
MOVES_DATA = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Gather", "Identity", "Shape",
                        "Size", "Concat", "Slice", "Split", "Expand", "Tile", "Cast", "Constant", "ConstantOfShape",
                        "Range", "Dropout"})


def node_flops(graph: Graph, node: Node, batch: int = 1) -> int | None:
    """FLOPs of one node (a multiply-add counts 2); None when shapes are unknown."""
    if node.op_type in MOVES_DATA and node.domain == "":
        return 0
    out = graph.concrete_shape(node.outputs[0], batch) if node.outputs and node.outputs[0] else None
    if out is None:
        return None
    if node.op_type == "InvertedResidualNHWC":
        return _inverted_residual_flops(graph, node, out, batch)
    if node.op_type == "SqueezeExciteNHWC":
        return _squeeze_excite_flops(graph, node, out, batch)
    if node.op_type in CONVOLUTIONS:
        w_index = 3 if node.op_type in ("QLinearConv", "QConv") else 1
        w = graph.concrete_shape(node.inputs[w_index], batch)
        if w is None:
            return None
        # C_in/group * kernel taps: OIHW weights, or HWIO ones (channels-last convolutions)
        macs_per_out = math.prod(w[:3]) if node.op_type == "FusedConvNHWC" else math.prod(w[1:])
        if node.op_type == "ConvTranspose":
            x = graph.concrete_shape(node.inputs[0], batch)
            return None if x is None else 2 * math.prod(x) * math.prod(w[1:])
        return 2 * math.prod(out) * macs_per_out
    if node.op_type in ("LSTM", "GRU", "RNN"):  # per step, row and direction: gates x (input + hidden) products
        x, w, r = (graph.concrete_shape(node.input_at(i), batch) for i in range(3))
        if x is None or w is None or r is None or len(x) != 3 or len(w) != 3 or len(r) != 3:
            return None
        return 2 * x[0] * x[1] * w[0] * w[1] * (w[2] + r[2])
    if node.op_type in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "QMatMul"):
        a = graph.concrete_shape(node.inputs[0], batch)
        if a is None:
            return None
        k = a[0] if node.op_type == "Gemm" and node.attrs.get("transA", 0) else a[-1]
        return 2 * math.prod(out) * k
    return math.prod(out)


def row_flops(graph: Graph) -> int | None:
    """FLOPs of a run of ``graph`` per batch row; None when a shape is unknown or a fed input has a
    symbolic dim past its leading axis (a sequence length: the count then grows with more than the
    batch, and taking that dim as 1 undercounts a real run by far)."""
    for v in graph.feed_inputs():
        if isinstance(v.type, TensorType) and v.type.shape is not None \
                and any(not isinstance(d, int) for d in v.type.shape[1:]):
            return None
    total = 0
    for node in graph.nodes:
        f = node_flops(graph, node)
        if f is None:
            return None
        total += f
    return total


def _inverted_residual_flops(graph: Graph, node: Node, out: tuple, batch: int) -> int | None:
    """The fused block's three convolutions: expansion over the input's pixels (if it has one),
    depthwise (3x3 or 5x5, its weight's taps) and projection over the output's."""
    x = graph.concrete_shape(node.inputs[0], batch)
    wd = graph.concrete_shape(node.inputs[3], batch)
    if x is None or wd is None:
        return None
    expanded = wd[3]
    pixels_in, pixels_out = math.prod(x[:3]), math.prod(out[:3])
    expansion = pixels_in * x[3] * expanded if len(node.inputs) > 1 and node.inputs[1] else 0
    return 2 * (expansion + pixels_out * expanded * wd[0] * wd[1] + pixels_out * expanded * out[3])


def _squeeze_excite_flops(graph: Graph, node: Node, out: tuple, batch: int) -> int | None:
    """The gate as its four nodes count: the pool and the Mul an operation per output element, the
    two one-pixel products C x R multiply-adds each per image."""
    w1 = graph.concrete_shape(node.inputs[1], batch)
    if w1 is None:
        return None
    n, c = out[0], out[3]
    return n * c + 2 * 2 * n * c * w1[3] + math.prod(out)


def model_flops(model: Model, batch: int = 1) -> tuple[int, int]:
    """(total FLOPs over nodes with known shapes, number of nodes whose shapes were unknown)."""
    total, unknown = 0, 0
    for n in model.graph.nodes:
        f = node_flops(model.graph, n, batch)
        if f is None:
            unknown += 1
        else:
            total += f
    return total, unknown
