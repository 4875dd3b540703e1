"""Casts in numba: to float32 of bool, integer, float64 and half (float16, bfloat16) tensors, and
float32 to half. The first are attention masks on their way into the scores (Hugging Face's
``(1 - mask.float()) * min``, a bool padding mask's ``Where``); the half ones wrap a half-precision
model computed in float32 (``inference.passes.widen_float16``) at its inputs and outputs.

For masks numpy's ``astype`` is as fast, but a kernel replay (:mod:`inference.kernel_replay`)
repeats only numba calls: a BERT export with its int64 attention mask ran step by step for this
one op. For halves numpy is slow too (``inference.kernels.half_ir``). Rounding is LLVM's
int-to-float and float truncation, round to nearest even, as numpy's and ml_dtypes'.
"""
from __future__ import annotations

import ml_dtypes
import numba
import numpy as np

from inference.ir import Graph, Node
from inference.kernels.arena_slot import new_output
from inference.kernels.half_ir import float_to_half_bits, half_bits_to_float
from inference.ops import cast as reference
from inference.ops.registry import register

FLOAT, FLOAT16, BFLOAT16 = 1, 10, 16  # onnx.TensorProto's
BFLOAT16_DTYPE = np.dtype(ml_dtypes.bfloat16)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def to_float32(x, y):
    """``y[i] = float32(x[i])`` over flat arrays of one length."""
    for i in range(y.size):
        y[i] = np.float32(x[i])


@numba.njit(cache=True, error_model="numpy", nogil=True)
def half_to_float32(bits, y):
    """``y[i]`` = the float16 whose bits are ``bits[i]``, widened."""
    for i in range(y.size):
        y[i] = half_bits_to_float(bits[i])


@numba.njit(cache=True, error_model="numpy", nogil=True)
def float32_to_half(x, bits):
    """``bits[i]`` = the bits of ``x[i]`` rounded to float16."""
    for i in range(x.size):
        bits[i] = float_to_half_bits(x[i])


@numba.njit(cache=True, error_model="numpy", nogil=True)
def bfloat16_to_float32(bits, y_bits):
    """bfloat16 is float32's upper half: widening shifts its bits up."""
    for i in range(y_bits.size):
        y_bits[i] = np.uint32(bits[i]) << np.uint32(16)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def float32_to_bfloat16(x_bits, bits):
    """Round to nearest even on the dropped 16 bits; a NaN stays a (quiet) NaN."""
    for i in range(x_bits.size):
        b = x_bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            bits[i] = np.uint16((b >> np.uint32(16)) | np.uint32(0x40))
        else:
            bits[i] = np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


#: (source dtype, target) -> the kernel and the uint views it reads and writes (None: as is)
_HALF_CASTS = {
    (np.dtype(np.float16), FLOAT): (half_to_float32, np.uint16, np.float32, None),
    (BFLOAT16_DTYPE, FLOAT): (bfloat16_to_float32, np.uint16, np.float32, np.uint32),
    (np.dtype(np.float32), FLOAT16): (float32_to_half, None, np.float16, np.uint16),
    (np.dtype(np.float32), BFLOAT16): (float32_to_bfloat16, np.uint32, BFLOAT16_DTYPE, np.uint16),
}


def _fast_cast_applies(node: Node, graph: Graph) -> bool:
    return node.attrs.get("to") in (FLOAT, FLOAT16, BFLOAT16)


@register("Cast", since=6, kind="fast", applies=_fast_cast_applies)
def fast_cast(x, *, to, saturate=1, round_mode="up"):
    if type(x) is not np.ndarray:
        return reference.cast(x, to=to, saturate=saturate, round_mode=round_mode)
    half = _HALF_CASTS.get((x.dtype, to))
    if half is not None:
        kernel, read_as, dtype, write_as = half
        y = new_output(x.shape, dtype)
        src = np.ascontiguousarray(x).reshape(-1)
        kernel(src if read_as is None else src.view(read_as), y.reshape(-1) if write_as is None
               else y.reshape(-1).view(write_as))
        return y
    if to != FLOAT or not (x.dtype.kind in "biu" or x.dtype == np.float64):
        return reference.cast(x, to=to, saturate=saturate, round_mode=round_mode)
    y = new_output(x.shape)
    to_float32(np.ascontiguousarray(x).reshape(-1), y.reshape(-1))
    return y
