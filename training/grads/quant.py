"""Gradient rules of the fake-quantization ops of quantization-aware training (``training.qat``).

Rounding has a zero derivative almost everywhere, so QAT uses the straight-through estimator:
the rounding is treated as the identity, the saturation (clipping) is not. Scales and zero
points are constants of the backward pass (no gradient flows into how they are chosen).
"""
from __future__ import annotations

from typing import Sequence

from inference.ir import Node
from training.grads.registry import GRAD_DOMAIN, GradBuilder, grad_rule
from training.protocols import TRAIN_DOMAIN

Grads = Sequence[str | None]


@grad_rule("FakeQuantize", domain=TRAIN_DOMAIN)
def _fake_quantize(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """dx = dy where x quantized inside the integer range, 0 where it saturated."""
    x = node.inputs[0]
    if not b.needs(x):
        return [None]
    attrs = {k: node.attrs[k] for k in ("lo", "hi", "dtype") if k in node.attrs}
    return [b.op("FakeQuantizeGrad", dys[0], x, domain=GRAD_DOMAIN, **attrs)]


@grad_rule("FakeQuantizeWeight", domain=TRAIN_DOMAIN)
def _fake_quantize_weight(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """dw = dy: the symmetric max-abs scale maps every weight inside [-127, 127], so nothing
    saturates and the straight-through mask is all ones."""
    return [dys[0]]


@grad_rule("FakeQuantizeBias", domain=TRAIN_DOMAIN)
def _fake_quantize_bias(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """db = dy: int32 saturates only past 2**31 steps, never for a trained bias; the weight only
    sets the step (a constant of the backward pass, as every scale here)."""
    return [dys[0], None]
