"""Fuse channels-last squeeze-and-excitation gates (MobileNetV3's, EfficientNet's) into one
``edgelearn::SqueezeExciteNHWC`` (:mod:`inference.kernels.squeeze_excite`: why).

Fused, after the layout pass: a ``Mul`` of X (N, H, W, C) by a gate (N, 1, 1, C) that a 1x1
``FusedConvNHWC`` (R -> C, any activation, no residual) makes from a 1x1 ``FusedConvNHWC`` (C -> R,
any activation, no residual) of ``AveragePoolNHWC`` over X's whole map (a window of H x W, no
padding: the layout pass's GlobalAveragePool). The pool's output, the reduction's and the gate are
each read only by the next step, and none is a graph output; X is float32 of static H, W and C.
"""
from __future__ import annotations

from inference.ir import Graph, Model, Node, TensorType
from inference.kernels.fused import DOMAIN, prefixed_epilogue, stage_epilogue
from inference.kernels.nhwc import OP as CONV
from inference.kernels.nhwc import TO_NCHW, TO_NHWC
from inference.kernels.squeeze_excite import OP, REDUCE
from inference.passes._nhwc_match import plain_nhwc_conv, residual_input, static_weight_shape
from inference.passes._rewrite import fuse_nodes

POOL = "AveragePoolNHWC"


def _static(t) -> tuple | None:
    return tuple(t.shape) if isinstance(t, TensorType) and t.rank == 4 and all(
        isinstance(d, int) for d in t.shape[1:]) else None


def _pointwise(g: Graph, n: Node, c_in: int, c_out: int) -> bool:
    """A 1x1 FusedConvNHWC of group 1, C_in -> C_out on a single pixel, no residual."""
    w = static_weight_shape(g, n)
    out = _static(g.type_of(n.outputs[0]))
    return (plain_nhwc_conv(n) and w == (1, 1, c_in, c_out) and int(n.attrs.get("group", 1)) == 1
            and not residual_input(n) and out is not None and out[1:] == (1, 1, c_out))


def _whole_map_mean(n: Node, hw: tuple[int, int]) -> bool:
    a = n.attrs
    return ((n.domain, n.op_type) == (DOMAIN, POOL) and tuple(a.get("kernel_shape") or ()) == hw
            and not any(a.get("pads") or ()) and a.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")
            and all(int(d) == 1 for d in a.get("dilations") or ()) and not int(a.get("ceil_mode", 0)))


def _only_reader(g: Graph, name: str, consumers: dict[str, list[Node]]) -> bool:
    return name not in g.output_names and len(consumers.get(name, ())) == 1


def _match(g: Graph, mul: Node, producers: dict[str, Node],
           consumers: dict[str, list[Node]]) -> tuple[str, Node, Node, Node] | None:
    """(X, pool, reduction, expansion) of a gate ending at ``mul``."""
    if (mul.domain, mul.op_type) != ("", "Mul") or len(mul.inputs) != 2:
        return None
    for x, gate in (mul.inputs, mul.inputs[::-1]):
        xt = _static(g.type_of(x))
        expand = producers.get(gate)
        if xt is None or g.type_of(x).elem_type != 1 or expand is None or not _only_reader(g, gate, consumers):
            continue
        n, h, w, c = xt
        if _static(g.type_of(mul.outputs[0])) != xt or (expand.domain, expand.op_type) != (DOMAIN, CONV):
            continue
        reduce_ = producers.get(expand.inputs[0])
        if reduce_ is None or not _only_reader(g, expand.inputs[0], consumers):
            continue
        rw = static_weight_shape(g, reduce_)
        if rw is None or not _pointwise(g, reduce_, c, rw[3]) or not _pointwise(g, expand, rw[3], c):
            continue
        pool = producers.get(reduce_.inputs[0])
        if (pool is None or not _only_reader(g, reduce_.inputs[0], consumers) or pool.inputs[0] != x
                or not _whole_map_mean(pool, (h, w))):
            continue
        return x, pool, reduce_, expand
    return None


def _fuse(g: Graph, mul: Node, x: str, pool: Node, reduce_: Node, expand: Node) -> Node:
    attrs = {**prefixed_epilogue(reduce_.attrs, REDUCE), **prefixed_epilogue(expand.attrs, "")}
    inputs = [x, reduce_.inputs[1], reduce_.input_at(2), expand.inputs[1], expand.input_at(2)]
    if not inputs[-1]:
        inputs.pop()
    node = Node(OP, inputs, list(mul.outputs), attrs, DOMAIN,
                "+".join(n.label() for n in (pool, reduce_, expand, mul)))
    return fuse_nodes(g, mul, node, [pool, reduce_, expand])


def fuse_squeeze_excite(model: Model) -> bool:
    g, changed = model.graph, False
    producers = {o: n for n in g.nodes for o in n.outputs}
    consumers = g.consumers()  # once: the fused node reads X as its Mul and pool did, no count changes
    for mul in [n for n in g.nodes if (n.domain, n.op_type) == ("", "Mul")]:
        found = _match(g, mul, producers, consumers)
        if found is None:
            continue
        node = _fuse(g, mul, *found)
        producers[node.outputs[0]] = node
        changed = True
    if changed:
        model.opset_imports.setdefault(DOMAIN, 1)
    return changed


# -- interop: the gate as standard ONNX ---------------------------------------------------------------------
def _decompose(e, n: Node) -> None:
    """Transpose, GlobalAveragePool, Transpose; the two FusedConvNHWC (decomposed in turn); the Mul."""
    from inference.decompose import decompose_conv_stage

    x = n.input_at(0)
    pooled = e.op("Transpose", [e.op("GlobalAveragePool", [e.op("Transpose", [x], perm=list(TO_NCHW))])],
                  perm=list(TO_NHWC))
    pointwise = {"kernel_shape": [1, 1], "group": 1}
    hidden, gate = e.fresh("reduced"), e.fresh("gate")
    decompose_conv_stage(e, n, pooled, (1, 2), hidden, {**pointwise, **stage_epilogue(n.attrs, REDUCE)}, "reduce")
    decompose_conv_stage(e, n, hidden, (3, 4), gate, {**pointwise, **stage_epilogue(n.attrs, "")}, "expand")
    e.op("Mul", [x, gate], n.outputs[0])


def _register_decomposition() -> None:
    from inference.decompose import register_decomposition

    register_decomposition(OP, _decompose)


_register_decomposition()
