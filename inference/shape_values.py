"""The shape arithmetic of a dynamic export, computed once per set of input shapes.

``torch.onnx.export`` with dynamic axes writes a model's reshape targets as run-time arithmetic on
shapes: ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``, with Cast, Mul, Div, Equal and Where
between (the dynamic-axis BERT: ~60 of its ~115 steps). Each is a few microseconds of Python on a
tensor of a few int64s, ~0.4 ms a run in all, and their values are the same on every run of the same
input shapes. A session therefore finds those steps once (:func:`plan_shape_values`): the small
values that follow from the feeds' shapes alone. The first run of a set of feed shapes computes
them as usual and keeps them; later runs of those shapes start with them and skip their steps.

Which values follow from the feeds' shapes is proved from the graph, not guessed from a run: a
tensor's *shape* does when it is a feed, a weight, or the output of an op whose output shape is a
function of its inputs' shapes and of the *values* of the inputs listed in :data:`VALUE_SHAPED`
that do; a tensor's *value* does when it is a weight, the output of ``Shape`` or ``Size`` of such a
tensor, or of a deterministic op whose inputs all do. Ops whose output shape follows the data
(:data:`DATA_SHAPED`), control flow, and ops of other domains end the proof. Only values of rank 0
or 1 with a static length of at most :data:`MAX_ELEMENTS` are kept (shape vectors, not a mask made
from them), never a graph output (the caller owns those), and a step is skipped only when the
values it is the last reader of are such kept ones (a ``Shape`` that is a tensor's last reader
runs, so the tensor is freed where it was). What a skipped step would have freed stays until the
run ends: a few int64s.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

from inference.ir import TensorType

#: op -> the positions of the inputs whose values (not only shapes) set its output's shape
VALUE_SHAPED = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "ConstantOfShape": (0,),
    "Range": (0, 1, 2), "Unsqueeze": (1,), "Squeeze": (1,), "Split": (1,), "Pad": (1, 2, 3),
    "Resize": (1, 2, 3), "Upsample": (1,), "OneHot": (1,), "TopK": (1,), "CenterCropPad": (1,),
    "Col2Im": (1, 2), "DFT": (1, 2), "STFT": (1, 3), "MaxUnpool": (2,), "AffineGrid": (1,),
    "BlackmanWindow": (0,), "HannWindow": (0,), "HammingWindow": (0,), "MelWeightMatrix": (0, 1, 2, 3, 4),
    **{f"Reduce{r}": (1,) for r in ("Sum", "Mean", "Max", "Min", "Prod", "L1", "L2", "LogSum", "LogSumExp",
                                       "SumSquare")},
}
#: ops whose output shape follows the input data itself
DATA_SHAPED = frozenset({"NonZero", "Unique", "Compress", "NonMaxSuppression", "StringSplit", "ImageDecoder"})
#: ops whose values differ from run to run
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                              "Bernoulli", "Multinomial", "Dropout"})
#: the largest value kept (a shape vector is one entry per axis)
MAX_ELEMENTS = 64
#: sets of feed shapes whose values are kept, the least recently run dropped (a few KB each). Why
#: 256, not 64: a decoder with a key/value cache runs every cache length in turn, and a cycle longer
#: than what is kept drops each length before its next run (a 2-layer GPT cycling through 240
#: lengths ran 0.80 ms a step keeping 64 of these and of the kernels' memos, 0.56 keeping 256)
KEPT_SHAPES = 256


class ShapeValues:
    """A session's steps that compute values from shapes alone, and those values per feed shapes."""

    def __init__(self, steps: list, skipped: list[int]):
        skip = set(skipped)
        self.names = frozenset(name for i in skipped for name in steps[i].outputs)
        self.kept_index = tuple(i for i in range(len(steps)) if i not in skip)
        self.kept_steps = tuple(steps[i] for i in self.kept_index)
        self._values: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, feeds: Mapping[str, Any]) -> dict[str, Any] | None:
        """The values for these feeds' shapes, if a run of them kept them."""
        key = feed_signature(feeds)
        with self._lock:
            values = self._values.get(key) if key is not None else None
            if values is not None:
                self._values.move_to_end(key)
            return values

    def keep(self, feeds: Mapping[str, Any], values: dict[str, Any]) -> None:
        """Keep the values a whole run of ``feeds`` computed (copies: later runs only read them)."""
        key = feed_signature(feeds)
        if key is None or set(values) != self.names:
            return
        with self._lock:
            self._values[key] = {name: np.array(v, copy=True) for name, v in values.items()}
            while len(self._values) > KEPT_SHAPES:
                self._values.popitem(last=False)


def plan_shape_values(graph: Any, steps: list) -> ShapeValues | None:
    """The steps of ``steps`` whose values follow from the feeds' shapes alone (see the module's
    docstring), as a :class:`ShapeValues`; None when there are none."""
    from inference.kernels.fused import DOMAIN

    shaped = {v.name for v in graph.feed_inputs()} | set(graph.initializers)  # shape follows feed shapes
    valued = set(graph.initializers)  # value follows feed shapes
    outputs = set(graph.output_names)
    skipped, kept = [], set()  # the steps skipped and the values they leave
    for i, step in enumerate(steps):
        node = step.node
        inputs = [name for name in node.inputs if name]
        if (node.domain not in ("", "ai.onnx", DOMAIN) or node.has_subgraphs() or node.op_type in DATA_SHAPED
                or not all(name in shaped for name in inputs)
                or any(k < len(node.inputs) and node.inputs[k] and node.inputs[k] not in valued
                       for k in VALUE_SHAPED.get(node.op_type, ()))):
            continue
        shaped.update(step.outputs)
        if node.op_type in ("Shape", "Size") or (node.op_type not in NONDETERMINISTIC
                                                and all(name in valued for name in inputs)):
            valued.update(step.outputs)
            if (step.outputs and all(name not in outputs and _small(graph, name) for name in step.outputs)
                    and all(name in kept for name in step.free_after)):  # the last reader of nothing else
                skipped.append(i)
                kept.update(step.outputs)
    return ShapeValues(steps, skipped) if skipped else None


def _small(graph: Any, name: str) -> bool:
    t = graph.type_of(name)
    return (isinstance(t, TensorType) and t.shape is not None and len(t.shape) <= 1
            and all(isinstance(d, int) and d <= MAX_ELEMENTS for d in t.shape))


def feed_signature(feeds: Mapping[str, Any], kinds: str = "") -> tuple | None:
    """``(name, shape, dtype)`` of each feed, what the values (and a session's arena plans and
    kernel replays) are kept by; None when a feed is not an ndarray, or (``kinds``: dtype kinds
    allowed) not one of those kinds."""
    parts = []
    for name, value in feeds.items():
        if type(value) is not np.ndarray or (kinds and value.dtype.kind not in kinds):
            return None
        parts.append((name, value.shape, value.dtype.str))
    return tuple(parts)
