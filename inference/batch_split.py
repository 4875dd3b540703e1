"""Can a graph's batch be split into chunks run independently? A static, conservative answer.

Splitting the batch across threads (``inference.split_runner``) is only valid when every output
row depends on the same input row alone. That is decided here from the (optimized) graph, before
any run: every fed input and every output must lead with the same symbolic batch dim, and every
node between them must be an op known to act per sample along axis 0, with its other operands
constant. An op not in the tables below, an unknown rank, control flow, or a constant operand that
could broadcast against the batch axis means no split: a wrong "yes" would silently mix rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from inference.ir import Graph, Node, TensorType

CONST, BATCH = "const", "batch"  # a value: independent of the feeds, or batch-major per sample

#: unary or broadcasting elementwise ops (numpy broadcasting rules; checked by ``_elementwise``)
ELEMENTWISE = frozenset("""
Abs Acos Acosh Add And Asin Asinh Atan Atanh BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Cast
CastLike Ceil Celu Clip Cos Cosh Div Elu Equal Erf Exp Floor Gelu Greater GreaterOrEqual HardSigmoid
HardSwish Identity IsInf IsNaN LeakyRelu Less LessOrEqual Log Max Mean Min Mish Mod Mul Neg Not Or
PRelu Pow Reciprocal Relu Round Selu Shrink Sigmoid Sign Sin Sinh Softplus Softsign Sqrt Sub Sum Tan
Tanh ThresholdedRelu Where Xor
""".split())

#: input 0 is the batch, the rest are parameters (weights, bias, statistics)
PER_SAMPLE = frozenset("""
AveragePool BatchNormalization Conv ConvTranspose GlobalAveragePool GlobalLpPool GlobalMaxPool
InstanceNormalization LRN LpPool MaxPool
""".split())

REDUCE = frozenset("""
ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare
""".split())

#: ops whose output differs run to run even on constant inputs: never folded into "constant"
RANDOM = frozenset("Bernoulli Multinomial RandomNormal RandomNormalLike RandomUniform RandomUniformLike".split())

OUR_DOMAIN = "edgelearn"


@dataclass(frozen=True)
class SplitCheck:
    """The verdict: ``ok``, the batch dim's symbol, and when not ok, the first reason found."""

    ok: bool
    batch_dim: str | None = None
    reason: str = ""


class _Graph:
    """Kinds and types of the values seen so far, for the op rules."""

    def __init__(self, graph: Graph, opset: int):
        self.graph, self.opset = graph, opset
        self.kind: dict[str, str] = {name: CONST for name in graph.initializers}

    def rank(self, name: str) -> int | None:
        t = self.graph.type_of(name)
        return t.rank if isinstance(t, TensorType) else None

    def dim0(self, name: str) -> object:
        t = self.graph.type_of(name)
        return t.shape[0] if isinstance(t, TensorType) and t.shape else None

    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant input when it is an initializer (after constant folding)."""
        return self.graph.initializers.get(name)

    def ints(self, node: Node, attr: str, index: int) -> list[int] | None:
        """An int list given as attribute ``attr`` or as constant input ``index`` (newer opsets)."""
        if attr in node.attrs and node.attrs[attr] is not None:
            return [int(a) for a in node.attrs[attr]]
        if index < len(node.inputs) and node.inputs[index]:
            value = self.const(node.inputs[index])
            return None if value is None else [int(a) for a in np.ravel(value)]
        return None


def _axis(axis: int, rank: int | None) -> int | None:
    return None if rank is None else (axis + rank if axis < 0 else axis)


# -- op rules: (node, graph state) -> None when per-sample, else why not ------------------------
Rule = Callable[[Node, _Graph], "str | None"]


def _batch_inputs(node: Node, g: _Graph, allowed: tuple[int, ...] = (0,)) -> str | None:
    """Only the inputs at ``allowed`` positions may depend on the batch (input 0 must)."""
    names = [(i, n) for i, n in enumerate(node.inputs) if n]
    if not names or g.kind[names[0][1]] != BATCH or names[0][0] != 0:
        return "its first input is not the batch"
    bad = [n for i, n in names if g.kind[n] == BATCH and i not in allowed]
    if bad:
        return f"its parameter inputs {bad} depend on the batch"
    r0 = g.rank(node.inputs[0])
    for i in allowed[1:]:
        if i < len(node.inputs) and node.inputs[i] and (g.kind[node.inputs[i]] != BATCH or
                                                         g.rank(node.inputs[i]) != r0):
            return f"its input {node.inputs[i]!r} is not a batch-major tensor like input 0"
    return None


def _elementwise(node: Node, g: _Graph) -> str | None:
    """Batch inputs share one rank; constants broadcast only over trailing axes (or have dim 0 = 1)."""
    names = [n for n in node.inputs if n]
    ranks = {n: g.rank(n) for n in names}
    if None in ranks.values():
        return "an input's rank is unknown"
    batch_ranks = {ranks[n] for n in names if g.kind[n] == BATCH}
    if len(batch_ranks) != 1:
        return f"its batch inputs differ in rank {sorted(batch_ranks)}"
    r = batch_ranks.pop()
    for n in names:
        if g.kind[n] == CONST and ranks[n] >= r:
            d0 = g.graph.type_of(n).shape[0] if ranks[n] > 0 else 1
            if ranks[n] > r or d0 != 1:
                return f"constant {n!r} broadcasts against the batch axis"
    if node.op_type == "Dropout" and len(names) > 2:
        return "Dropout with a training_mode input"
    return None


def _per_sample(node: Node, g: _Graph) -> str | None:
    if node.op_type == "BatchNormalization" and (node.attrs.get("training_mode", 0) or len(node.outputs) > 1):
        return "BatchNormalization in training mode (batch statistics)"
    if node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1]:
        return "MaxPool Indices count across the batch"
    return _batch_inputs(node, g)


def _fused(residual: int) -> Rule:
    """Our fused conv/matmul ops: input 0 the batch, ``residual`` (Z) batch-major too."""
    def rule(node: Node, g: _Graph) -> str | None:
        if node.op_type in ("FusedMatMul", "QMatMul"):
            w = node.inputs[1] if node.op_type == "FusedMatMul" else node.inputs[3]
            if (g.rank(node.inputs[0]) or 0) < 2 or g.rank(w) != 2:
                return "not a batch-rows @ 2-D weight product"
        return _batch_inputs(node, g, (0, residual))
    return rule


def _matmul(node: Node, g: _Graph) -> str | None:
    a, b = node.inputs[:2]
    ra, rb = g.rank(a), g.rank(b)
    if ra is None or rb is None:
        return "an input's rank is unknown"
    ka, kb = g.kind[a], g.kind[b]
    if ka == BATCH and kb == BATCH:
        return None if ra == rb >= 3 else "batch operands of different ranks"
    if ka == BATCH:  # rows of A (or its leading batch axis) against a constant B
        if ra >= 2 and (rb <= 2 or rb < ra or g.dim0(b) == 1):
            return None
        return "constant B broadcasts against the batch axis"
    if rb >= 3 and (ra < rb or g.dim0(a) == 1):  # constant A against a stacked batch B
        return None
    return "the batch axis of B is contracted"


def _gemm(node: Node, g: _Graph) -> str | None:
    if node.attrs.get("transA", 0):
        return "Gemm with transA (batch on the contracted axis)"
    err = _batch_inputs(node, g)
    if err or len(node.inputs) < 3 or not node.inputs[2]:
        return err
    c = node.inputs[2]
    return None if (g.rank(c) or 0) < 2 or g.dim0(c) == 1 else "Gemm's C has a row per batch row"


def _not_axis0(attr: str, default: int | Callable[[_Graph], int]) -> Rule:
    """Ops along one axis (Softmax, Concat, Gather ...): fine unless that axis is the batch."""
    def rule(node: Node, g: _Graph) -> str | None:
        d = default(g) if callable(default) else default
        axis = _axis(int(node.attrs.get(attr, d)), g.rank(node.inputs[0]))
        if axis is None or axis == 0:
            return f"{node.op_type} acts along the batch axis (or its rank is unknown)"
        allowed = tuple(range(len(node.inputs))) if node.op_type == "Concat" else (0,)
        return _batch_inputs(node, g, allowed)
    return rule


def _gather(node: Node, g: _Graph) -> str | None:
    """Rows of constant data picked by batch indices along axis 0 (an embedding), or batch data
    indexed by constant indices along another axis."""
    data, indices = node.inputs[:2]
    axis = _axis(int(node.attrs.get("axis", 0)), g.rank(data))
    if g.kind[data] == CONST and axis == 0 and (g.rank(indices) or 0) >= 1:
        return None
    if axis in (None, 0):
        return "Gather along the batch axis"
    return _batch_inputs(node, g)


def _flatten(node: Node, g: _Graph) -> str | None:
    axis = _axis(int(node.attrs.get("axis", 1)), g.rank(node.inputs[0]))
    return _batch_inputs(node, g) if axis not in (None, 0) else "Flatten at axis 0 folds the batch"


def _transpose(node: Node, g: _Graph) -> str | None:
    perm = node.attrs.get("perm")
    rank = g.rank(node.inputs[0])
    first = perm[0] if perm is not None else (None if rank is None else rank - 1)
    return _batch_inputs(node, g) if first == 0 else "Transpose moves the batch axis"


def _reshape(node: Node, g: _Graph) -> str | None:
    """Dim 0 must be kept: shape[0] == 0 (copy), or -1 with the other dims fixing a row's size."""
    shape = g.const(node.inputs[1]) if len(node.inputs) > 1 else None
    if shape is None or shape.ndim != 1 or shape.size == 0:
        return "Reshape to a shape computed at run time"
    s0 = int(shape[0])
    if s0 == 0 and not node.attrs.get("allowzero", 0):
        return _batch_inputs(node, g)
    t = g.graph.type_of(node.inputs[0])
    rest = [int(d) for d in shape[1:]]
    if s0 == -1 and isinstance(t, TensorType) and t.shape and all(isinstance(d, int) for d in t.shape[1:]) \
            and all(d > 0 for d in rest) and int(np.prod(rest)) == int(np.prod(t.shape[1:], dtype=np.int64)):
        return _batch_inputs(node, g)
    return "Reshape does not keep the batch dim"


def _axes_rule(attr: str, index: int, *, of_output: bool = False) -> Rule:
    """Squeeze/Unsqueeze/Reduce*: the listed axes must exist and exclude the batch axis."""
    def rule(node: Node, g: _Graph) -> str | None:
        axes = g.ints(node, attr, index)
        rank = g.rank(node.outputs[0] if of_output else node.inputs[0])
        if axes is None and node.op_type in REDUCE and node.attrs.get("noop_with_empty_axes", 0):
            return _batch_inputs(node, g)
        if axes is None or rank is None or 0 in {_axis(a, rank) for a in axes}:
            return f"{node.op_type} over the batch axis (or over unknown axes)"
        return _batch_inputs(node, g)
    return rule


def _slice(node: Node, g: _Graph) -> str | None:
    axes = g.ints(node, "axes", 3)
    rank = g.rank(node.inputs[0])
    if axes is None or rank is None or 0 in {_axis(a, rank) for a in axes}:
        return "Slice over the batch axis (or over unknown axes)"
    return _batch_inputs(node, g)


def _pad(node: Node, g: _Graph) -> str | None:
    pads, rank = g.ints(node, "pads", 1), g.rank(node.inputs[0])
    if pads is None or rank is None or len(pads) != 2 * rank or pads[0] or pads[rank] or \
            (len(node.inputs) > 3 and node.inputs[3]):
        return "Pad of the batch axis (or of unknown axes)"
    return _batch_inputs(node, g)


def _qdq(node: Node, g: _Graph) -> str | None:
    """(De)QuantizeLinear: per-tensor, or per-channel along an axis other than the batch."""
    scale = g.const(node.inputs[1])
    if node.attrs.get("block_size", 0) or scale is None:
        return f"{node.op_type} with a run-time or blocked scale"
    if scale.size > 1 and _axis(int(node.attrs.get("axis", 1)), g.rank(node.inputs[0])) in (None, 0):
        return f"{node.op_type} per-channel along the batch axis"
    return _batch_inputs(node, g)


def _softmax_default(g: _Graph) -> int:
    return -1 if g.opset >= 13 else 1


RULES: dict[tuple[str, str], Rule] = {
    **{("", op): _elementwise for op in ELEMENTWISE | {"Dropout"}},
    **{("", op): _per_sample for op in PER_SAMPLE},
    **{("", op): _axes_rule("axes", 1) for op in REDUCE},
    ("", "Squeeze"): _axes_rule("axes", 1),
    ("", "Unsqueeze"): _axes_rule("axes", 1, of_output=True),
    ("", "MatMul"): _matmul,
    ("", "Gemm"): _gemm,
    ("", "Flatten"): _flatten,
    ("", "Transpose"): _transpose,
    ("", "Reshape"): _reshape,
    ("", "Slice"): _slice,
    ("", "Pad"): _pad,
    ("", "QuantizeLinear"): _qdq,
    ("", "DequantizeLinear"): _qdq,
    **{("", op): _not_axis0("axis", _softmax_default) for op in ("Softmax", "LogSoftmax", "Hardmax")},
    ("", "LayerNormalization"): _not_axis0("axis", -1),
    (OUR_DOMAIN, "LayerNormalization"): _not_axis0("axis", -1),
    ("", "LpNormalization"): _not_axis0("axis", -1),
    ("", "Concat"): _not_axis0("axis", 0),
    ("", "Split"): _not_axis0("axis", 0),
    ("", "Gather"): _gather,
    ("", "ArgMax"): _not_axis0("axis", 0),
    ("", "ArgMin"): _not_axis0("axis", 0),
    (OUR_DOMAIN, "FusedConv"): _fused(3),
    (OUR_DOMAIN, "FusedConvNHWC"): _fused(3),
    (OUR_DOMAIN, "InvertedResidualNHWC"): _fused(7),
    (OUR_DOMAIN, "SqueezeExciteNHWC"): _per_sample,  # its weights and biases are no batch
    (OUR_DOMAIN, "MaxPoolNHWC"): _per_sample,
    (OUR_DOMAIN, "AveragePoolNHWC"): _per_sample,
    (OUR_DOMAIN, "ChannelShuffle"): _not_axis0("axis", 1),
    (OUR_DOMAIN, "FusedMatMul"): _fused(3),
    (OUR_DOMAIN, "QConv"): _fused(6),
    (OUR_DOMAIN, "QMatMul"): _fused(6),
}


def check_batch_split(graph: Graph, opset: int = 17) -> SplitCheck:
    """Whether ``graph`` computes each output row from the same input row only (``opset``: ai.onnx's)."""
    feeds = graph.feed_inputs()
    dims = {v.type.shape[0] if isinstance(v.type, TensorType) and v.type.shape else None for v in feeds}
    if not feeds or len(dims) != 1 or not isinstance(next(iter(dims)), str):
        return SplitCheck(False, reason="the fed inputs do not share one leading symbolic (batch) dim")
    batch = dims.pop()
    g = _Graph(graph, opset)
    g.kind.update({v.name: BATCH for v in feeds})
    for node in graph.nodes:
        why = _node_verdict(node, g, batch)
        if why:
            return SplitCheck(False, batch, f"node {node.label()} ({node.op_type}): {why}")
    not_batch = [v.name for v in graph.outputs if g.kind.get(v.name) != BATCH]
    if not_batch:
        return SplitCheck(False, batch, f"outputs {not_batch} are not batch-major")
    return SplitCheck(True, batch)


def _node_verdict(node: Node, g: _Graph, batch: str) -> str | None:
    """Record the kind of ``node``'s outputs; return why it breaks row independence, if it does."""
    names = [n for n in node.inputs if n]
    unknown = [n for n in names if n not in g.kind]
    if unknown or node.has_subgraphs():
        return "control flow or values from an enclosing scope"
    if all(g.kind[n] == CONST for n in names):
        if node.op_type in RANDOM:
            return "a random op"
        g.kind.update({o: CONST for o in node.outputs if o})
        return None
    rule = RULES.get(("" if node.domain in ("", "ai.onnx") else node.domain, node.op_type))
    if rule is None:
        return "not known to act per sample along the batch axis"
    why = rule(node, g)
    if why:
        return why
    for o in node.outputs:
        if o:
            d0 = g.dim0(o)
            if not g.rank(o):
                return f"output {o!r} has no leading axis (or an unknown rank)"
            if isinstance(d0, int) or (isinstance(d0, str) and d0 != batch):
                return f"output {o!r} leads with dim {d0!r}, not the batch"
            g.kind[o] = BATCH
    return None
