"""Optimize a model with symbolic image sizes again for each set of sizes it is fed.

Why: the layout pass (and the fused-block, merged-concat and Winograd passes after it) converts
only convolutions of static channels, height and width, and shape inference loses a symbolic
spatial dim at the first convolution, so a model exported with dynamic image axes stayed NCHW:
MobileNetV2 at 224x224 ran 8.8 ms against 4.9 with static sizes, ResNet-18 22.6 against 15.1
(one thread). A device mostly feeds one camera's size; the Predictor therefore keeps the model as
loaded and, per new set of sizes (all but the batch dim), a copy with those sizes written into its
inputs and optimized like a static model: the passes then see every shape. The copies share the
weight arrays as loaded (no pass changes an array in place); the arrays the passes derive (folded
BatchNorm, channels-last layouts), which do not depend on the sizes, are shared with the graphs
already made where equal (:func:`share_equal_weights`), and with them their packed panels. Each
graph still holds its own activations and any packing only its sizes pick (ResNet-18, weights
released: RSS 381 -> 389 -> 394 -> 400 MB over its first four sizes, 443 -> 534 -> 626 -> 727 MB
before the sharing), and the Predictor keeps ``Config.specialize_sizes`` graphs, 4 by default.
"""
from __future__ import annotations

import copy
from typing import Iterable

import numpy as np

from inference.flops import CONVOLUTIONS
from inference.ir import Graph, Model, TensorType
from inference.kernels._prepack import source

Sizes = tuple  # per image input, its dims after the batch, in feed order


def symbolic_image_inputs(model: Model) -> list[str]:
    """The feed inputs whose sizes a specialised graph would fix: rank-4 float tensors with a
    symbolic or unknown dim after the first (the batch), in a graph with convolutions (the passes
    that need static sizes convert only those; a transformer's symbolic sequence length gains
    nothing from a graph per length)."""
    if not any(n.op_type in CONVOLUTIONS for n in model.graph.nodes):
        return []
    names = []
    for v in model.graph.feed_inputs():
        t = v.type
        if (isinstance(t, TensorType) and t.elem_type in (1, 10) and t.rank == 4
                and not all(isinstance(d, int) for d in t.shape[1:])):
            names.append(v.name)
    return names


def sizes_of(feeds: dict, names: list[str]) -> Sizes:
    """The key of a specialised graph: each image input's dims after the batch."""
    return tuple(tuple(feeds[n].shape[1:]) for n in names)


def with_sizes(model: Model, names: list[str], sizes: Sizes) -> Model:
    """A copy of ``model`` (weights shared) whose inputs ``names`` have ``sizes`` after their batch
    dim, and whose inferred shapes are cleared so the passes infer them again from these."""
    weights = {id(a): a for a in model.graph.initializers.values()}
    copied = copy.deepcopy(model, memo=dict(weights))
    by_name = {v.name: v for v in copied.graph.inputs}
    for name, dims in zip(names, sizes):
        v = by_name[name]
        v.type = TensorType(v.type.elem_type, (v.type.shape[0],) + tuple(dims))
    copied.graph.value_info.clear()
    return copied


def share_equal_weights(graph: Graph, others: Iterable[Graph]) -> int:
    """Point each initializer of ``graph`` that equals the one of the same name in one of ``others``
    at that array (released ones compared by their values), so that the weights the passes derived
    again, and their packings, are held once across sizes. Returns the bytes saved.
    Why by name: the passes name what they derive after its source, the same in every copy."""
    saved = 0
    for other in others:
        for name, a in graph.initializers.items():
            b = other.initializers.get(name)
            if (b is None or b is a or b.shape != a.shape or b.dtype != a.dtype
                    or not np.array_equal(source(b), a)):
                continue
            graph.initializers[name] = b
            saved += a.nbytes
    return saved
