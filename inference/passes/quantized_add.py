"""QuantizeLinear(Add(DequantizeLinear(A), DequantizeLinear(B))) -> one ``edgelearn::QAdd``.

Why: a quantized residual network's skip connections are written so (onnxruntime's quantizer in QDQ
format, its QLinearAdd as imported, our own); the four kernels pass over the tensor four times
through float32 intermediates (see :mod:`inference.kernels.int8_add`, which computes the same bytes
in one pass). What fuses: 8-bit A and B of one static shape, per-tensor constant scales and zero
points, and nothing else reading the two dequantized tensors or the sum.
"""
from __future__ import annotations

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.int8_add import OP
from inference.kernels.fused import DOMAIN
from inference.passes._rewrite import constant_scalars, single_reader

_EIGHT_BIT = (2, 3)


def _per_tensor(g: Graph, node: Node) -> bool:
    """A standard Quantize/DequantizeLinear whose scale and zero point are 1-element constants."""
    if node.domain != "" or len(node.inputs) < 3 or not node.inputs[2] or node.attrs.get("block_size", 0):
        return False
    return constant_scalars(g, node.inputs[1:3])


def _dequantized(g: Graph, producers: dict, name: str, add: Node) -> Node | None:
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or not _per_tensor(g, dq) or single_reader(g, name) is not add:
        return None
    t = g.type_of(dq.inputs[0])
    return dq if isinstance(t, TensorType) and t.elem_type in _EIGHT_BIT else None


def fuse_quantized_add(model: Model) -> bool:
    g, changed = model.graph, False
    for add in list(g.nodes):
        if (add.domain, add.op_type) != ("", "Add") or len(add.inputs) != 2 or add.outputs[0] in g.output_names:
            continue
        producers = g.producers()
        a, b = (_dequantized(g, producers, i, add) for i in add.inputs)
        q = single_reader(g, add.outputs[0])
        if a is None or b is None or q is None or q.op_type != "QuantizeLinear" or not _per_tensor(g, q):
            continue
        ta, tb = g.type_of(a.inputs[0]), g.type_of(b.inputs[0])
        if ta.shape is None or ta.shape != tb.shape or any(not isinstance(d, int) for d in ta.shape[1:]):
            continue  # (both TensorTypes: _dequantized checked their element types)
        fused = Node(OP, list(a.inputs[:3]) + list(b.inputs[:3]) + list(q.inputs[1:3]), list(q.outputs), {}, DOMAIN,
                     add.name or add.outputs[0])
        gone = {id(a), id(b), id(q)}
        g.nodes = [fused if n is add else n for n in g.nodes if id(n) not in gone]
        for t in (a.outputs[0], b.outputs[0], add.outputs[0]):
            g.value_info.pop(t, None)
        model.opset_imports.setdefault(DOMAIN, 1)
        changed = True
    return changed


def _decompose(e, n: Node) -> None:
    """Its meaning in standard ONNX: the two DequantizeLinear, the Add, the QuantizeLinear."""
    a = e.op("DequantizeLinear", list(n.inputs[0:3]))
    b = e.op("DequantizeLinear", list(n.inputs[3:6]))
    e.op("QuantizeLinear", [e.op("Add", [a, b])] + list(n.inputs[6:8]), n.outputs[0])


def _register_decomposition() -> None:
    from inference.decompose import register_decomposition

    register_decomposition(OP, _decompose)


_register_decomposition()
