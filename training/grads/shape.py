"""Gradient rules of the shape and indexing ops, and the small emit helpers every rule family uses.

Moving data around is linear: the gradient moves it back (Reshape back, inverse Transpose,
Split for Concat, Pad with negated pads or its border folded back, scatter-add for Gather,
zero-filled write-back for Slice).
Helpers emit the opset-appropriate form (axes as attribute before opset 13, as input after).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import training.kernels.shape_grads  # noqa: F401 - registers SliceGrad / GatherGrad / PadGrad kernels
from inference.ir import Node
from training.errors import NotDifferentiableError
from training.grads.registry import GRAD_DOMAIN, GradBuilder, grad_rule

Grads = Sequence[str | None]


# --- emit helpers (shared with the other rule modules) ----------------------------------------

def ints(b: GradBuilder, values: Sequence[int]) -> str:
    """A 1-D int64 constant."""
    return b.const(np.asarray(list(values), dtype=np.int64))


def rank_of(b: GradBuilder, name: str, node: Node) -> int:
    t = b.type_of(name)
    if t is None or t.shape is None:
        raise NotDifferentiableError(f"the gradient of {node.op_type} (node {node.label()!r}) needs the rank "
                                     f"of {name!r}, which shape inference could not find")
    return len(t.shape)


def dtype_of(b: GradBuilder, name: str, node: Node) -> np.dtype:
    t = b.type_of(name)
    if t is None:
        raise NotDifferentiableError(f"the gradient of {node.op_type} (node {node.label()!r}) needs the "
                                     f"element type of {name!r}, which shape inference could not find")
    return t.dtype


def shape_of(b: GradBuilder, x: str) -> str:
    """A 1-D int64 tensor with the shape of ``x``: a constant when static, else Shape(x)."""
    t = b.type_of(x)
    if t is not None and t.is_static():
        return ints(b, t.shape)
    return b.op("Shape", x)


def dim_of(b: GradBuilder, x: str, axis: int) -> str:
    """A 1-element int64 tensor holding ``x.shape[axis]``."""
    t = b.type_of(x)
    if t is not None and t.shape is not None and isinstance(t.shape[axis], int):
        return ints(b, [t.shape[axis]])
    return b.op("Slice", b.op("Shape", x), ints(b, [axis]), ints(b, [axis + 1 if axis != -1 else 2**62]))


def reduce_sum(b: GradBuilder, x: str, axes: Sequence[int], keepdims: int) -> str:
    if b.opset() >= 13:
        return b.op("ReduceSum", x, ints(b, axes), keepdims=keepdims)
    return b.op("ReduceSum", x, axes=list(axes), keepdims=keepdims)


def unsqueeze(b: GradBuilder, x: str, axes: Sequence[int]) -> str:
    if b.opset() >= 13:
        return b.op("Unsqueeze", x, ints(b, axes))
    return b.op("Unsqueeze", x, axes=list(axes))


def reshape_like(b: GradBuilder, dy: str, x: str) -> str:
    return b.op("Reshape", dy, shape_of(b, x))


def zeros_like(b: GradBuilder, x: str, node: Node) -> str:
    return b.op("ConstantOfShape", shape_of(b, x), value=np.zeros(1, dtype_of(b, x, node)))


def wanted(b: GradBuilder, node: Node, i: int) -> bool:
    """Whether input ``i`` of ``node`` exists and needs a gradient."""
    return i < len(node.inputs) and b.needs(node.inputs[i])


def pad_none(node: Node, *grads: str | None) -> list[str | None]:
    """One entry per node input: the given gradients, then None."""
    return list(grads) + [None] * (len(node.inputs) - len(grads))


# --- rules ----------------------------------------------------------------------------------

@grad_rule("Reshape")
@grad_rule("Flatten")
@grad_rule("Squeeze")
@grad_rule("Unsqueeze")
def _reshape(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return pad_none(node, reshape_like(b, dys[0], node.inputs[0]))


@grad_rule("Transpose")
def _transpose(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    perm = node.attrs.get("perm")
    if perm is None:
        perm = list(reversed(range(rank_of(b, node.inputs[0], node))))
    return [b.op("Transpose", dys[0], perm=[int(p) for p in np.argsort(perm)])]


@grad_rule("Expand")
def _expand(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return pad_none(node, b.reduce_to_shape_of(dys[0], node.inputs[0]))


def _split_sizes(b: GradBuilder, parts: Sequence[str], axis: int, node: Node) -> str | list[int]:
    """Sizes of ``parts`` along ``axis``: ints when static, else a 1-D tensor built from Shape."""
    dims = [(t.shape[axis] if (t := b.type_of(p)) is not None and t.shape is not None else None) for p in parts]
    if all(isinstance(d, int) for d in dims):
        return [int(d) for d in dims]
    if b.opset() < 13:
        raise NotDifferentiableError(f"Concat (node {node.label()!r}): sizes along axis {axis} are only known "
                                     "at run time, which needs opset >= 13")
    return b.op("Concat", *(dim_of(b, p, axis) for p in parts), axis=0)


@grad_rule("Concat")
def _concat(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    axis = node.attrs.get("axis", 1 if b.opset() < 4 else None)
    if axis is None:
        raise NotDifferentiableError(f"Concat (node {node.label()!r}) has no axis")
    axis = axis % rank_of(b, node.inputs[0], node)
    if len(node.inputs) == 1:
        return [dys[0]]
    sizes = _split_sizes(b, node.inputs, axis, node)
    n = len(node.inputs)
    if isinstance(sizes, str):
        return b.op("Split", dys[0], sizes, axis=axis, outputs=n)
    if b.opset() >= 13:
        return b.op("Split", dys[0], ints(b, sizes), axis=axis, outputs=n)
    return b.op("Split", dys[0], axis=axis, split=sizes, outputs=n)


@grad_rule("Split")
def _split(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    parts = [dy if dy else zeros_like(b, out, node) for dy, out in zip(dys, node.outputs)]
    return pad_none(node, b.op("Concat", *parts, axis=node.attrs.get("axis", 0)))


@grad_rule("Slice")
def _slice(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    data = node.inputs[0]
    if b.opset() < 10:
        a = node.attrs
        args = [ints(b, a["starts"]), ints(b, a["ends"]), ints(b, a["axes"]) if "axes" in a else None]
    else:
        args = [i or None for i in node.inputs[1:]]
    return pad_none(node, b.op("SliceGrad", dys[0], shape_of(b, data), *args, domain=GRAD_DOMAIN))


@grad_rule("Gather")
def _gather(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    data, indices = node.inputs[:2]
    dx = b.op("GatherGrad", dys[0], indices, shape_of(b, data), domain=GRAD_DOMAIN, axis=node.attrs.get("axis", 0))
    return [dx, None]


@grad_rule("Pad")
def _pad(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    """Constant padding is linear: padding with the negated pads crops the padding away (and
    zero-fills what a negative pad cropped). Reflect, edge and wrap copy inner elements into
    the border: PadGrad adds each border element's gradient back onto its source."""
    mode = node.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise NotDifferentiableError(f"Pad (node {node.label()!r}): mode {mode!r} has no gradient rule")
    x, dy = node.inputs[0], dys[0]
    if b.opset() >= 11:
        pads = node.inputs[1]
        axes = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3] else None
        if mode == "constant":
            return pad_none(node, b.op("Pad", dy, b.op("Neg", pads), None, axes, mode="constant"))
    else:
        key = "paddings" if b.opset() < 2 else "pads"
        if mode == "constant":
            return [b.op("Pad", dy, mode="constant", **{key: [-int(p) for p in node.attrs[key]]})]
        pads, axes = ints(b, node.attrs[key]), None
    return pad_none(node, b.op("PadGrad", dy, shape_of(b, x), pads, axes, domain=GRAD_DOMAIN, mode=mode))


def unreduce(b: GradBuilder, node: Node, dy: str, axes_attr: str = "axes") -> str:
    """``dy`` of a Reduce* node broadcast back to the shape of its input."""
    x = node.inputs[0]
    axes = node.attrs.get(axes_attr)
    axes_in = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] else None
    if axes is None and axes_in is None and node.attrs.get("noop_with_empty_axes", 0):
        return dy
    if not node.attrs.get("keepdims", 1):
        if axes is not None:
            dy = unsqueeze(b, dy, axes)
        elif axes_in is not None:
            dy = b.op("Unsqueeze", dy, axes_in)  # axes as an input: opset >= 13, same convention
        # else every axis was reduced: dy is a scalar and broadcasts as it is
    t = b.type_of(x)
    if b.opset() < 8 and t is not None and t.is_static():  # no Expand yet: broadcast by a product
        return b.op("Mul", dy, b.const(np.ones(t.shape, t.dtype)))
    return b.op("Expand", dy, shape_of(b, x))


@grad_rule("ReduceSum")
def _reduce_sum(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    return pad_none(node, unreduce(b, node, dys[0]))


@grad_rule("ReduceMean")
def _reduce_mean(b: GradBuilder, node: Node, dys: Grads) -> Grads:
    x, y = node.inputs[0], node.outputs[0]
    dtype = dtype_of(b, x, node)
    tx, ty = b.type_of(x), b.type_of(y)
    dx = unreduce(b, node, dys[0])
    if tx is not None and ty is not None and tx.is_static() and ty.is_static():
        count = int(np.prod(tx.shape)) // max(int(np.prod(ty.shape)), 1)
        return pad_none(node, b.op("Mul", dx, b.const(np.asarray(1.0 / max(count, 1), dtype))))
    to = int(tx.elem_type) if tx is not None else None
    ratio = b.op("Div", b.op("Cast", b.op("Size", y), to=to), b.op("Cast", b.op("Size", x), to=to))
    return pad_none(node, b.op("Mul", dx, ratio))
