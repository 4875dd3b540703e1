"""Fold an inference-mode BatchNormalization into the Conv before it (new weights and bias)."""
from __future__ import annotations

import numpy as np

from inference.ir import Model
from inference.passes._rewrite import constant_value, single_reader


def fold_conv_batchnorm(model: Model) -> bool:
    g, changed = model.graph, False
    for conv in list(g.nodes):
        if conv.op_type != "Conv" or conv.domain != "":
            continue
        bn = single_reader(g, conv.outputs[0])
        if bn is None or bn.op_type != "BatchNormalization" or len([o for o in bn.outputs if o]) != 1:
            continue
        if bn.attrs.get("training_mode", 0):
            continue
        w = constant_value(g, conv.inputs[1])
        b = constant_value(g, conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
        stats = [constant_value(g, i) for i in bn.inputs[1:5]]
        if w is None or (len(conv.inputs) > 2 and conv.inputs[2] and b is None) or any(s is None for s in stats):
            continue
        if w.dtype.kind != "f":
            continue
        scale, bias, mean, var = (s.astype(np.float64) for s in stats)
        eps = bn.attrs.get("epsilon", 1e-5)
        factor = scale / np.sqrt(var + eps)
        new_w = (w.astype(np.float64) * factor.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        old_b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        new_b = ((old_b - mean) * factor + bias).astype(w.dtype)
        w_name, b_name = f"{conv.outputs[0]}__bnfold_w", f"{conv.outputs[0]}__bnfold_b"
        g.initializers[w_name], g.initializers[b_name] = new_w, new_b
        conv.inputs = [conv.inputs[0], w_name, b_name]
        conv.outputs = [bn.outputs[0]]
        g.nodes.remove(bn)
        changed = True
    return changed
