"""MatMul(A, Transpose(B)) with the Transpose swapping B's last two axes becomes one
``edgelearn::MatMulTransB(A, B)`` (:mod:`inference.kernels.matmul_transb`), which reads B in place.

Why: attention's ``Q @ K^T`` exports as that pair, and the Transpose copies K; in a KV-cache
decoder that is the whole key cache at every step. onnxruntime fuses the same pair (its
``FusedMatMul`` with ``transB``).

Only when the Transpose's output is read by that MatMul alone (no other node, no subgraph, not a
graph output), so nothing else loses the transposed tensor.
"""
from __future__ import annotations

from inference.ir import Model, outer_names
from inference.kernels.fused import DOMAIN
from inference.passes._rewrite import single_reader
from inference.passes.transpose_reshape import perm_of


def fuse_transpose_matmul(model: Model) -> bool:
    """Fuse every qualifying pair; returns whether the graph changed."""
    g, changed = model.graph, False
    producers = g.producers()
    inner_reads = set().union(*(outer_names(n) for n in g.nodes if n.has_subgraphs()))
    for mm in list(g.nodes):
        if mm.op_type != "MatMul" or mm.domain != "" or len(mm.inputs) != 2:
            continue
        t = producers.get(mm.inputs[1])
        if t is None or t.op_type != "Transpose" or t.domain != "" or t.outputs[0] in inner_reads:
            continue
        perm = perm_of(g, t)
        if perm is None or len(perm) < 2 or perm != list(range(len(perm) - 2)) + [len(perm) - 1, len(perm) - 2]:
            continue
        if single_reader(g, t.outputs[0]) is not mm:
            continue
        mm.op_type, mm.domain, mm.inputs = "MatMulTransB", DOMAIN, [mm.inputs[0], t.inputs[0]]
        g.nodes.remove(t)
        g.value_info.pop(t.outputs[0], None)
        model.opset_imports.setdefault(DOMAIN, 1)
        changed = True
    return changed


def _decompose(e, n) -> None:
    """Its meaning in standard ONNX: the Transpose of B's last two axes, then the MatMul."""
    t = e.g.type_of(n.inputs[1])
    rank = getattr(t, "rank", None)
    if rank is None or rank < 2:
        from inference.errors import UnsupportedOpError

        raise UnsupportedOpError(n.op_type, DOMAIN, 1, n.label(), f"B ({n.inputs[1]!r}) has no known rank of at "
                                 "least 2 to write its Transpose with")
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    e.op("MatMul", [n.inputs[0], e.op("Transpose", [n.inputs[1]], perm=perm)], n.outputs[0])


def _register_decomposition() -> None:
    from inference.decompose import register_decomposition

    register_decomposition("MatMulTransB", _decompose)


_register_decomposition()
