"""Fold an inference-mode BatchNormalization into the Conv, Gemm or MatMul before it (new weights
and bias).

A BatchNormalization after a linear layer is an affine map per output channel, so it becomes part
of that layer's weight and bias: for a Conv per output channel (axis 0 of its OIHW weight), for a
Gemm or a 2-D MatMul by a constant matrix per output column (the BatchNormalization's channels of
an (N, M) input). Why the linear layers too: MLPerf Tiny's anomaly-detection autoencoder (and any
Keras MLP with ``BatchNormalization``) puts one after every Dense layer; unfolded, each ran as a
step of its own and kept the Relu after it out of the product's epilogue.
"""
from __future__ import annotations

import numpy as np

from inference.ir import Graph, Model, Node, TensorType
from inference.passes._rewrite import constant_value, single_reader


def fold_conv_batchnorm(model: Model) -> bool:
    g, changed = model.graph, False
    for node in list(g.nodes):
        if node.domain != "" or node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        bn = single_reader(g, node.outputs[0])
        if bn is None or bn.op_type != "BatchNormalization" or len([o for o in bn.outputs if o]) != 1:
            continue
        if bn.attrs.get("training_mode", 0):
            continue
        stats = [constant_value(g, i) for i in bn.inputs[1:5]]
        if any(s is None for s in stats):
            continue
        scale, bias, mean, var = (s.astype(np.float64) for s in stats)
        factor = scale / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
        fold = _fold_conv if node.op_type == "Conv" else _fold_linear
        if fold(g, node, factor, bias - mean * factor):
            node.outputs = [bn.outputs[0]]
            g.nodes.remove(bn)
            changed = True
    return changed


def _fold_conv(g: Graph, conv: Node, factor: np.ndarray, shift: np.ndarray) -> bool:
    """``conv`` with the BatchNormalization's ``factor`` and ``shift`` per output channel folded in."""
    w = constant_value(g, conv.inputs[1])
    b = constant_value(g, conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
    if w is None or (len(conv.inputs) > 2 and conv.inputs[2] and b is None) or w.dtype.kind != "f":
        return False
    new_w = (w.astype(np.float64) * factor.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    old_b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
    conv.inputs = [conv.inputs[0], *_folded(g, conv, new_w, (old_b * factor + shift).astype(w.dtype))]
    return True


def _fold_linear(g: Graph, node: Node, factor: np.ndarray, shift: np.ndarray) -> bool:
    """A Gemm, or a MatMul of a 2-D input by a constant matrix, as a Gemm (transA kept) whose
    weight and bias carry the BatchNormalization: ``alpha`` and each column's factor go into the
    weight, ``beta * C`` (any shape Gemm broadcasts) times the factor plus the shift into the bias."""
    a = g.type_of(node.inputs[0]) if node.inputs else None
    w = constant_value(g, node.inputs[1]) if len(node.inputs) > 1 else None
    c_name = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else ""
    c = constant_value(g, c_name) if c_name else None
    attrs = node.attrs if node.op_type == "Gemm" else {}
    trans_b = int(attrs.get("transB", 0))
    if (w is None or w.ndim != 2 or w.dtype.kind != "f" or (c_name and c is None) or not isinstance(a, TensorType)
            or a.rank != 2 or w.shape[1 - trans_b] != factor.size):
        return False
    columns = factor * float(attrs.get("alpha", 1.0))
    new_w = w.astype(np.float64) * (columns[:, None] if trans_b else columns[None, :])
    old_c = 0.0 if c is None else float(attrs.get("beta", 1.0)) * c.astype(np.float64)
    new_c = old_c * factor + shift  # broadcast as Gemm broadcasts C: (M,), (1, M), (N, M), (N, 1) or none
    node.op_type = "Gemm"
    node.attrs = {"transA": int(attrs.get("transA", 0)), "transB": trans_b}
    node.inputs = [node.inputs[0], *_folded(g, node, new_w.astype(w.dtype), new_c.astype(w.dtype))]
    return True


def _folded(g: Graph, node: Node, w: np.ndarray, b: np.ndarray) -> tuple[str, str]:
    """The names of the folded weight and bias, added as initializers (the old ones may have other readers)."""
    w_name, b_name = f"{node.outputs[0]}__bnfold_w", f"{node.outputs[0]}__bnfold_b"
    g.initializers[w_name], g.initializers[b_name] = w, b
    return w_name, b_name
