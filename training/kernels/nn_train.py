"""Training-mode forward kernels the reference ops lack: a seeded, step-varying Dropout.

The reference ``Dropout`` draws from ``RandomState(seed)`` afresh on every call, so with a seed
it drops the same units at every step (a fixed sub-network, not dropout) and without one a run
cannot be reproduced or resumed. ``edgelearn.grad::SeededDropout`` draws its mask from
``(seed, step)``: a training graph feeds its step counter, so masks change every step yet a run
resumed from a checkpoint (which saves the counter) draws exactly the same masks.

BatchNormalization needs nothing here: the reference kernel with ``training_mode=1`` and three
outputs already normalizes with the batch statistics and returns the updated running mean/var.
"""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema
from onnx import TensorProto
from training.grads.registry import GRAD_DOMAIN


def _dropout_types(node: Node, types: list) -> list:
    x = types[0] if types else None
    mask = None if x is None else TensorType(TensorProto.BOOL, x.shape)
    return [x, mask][:len(node.outputs)]


register_schema(OpSchema("SeededDropout", GRAD_DOMAIN, 1,
                         (FormalParam("X"), FormalParam("ratio", optional=True),
                          FormalParam("step", optional=True)),
                         (FormalParam("Y"), FormalParam("mask", optional=True)),
                         {"seed": 0, "default_ratio": 0.5}, _dropout_types))


def dropout_mask(shape: tuple[int, ...], ratio: float, seed: int, step: int) -> np.ndarray:
    """Keep-mask (True = kept) of probability ``1 - ratio``, a pure function of (seed, step)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(step) & 0xFFFFFFFFFFFFFFFF])
    return rng.random(shape, dtype=np.float32) >= np.float32(ratio)


@register("SeededDropout", since=1, domain=GRAD_DOMAIN)
def seeded_dropout(x, ratio=None, step=None, *, seed=0, default_ratio=0.5, ctx):
    """Training-mode dropout: ``(x * mask / (1 - ratio), mask)`` with the mask drawn from (seed, step).

    ``default_ratio`` (legacy Dropout's ratio attribute) applies when the ratio input is omitted.
    """
    r = float(default_ratio) if ratio is None else float(np.asarray(ratio))
    if not 0.0 <= r < 1.0:
        raise KernelError(f"SeededDropout: ratio must be in [0, 1), got {r}")
    if r == 0.0:
        mask = np.ones(x.shape, dtype=bool)
        y = x.copy()
    else:
        mask = dropout_mask(x.shape, r, seed, 0 if step is None else int(np.asarray(step)))
        y = np.where(mask, x * x.dtype.type(1.0 / (1.0 - r)), x.dtype.type(0))
    return (y, mask)[:ctx.num_outputs]


def seeded_dropout_node(node: Node, step: str, seed: int) -> Node:
    """The training-mode replacement of an ONNX ``Dropout`` node (opset 12+ or legacy).

    Keeps the node's output names (adding a mask output name ``<Y>_mask`` if it had none) and its
    ratio; ``step`` names the training graph's int64 step counter. Give every Dropout of a graph
    its own ``seed`` (e.g. base seed + node index) so equal-shaped layers drop different units.
    """
    if node.op_type != "Dropout" or node.domain not in ("", "ai.onnx"):
        raise KernelError(f"seeded_dropout_node: expected an ONNX Dropout node, got {node.op_type}")
    ratio = node.input_at(1)
    attrs: dict = {"seed": int(seed)}
    if "ratio" in node.attrs:  # opsets 1-11 keep the ratio as an attribute
        attrs["default_ratio"] = float(node.attrs["ratio"])
    y = node.outputs[0]
    mask = node.outputs[1] if len(node.outputs) > 1 and node.outputs[1] else f"{y}_mask"
    return Node("SeededDropout", [node.inputs[0], ratio, step], [y, mask], attrs, GRAD_DOMAIN,
                name=node.name, doc=node.doc)
