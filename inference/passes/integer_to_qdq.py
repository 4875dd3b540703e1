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
from inference.passes._rewrite import constant_value, fresh_name, is_plain, other_input, single_reader

_FLOATS = {"MatMulInteger": "MatMul", "ConvInteger": "Conv"}


def integer_to_qdq(model: Model) -> bool:
    g, changed = model.graph, False
    for node in list(g.nodes):
        if node.op_type in _FLOATS and node.domain == "" and any(n is node for n in g.nodes):
            changed = _rewrite(g, node) or changed
    return changed


def _rewrite(g: Graph, node: Node) -> bool:
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
    axis = {} if ws.size == 1 else {"axis": 0 if node.op_type == "ConvInteger" else -1}
    base = mul.outputs[0]
    a_float, w_float = fresh_name(g, f"{base}_a", "_"), fresh_name(g, f"{base}_w", "_")
    dq_a = Node("DequantizeLinear", [a, quantizer.outputs[1]] + ([a_zero] if a_zero else []), [a_float],
                name=f"{a_float}_dequantize")
    dq_w = Node("DequantizeLinear", [w, w_scale] + ([w_zero] if w_zero else []), [w_float], axis,
                name=f"{w_float}_dequantize")
    product = Node(_FLOATS[node.op_type], [dq_a.outputs[0], dq_w.outputs[0]], [base], dict(node.attrs),
                   name=node.name or base)
    at = g.nodes.index(mul)
    g.nodes[at:at + 1] = [dq_a, dq_w, product]
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
