"""``edgelearn::BinarizedWeight``: a bit-packed binary weight decoded to ``sign * alpha`` (float32).

``BinarizedWeight(bits: uint8[ceil(prod(shape)/8)], alpha: float32[shape[axis]]) -> W: float32[shape]``
with attributes ``shape`` (the weight's shape) and ``axis`` (the output-channel axis ``alpha`` runs
along). Bit ``i`` of ``np.packbits`` order (MSB first) of the row-major flattened weight is 1 for
``+alpha`` and 0 for ``-alpha``. ``compress.binarize`` writes it in front of the Conv/Gemm/MatMul
whose weight it binarizes, so the consuming op stays a standard one.

Why an unpacking path and not a bit-serial (XNOR/popcount) kernel: popcount arithmetic needs binary
*activations* too, which costs far more accuracy than binary weights (XNOR-Net vs BWN), while
``sign(W) * alpha`` times float activations is an ordinary float product. So the weight is decoded
once per packed array (cached by identity, as ``inference.kernels.int8`` caches its packed weights:
the session hands kernels the same initializer object every run) and the existing im2col/BLAS conv
and GEMM fast paths, with their fused epilogues, run on it. alpha is folded into the decoded matrix,
which equals applying it per channel in the epilogue and costs nothing per run. What shrinks is the
file (1 bit + fp32 scale per channel instead of 32 bits per weight), not the run-time memory.
"""
from __future__ import annotations

import math
import weakref

import numpy as np
from onnx import TensorProto

from inference.errors import KernelError, ShapeInferenceError
from inference.ir import Node, TensorType
from inference.kernels.fused import DOMAIN
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema

OP_TYPE = "BinarizedWeight"


def packed_size(shape: tuple[int, ...] | list[int]) -> int:
    """Bytes of the packed bits of a weight of ``shape`` (one bit per weight, padded to a byte)."""
    return math.ceil(int(np.prod(shape, dtype=np.int64)) / 8)


def _check(bits_size: int | None, bits_dtype: np.dtype | None, alpha_size: int | None, shape, axis) -> str:
    """The reason the operands do not fit the attributes, or "" when they do (unknown sizes pass)."""
    if shape is None or not all(isinstance(d, int) and d > 0 for d in shape):
        return f"attribute shape must be a list of positive ints, got {shape!r}"
    if not isinstance(axis, int) or not -len(shape) <= axis < len(shape):
        return f"attribute axis={axis!r} is out of range for a weight of shape {list(shape)}"
    if bits_dtype is not None and bits_dtype != np.uint8:
        return f"bits must be uint8 (np.packbits), got {bits_dtype}"
    if bits_size is not None and bits_size != packed_size(shape):
        return (f"bits hold {bits_size} bytes, a weight of shape {list(shape)} packs into "
                f"{packed_size(shape)} bytes")
    if alpha_size is not None and alpha_size != shape[axis]:
        return (f"alpha has {alpha_size} values, the weight has {shape[axis]} channels on axis {axis} "
                f"(shape {list(shape)})")
    return ""


def _static_size(t) -> int | None:
    if isinstance(t, TensorType) and t.is_static():
        return int(np.prod(t.shape, dtype=np.int64))
    return None


def _shape_rule(node: Node, types: list) -> list:
    bits, alpha = (types + [None, None])[:2]
    bits_dtype = bits.dtype if isinstance(bits, TensorType) else None
    shape, axis = node.attrs.get("shape"), node.attrs.get("axis", 0)
    problem = _check(_static_size(bits), bits_dtype, _static_size(alpha), shape, axis)
    if problem:
        raise ShapeInferenceError(f"node {node.label()} ({DOMAIN}::{OP_TYPE}): {problem}")
    return [TensorType(TensorProto.FLOAT, tuple(shape))]


register_schema(OpSchema(OP_TYPE, DOMAIN, 1, (FormalParam("bits"), FormalParam("alpha")), (FormalParam("W"),),
                         {"shape": None, "axis": 0}, shape_rule=_shape_rule))


def decode(bits: np.ndarray, alpha: np.ndarray, shape: list[int] | tuple[int, ...], axis: int = 0) -> np.ndarray:
    """``sign * alpha`` as float32 of ``shape``: the exact meaning of the op (and its reference kernel)."""
    bits, alpha = np.asarray(bits), np.asarray(alpha)
    problem = _check(bits.size, bits.dtype, alpha.size, shape, axis)
    if problem:
        raise KernelError(problem)
    n = int(np.prod(shape, dtype=np.int64))
    signs = np.unpackbits(bits.reshape(-1), count=n).astype(np.float32).reshape(shape) * 2.0 - 1.0
    bshape = [1] * len(shape)
    bshape[axis] = -1
    return (signs * alpha.astype(np.float32).reshape(bshape)).astype(np.float32)


@register(OP_TYPE, since=1, domain=DOMAIN)
def binarized_weight_reference(bits, alpha, *, shape=None, axis=0):
    return decode(bits, alpha, shape, axis)


_DECODED: dict[int, tuple[weakref.ref, weakref.ref, tuple, np.ndarray]] = {}


def _forget(key: int) -> None:
    _DECODED.pop(key, None)


@register(OP_TYPE, since=1, domain=DOMAIN, kind="fast")
def binarized_weight(bits, alpha, *, shape=None, axis=0):
    """Decoded once per (bits, alpha) pair of arrays; later runs return the cached read-only matrix."""
    key = id(bits)
    hit = _DECODED.get(key)
    attrs = (tuple(shape) if shape is not None else None, axis)
    if hit is not None and hit[0]() is bits and hit[1]() is alpha and hit[2] == attrs:
        return hit[3]
    w = decode(bits, alpha, shape, axis)
    w.flags.writeable = False  # shared between runs: a kernel writing into it would corrupt the model
    try:
        _DECODED[key] = (weakref.ref(bits, lambda _r, k=key: _forget(k)), weakref.ref(alpha), attrs, w)
    except TypeError:  # not weak-referenceable: decode on every call
        pass
    return w
