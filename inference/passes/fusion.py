"""Fuse Conv / Gemm / MatMul with their bias, a residual Add and an activation into one node.

Conv(+bias) [-> Add(residual)] [-> activation] becomes ``edgelearn::FusedConv``; MatMul or Gemm by
a constant matrix [-> Add(constant bias)] [-> Add(residual)] [-> activation] becomes
``edgelearn::FusedMatMul``. Why: the fast kernels apply bias, residual and activation while the
product's output is still in cache (one pass instead of up to three full passes over the tensor,
and no intermediates to allocate). The fused node takes the place of the *last* node it absorbs,
so a residual produced between the product and the Add is computed before it is read.
"""
from __future__ import annotations

import math

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.fused import CONV_ATTRS, DOMAIN
from inference.passes._rewrite import constant_value, drop_unused_initializers, single_reader

FUSABLE_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu")


def activation_params(g: Graph, node: Node, opset: int) -> tuple[str, float, float] | None:
    """(activation attribute, alpha, beta) for a fusable activation node, None if not fusable."""
    op, a = node.op_type, node.attrs
    if node.domain != "" or op not in FUSABLE_ACTIVATIONS:
        return None
    if op == "Clip":
        if opset < 11:
            return "Clip", float(a.get("min", -math.inf)), float(a.get("max", math.inf))
        bounds = []
        for i, default in ((1, -math.inf), (2, math.inf)):
            name = node.inputs[i] if len(node.inputs) > i else ""
            v = constant_value(g, name) if name else np.asarray(default)
            if v is None or v.size != 1:
                return None
            bounds.append(float(v.reshape(())))
        return "Clip", bounds[0], bounds[1]
    if op == "LeakyRelu":
        return op, float(a.get("alpha", 0.01)), 0.0
    if op == "HardSigmoid":
        return op, float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if op == "Gelu":
        approx = a.get("approximate", "none")
        return ("Gelu" if approx == "none" else "GeluTanh"), 0.0, 0.0
    return op, 0.0, 0.0


def _float32(g: Graph, name: str, rank: int | None = None) -> bool:
    t = g.type_of(name)
    return isinstance(t, TensorType) and t.elem_type == 1 and (rank is None or t.rank == rank)


def _same_shape(g: Graph, a: str, b: str) -> bool:
    ta, tb = g.type_of(a), g.type_of(b)
    return (isinstance(ta, TensorType) and isinstance(tb, TensorType) and ta.shape is not None
            and ta.shape == tb.shape and ta.elem_type == tb.elem_type and None not in ta.shape)


def _other(add: Node, name: str) -> str:
    return add.inputs[1] if add.inputs[0] == name else add.inputs[0]


def _absorb(g: Graph, model: Model, fused: Node, want_bias: bool) -> list[Node]:
    """Grow ``fused`` over its readers: [bias Add] [residual Add] [activation]; returns absorbed nodes."""
    absorbed: list[Node] = []
    stage = 0 if want_bias else 1
    while True:
        out = fused.outputs[0]
        nxt = single_reader(g, out)
        if nxt is None or nxt.domain != "" or len(nxt.outputs) != 1:
            break
        is_add = nxt.op_type == "Add" or (nxt.op_type == "Sum" and len(nxt.inputs) == 2)  # Sum: opset<7 Add
        if is_add and stage <= 1 and nxt.inputs[0] != nxt.inputs[1]:
            other = _other(nxt, out)
            bias = constant_value(g, other)
            n_out = g.initializers[fused.inputs[1]].shape[-1] if stage == 0 else -1
            if stage == 0 and bias is not None and bias.dtype == np.float32 and bias.shape in ((n_out,), (1, n_out)):
                fused.inputs[2] = other
                stage = 1
            elif bias is None and _same_shape(g, other, out) and _same_shape(g, nxt.outputs[0], out):
                fused.inputs[3] = other
                stage = 2
            else:
                break
        elif stage <= 2 and (act := activation_params(g, nxt, model.opset_imports.get("", 1))) is not None:
            fused.attrs.update(activation=act[0], alpha=act[1], beta=act[2])
            stage = 3
        else:
            break
        absorbed.append(nxt)
        fused.outputs = list(nxt.outputs)
        if stage == 3:
            break
    return absorbed


def _commit(g: Graph, model: Model, origin: Node, fused: Node, absorbed: list[Node]) -> None:
    """Put ``fused`` where the last absorbed node was and drop the nodes it replaces."""
    gone = {id(origin)} | {id(n) for n in absorbed}
    for n in [origin] + absorbed[:-1]:
        g.value_info.pop(n.outputs[0], None)
    idx = g.nodes.index(absorbed[-1])
    g.nodes[idx] = fused
    g.nodes = [n for n in g.nodes if id(n) not in gone or n is fused]
    while fused.inputs and fused.inputs[-1] == "":
        fused.inputs.pop()
    model.opset_imports.setdefault(DOMAIN, 1)


def fuse_conv_epilogue(model: Model) -> bool:
    """Conv(+B) [-> Add residual] [-> activation] -> edgelearn::FusedConv."""
    g, changed = model.graph, False
    for conv in list(g.nodes):
        if conv.op_type != "Conv" or conv.domain != "" or conv not in g.nodes or not _float32(g, conv.inputs[0], 4):
            continue
        inputs = (list(conv.inputs) + ["", ""])[:3] + [""]
        attrs = {k: v for k, v in conv.attrs.items() if k in CONV_ATTRS}
        fused = Node("FusedConv", inputs, list(conv.outputs), attrs, DOMAIN, conv.name or conv.outputs[0])
        absorbed = _absorb(g, model, fused, want_bias=False)
        if absorbed:
            _commit(g, model, conv, fused, absorbed)
            changed = True
    return changed


def _matmul_weight(g: Graph, node: Node) -> tuple[str, str] | None:
    """(weight initializer name, bias name or "") when ``node`` is a MatMul/Gemm by a constant matrix."""
    w = constant_value(g, node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim != 2 or w.dtype != np.float32 or not _float32(g, node.inputs[0]):
        return None
    if node.op_type == "MatMul":
        return node.inputs[1], ""
    a = node.attrs
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or not _float32(g, node.inputs[0], 2):
        return None
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias:
        c = constant_value(g, bias)
        if c is None or a.get("beta", 1.0) != 1.0 or c.dtype != np.float32 or c.shape not in (
                (w.shape[0 if a.get("transB", 0) else 1],), (1, w.shape[0 if a.get("transB", 0) else 1])):
            return None
    name = node.inputs[1]
    if a.get("transB", 0):
        name = f"{node.inputs[1]}__T"
        g.initializers[name] = np.ascontiguousarray(w.T)
    return name, bias


def fuse_matmul_epilogue(model: Model) -> bool:
    """MatMul/Gemm by a constant matrix [+ bias] [+ residual] [-> activation] -> edgelearn::FusedMatMul."""
    g, changed = model.graph, False
    for mm in list(g.nodes):
        if mm.op_type not in ("MatMul", "Gemm") or mm.domain != "" or mm not in g.nodes:
            continue
        found = _matmul_weight(g, mm)
        if found is None:
            continue
        fused = Node("FusedMatMul", [mm.inputs[0], found[0], found[1], ""], list(mm.outputs), {}, DOMAIN,
                     mm.name or mm.outputs[0])
        absorbed = _absorb(g, model, fused, want_bias=not found[1])
        if absorbed or mm.op_type == "Gemm":
            if not absorbed:  # a lone Gemm: still worth it for the transposed weight and fast kernel
                idx = g.nodes.index(mm)
                g.nodes[idx] = fused
                while fused.inputs[-1] == "":
                    fused.inputs.pop()
                model.opset_imports.setdefault(DOMAIN, 1)
            else:
                _commit(g, model, mm, fused, absorbed)
            changed = True
    drop_unused_initializers(g)
    return changed
