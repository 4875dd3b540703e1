"""Shared helpers of the tensor-manipulation kernels: axis normalisation and int-list inputs."""
from __future__ import annotations

from typing import Iterable

import numpy as np
from onnx import helper

from inference.errors import KernelError


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` in ``[-rank, rank)`` mapped to ``[0, rank)``; KernelError when out of range."""
    axis = int(axis)
    if not -rank <= axis < max(rank, 1):
        raise KernelError(f"{what} {axis} is out of range for a tensor of rank {rank}")
    return axis % rank if rank else 0


def normalize_axes(axes: Iterable[int], rank: int, what: str = "axes") -> list[int]:
    """Every axis normalised; KernelError on an out-of-range or repeated axis."""
    out = [normalize_axis(a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise KernelError(f"{what} {list(axes)} contains a repeated axis")
    return out


def int_list(values: np.ndarray | Iterable[int] | None) -> list[int] | None:
    """A 0-d/1-d integer tensor (or list) as a list of Python ints; None stays None."""
    if values is None:
        return None
    return [int(v) for v in np.asarray(values).reshape(-1).tolist()]  # tolist: no numpy scalar per element


def scalar(value: np.ndarray | int | float) -> int | float:
    """The single element of a 0-d or 1-element tensor, as a Python number."""
    arr = np.asarray(value)
    if arr.size != 1:
        raise KernelError(f"expected a scalar, got a tensor of shape {arr.shape}")
    return arr.reshape(-1)[0].item()


def np_dtype(onnx_type: int) -> np.dtype:
    """The numpy dtype (ml_dtypes for exotic types) of an ONNX TensorProto data type."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))
    except (KeyError, ValueError, TypeError) as exc:
        raise KernelError(f"unsupported ONNX data type {onnx_type}") from exc


def positive_index(index: np.ndarray, dim: int) -> np.ndarray:
    """Index values in ``[-dim, dim)`` made non-negative (``dim`` is the axis length), as int64."""
    index = np.asarray(index).astype(np.int64, copy=False)
    return np.where(index < 0, index + dim, index)


def check_index_range(index: np.ndarray, dim: int, what: str) -> None:
    """KernelError when some (already non-negative) index is outside ``[0, dim)``."""
    if index.size and (index.min() < 0 or index.max() >= dim):
        raise index_error(what, dim)


def index_error(what: str, dim: int) -> KernelError:
    """The error of an index outside an axis of length ``dim`` (``what``: the op)."""
    return KernelError(f"{what} index out of range for an axis of size {dim}")


def split_sizes(dim: int, split: list[int] | None, parts: int | None, ragged: bool) -> list[int]:
    """Lengths of the parts of an axis of length ``dim``: explicit ``split``, or ``parts`` chunks
    (equal, or when ``ragged`` of size ceil(dim / parts) with a smaller last one)."""
    if split is not None:
        if sum(split) != dim or any(s < 0 for s in split):
            raise KernelError(f"split {split} does not add up to the axis length {dim}")
        return split
    if not parts or parts < 1:
        raise KernelError(f"cannot split into {parts} outputs")
    if ragged:
        chunk = -(-dim // parts)
        return [min(chunk, max(dim - i * chunk, 0)) for i in range(parts)]
    if dim % parts:
        raise KernelError(f"axis length {dim} is not divisible into {parts} equal parts")
    return [dim // parts] * parts


def split_along(x: np.ndarray, sizes: list[int], axis: int) -> tuple[np.ndarray, ...]:
    """Consecutive parts of ``x`` along ``axis`` with the given lengths, as contiguous arrays."""
    bounds = np.cumsum(sizes)[:-1]
    return tuple(np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis))
