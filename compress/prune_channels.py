"""Structured filter pruning: remove a Conv's weakest output channels and everything they feed.

Zeroing weights keeps every tensor's shape, so a dense kernel runs no faster; removing whole
filters shrinks the Conv, its activation maps and the next layer, which is what makes the model
smaller *and* faster on any runtime. A cut on Conv ``k`` (filters ranked by L1 or L2 norm) is
carried to every tensor indexed by those channels:

* the Conv's weight rows and bias;
* through ``BatchNormalization`` (its scale, bias, mean and variance), channel-wise activations
  (Relu, LeakyRelu, Sigmoid, Tanh, Clip, Elu, ..., Identity, Dropout) and pooling (Max/Average/Lp,
  global ones included), which keep the channel axis as it is;
* into each reader: a Conv or ConvTranspose with ``group=1`` (its input-channel slices), or,
  after ``Flatten(axis=1)`` or a ``Reshape`` to ``(N, C*H*W)`` with a constant shape, a Gemm
  (``transA=0``) or MatMul with a constant weight, whose groups of ``H*W`` input features go.

Anything else that reads the channels blocks the cut, because the shrunken tensor would meet a
full-size one or a graph output: a residual ``Add``/``Mul``, ``Concat``, a depthwise or grouped
Conv (cutting its inputs would cut its outputs and groups), a graph output, a shared weight.
With ``layers=None`` such Convs are skipped (:attr:`ChannelPlan.skipped` says why); naming one in
``layers`` raises :class:`ChannelPruningError` with the node that blocks it.

``mode="zero"`` applies the same plan by zeroing instead of removing: the result keeps every
shape and computes exactly what the pruned model computes (the tests hold the two to that).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from compress.prune_masks import PruningError, check_ratio
from compress.quantize import clone
from inference.ir import Graph, Model, Node, TensorType, Value, outer_names
from inference.shape_inference import infer_shapes

__all__ = ["ChannelPruningError", "ChannelCut", "ChannelPlan", "plan_channels", "apply_plan", "prune_channels",
           "CRITERIA"]

CRITERIA = ("l1", "l2")
_CHANNELWISE = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish",
                "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu", "Identity", "Dropout",
                "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}

_JOINS = {"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Concat", "Where"}


class ChannelPruningError(PruningError):
    """A channel cut cannot be carried through the graph (the message names the blocking node)."""


class _Blocked(Exception):
    """Internal: why one Conv's cut cannot propagate."""


@dataclass(frozen=True)
class _Site:
    """A tensor indexed by the cut channels along ``axis``, ``group`` consecutive entries per channel."""

    tensor: str
    axis: int
    group: int = 1

    def index(self, keep: np.ndarray) -> np.ndarray:
        return (keep[:, None] * self.group + np.arange(self.group)).ravel()


@dataclass
class ChannelCut:
    """One Conv's cut: which of its ``channels`` output channels stay, and where that reaches."""

    conv: str
    weight: str
    channels: int
    keep: np.ndarray
    scores: np.ndarray
    sites: list[_Site]
    shapes: dict[str, int] = field(default_factory=dict)  # Reshape shape constants: name -> features/channel
    values: list[str] = field(default_factory=list)        # activations whose channel count changes

    @property
    def removed(self) -> int:
        return self.channels - len(self.keep)


@dataclass
class ChannelPlan:
    cuts: list[ChannelCut]
    skipped: dict[str, str]  # Conv label -> why it was left whole

    def summary(self) -> list[str]:
        lines = [f"{c.conv}: {c.channels} -> {len(c.keep)} channels" for c in self.cuts]
        lines += [f"{name}: kept whole ({why})" for name, why in self.skipped.items()]
        return lines


# -- tracing ---------------------------------------------------------------------------------------
class _Graph:
    """The read-only views the tracer needs: readers of each value, readers of each initializer."""

    def __init__(self, g: Graph):
        self.g = g
        self.readers: dict[str, list[Node]] = {}
        for n in g.nodes:
            for i in dict.fromkeys(n.inputs):
                if i:
                    self.readers.setdefault(i, []).append(n)
        for n in g.nodes:
            if any(True for _ in n.subgraphs()):
                for i in outer_names(n):
                    self.readers.setdefault(i, []).append(n)

    def initializer(self, name: str, owner: Node, what: str) -> np.ndarray:
        arr = self.g.initializers.get(name) if name else None
        if arr is None:
            raise _Blocked(f"{what} {name!r} of {owner.op_type} node {owner.label()!r} is not a constant initializer")
        users = self.readers.get(name, [])
        if len(users) != 1:
            raise _Blocked(f"{what} {name!r} is shared by {len(users)} nodes")
        return arr

    def static_shape(self, name: str) -> tuple[int, ...]:
        t = self.g.type_of(name)
        if not isinstance(t, TensorType) or t.shape is None or not all(isinstance(d, int) for d in t.shape[1:]):
            raise _Blocked(f"the shape of {name!r} is not known past the batch dim ({t})")
        return tuple(t.shape)


def _only_output(node: Node, r: _Graph) -> str:
    extra = [o for o in node.outputs[1:] if o and (r.readers.get(o) or o in r.g.output_names)]
    if extra:
        raise _Blocked(f"{node.op_type} node {node.label()!r} also outputs {extra}, indexed by the cut channels")
    return node.outputs[0]


def _trace(r: _Graph, value: str, channels: int, cut: ChannelCut) -> None:
    """Collect the sites reached by the channels of ``value``; raise _Blocked where they cannot go."""
    if value in r.g.output_names:
        raise _Blocked(f"{value!r} is a graph output (its shape would change)")
    cut.values.append(value)
    for node in r.readers.get(value, []):
        slots = [k for k, i in enumerate(node.inputs) if i == value]
        where = f"{node.op_type} node {node.label()!r}"
        if node.op_type in _JOINS and node.domain in ("", "ai.onnx"):
            raise _Blocked(f"{where} joins {value!r} with another tensor (a residual or concat): both sides "
                           "would have to lose the same channels")
        if node.domain not in ("", "ai.onnx") or slots != [0]:
            raise _Blocked(f"{where} reads {value!r} as input {slots}, which a channel cut cannot follow")
        op = node.op_type
        if op == "BatchNormalization":
            for k, what in zip(range(1, 5), ("scale", "bias", "mean", "var")):
                r.initializer(node.inputs[k], node, f"BatchNormalization {what}")
                cut.sites.append(_Site(node.inputs[k], 0))
            _trace(r, _only_output(node, r), channels, cut)
        elif op in _CHANNELWISE:
            _trace(r, _only_output(node, r), channels, cut)
        elif op in ("Conv", "ConvTranspose"):
            if node.attrs.get("group", 1) != 1:
                kind = "depthwise" if node.attrs.get("group") == channels else "grouped"
                raise _Blocked(f"{where} is a {kind} conv (group={node.attrs['group']}): cutting its input "
                               "channels would change its groups and outputs")
            r.initializer(node.inputs[1], node, "weight")
            cut.sites.append(_Site(node.inputs[1], 1 if op == "Conv" else 0))
        elif op in ("Flatten", "Reshape"):
            _trace_flat(r, node, value, channels, cut)
        else:
            raise _Blocked(f"{where} reads the cut channels of {value!r}; supported readers are Conv/ConvTranspose "
                           "(group 1), BatchNormalization, channel-wise activations and pooling, Flatten/Reshape "
                           "into Gemm/MatMul")


def _trace_flat(r: _Graph, node: Node, value: str, channels: int, cut: ChannelCut) -> None:
    """Flatten(axis=1) or Reshape to (N, C*H*W), read only by Gemm/MatMul with constant weights."""
    where = f"{node.op_type} node {node.label()!r}"
    shape = r.static_shape(value)
    per_channel = int(np.prod(shape[2:], dtype=np.int64))
    if node.op_type == "Flatten" and node.attrs.get("axis", 1) != 1:
        raise _Blocked(f"{where} flattens from axis {node.attrs['axis']}, not 1")
    if node.op_type == "Reshape":
        target = r.initializer(node.inputs[1], node, "shape")
        if target.size != 2 or target[1] not in (-1, channels * per_channel) or target[0] not in (0, -1, shape[0]) \
                or (target[0] == -1 and target[1] == -1):
            raise _Blocked(f"{where} reshapes {shape} to {target.tolist()}, not to (N, C*H*W)")
        if target[1] != -1:
            cut.shapes[node.inputs[1]] = per_channel
    out = node.outputs[0]
    if out in r.g.output_names:
        raise _Blocked(f"{out!r} is a graph output (its shape would change)")
    cut.values.append(out)
    for reader in r.readers.get(out, []):
        rwhere = f"{reader.op_type} node {reader.label()!r}"
        if reader.domain not in ("", "ai.onnx") or reader.op_type not in ("Gemm", "MatMul") \
                or [i for i in reader.inputs if i == out] != [out] or reader.inputs[0] != out:
            raise _Blocked(f"{rwhere} reads the flattened channels of {out!r}; only Gemm/MatMul (as input A) can")
        if reader.op_type == "Gemm" and reader.attrs.get("transA", 0):
            raise _Blocked(f"{rwhere} has transA=1")
        w = r.initializer(reader.inputs[1], reader, "weight")
        if w.ndim != 2:
            raise _Blocked(f"{rwhere}: weight {reader.inputs[1]!r} is not a matrix")
        axis = 1 if reader.op_type == "Gemm" and reader.attrs.get("transB", 0) else 0
        cut.sites.append(_Site(reader.inputs[1], axis, per_channel))


# -- planning ----------------------------------------------------------------------------------------
def _scores(w: np.ndarray, criterion: str) -> np.ndarray:
    flat = np.abs(w.reshape(w.shape[0], -1).astype(np.float64))
    return flat.sum(1) if criterion == "l1" else np.sqrt((flat ** 2).sum(1))


def _plan_one(r: _Graph, conv: Node, ratio: float, criterion: str, current: dict[str, np.ndarray]) -> ChannelCut:
    if conv.attrs.get("group", 1) != 1:
        raise _Blocked(f"it is a grouped conv (group={conv.attrs['group']})")
    r.initializer(conv.inputs[1], conv, "weight")
    w = current.get(conv.inputs[1], r.g.initializers[conv.inputs[1]])
    channels = w.shape[0]
    n_remove = min(int(round(ratio * channels)), channels - 1)
    scores = _scores(w, criterion)
    keep = np.sort(np.argsort(-scores, kind="stable")[:channels - n_remove])
    cut = ChannelCut(conv.label(), conv.inputs[1], channels, keep, scores, [_Site(conv.inputs[1], 0)])
    if len(conv.inputs) > 2 and conv.inputs[2]:
        r.initializer(conv.inputs[2], conv, "bias")
        cut.sites.append(_Site(conv.inputs[2], 0))
    _trace(r, conv.outputs[0], channels, cut)
    return cut


def plan_channels(model: Model, ratio: float, criterion: str = "l1", layers: Sequence[str] | None = None
                  ) -> ChannelPlan:
    """Which output channels of which Convs to remove: ``round(ratio * C)`` lowest-norm filters each.

    ``layers``: Conv node names (or output names) to cut; default every Conv whose cut can
    propagate. Scores of a Conv are taken after the cuts of the Convs before it removed its input
    channels, so a filter is judged by the weights that remain.
    """
    ratio = check_ratio(ratio)
    if criterion not in CRITERIA:
        raise ChannelPruningError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    typed = clone(model)
    infer_shapes(typed)
    r = _Graph(typed.graph)
    convs = [n for n in typed.graph.nodes if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]
    if layers is not None:
        known = {n.label(): n for n in convs} | {n.outputs[0]: n for n in convs}
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise ChannelPruningError(f"no Conv named {unknown} (Convs: {sorted(n.label() for n in convs)[:10]})")
        wanted = {id(known[name]) for name in layers}
        convs = [n for n in convs if id(n) in wanted]
    cuts, skipped, current, taken = [], {}, {}, set()
    for conv in convs:
        try:
            cut = _plan_one(r, conv, ratio, criterion, current)
            clash = [s.tensor for s in cut.sites if (s.tensor, s.axis) in taken]
            if clash:
                raise _Blocked(f"{clash} already lose channels on that axis to another cut")
        except _Blocked as e:
            if layers is not None:
                raise ChannelPruningError(f"cannot prune the output channels of Conv {conv.label()!r}: {e}") from None
            skipped[conv.label()] = str(e)
            continue
        if cut.removed == 0:
            skipped[conv.label()] = f"ratio {ratio} of {cut.channels} channels rounds to none"
            continue
        taken.update((s.tensor, s.axis) for s in cut.sites)
        for s in cut.sites:  # later Convs score their filters without the input channels cut here
            if s.axis == 1 and s.group == 1:
                current[s.tensor] = np.take(current.get(s.tensor, typed.graph.initializers[s.tensor]),
                                            s.index(cut.keep), axis=1)
        cuts.append(cut)
    if not cuts:
        detail = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "the model has no Conv"
        raise ChannelPruningError(f"no Conv of graph {model.graph.name!r} can lose channels ({detail})")
    return ChannelPlan(cuts, skipped)


# -- applying ----------------------------------------------------------------------------------------
def apply_plan(model: Model, plan: ChannelPlan, mode: str = "remove") -> Model:
    """A copy of ``model`` with the plan's channels removed (``"remove"``) or zeroed (``"zero"``)."""
    if mode not in ("remove", "zero"):
        raise ChannelPruningError(f"mode must be 'remove' or 'zero', got {mode!r}")
    m = clone(model)
    g = m.graph
    for cut in plan.cuts:
        for s in cut.sites:
            arr = g.initializers.get(s.tensor)
            if arr is None or arr.shape[s.axis] != cut.channels * s.group:
                raise ChannelPruningError(f"plan does not fit this model: {s.tensor!r} has shape "
                                          f"{None if arr is None else arr.shape}, expected {cut.channels * s.group} "
                                          f"along axis {s.axis}")
            idx = s.index(cut.keep)
            if mode == "remove":
                g.initializers[s.tensor] = np.ascontiguousarray(np.take(arr, idx, axis=s.axis))
            else:
                keep = np.zeros(arr.shape[s.axis], dtype=bool)
                keep[idx] = True
                g.initializers[s.tensor] = arr * keep.reshape([-1 if a == s.axis else 1 for a in range(arr.ndim)])
        if mode == "remove":
            for name, per_channel in cut.shapes.items():
                g.initializers[name] = np.asarray([g.initializers[name][0], len(cut.keep) * per_channel],
                                                  dtype=g.initializers[name].dtype)
    if mode == "remove":
        _retype(m, plan)
    return m


def _retype(m: Model, plan: ChannelPlan) -> None:
    """New types for the sliced initializers listed as inputs and for the activations that shrank."""
    g = m.graph
    g.inputs = [Value(v.name, TensorType(v.type.elem_type, tuple(g.initializers[v.name].shape)), v.doc)
                if v.name in g.initializers and isinstance(v.type, TensorType) else v
                for v in g.inputs]  # new Values: the clone shares the old ones with the input model
    # only the traced activations change channel count; what the Convs/Gemms after them output does not
    for cut in plan.cuts:
        for name in cut.values:
            g.value_info.pop(name, None)
    infer_shapes(m)


def prune_channels(model: Model, ratio: float, criterion: str = "l1", layers: Sequence[str] | None = None) -> Model:
    """A copy of ``model`` with ``ratio`` of the output channels of its Convs removed (see module doc)."""
    return apply_plan(model, plan_channels(model, ratio, criterion, layers))
