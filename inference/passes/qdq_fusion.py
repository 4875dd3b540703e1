"""DequantizeLinear -> Conv/MatMul/Gemm [-> Add residual] [-> activation] [-> QuantizeLinear]
becomes one ``edgelearn::QConv`` / ``edgelearn::QMatMul`` (kernels in ``inference.kernels.int8``).

Why: a QDQ model (what ``compress.quantize`` writes, and what onnxruntime's quantizer writes)
means "compute in float on dequantized values". Run literally, it is slower than float (every
tensor is dequantized, then the float op runs). Fused, the op reads the 8-bit tensor and the int8
weight directly, accumulates in int32 on the VNNI tile, and requantizes its output in the same
pass, so a Conv -> Relu -> Conv chain stays 8-bit in memory. What qualifies: per-tensor
activation scale and zero point (constant or computed at run time by DynamicQuantizeLinear),
constant int8 weights with zero zero point (symmetric; per tensor or per output channel), bias
as a constant float or an int32 DequantizeLinear; grouped convolutions of at least 8 output
channels a group, and depthwise ones (their own stencil, ``inference.kernels.int8_depthwise``).

Must run before constant folding: folding turns DequantizeLinear(constant int8 weight) back
into a float32 initializer, and then there is no pattern left to see.
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.int8 import CONV_ATTRS, DOMAIN
from inference.passes._rewrite import constant_value, drop_unused_initializers, fresh_name, single_reader
from inference.passes._epilogue import EpilogueSlots, absorb_epilogue, commit_fused

_QTYPES = (2, 3)  # uint8, int8


def _scalar_or_const(g: Graph, name: str) -> bool:
    """A per-tensor quantization parameter: a 1-element constant, or a run-time value."""
    v = constant_value(g, name)
    if v is not None:
        return v.size == 1
    t = g.type_of(name)
    return not isinstance(t, TensorType) or t.shape in (None, ()) or all(d == 1 for d in t.shape)


def _activation_dq(g: Graph, producers: dict, name: str) -> Node | None:
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain != "" or len(dq.inputs) < 3 or not dq.inputs[2]:
        return None
    t = g.type_of(dq.inputs[0])
    if not isinstance(t, TensorType) or t.elem_type not in _QTYPES:
        return None
    if dq.attrs.get("block_size", 0) or not all(_scalar_or_const(g, i) for i in dq.inputs[1:3]):
        return None
    return dq


def _weight_dq(g: Graph, producers: dict, name: str, out_axis: int, rank: int) -> Node | None:
    """The DequantizeLinear of a constant symmetric int8 weight, scaled per tensor or per ``out_axis``."""
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain != "" or dq.attrs.get("block_size", 0):
        return None
    w = constant_value(g, dq.inputs[0])
    scale = constant_value(g, dq.inputs[1])
    zp = constant_value(g, dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else np.zeros(1, np.int8)
    if w is None or w.dtype != np.int8 or w.ndim != rank or scale is None or scale.dtype != np.float32 or zp is None \
            or np.any(zp != 0):
        return None
    if scale.size > 1 and (scale.ndim != 1 or dq.attrs.get("axis", 1) % rank != out_axis
                           or scale.shape[0] != w.shape[out_axis]):
        return None
    return dq


def _bias(g: Graph, producers: dict, name: str, n_out: int, x_scale: str, w_scale: str) -> str | None:
    """Bias input for the fused op: a float constant, or the int32 tensor under its DequantizeLinear
    (at scale x_scale * w_scale, its zero point absent or zero: what the int8 tile adds to its
    sums). Another constant DequantizeLinear becomes the float bias it computes."""
    c = constant_value(g, name)
    if c is not None:
        return name if c.dtype == np.float32 and c.size == n_out else None
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain != "" or dq.attrs.get("block_size", 0):
        return None
    q = constant_value(g, dq.inputs[0])
    zp = constant_value(g, dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else None
    if q is None or q.dtype != np.int32 or q.size != n_out or (len(dq.inputs) > 2 and dq.inputs[2] and zp is None):
        return None
    scale, xs, ws = (constant_value(g, i) for i in (dq.inputs[1], x_scale, w_scale))
    if (zp is None or not np.any(zp)) and (scale is None or xs is None or ws is None or np.allclose(
            scale.reshape(-1), (xs.reshape(-1)[0] * ws.reshape(-1)).astype(np.float32), rtol=1e-6, atol=0)):
        return dq.inputs[0]  # onnxruntime's quantizer writes its zero point as zeros
    if scale is None:
        return None
    folded = fresh_name(g, f"{name}_float")
    g.initializers[folded] = ((q.reshape(-1).astype(np.float64) - (0 if zp is None else zp.reshape(-1)))
                              * scale.reshape(-1)).astype(np.float32)
    return folded


def _take_qmatmul_bias(g: Graph, fused: Node, name: str, bias: np.ndarray) -> bool:
    """MatMul + Add(constant row): the float bias the Gemm form would carry, as a 1-D row."""
    w = constant_value(g, fused.inputs[3])
    n_out = w.shape[0] if fused.attrs.get("transB", 0) else w.shape[1]
    if fused.op_type != "QMatMul" or fused.inputs[5] or bias.dtype != np.float32 \
            or bias.shape[-1:] != (n_out,) or bias.size != n_out:
        return False
    if bias.ndim != 1:
        name = f"{name}__row"
        g.initializers[name] = bias.reshape(-1)
    fused.inputs[5] = name
    return True


# QConv/QMatMul(x, x_scale, x_zp, w, w_scale, bias, residual, y_scale, y_zp)
_QCONV_SLOTS = EpilogueSlots(residual=6, quant_scale=7)
_QMATMUL_SLOTS = EpilogueSlots(residual=6, take_bias=_take_qmatmul_bias, quant_scale=7)


def _fuse_one(g: Graph, model: Model, node: Node, producers: dict) -> Node | None:
    """The fused node replacing ``node`` (and its tail), or None when the pattern does not hold."""
    if node.domain != "" or len(node.inputs) < 2:
        return None
    xdq = _activation_dq(g, producers, node.inputs[0])
    if xdq is None:
        return None
    a = node.attrs
    if node.op_type == "Conv":
        wdq = _weight_dq(g, producers, node.inputs[1], 0, 4)
        if wdq is None:
            return None
        w = constant_value(g, wdq.inputs[0])
        group = a.get("group", 1)
        depthwise = group == w.shape[0] and w.shape[1] == 1  # its own stencil (kernels.int8_depthwise)
        if group > 1 and w.shape[0] // group < 8 and not depthwise:  # the 8-channel tile would idle
            return None
        op, attrs, n_out = "QConv", {k: v for k, v in a.items() if k in CONV_ATTRS}, w.shape[0]
    elif node.op_type in ("MatMul", "Gemm"):
        trans_b = int(a.get("transB", 0)) if node.op_type == "Gemm" else 0
        if node.op_type == "Gemm" and (a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0):
            return None
        wdq = _weight_dq(g, producers, node.inputs[1], 0 if trans_b else 1, 2)
        if wdq is None:
            return None
        w = constant_value(g, wdq.inputs[0])
        op, attrs, n_out = "QMatMul", ({"transB": 1} if trans_b else {}), w.shape[0 if trans_b else 1]
    else:
        return None
    bias = ""
    if len(node.inputs) > 2 and node.inputs[2]:
        bias = _bias(g, producers, node.inputs[2], n_out, xdq.inputs[1], wdq.inputs[1])
        if bias is None:
            return None
    inputs = [xdq.inputs[0], xdq.inputs[1], xdq.inputs[2], wdq.inputs[0], wdq.inputs[1], bias, "", "", ""]
    return Node(op, inputs, list(node.outputs), attrs, DOMAIN, node.name or node.outputs[0])


def _same_constant(g: Graph, a: str, b: str) -> bool:
    va, vb = constant_value(g, a), constant_value(g, b)
    return a == b or (va is not None and vb is not None and va.dtype == vb.dtype and va.shape == vb.shape
                      and bool(np.all(va == vb)))


def fuse_quantized_maxpool(model: Model) -> bool:
    """DequantizeLinear(s, z) -> MaxPool -> QuantizeLinear(s, z) becomes MaxPool on the 8-bit
    tensor: the same values (max commutes with the monotonic quantizer), a quarter of the bytes."""
    g, changed = model.graph, False
    producers = g.producers()
    for pool in list(g.nodes):
        if pool.op_type != "MaxPool" or pool.domain != "" or len([o for o in pool.outputs if o]) != 1:
            continue
        dq = _activation_dq(g, producers, pool.inputs[0])
        q = single_reader(g, pool.outputs[0])
        if dq is None or q is None or q.op_type != "QuantizeLinear" or len(q.inputs) < 3 \
                or not _same_constant(g, dq.inputs[1], q.inputs[1]) or not _same_constant(g, dq.inputs[2], q.inputs[2]):
            continue
        g.value_info.pop(pool.outputs[0], None)
        pool.inputs = [dq.inputs[0]] + pool.inputs[1:]
        pool.outputs = list(q.outputs)
        g.nodes = [n for n in g.nodes if n is not q]
        changed = True
    return changed


def _drop_dead_dq(g: Graph) -> None:
    """Remove DequantizeLinear nodes nobody reads any more (the fused ops read their inputs)."""
    while True:
        read = {i for n in g.nodes for i in n.inputs} | set(g.output_names)
        dead = [n for n in g.nodes if n.op_type == "DequantizeLinear" and n.domain == "" and n.outputs[0] not in read]
        if not dead:
            return
        ids = {id(n) for n in dead}
        g.nodes = [n for n in g.nodes if id(n) not in ids]


def fuse_qdq(model: Model) -> bool:
    """Rewrite every qualifying QDQ pattern into our int8 ops; returns whether the graph changed."""
    g, changed = model.graph, False
    if not any(n.op_type == "DequantizeLinear" for n in g.nodes):
        return False
    if any(g.type_of(n.inputs[0]) is None for n in g.nodes if n.op_type == "DequantizeLinear"):
        from inference.shape_inference import infer_shapes

        infer_shapes(model)  # the 8-bit types of the quantized tensors decide what fuses
    for node in list(g.nodes):
        if node.op_type not in ("Conv", "MatMul", "Gemm") or not any(n is node for n in g.nodes):
            continue
        fused = _fuse_one(g, model, node, g.producers())
        if fused is None:
            continue
        slots = _QCONV_SLOTS if fused.op_type == "QConv" else _QMATMUL_SLOTS
        commit_fused(g, model, node, fused, absorb_epilogue(g, model, fused, slots), DOMAIN)
        changed = True
    changed = fuse_quantized_maxpool(model) or changed
    if changed:
        _drop_dead_dq(g)
        drop_unused_initializers(g)
    return changed
