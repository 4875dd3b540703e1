"""Backward-only kernels of the core rules (domain ``edgelearn.grad``).

They do what no short chain of standard ops does exactly or fast: scatter-add for Gather
(indices may repeat), zero-filled write-back for Slice (any steps, clamped bounds), folding the
reflected/repeated borders of Pad back onto their sources, the reverse of broadcasting when
shapes are only known at run time, and the masks of Relu, Clip and
LeakyRelu (one pass instead of Greater + Where; numpy's ``where`` on a random mask is ~7x
slower than a compiled select).
"""
from __future__ import annotations

from typing import Sequence

import numba
import numpy as np

from inference.errors import KernelError
from inference.ir import Node, TensorType
from inference.ops._axes import int_list, normalize_axes, normalize_axis, positive_index
from inference.ops.indexing import onnx_slice
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema
from training.grads.registry import GRAD_DOMAIN

_SHAPE_INPUT = {"SumToShape": 1, "SliceGrad": 1, "GatherGrad": 2, "PadGrad": 1}  # where each op reads its out shape


def _shape_from_input(node: Node, types: Sequence[TensorType | None]) -> list[TensorType | None]:
    """Element type of input 0; rank = length of the 1-D shape input (dims known only at run time;
    autograd then gives each gradient the static type of the value it belongs to)."""
    src = types[0] if types else None
    pos = _SHAPE_INPUT[node.op_type]
    shape_t = types[pos] if len(types) > pos else None
    if src is None:
        return [None]
    rank = shape_t.shape[0] if shape_t is not None and shape_t.shape and len(shape_t.shape) == 1 else None
    return [TensorType(src.elem_type, (None,) * rank if isinstance(rank, int) else None)]


def _schema(op: str, inputs: Sequence[tuple[str, bool]], attributes: dict | None = None) -> None:
    register_schema(OpSchema(op, GRAD_DOMAIN, 1, tuple(FormalParam(n, optional=o) for n, o in inputs),
                             (FormalParam("dx"),), attributes or {}, _shape_from_input))


_schema("SumToShape", [("grad", False), ("shape", False)])
_schema("SliceGrad", [("dy", False), ("shape", False), ("starts", False), ("ends", False),
                      ("axes", True), ("steps", True)])
_schema("GatherGrad", [("dy", False), ("indices", False), ("shape", False)], {"axis": 0})
_schema("PadGrad", [("dy", False), ("shape", False), ("pads", False), ("axes", True)], {"mode": "reflect"})
for _op, _ins, _attrs in (("ReluGrad", ("dy", "y"), {}), ("ClipGrad", ("dy", "x", "y"), {}),
                          ("LeakyReluGrad", ("dy", "x"), {"alpha": 0.01})):
    register_schema(OpSchema(_op, GRAD_DOMAIN, 1, tuple(FormalParam(n) for n in _ins), (FormalParam("dx"),),
                             _attrs, lambda node, types: [types[0] if types else None]))


@register("SumToShape", since=1, domain=GRAD_DOMAIN)
def sum_to_shape(grad: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Sum ``grad`` over the axes broadcasting added so that it gets ``shape``."""
    target = tuple(int_list(shape))
    lead = grad.ndim - len(target)
    if lead < 0 or any(t not in (1, g) for t, g in zip(target, grad.shape[lead:])):
        raise KernelError(f"SumToShape: shape {list(grad.shape)} does not broadcast from {list(target)}")
    axes = tuple(range(lead)) + tuple(lead + i for i, t in enumerate(target) if t == 1 != grad.shape[lead + i])
    out = grad.sum(axis=axes, keepdims=True) if axes else grad
    return out.reshape(target)


@register("SliceGrad", since=1, domain=GRAD_DOMAIN)
def slice_grad(dy: np.ndarray, shape: np.ndarray, starts: np.ndarray, ends: np.ndarray,
               axes: np.ndarray | None = None, steps: np.ndarray | None = None) -> np.ndarray:
    """Zeros of ``shape`` with ``dy`` written where Slice(starts, ends, axes, steps) read."""
    dims = int_list(shape)
    starts_l, ends_l = int_list(starts), int_list(ends)
    axes_l = list(range(len(starts_l))) if axes is None else normalize_axes(int_list(axes), len(dims), "SliceGrad axes")
    steps_l = [1] * len(starts_l) if steps is None else int_list(steps)
    index = [slice(None)] * len(dims)
    for a, s, e, st in zip(axes_l, starts_l, ends_l, steps_l):
        index[a] = onnx_slice(s, e, st, dims[a])
    out = np.zeros(dims, dtype=dy.dtype)
    out[tuple(index)] = dy
    return out


@register("GatherGrad", since=1, domain=GRAD_DOMAIN)
def gather_grad(dy: np.ndarray, indices: np.ndarray, shape: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """Scatter-add of ``dy`` into zeros of ``shape`` at ``indices`` along ``axis`` (repeats accumulate)."""
    dims = int_list(shape)
    axis = normalize_axis(axis, len(dims), "GatherGrad axis")
    idx = positive_index(indices, dims[axis]).reshape(-1)
    out = np.zeros(dims, dtype=dy.dtype)
    rows = dy.reshape(dims[:axis] + [idx.size] + dims[axis + 1:])
    np.add.at(np.moveaxis(out, axis, 0), idx, np.moveaxis(rows, axis, 0))
    return out


_FOLDED_PAD_MODES = ("reflect", "edge", "wrap")


@register("PadGrad", since=1, domain=GRAD_DOMAIN)
def pad_grad(dy: np.ndarray, shape: np.ndarray, pads: np.ndarray, axes: np.ndarray | None = None, *,
             mode: str = "reflect") -> np.ndarray:
    """The adjoint of ONNX Pad in mode reflect, edge or wrap: each padded element's gradient is
    added to the element it was copied from, and what negative pads cropped gets zeros.

    Mirrors ``inference.ops.layout.pad_tensor`` (crop by negative pads, then ``np.pad``). Those
    modes copy along each axis independently, so the adjoint folds one axis at a time; the
    source of every padded position is ``np.pad`` applied to the positions themselves.
    """
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in _FOLDED_PAD_MODES:
        raise KernelError(f"PadGrad: mode {mode!r} is not one of {list(_FOLDED_PAD_MODES)}")
    dims = int_list(shape)
    pads_l = int_list(pads)
    axes_l = list(range(len(dims))) if axes is None else normalize_axes(int_list(axes), len(dims), "PadGrad axes")
    if len(pads_l) != 2 * len(axes_l):
        raise KernelError(f"PadGrad: {len(pads_l)} pads given for {len(axes_l)} axes (need twice as many)")
    widths = [[0, 0] for _ in dims]
    for i, a in enumerate(axes_l):
        widths[a] = [pads_l[i], pads_l[i + len(axes_l)]]
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for d, (b, e) in zip(dims, widths))
    kept = [len(range(d)[c]) for d, c in zip(dims, crop)]
    expected = tuple(n + max(b, 0) + max(e, 0) for n, (b, e) in zip(kept, widths))
    if dy.shape != expected:
        raise KernelError(f"PadGrad: gradient of shape {list(dy.shape)} does not match the padded shape "
                          f"{list(expected)} of an input of shape {dims} with pads {pads_l}")
    g = dy
    for a, (n, (b, e)) in enumerate(zip(kept, widths)):
        b, e = max(b, 0), max(e, 0)
        if b or e:
            g = _fold_axis(g, a, n, b, e, mode)
    out = np.zeros(dims, dtype=dy.dtype)
    out[crop] = g
    return out


def _fold_axis(g: np.ndarray, axis: int, n: int, before: int, after: int, mode: str) -> np.ndarray:
    """``g`` (padded by before/after along ``axis``) summed back onto the ``n`` source positions."""
    source = np.pad(np.arange(n), (before, after), mode=mode)
    moved = np.moveaxis(g, axis, 0)
    out = moved[before:before + n].copy()
    for j in [*range(before), *range(before + n, before + n + after)]:
        out[source[j]] += moved[j]
    return np.moveaxis(out, 0, axis)


RELU, CLIP, LEAKY_RELU = 0, 1, 2  # which mask a MaskedGrad applies


@numba.njit(cache=True, error_model="numpy")
def _masked_grad_flat(dy: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray, mode: int,
                      alpha: float) -> None:
    """One compiled select per element (numpy's ``where`` on random masks mispredicts branches)."""
    for i in range(dy.size):
        if mode == RELU:
            out[i] = dy[i] if a[i] > 0 else 0
        elif mode == CLIP:
            out[i] = dy[i] if a[i] == b[i] else 0
        else:
            out[i] = dy[i] if a[i] > 0 else dy[i] * alpha


def _masked(dy: np.ndarray, a: np.ndarray, b: np.ndarray, mode: int, alpha: float = 0.0) -> np.ndarray:
    if dy.shape != a.shape or dy.shape != b.shape or dy.dtype not in (np.float32, np.float64) \
            or a.dtype != dy.dtype or b.dtype != dy.dtype:
        zero = np.zeros((), dy.dtype)
        pick = {RELU: lambda: np.where(a > 0, dy, zero), CLIP: lambda: np.where(a == b, dy, zero),
                LEAKY_RELU: lambda: np.where(a > 0, dy, dy * dy.dtype.type(alpha))}[mode]
        return np.asarray(pick()).astype(dy.dtype, copy=False)
    dyc, ac, bc = (np.ascontiguousarray(v) for v in (dy, a, b))
    out = np.empty_like(dyc)
    _masked_grad_flat(dyc.reshape(-1), ac.reshape(-1), bc.reshape(-1), out.reshape(-1), mode, float(alpha))
    return out


@register("ReluGrad", since=1, domain=GRAD_DOMAIN)
def relu_grad(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dy`` where the Relu output ``y`` is positive, else 0."""
    return _masked(dy, y, y, RELU)


@register("ClipGrad", since=1, domain=GRAD_DOMAIN)
def clip_grad(dy: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dy`` where Clip left ``x`` unchanged (``y == x``: inside [min, max]), else 0."""
    return _masked(dy, x, y, CLIP)


@register("LeakyReluGrad", since=1, domain=GRAD_DOMAIN)
def leaky_relu_grad(dy: np.ndarray, x: np.ndarray, *, alpha: float = 0.01) -> np.ndarray:
    """``dy`` where ``x > 0``, else ``alpha * dy``."""
    return _masked(dy, x, x, LEAKY_RELU, alpha)
