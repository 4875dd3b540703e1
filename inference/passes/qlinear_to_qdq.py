"""Quantized operators (onnxruntime's "QOperator" format) rewritten into the QDQ form they mean:
``QLinearConv(x, ...)`` becomes ``QuantizeLinear(Conv(DequantizeLinear(x), DequantizeLinear(w),
DequantizeLinear(bias)))``, and so on, one rule per op.

Why: onnxruntime's quantizer (``QuantFormat.QOperator``) and published int8 models (the ONNX model
zoo's ``*-int8.onnx``) write QLinearConv and QLinearMatMul with Microsoft-domain companions
(QLinearAdd, QLinearGlobalAveragePool, QGemm, ...). The companions have no kernel here, so such a
model did not load; and a QLinearConv run as written missed the int8 tile. In QDQ form the
companions run as float ops between quantize and dequantize steps (what their specification
defines them as) and ``fuse_qdq`` fuses the convolutions and products into QConv / QMatMul with
their epilogues, as it does for a QDQ model.

The Microsoft-domain ops are expanded when a model is imported (:func:`expand_contrib_ops`): that is
the only way they run. QLinearConv and QLinearMatMul, standard ops with reference kernels, are
expanded by the ``qlinear_to_qdq`` pass before ``fuse_qdq``. Their reference kernels accumulate in
integers; the float form rounds each product's sum once in float32, which moves an output by one
quantization step only where it lands within float32's rounding of a tie.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from inference.ir import Graph, Model, Node
from inference.passes._rewrite import constant_value, fresh_name, taken_names

MS = "com.microsoft"


class QdqWriter:
    """Emits the nodes replacing one quantized node (or pattern); new values are named after its
    output, apart from every name in ``taken`` (:func:`~inference.passes._rewrite.taken_names`)."""

    def __init__(self, g: Graph, node: Node, taken: set[str]):
        self.g, self.node, self.taken, self.nodes = g, node, taken, []

    def _name(self, what: str) -> str:
        return fresh_name(self.g, f"{self.node.outputs[0]}_{what}", "_", self.taken)

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self._name(op_type)
        self.nodes.append(Node(op_type, inputs, [out], attrs, "", f"{out}_node"))
        return out

    def dq(self, x: str, scale: str, zp: str = "", axis: int | None = None) -> str:
        attrs = {} if axis is None else {"axis": axis}
        return self.op("DequantizeLinear", [x, scale] + ([zp] if zp else []), **attrs)

    def q(self, x: str, scale: str, zp: str, out: str) -> str:
        return self.op("QuantizeLinear", [x, scale] + ([zp] if zp else []), out)

    def const(self, value: np.ndarray, what: str) -> str:
        name = self._name(what)
        self.g.initializers[name] = value
        return name


def per_axis(g: Graph, scale: str, axis: int) -> int | None:
    """The DequantizeLinear axis for a scale given per channel (None: per tensor or unknown)."""
    v = constant_value(g, scale)
    return axis if v is not None and v.size > 1 else None


def _bias(w: QdqWriter, bias: str, x_scale: str, w_scale: str, scale_factor: float = 1.0) -> str:
    """An int32 bias at scale ``x_scale * w_scale`` (times ``scale_factor``), dequantized."""
    xs, ws = constant_value(w.g, x_scale), constant_value(w.g, w_scale)
    if xs is not None and ws is not None:
        scale = w.const((xs.reshape(-1)[0] * ws.reshape(-1) * scale_factor).astype(np.float32), "bias_scale")
    else:
        scale = w.op("Mul", [x_scale, w_scale])
        if scale_factor != 1.0:
            scale = w.op("Mul", [scale, w.const(np.float32(scale_factor), "alpha")])
    return w.dq(bias, scale, axis=0 if ws is None or ws.size > 1 else None)


def _qlinear_conv(w: QdqWriter, n: Node) -> None:
    x, xs, xz, wt, ws, wz, ys, yz = (n.inputs + [""] * 8)[:8]
    inputs = [w.dq(x, xs, xz), w.dq(wt, ws, wz, per_axis(w.g, ws, 0))]
    if n.input_at(8):
        inputs.append(_bias(w, n.inputs[8], xs, ws))
    w.q(w.op("Conv", inputs, **n.attrs), ys, yz, n.outputs[0])


def _qlinear_matmul(w: QdqWriter, n: Node) -> None:
    a, as_, az, b, bs, bz, ys, yz = n.inputs
    product = w.op("MatMul", [w.dq(a, as_, az, per_axis(w.g, as_, -2)), w.dq(b, bs, bz, per_axis(w.g, bs, -1))])
    w.q(product, ys, yz, n.outputs[0])


def _binary(op: str) -> Callable[[QdqWriter, Node], None]:
    def rule(w: QdqWriter, n: Node) -> None:  # QLinearAdd / QLinearMul: A, A_s, A_zp, B, B_s, B_zp, C_s, C_zp
        a, as_, az, b, bs, bz, cs, cz = (n.inputs + [""] * 8)[:8]
        w.q(w.op(op, [w.dq(a, as_, az), w.dq(b, bs, bz)]), cs, cz, n.outputs[0])
    return rule


def _unary(op: str, keep: tuple[str, ...] = ()) -> Callable[[QdqWriter, Node], None]:
    def rule(w: QdqWriter, n: Node) -> None:  # X, X_s, X_zp, Y_s, Y_zp, as QLinearSigmoid and the pools
        x, xs, xz, ys, yz = (n.inputs + [""] * 5)[:5]
        attrs = {k: v for k, v in n.attrs.items() if k in keep}
        value = w.dq(x, xs, xz)
        if n.attrs.get("channels_last", 0):
            rank = w.g.type_of(x).rank
            value = w.op("Transpose", [value], perm=[0, rank - 1] + list(range(1, rank - 1)))
            value = w.op(op, [value], **attrs)
            value = w.op("Transpose", [value], perm=[0] + list(range(2, rank)) + [1])
        else:
            value = w.op(op, [value], **attrs)
        w.q(value, ys, yz, n.outputs[0])
    return rule


def _qlinear_concat(w: QdqWriter, n: Node) -> None:
    ys, yz, rest = n.inputs[0], n.inputs[1], n.inputs[2:]
    parts = [w.dq(rest[i], rest[i + 1], rest[i + 2]) for i in range(0, len(rest), 3)]
    w.q(w.op("Concat", parts, axis=n.attrs["axis"]), ys, yz, n.outputs[0])


def _qgemm(w: QdqWriter, n: Node) -> None:
    a, as_, az, b, bs, bz, c, ys, yz = (n.inputs + [""] * 9)[:9]
    trans_b = n.attrs.get("transB", 0)
    inputs = [w.dq(a, as_, az), w.dq(b, bs, bz, per_axis(w.g, bs, 0 if trans_b else 1))]
    alpha = float(n.attrs.get("alpha", 1.0))
    if c:
        inputs.append(_bias(w, c, as_, bs, alpha))
    out = n.outputs[0] if not ys else None
    value = w.op("Gemm", inputs, out, alpha=alpha, transA=n.attrs.get("transA", 0), transB=trans_b)
    if ys:
        w.q(value, ys, yz, n.outputs[0])


def _renamed_domain(w: QdqWriter, n: Node) -> None:
    """com.microsoft's QuantizeLinear / DequantizeLinear: the standard ops with the same inputs."""
    w.nodes.append(Node(n.op_type, list(n.inputs), list(n.outputs), dict(n.attrs), "", n.name))


#: (domain, op_type) -> the rule writing its QDQ form
RULES: dict[tuple[str, str], Callable[[QdqWriter, Node], None]] = {
    ("", "QLinearConv"): _qlinear_conv,
    ("", "QLinearMatMul"): _qlinear_matmul,
    (MS, "QLinearAdd"): _binary("Add"),
    (MS, "QLinearMul"): _binary("Mul"),
    (MS, "QLinearSigmoid"): _unary("Sigmoid"),
    (MS, "QLinearLeakyRelu"): _unary("LeakyRelu", ("alpha",)),
    (MS, "QLinearGlobalAveragePool"): _unary("GlobalAveragePool"),
    (MS, "QLinearAveragePool"): _unary("AveragePool", ("auto_pad", "ceil_mode", "count_include_pad",
                                                       "kernel_shape", "pads", "strides")),
    (MS, "QLinearSoftmax"): _unary("Softmax", ("axis",)),  # its "opset" attribute: see _expandable
    (MS, "QLinearConcat"): _qlinear_concat,
    (MS, "QGemm"): _qgemm,
    (MS, "QuantizeLinear"): _renamed_domain,
    (MS, "DequantizeLinear"): _renamed_domain,
}


def _expand(model: Model, domains: tuple[str, ...]) -> bool:
    g, changed = model.graph, False
    taken = taken_names(g)
    nodes: list[Node] = []
    for n in g.nodes:
        rule = RULES.get((n.domain, n.op_type))
        if rule is None or n.domain not in domains or not _expandable(model, n):
            nodes.append(n)
            continue
        w = QdqWriter(g, n, taken)
        rule(w, n)
        nodes.extend(w.nodes)
        changed = True
    if changed:
        g.nodes = nodes
        if MS in domains and not any(n.domain == MS for n in g.nodes):
            model.opset_imports.pop(MS, None)
    return changed


def _expandable(model: Model, n: Node) -> bool:
    """QLinearSoftmax keeps the Softmax of its ``opset`` attribute (before 13: over the flattened
    trailing axes): expanded where the model's Softmax means the same, or the axis is the last; a
    channels-last pool needs its input's rank."""
    t = model.graph.type_of(n.inputs[0])
    rank = getattr(t, "rank", None)
    if n.op_type == "QLinearSoftmax" and (n.attrs.get("opset", 13) >= 13) != (model.opset() >= 13):
        return rank is not None and n.attrs.get("axis", 1) % rank == rank - 1
    return not n.attrs.get("channels_last", 0) or rank is not None


def expand_contrib_ops(model: Model) -> bool:
    """At import: onnxruntime's Microsoft-domain quantized ops, which only run in QDQ form."""
    return _expand(model, (MS,))


def qlinear_to_qdq(model: Model) -> bool:
    """The pass: QLinearConv and QLinearMatMul (and any Microsoft-domain op left) in QDQ form."""
    return _expand(model, ("", MS))
