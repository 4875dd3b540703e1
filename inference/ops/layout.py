"""Ops that move elements between positions: Transpose, Concat, Split, Tile, Pad, DepthToSpace,
SpaceToDepth, CenterCropPad, Col2Im."""
from __future__ import annotations

import itertools

import numpy as np

from inference.errors import KernelError
from inference.ops._axes import (int_list, normalize_axes, normalize_axis, scalar, split_along,
                                 split_sizes)
from inference.ops.registry import register


@register("Transpose", since=1)
def transpose(x, *, perm=None):
    if perm is None:
        return np.ascontiguousarray(x.T)
    if sorted(normalize_axes(perm, x.ndim, "Transpose perm")) != list(range(x.ndim)):
        raise KernelError(f"Transpose: perm {perm} is not a permutation of {x.ndim} axes")
    return np.ascontiguousarray(np.transpose(x, perm))


@register("Concat", since=1)
def concat_v1(*inputs, axis=1):
    return concat(*inputs, axis=axis)


@register("Concat", since=4)
def concat(*inputs, axis):
    if not inputs:
        raise KernelError("Concat: needs at least one input")
    axis = normalize_axis(axis, inputs[0].ndim, "Concat axis")
    try:
        return np.concatenate(inputs, axis=axis)
    except ValueError as exc:
        shapes = [i.shape for i in inputs]
        raise KernelError(f"Concat: shapes {shapes} differ outside axis {axis}") from exc


def split_plan(x, split, axis, parts, ragged=False) -> tuple[int, list[int]]:
    """(the axis, the parts' lengths) of a Split of ``x``: what the kernels of every opset share."""
    axis = normalize_axis(axis, x.ndim, "Split axis")
    return axis, split_sizes(x.shape[axis], split, parts, ragged)


def _split(x, split, axis, parts, ragged=False):
    axis, sizes = split_plan(x, split, axis, parts, ragged)
    return split_along(x, sizes, axis)


@register("Split", since=1)
def split_v1(x, split_input=None, *, axis=0, split=None, ctx):
    sizes = split if split is not None else int_list(split_input)
    return _split(x, sizes, axis, ctx.num_outputs)


@register("Split", since=2)
def split_v2(x, *, axis=0, split=None, ctx):
    return _split(x, split, axis, ctx.num_outputs)


@register("Split", since=13)
def split_v13(x, split=None, *, axis=0, ctx):
    return _split(x, int_list(split), axis, ctx.num_outputs)


def check_split18(has_split: bool, num_outputs: int | None, outputs: int) -> None:
    """Split-18 takes its sizes from exactly one of the ``split`` input and ``num_outputs``, which
    must then count the node's outputs (also what a graph pass checks before it rewrites one)."""
    if has_split and num_outputs is not None:
        raise KernelError("Split: give either the split input or the num_outputs attribute, not both")
    if not has_split and num_outputs is None:
        raise KernelError("Split: needs the split input or the num_outputs attribute")
    if num_outputs is not None and num_outputs != outputs:
        raise KernelError(f"Split: num_outputs={num_outputs} but the node has {outputs} outputs")


@register("Split", since=18)
def split_v18(x, split=None, *, axis=0, num_outputs=None, ctx):
    check_split18(split is not None, num_outputs, ctx.num_outputs)
    return _split(x, int_list(split), axis, num_outputs, ragged=True)


@register("Tile", since=6)
def tile(x, repeats):
    reps = int_list(repeats)
    if len(reps) != x.ndim or any(r < 0 for r in reps):
        raise KernelError(f"Tile: repeats {reps} must be {x.ndim} non-negative ints")
    return np.tile(x, reps)


_PAD_MODES = {"constant", "reflect", "edge", "wrap"}


def pad_tensor(x: np.ndarray, pads: list[int], mode: str = "constant", value=None,
               axes: list[int] | None = None) -> np.ndarray:
    """ONNX Pad: ``pads`` = [begins..., ends...] over ``axes`` (default all); negative pads crop."""
    if mode not in _PAD_MODES:
        raise KernelError(f"Pad: unknown mode {mode!r} (expected one of {sorted(_PAD_MODES)})")
    axes = list(range(x.ndim)) if axes is None else normalize_axes(axes, x.ndim, "Pad axes")
    if len(pads) != 2 * len(axes):
        raise KernelError(f"Pad: {len(pads)} pads given for {len(axes)} axes (need twice as many)")
    widths = [[0, 0] for _ in range(x.ndim)]
    for i, a in enumerate(axes):
        widths[a] = [pads[i], pads[i + len(axes)]]
    crop = tuple(slice(max(-b, 0), x.shape[a] - max(-e, 0)) for a, (b, e) in enumerate(widths))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in widths]
    if mode == "constant":
        default = "" if x.dtype == object else 0  # 0 / 0.0 / False, or "" for strings
        fill = np.asarray(default if value is None else value).astype(x.dtype)
        return np.pad(x, widths, mode="constant", constant_values=fill)
    if x.size == 0 and any(b or e for b, e in widths):
        raise KernelError(f"Pad: mode {mode!r} cannot pad an empty tensor")
    return np.pad(x, widths, mode=mode)


@register("Pad", since=1)
def pad_v1(x, *, paddings, mode="constant", value=0.0):
    return pad_tensor(x, list(paddings), mode, value)


@register("Pad", since=2)
def pad_v2(x, *, pads, mode="constant", value=0.0):
    return pad_tensor(x, list(pads), mode, value)


@register("Pad", since=11)
def pad(x, pads, constant_value=None, axes=None, *, mode="constant"):
    value = None if constant_value is None else scalar(constant_value)
    return pad_tensor(x, int_list(pads), mode, value, int_list(axes))


def _check_blocks(x: np.ndarray, blocksize: int, op: str) -> None:
    if x.ndim != 4:
        raise KernelError(f"{op}: input must be 4-D (N, C, H, W), got shape {x.shape}")
    if blocksize < 1:
        raise KernelError(f"{op}: blocksize must be positive, got {blocksize}")


@register("DepthToSpace", since=1)
def depth_to_space(x, *, blocksize, mode="DCR"):
    _check_blocks(x, blocksize, "DepthToSpace")
    b, c, h, w = x.shape
    bs = blocksize
    if c % (bs * bs):
        raise KernelError(f"DepthToSpace: channels {c} not divisible by blocksize^2={bs * bs}")
    if mode == "DCR":
        tmp = x.reshape(b, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        tmp = x.reshape(b, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise KernelError(f"DepthToSpace: mode must be 'DCR' or 'CRD', got {mode!r}")
    return tmp.reshape(b, c // (bs * bs), h * bs, w * bs)


@register("SpaceToDepth", since=1)
def space_to_depth(x, *, blocksize, mode="DCR"):
    _check_blocks(x, blocksize, "SpaceToDepth")
    b, c, h, w = x.shape
    bs = blocksize
    if h % bs or w % bs:
        raise KernelError(f"SpaceToDepth: spatial dims {(h, w)} not divisible by blocksize {bs}")
    tmp = x.reshape(b, c, h // bs, bs, w // bs, bs)
    if mode == "DCR":
        tmp = tmp.transpose(0, 3, 5, 1, 2, 4)
    elif mode == "CRD":
        tmp = tmp.transpose(0, 1, 3, 5, 2, 4)
    else:
        raise KernelError(f"SpaceToDepth: mode must be 'DCR' or 'CRD', got {mode!r}")
    return tmp.reshape(b, c * bs * bs, h // bs, w // bs)


@register("CenterCropPad", since=18)
def center_crop_pad(x, shape, *, axes=None):
    target = int_list(shape)
    axes = list(range(x.ndim)) if axes is None else normalize_axes(axes, x.ndim, "CenterCropPad axes")
    if len(target) != len(axes):
        raise KernelError(f"CenterCropPad: shape {target} has {len(target)} dims for {len(axes)} axes")
    out_shape = list(x.shape)
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    for a, size in zip(axes, target):
        dim = x.shape[a]
        out_shape[a] = size
        if dim >= size:
            start = (dim - size) // 2
            src[a] = slice(start, start + size)
        else:
            start = (size - dim) // 2
            dst[a] = slice(start, start + dim)
    out = np.zeros(out_shape, dtype=x.dtype)
    out[tuple(dst)] = x[tuple(src)]
    return out


@register("Col2Im", since=18)
def col2im(x, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    """Sum the column blocks back into the (padded) image, one strided slice per kernel tap."""
    image = int_list(image_shape)
    block = int_list(block_shape)
    nd = len(image)
    dilations = dilations or [1] * nd
    strides = strides or [1] * nd
    pads = pads or [0] * (2 * nd)
    if x.ndim != 3 or len(block) != nd:
        raise KernelError(f"Col2Im: input must be (N, C*prod(block), L), got {x.shape} for block {block}")
    n, ck, length = x.shape
    kernel = int(np.prod(block))
    if ck % kernel:
        raise KernelError(f"Col2Im: input dim 1 ({ck}) not divisible by prod(block_shape)={kernel}")
    padded = [image[d] + pads[d] + pads[d + nd] for d in range(nd)]
    blocks = [(padded[d] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1 for d in range(nd)]
    if int(np.prod(blocks)) != length:
        raise KernelError(f"Col2Im: input has {length} blocks, the image geometry gives {blocks}")
    cols = x.reshape(n, ck // kernel, *block, *blocks)
    out = np.zeros((n, ck // kernel, *padded), dtype=x.dtype)
    for tap in itertools.product(*(range(k) for k in block)):
        window = tuple(slice(t * dl, t * dl + s * (b - 1) + 1, s)
                       for t, dl, s, b in zip(tap, dilations, strides, blocks))
        out[(slice(None), slice(None), *window)] += cols[(slice(None), slice(None), *tap)]
    crop = tuple(slice(pads[d], pads[d] + image[d]) for d in range(nd))
    return out[(slice(None), slice(None), *crop)]
