"""Gradient rules of the neural-network ops: Conv, pooling, normalization, Dropout.

Each rule emits one backward-only op of ``edgelearn.grad`` (kernels in
``training.kernels.nn_grads``) carrying the forward node's attributes, and asks for it only
when some input's gradient is needed. Forward outputs the backward can reuse (MaxPool indices,
Dropout mask, LayerNormalization mean/inv-std) are taken from the forward node when it has
them; otherwise the backward works from the output (MaxPool), re-runs a seeded op (Dropout)
or recomputes them (batch and layer statistics).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import training.kernels  # noqa: F401 - registers the backward kernels these rules emit
from inference.errors import InvalidModelError
from inference.ir import Node
from training.grads.registry import GRAD_DOMAIN, GradBuilder, grad_rule
from training.grads.shape import reduce_sum

Grads = list  # one gradient name (or None) per forward input

_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
_POOL_ATTRS = ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides")


def _attrs(node: Node, names: Sequence[str]) -> dict:
    return {k: v for k, v in node.attrs.items() if k in names}


def _input(node: Node, i: int) -> str | None:
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i] else None


def _output(node: Node, i: int) -> str | None:
    return node.outputs[i] if len(node.outputs) > i and node.outputs[i] else None


def _wanted(b: GradBuilder, node: Node, dys: Sequence[str | None], inputs: Sequence[int]) -> list[bool] | None:
    """Which of ``inputs`` need a gradient, or None when nothing flows back through the node."""
    need = [(name := _input(node, i)) is not None and b.needs(name) for i in inputs]
    return need if dys and dys[0] is not None and any(need) else None


def _rank(b: GradBuilder, *names: str) -> int:
    for name in names:
        t = b.type_of(name)
        if t is not None and t.rank is not None:
            return t.rank
    raise InvalidModelError(f"gradient rule needs the rank of one of {list(names)}, which is unknown")


def _fit(b: GradBuilder, grad: str, like: str, shape: tuple | None) -> str:
    """``grad`` (of ``shape``, None if unknown) reduced to ``like``'s shape when ``like`` was
    broadcast to it."""
    t = b.type_of(like)
    if shape is not None and t is not None and t.shape is not None and tuple(t.shape) == tuple(shape):
        return grad
    return b.reduce_to_shape_of(grad, like)


# --- convolution ------------------------------------------------------------------------------

@grad_rule("Conv")
def conv_grad(b: GradBuilder, node: Node, dys: Sequence[str | None]) -> Grads:
    """dX = ConvGradInput(dY, W, X); dW (and dB) = ConvGradWeight(dY, X, W)."""
    need = _wanted(b, node, dys, (0, 1, 2))
    grads: list[str | None] = [None] * len(node.inputs)
    if need is None:
        return grads
    dy, (x, w), attrs = dys[0], node.inputs[:2], _attrs(node, _CONV_ATTRS)
    if need[0]:
        grads[0] = b.op("ConvGradInput", dy, w, x, domain=GRAD_DOMAIN, **attrs)
    if need[1]:
        out = b.op("ConvGradWeight", dy, x, w, domain=GRAD_DOMAIN, outputs=2 if need[2] else 1, **attrs)
        if need[2]:
            grads[1], grads[2] = out
        else:
            grads[1] = out
    elif need[2]:
        grads[2] = reduce_sum(b, dy, (0,) + tuple(range(2, _rank(b, w, x))), keepdims=0)
    return grads


# --- pooling ----------------------------------------------------------------------------------

@grad_rule("MaxPool")
def max_pool_grad(b: GradBuilder, node: Node, dys: Sequence[str | None]) -> Grads:
    """From the node's Indices output when it has one (storage_order 0), else by matching each
    window against the output Y (same argmax, no forward re-run)."""
    if _wanted(b, node, dys, (0,)) is None:
        return [None]
    x, indices = node.inputs[0], _output(node, 1)
    if indices is not None and node.attrs.get("storage_order", 0) == 0:
        return [b.op("MaxPoolGrad", dys[0], indices, x, domain=GRAD_DOMAIN)]
    return [b.op("MaxPoolGradByMatch", dys[0], x, node.outputs[0], domain=GRAD_DOMAIN,
                 **_attrs(node, _POOL_ATTRS))]


@grad_rule("AveragePool")
def average_pool_grad(b: GradBuilder, node: Node, dys: Sequence[str | None]) -> Grads:
    if _wanted(b, node, dys, (0,)) is None:
        return [None]
    attrs = _attrs(node, _POOL_ATTRS + ("count_include_pad",))
    return [b.op("AveragePoolGrad", dys[0], node.inputs[0], domain=GRAD_DOMAIN, **attrs)]


@grad_rule("GlobalAveragePool")
def global_average_pool_grad(b: GradBuilder, node: Node, dys: Sequence[str | None]) -> Grads:
    if _wanted(b, node, dys, (0,)) is None:
        return [None]
    return [b.op("GlobalAveragePoolGrad", dys[0], node.inputs[0], domain=GRAD_DOMAIN)]


# --- normalization ----------------------------------------------------------------------------

@grad_rule("BatchNormalization")
def batch_norm_grad(b: GradBuilder, node: Node, dys: Sequence[str | None]) -> Grads:
    """Gradients of X, scale, B; running mean/var (and the updated ones) are not differentiated.

    ``training_mode`` follows the forward node, as the reference kernel does: batch statistics
    when set, else the running ones (a frozen BN inside a fine-tuned network).
    """
    need = _wanted(b, node, dys, (0, 1, 2))
    grads: list[str | None] = [None] * len(node.inputs)
    if need is None:
        return grads
    attrs = {"epsilon": node.attrs.get("epsilon", 1e-5), "training_mode": int(node.attrs.get("training_mode", 0))}
    x, scale, _, mean, var = node.inputs[:5]
    outs = b.op("BatchNormGrad", dys[0], x, scale, mean, var, domain=GRAD_DOMAIN, outputs=3, **attrs)
    grads[:3] = [g if n else None for g, n in zip(outs, need)]
    return grads


@grad_rule("LayerNormalization")
def layer_norm_grad(b: GradBuilder, node: Node, dys: Sequence[str | None]) -> Grads:
    """Uses the node's Mean/InvStdDev outputs when present; a scale or bias broadcast to the
    normalized shape gets its gradient summed back (``reduce_to_shape_of``)."""
    need = _wanted(b, node, dys, (0, 1, 2))
    grads: list[str | None] = [None] * len(node.inputs)
    if need is None:
        return grads
    x, scale = node.inputs[:2]
    mean, inv_std = _output(node, 1), _output(node, 2)
    saved = (mean, inv_std) if mean and inv_std else (None, None)
    attrs = {"axis": node.attrs.get("axis", -1), "epsilon": node.attrs.get("epsilon", 1e-5)}
    dx, dscale, dbias = b.op("LayerNormGrad", dys[0], x, scale, *saved, domain=GRAD_DOMAIN, outputs=3, **attrs)
    xt = b.type_of(x)
    norm_shape = tuple(xt.shape[attrs["axis"] % len(xt.shape):]) if xt is not None and xt.shape else None
    grads[0] = dx if need[0] else None
    grads[1] = _fit(b, dscale, scale, norm_shape) if need[1] else None
    if need[2]:
        grads[2] = _fit(b, dbias, node.inputs[2], norm_shape)
    return grads


# --- dropout ----------------------------------------------------------------------------------

def _dropout_backward(b: GradBuilder, node: Node, dy: str, ratio: str | None, training: str | None,
                      deterministic: bool) -> str:
    mask = _output(node, 1)
    if mask is None:
        if not deterministic:
            raise InvalidModelError(
                f"Dropout {node.label()} runs in training mode without a mask output or a seed, so its "
                "gradient cannot know which units it dropped; give it a mask output (or use "
                "training.kernels.nn_train.seeded_dropout_node)")
        mask = b.op(node.op_type, *node.inputs, domain=node.domain, outputs=2, **node.attrs)[1]
    return b.op("DropoutGrad", dy, mask, ratio, training, domain=GRAD_DOMAIN)


@grad_rule("Dropout")
def dropout_grad(b: GradBuilder, node: Node, dys: Sequence[str | None]) -> Grads:
    """Identity in inference mode (no training_mode input, or opset < 12); else dY * mask / (1 - ratio)."""
    grads: list[str | None] = [None] * len(node.inputs)
    if _wanted(b, node, dys, (0,)) is None:
        return grads
    training = _input(node, 2)
    if b.opset("") < 12 or training is None:
        grads[0] = dys[0]
        return grads
    grads[0] = _dropout_backward(b, node, dys[0], _input(node, 1), training, "seed" in node.attrs)
    return grads


@grad_rule("SeededDropout", domain=GRAD_DOMAIN)
def seeded_dropout_grad(b: GradBuilder, node: Node, dys: Sequence[str | None]) -> Grads:
    grads: list[str | None] = [None] * len(node.inputs)
    if _wanted(b, node, dys, (0,)) is None:
        return grads
    ratio = _input(node, 1) or b.const(np.asarray(node.attrs.get("default_ratio", 0.5), dtype=np.float32))
    grads[0] = _dropout_backward(b, node, dys[0], ratio, None, True)
    return grads
