"""Rewrite the ops of our ``edgelearn`` domain back into standard ONNX, for interop.

Why: an optimized model saved with ``FusedConv``/``QConv``... loads without passes in our runtime,
but no other runtime knows those ops. :func:`decompose_to_standard` gives the same computation as
the standard ops each fused node was made of (Conv/MatMul, Add, the activation; QDQ around them
for the int8 ops), so onnxruntime and ``onnx.checker`` accept the file. Packages that add ops of
their own register how to decompose them with :func:`register_decomposition`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
from onnx import TensorProto

from inference.errors import UnsupportedOpError
from inference.ir import Graph, Model, Node, TensorType
from inference.kernels._prepack import source
from inference.kernels.fused import CONV_ATTRS, DOMAIN


class _Emitter:
    """Appends standard nodes and constants for one fused node, with names derived from its output."""

    def __init__(self, graph: Graph, model: Model, node: Node):
        self.g, self.model, self.node = graph, model, node
        self.nodes: list[Node] = []
        self._n = 0

    def fresh(self, what: str) -> str:
        self._n += 1
        return f"{self.node.outputs[0]}__{what}{self._n}"

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.fresh(op_type.lower())
        self.nodes.append(Node(op_type, inputs, [out], attrs, "", f"{self.node.label()}/{op_type}{self._n}"))
        return out

    def const(self, value: np.ndarray) -> str:
        name = self.fresh("const")
        self.g.initializers[name] = value
        return name

    def opset(self) -> int:
        return self.model.opset_imports.get("", 1)


def _activation(e: _Emitter, n: Node, y: str, out: str) -> str:
    """The standard op for ``n``'s ``activation``/``alpha``/``beta`` (see inference.kernels.activations)."""
    a = n.attrs
    act, alpha, beta = a.get("activation", ""), float(a.get("alpha", 0.0)), float(a.get("beta", 0.0))
    if act == "":  # the last op emitted (producer of y) writes the output itself
        e.nodes[-1].outputs = [out]
        return out
    if act in ("Relu", "Sigmoid", "HardSwish"):
        return e.op(act, [y], out)
    if act == "Silu":
        return e.op("Mul", [y, e.op("Sigmoid", [y])], out)
    if act == "LeakyRelu":
        return e.op(act, [y], out, alpha=alpha)
    if act == "HardSigmoid":
        return e.op(act, [y], out, alpha=alpha, beta=beta)
    if act in ("Gelu", "GeluTanh"):
        if e.opset() < 20:
            if act == "Gelu" and e.opset() < 9:
                raise UnsupportedOpError(n.op_type, DOMAIN, 1, n.label(),
                                         f"activation Gelu needs Erf, which opset {e.opset()} does not have")
            return _gelu_written_out(e, y, out, act == "GeluTanh")
        return e.op("Gelu", [y], out, **({"approximate": "tanh"} if act == "GeluTanh" else {}))
    if act == "Clip":
        if e.opset() < 11:
            bounds = {k: v for k, v in (("min", alpha), ("max", beta)) if math.isfinite(v)}
            return e.op("Clip", [y], out, **bounds)
        lo = e.const(np.array(alpha, np.float32)) if math.isfinite(alpha) else ""
        hi = e.const(np.array(beta, np.float32)) if math.isfinite(beta) else ""
        return e.op("Clip", [y, lo, hi], out)
    raise UnsupportedOpError(n.op_type, DOMAIN, 1, n.label(), f"unknown activation {act!r}")


def _gelu_written_out(e: _Emitter, y: str, out: str, tanh: bool) -> str:
    """GELU before opset 20 (no Gelu op) as exporters write it: ``y * 0.5 * (1 + erf(y / sqrt 2))``,
    or with ``tanh(sqrt(2 / pi) * (y + 0.044715 y^3))`` (the chains ``fuse_*_epilogue`` fuses again)."""
    def c(v: float) -> str:
        return e.const(np.array(v, np.float32))

    if tanh:
        cube = e.op("Mul", [y, e.op("Mul", [y, y])])
        inner = e.op("Add", [y, e.op("Mul", [cube, c(0.044715)])])
        curve = e.op("Tanh", [e.op("Mul", [inner, c(math.sqrt(2.0 / math.pi))])])
    else:
        curve = e.op("Erf", [e.op("Div", [y, c(math.sqrt(2.0))])])
    return e.op("Mul", [e.op("Mul", [y, c(0.5)]), e.op("Add", [curve, c(1.0)])], out)


def _epilogue(e: _Emitter, n: Node, y: str, bias: str, residual: str, out: str) -> None:
    """[+ bias] [+ residual] then the activation, writing the fused node's output name."""
    if bias:
        y = e.op("Add", [y, bias])
    if residual:
        y = e.op("Add", [y, residual])
    _activation(e, n, y, out)


def _fused_conv(e: _Emitter, n: Node) -> None:
    attrs = {k: v for k, v in n.attrs.items() if k in CONV_ATTRS and v is not None}
    y = e.op("Conv", [n.inputs[0], n.inputs[1]] + ([n.input_at(2)] if n.input_at(2) else []), **attrs)
    _epilogue(e, n, y, "", n.input_at(3), n.outputs[0])


def _fused_matmul(e: _Emitter, n: Node) -> None:
    y = e.op("MatMul", [n.inputs[0], n.inputs[1]])
    _epilogue(e, n, y, n.input_at(2), n.input_at(3), n.outputs[0])


def _quantized(e: _Emitter, n: Node, is_conv: bool) -> None:
    """QConv/QMatMul as their QDQ meaning: dequantize, the float op, requantize (if y_scale given)."""
    x, xs, xzp, w, ws = (n.inputs[i] for i in range(5))
    bias, residual, ys, yzp = (n.input_at(i) for i in (5, 6, 7, 8))
    scale = e.g.initializers.get(ws)
    per_axis = scale is None or scale.size > 1
    trans_b = bool(n.attrs.get("transB", 0))
    w_axis = 0 if (is_conv or trans_b) else 1
    xf = e.op("DequantizeLinear", [x, xs, xzp])
    wf = e.op("DequantizeLinear", [w, ws], **({"axis": w_axis} if per_axis else {}))
    if trans_b:
        wf = e.op("Transpose", [wf], perm=[1, 0])
    bias_type = e.g.type_of(bias) if bias else None
    if isinstance(bias_type, TensorType) and bias_type.elem_type == TensorProto.INT32:  # at x_scale * w_scale
        bias = e.op("DequantizeLinear", [bias, _bias_scale(e, xs, ws)], **({"axis": 0} if per_axis else {}))
    if is_conv:
        attrs = {k: v for k, v in n.attrs.items() if k in CONV_ATTRS and v is not None}
        y = e.op("Conv", [xf, wf] + ([bias] if bias else []), **attrs)
        bias = ""
    else:
        y = e.op("MatMul", [xf, wf])
    out = e.fresh("float") if ys else n.outputs[0]
    _epilogue(e, n, y, bias, residual, out)
    if ys:
        e.op("QuantizeLinear", [out, ys] + ([yzp] if yzp else []), n.outputs[0])


def _bias_scale(e: _Emitter, xs: str, ws: str) -> str:
    """x_scale * w_scale: a constant when both are (static int8, as quantizers write it), else a Mul."""
    x_scale, w_scale = e.g.initializers.get(xs), e.g.initializers.get(ws)
    if x_scale is None or w_scale is None:
        return e.op("Mul", [xs, ws])
    return e.const((np.float32(x_scale.reshape(())) * w_scale).astype(np.float32))


# (emitter, node): the node is an argument, not read from the emitter, so a decomposition can emit
# another node's decomposition through :func:`decompose_node` (NHWC conv -> its NCHW FusedConv)
Decomposition = Callable[[_Emitter, Node], None]
DECOMPOSITIONS: dict[str, Decomposition] = {
    "FusedConv": _fused_conv,
    "FusedMatMul": _fused_matmul,
    "QConv": lambda e, n: _quantized(e, n, True),
    "QMatMul": lambda e, n: _quantized(e, n, False),
}


def register_decomposition(op_type: str, fn: Decomposition) -> None:
    """How an op of the ``edgelearn`` domain is written in standard ONNX (``fn(emitter, node)``)."""
    DECOMPOSITIONS[op_type] = fn


def decompose_node(e: _Emitter, node: Node, opset: int = 1) -> None:
    """Emit ``node`` as standard ops through ``e``; UnsupportedOpError when no decomposition exists."""
    fn = DECOMPOSITIONS.get(node.op_type)
    if fn is None:
        raise UnsupportedOpError(node.op_type, DOMAIN, opset, node.label(),
                                 "no decomposition into standard ONNX is registered; save the model "
                                 "with its edgelearn ops (our runtime reads them) instead")
    fn(e, node)


def decompose_conv_stage(e: _Emitter, n: Node, first: str, inputs: tuple[int, ...], out: str, attrs: dict,
                         part: str) -> None:
    """One channels-last convolution of the fused block ``n`` (a ``FusedConvNHWC`` reading ``first``
    and ``n``'s inputs at ``inputs``, writing ``out``), emitted in turn as standard ops."""
    from inference.kernels.nhwc import OP as CONV

    conv = Node(CONV, [first] + [n.input_at(i) for i in inputs], [out], attrs, DOMAIN, f"{n.name}/{part}")
    decompose_node(e, conv)


def decompose_to_standard(model: Model) -> Model:
    """A copy of ``model`` with every ``edgelearn``-domain node replaced by standard ops.

    The copy loses the "optimized" mark: its fused ops are gone, so our runtime fuses it again.
    Initializers only the fused ops read (a channels-last conv's HWIO weight, emitted again in
    OIHW) are dropped: they had made MobileNetV2's standard file 22.8 MB against 14.2 MB.
    """
    from inference.passes import OPTIMIZED_KEY
    from inference.passes._rewrite import drop_unused_initializers

    g = model.graph
    inits = {name: source(a) for name, a in g.initializers.items()}  # a released weight's values
    graph = dataclasses.replace(g, nodes=[], initializers=inits, value_info=dict(g.value_info))
    copy = dataclasses.replace(model, graph=graph, opset_imports=dict(model.opset_imports),
                               metadata={k: v for k, v in model.metadata.items() if k != OPTIMIZED_KEY})
    for node in g.nodes:
        if node.domain != DOMAIN:
            graph.nodes.append(node)
            continue
        e = _Emitter(graph, copy, node)
        decompose_node(e, node, model.opset_imports.get(DOMAIN, 1))
        graph.nodes.extend(e.nodes)
    copy.opset_imports.pop(DOMAIN, None)
    drop_unused_initializers(graph)
    return copy
