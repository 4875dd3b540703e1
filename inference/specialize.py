"""Optimize a model with symbolic image sizes again for each set of sizes it is fed.

Why: the layout pass (and the fused-block, merged-concat and Winograd passes after it) converts
only convolutions of static channels, height and width, and shape inference loses a symbolic
spatial dim at the first convolution, so a model exported with dynamic image axes stayed NCHW:
MobileNetV2 at 224x224 ran 8.8 ms against 4.9 with static sizes, ResNet-18 22.6 against 15.1
(one thread). A device mostly feeds one camera's size; the Predictor therefore keeps the model as
loaded and, per new set of sizes (all but the batch dim), a copy with those sizes written into its
inputs and optimized like a static model: the passes then see every shape. The copies share the
weight arrays as loaded (no pass changes an array in place), but each optimized graph holds the
arrays its passes derive (folded BatchNorm, channels-last layouts) and their packed panels:
ResNet-18 ~90 MB per set of sizes (RSS 444 -> 534 -> 626 -> 720 MB over its first four sizes), so
the Predictor keeps ``Config.specialize_sizes`` graphs, 2 by default.
"""
from __future__ import annotations

import copy

from inference.flops import CONVOLUTIONS
from inference.ir import Model, TensorType

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
