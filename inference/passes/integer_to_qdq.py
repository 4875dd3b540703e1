"""Integer products written out (``MatMulInteger`` / ``ConvInteger`` -> ``Cast`` to float -> ``Mul`` by
the product of the two scales) rewritten as the product of two DequantizeLinear they compute.

Why: that is how onnxruntime's ``quantize_dynamic`` writes each quantized layer (the activation
quantized at run time by ``DynamicQuantizeLinear``), the usual int8 recipe for transformers. Run
as written, MatMulInteger is an integer numpy product (no BLAS): the transformer encoder of the
benchmarks took 585 ms where onnxruntime takes 4.7. As ``MatMul(DequantizeLinear(a),
DequantizeLinear(w))`` it is what ``fuse_qdq`` turns into a QMatMul (run-time activation scale,
int32 sums, the bias Add in its epilogue). Both compute ``(a - a_zero) (w - w_zero) a_scale
w_scale``; the fused op sums in int32 as MatMulInteger does and scales once.

What qualifies: the activation quantized by a DynamicQuantizeLinear whose scale is one factor of
the Mul's scale, the other a constant (per tensor, or per output column / channel) for a constant
weight; the Cast and the Mul each read once.
"""
from __future__ import annotations

from onnx import TensorProto

from inference.ir import Graph, Model, Node
from inference.passes._rewrite import constant_value, is_plain, other_input, single_reader, taken_names
from inference.passes.qlinear_to_qdq import QdqWriter, per_axis

_FLOATS = {"MatMulInteger": "MatMul", "ConvInteger": "Conv"}


def integer_to_qdq(model: Model) -> bool:
    g, changed = model.graph, False
    taken = taken_names(g)
    for node in list(g.nodes):
        if node.op_type in _FLOATS and node.domain == "" and any(n is node for n in g.nodes):
            changed = _rewrite(g, node, taken) or changed
    return changed


def _rewrite(g: Graph, node: Node, taken: set[str]) -> bool:
    producers = g.producers()
    a, w = node.inputs[0], node.inputs[1]
    a_zero, w_zero = node.input_at(2), node.input_at(3)
    quantizer = producers.get(a)
    cast = single_reader(g, node.outputs[0])
    if (quantizer is None or quantizer.op_type != "DynamicQuantizeLinear" or quantizer.outputs[0] != a
            or a_zero not in ("", quantizer.outputs[2]) or constant_value(g, w) is None
            or not is_plain(cast, "Cast") or cast.attrs.get("to") != TensorProto.FLOAT):
        return False
    mul = single_reader(g, cast.outputs[0])
    scales = producers.get(other_input(mul, cast.outputs[0]) or "") if is_plain(mul, "Mul") else None
    w_scale = other_input(scales, quantizer.outputs[1]) if is_plain(scales, "Mul") else None
    ws = constant_value(g, w_scale) if w_scale else None
    if ws is None or not _fits(node, ws, constant_value(g, w)):
        return False
    out = QdqWriter(g, mul, taken)  # the product takes the Mul's output and place
    inputs = [out.dq(a, quantizer.outputs[1], a_zero),
              out.dq(w, w_scale, w_zero, per_axis(g, w_scale, 0 if node.op_type == "ConvInteger" else -1))]
    out.op(_FLOATS[node.op_type], inputs, mul.outputs[0], **node.attrs)
    at = g.nodes.index(mul)
    g.nodes[at:at + 1] = out.nodes
    g.nodes = [n for n in g.nodes if n is not node and n is not cast]
    for gone in (node.outputs[0], cast.outputs[0]):
        g.value_info.pop(gone, None)
    return True


def _fits(node: Node, ws, w) -> bool:
    """A weight scale per tensor, or one per output column (MatMul) / output channel (Conv)."""
    if ws.size == 1:
        return True
    out = w.shape[-1] if node.op_type == "MatMulInteger" else w.shape[0]
    return ws.ndim == 1 and ws.size == out and w.ndim >= 2
