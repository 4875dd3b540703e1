"""Split a model at the edge of its frozen part, so fine-tuning runs the frozen layers once.

When only the last layers train, every node that reads nothing but the inputs and frozen
parameters computes the same values each epoch. :func:`split_frozen_prefix` cuts the graph
there: a *prefix* model (inference mode, no gradients) maps the inputs to the *frontier*
values, and a *head* model starts from them. The trainer precomputes the frontier once per
fit when the inputs repeat (no random transform), or runs the prefix per batch otherwise.

BatchNormalization and Dropout never go into the prefix: in a training step they use batch
statistics and random masks, so they stay in the head and training is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from inference.ir import Graph, Model, TensorType, Value, outer_names
from inference.session import Session
from inference.shape_inference import infer_shapes

_TRAIN_MODE_OPS = {"BatchNormalization", "Dropout"}


@dataclass
class FrozenSplit:
    prefix: Model          # inputs -> frontier values, inference only
    head: Model            # frontier values -> the model's outputs; holds every trained parameter
    frontier: list[str]    # names of the values handed from prefix to head, batch-major

    def features(self, feeds: dict[str, np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
        """The frontier values of a whole data set (rows aligned with the inputs)."""
        session = Session(self.prefix)
        n = len(next(iter(feeds.values())))
        parts = [session.run({k: v[s:s + batch_size] for k, v in feeds.items()}) for s in range(0, n, batch_size)]
        return [np.concatenate([p[i] for p in parts]) for i in range(len(self.frontier))]


def split_frozen_prefix(model: Model, trainable: Sequence[str]) -> FrozenSplit | None:
    """Cut ``model`` after its frozen part; None when nothing worth caching is frozen."""
    typed = infer_shapes(_shallow(model))
    g = typed.graph
    feeds = g.feed_inputs()
    batch = feeds[0].type.shape[0] if feeds and isinstance(feeds[0].type, TensorType) and feeds[0].type.shape else None
    trained = set(trainable)
    frozen = {v.name for v in g.inputs} | set(g.initializers)
    frozen -= trained
    prefix_nodes, head_nodes = [], []
    for n in g.nodes:
        reads = [i for i in n.inputs if i] + sorted(outer_names(n))
        if n.op_type not in _TRAIN_MODE_OPS and not any(True for _ in n.subgraphs()) and all(i in frozen for i in reads):
            prefix_nodes.append(n)
            frozen.update(o for o in n.outputs if o)
        else:
            head_nodes.append(n)
    if not prefix_nodes or not head_nodes or any(o in frozen for o in g.output_names):
        return None
    computed = {o for n in prefix_nodes for o in n.outputs}
    frontier = list(dict.fromkeys(i for n in head_nodes for i in n.inputs if i in computed))
    types = {f: g.type_of(f) for f in frontier}
    if not frontier or not isinstance(batch, str) or not all(_batch_major(types[f], batch) for f in frontier):
        return None  # only batch-major values (row i belongs to sample i) can be cached per sample
    raw_inputs = [v for v in feeds if any(v.name in n.inputs for n in head_nodes)]
    if raw_inputs:
        return None  # the head also reads an input directly: keep the model whole
    prefix = _submodel(typed, prefix_nodes, [v for v in g.inputs if v.name not in g.initializers],
                       [Value(f, types[f]) for f in frontier], "prefix")
    head = _submodel(typed, head_nodes, [Value(f, types[f]) for f in frontier], list(g.outputs), "head")
    return FrozenSplit(prefix, head, frontier)


def _batch_major(t: object, batch: str) -> bool:
    return isinstance(t, TensorType) and bool(t.shape) and t.shape[0] == batch


def _shallow(model: Model) -> Model:
    """A copy sharing the initializer arrays (so the head trains the caller's parameters' copies once)."""
    g = model.graph
    graph = Graph(nodes=list(g.nodes), inputs=list(g.inputs), outputs=[Value(v.name, v.type) for v in g.outputs],
                  initializers=dict(g.initializers), value_info=dict(g.value_info), name=g.name)
    return Model(graph=graph, opset_imports=dict(model.opset_imports), ir_version=model.ir_version)


def _submodel(model: Model, nodes: list, inputs: list[Value], outputs: list[Value], tag: str) -> Model:
    g = model.graph
    used = {i for n in nodes for i in list(n.inputs) + sorted(outer_names(n))}
    inits = {k: v for k, v in g.initializers.items() if k in used}
    inputs = [v for v in inputs if v.name not in inits]
    produced = {o for n in nodes for o in n.outputs}
    info = {k: v for k, v in g.value_info.items() if k in produced}
    graph = Graph(nodes=nodes, inputs=inputs, outputs=outputs, initializers=inits, value_info=info,
                  name=f"{g.name}_{tag}")
    return Model(graph=graph, opset_imports=dict(model.opset_imports), ir_version=model.ir_version)
