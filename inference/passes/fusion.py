"""Fuse Conv / Gemm / MatMul with their bias, a residual Add and an activation into one node.

Conv(+bias) [-> Add(residual)] [-> activation] becomes ``edgelearn::FusedConv``; MatMul or Gemm by
a constant matrix [-> Add(constant bias)] [-> Add(residual)] [-> activation] becomes
``edgelearn::FusedMatMul``. Why: the fast kernels apply bias, residual and activation while the
product's output is still in cache (one pass instead of up to three full passes over the tensor,
and no intermediates to allocate). The fused node takes the place of the *last* node it absorbs,
so a residual produced between the product and the Add is computed before it is read.
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.fused import CONV_ATTRS, DOMAIN
from inference.passes._epilogue import (FUSABLE_ACTIVATIONS, EpilogueSlots, absorb_epilogue, activation_params,
                                        commit_fused)
from inference.passes._rewrite import constant_value, drop_unused_initializers

__all__ = ["FUSABLE_ACTIVATIONS", "activation_params", "fuse_conv_epilogue", "fuse_matmul_epilogue"]

_CONV_SLOTS = EpilogueSlots(residual=3)  # FusedConv(X, W, B, residual): the bias comes from the Conv itself


def _float32(g: Graph, name: str, rank: int | None = None) -> bool:
    t = g.type_of(name)
    return isinstance(t, TensorType) and t.elem_type == 1 and (rank is None or t.rank == rank)


def _take_matmul_bias(g: Graph, fused: Node, name: str, bias: np.ndarray) -> bool:
    """A float32 row of the weight's width goes in FusedMatMul's bias slot."""
    n_out = g.initializers[fused.inputs[1]].shape[-1]
    if bias.dtype != np.float32 or bias.shape not in ((n_out,), (1, n_out)):
        return False
    fused.inputs[2] = name
    return True


def fuse_conv_epilogue(model: Model) -> bool:
    """Conv(+B) [-> Add residual] [-> activation] -> edgelearn::FusedConv."""
    g, changed = model.graph, False
    for conv in list(g.nodes):
        if conv.op_type != "Conv" or conv.domain != "" or conv not in g.nodes or not _float32(g, conv.inputs[0], 4):
            continue
        inputs = (list(conv.inputs) + ["", ""])[:3] + [""]
        attrs = {k: v for k, v in conv.attrs.items() if k in CONV_ATTRS}
        fused = Node("FusedConv", inputs, list(conv.outputs), attrs, DOMAIN, conv.name or conv.outputs[0])
        absorbed = absorb_epilogue(g, model, fused, _CONV_SLOTS)
        if absorbed:
            commit_fused(g, model, conv, fused, absorbed, DOMAIN)
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
    bias = node.input_at(2)
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
        slots = EpilogueSlots(residual=3, take_bias=None if found[1] else _take_matmul_bias)
        absorbed = absorb_epilogue(g, model, fused, slots)
        # a lone product too: the weight packed once into panels, its one-row product streamed
        # (rows_gemm.GEMV_STREAMS), and a numba call a replay repeats. Why: a bias-free projection
        # (LLaMA's, a tied LM head) had stayed MatMul, which a replaying session ran on the
        # activation x activation kernel reading the weight's rows at 13 GB/s (24 such 512 x 2048
        # layers: 7.6 -> 5.2 ms replayed, onnxruntime 5.3)
        commit_fused(g, model, mm, fused, absorbed, DOMAIN)
        changed = True
    drop_unused_initializers(g)
    return changed
