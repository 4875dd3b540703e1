"""Tensor-sequence ops; a sequence is a Python list of arrays and every op returns a new list."""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops._axes import normalize_axis, scalar, split_along, split_sizes
from inference.ops.registry import register


def _position(position, length: int, allow_end: bool) -> int:
    """A sequence position in ``[-n, n)`` (``[-n, n]`` when inserting) made non-negative."""
    pos = int(scalar(position))
    upper = length + 1 if allow_end else length
    if not -length <= pos < upper:
        raise KernelError(f"sequence position {pos} is out of range for a sequence of length {length}")
    return pos + length if pos < 0 else pos


@register("SequenceConstruct", since=11)
def sequence_construct(*inputs):
    return list(inputs)


@register("SequenceEmpty", since=11)
def sequence_empty(*, dtype=None):
    return []


@register("SequenceInsert", since=11)
def sequence_insert(seq, tensor, position=None):
    pos = len(seq) if position is None else _position(position, len(seq), allow_end=True)
    return seq[:pos] + [tensor] + seq[pos:]


@register("SequenceAt", since=11)
def sequence_at(seq, position):
    return seq[_position(position, len(seq), allow_end=False)]


@register("SequenceErase", since=11)
def sequence_erase(seq, position=None):
    pos = len(seq) - 1 if position is None else _position(position, len(seq), allow_end=False)
    return seq[:pos] + seq[pos + 1:]


@register("SequenceLength", since=11)
def sequence_length(seq):
    return np.array(len(seq), dtype=np.int64)


@register("SplitToSequence", since=11)
def split_to_sequence(x, split=None, *, axis=0, keepdims=1):
    """No split: pieces of length 1 (squeezed unless keepdims); scalar split: chunks of that length
    (the last may be shorter); 1-D split: the given lengths."""
    axis = normalize_axis(axis, x.ndim, "SplitToSequence axis")
    dim = x.shape[axis]
    if split is None:
        parts = split_along(x, [1] * dim, axis)
        return [p if keepdims else np.squeeze(p, axis) for p in parts]
    split = np.asarray(split)
    if split.ndim == 0:
        chunk = int(split)
        if chunk < 1:
            raise KernelError(f"SplitToSequence: split must be positive, got {chunk}")
        sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
    else:
        sizes = split_sizes(dim, [int(s) for s in split], None, ragged=False)
    return list(split_along(x, sizes, axis))


@register("ConcatFromSequence", since=11)
def concat_from_sequence(seq, *, axis, new_axis=0):
    if not seq:
        raise KernelError("ConcatFromSequence: the input sequence is empty")
    if new_axis:
        return np.stack(seq, axis=normalize_axis(axis, seq[0].ndim + 1, "ConcatFromSequence axis"))
    return np.concatenate(seq, axis=normalize_axis(axis, seq[0].ndim, "ConcatFromSequence axis"))
