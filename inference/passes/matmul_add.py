"""MatMul of a 2-D activation by a constant matrix, then Add of a constant bias -> one Gemm."""
from __future__ import annotations

from inference.ir import Model, TensorType
from inference.passes._rewrite import constant_value, single_reader


def fuse_matmul_add(model: Model) -> bool:
    g, changed = model.graph, False
    for mm in list(g.nodes):
        if mm.op_type != "MatMul" or mm.domain != "" or len(mm.inputs) < 2:  # malformed: the kernel says so
            continue
        a_type = g.type_of(mm.inputs[0])
        w = constant_value(g, mm.inputs[1])
        if not isinstance(a_type, TensorType) or a_type.rank != 2 or w is None or w.ndim != 2:
            continue
        add = single_reader(g, mm.outputs[0])
        if add is None or add.op_type != "Add":
            continue
        other = add.inputs[1] if add.inputs[0] == mm.outputs[0] else add.inputs[0]
        bias = constant_value(g, other)
        if bias is None or bias.dtype != w.dtype or bias.shape not in ((w.shape[1],), (1, w.shape[1])):
            continue
        mm.op_type, mm.inputs, mm.outputs = "Gemm", [mm.inputs[0], mm.inputs[1], other], add.outputs
        mm.attrs = {}
        g.nodes.remove(add)
        changed = True
    return changed
