"""Cast to float32 of bool, integer and float64 tensors in numba: attention masks on their way into
the scores (Hugging Face's ``(1 - mask.float()) * min``, a bool padding mask's ``Where``).

numpy's ``astype`` is as fast, but a kernel replay (:mod:`inference.kernel_replay`) repeats only
numba calls: a BERT export with its int64 attention mask ran step by step for this one op.
Rounding is LLVM's int-to-float and float truncation, round to nearest even, as numpy's.
"""
from __future__ import annotations

import numba
import numpy as np

from inference.ir import Graph, Node
from inference.kernels.arena_slot import new_output
from inference.ops import cast as reference
from inference.ops.registry import register

FLOAT = 1  # onnx.TensorProto.FLOAT


@numba.njit(cache=True, error_model="numpy", nogil=True)
def to_float32(x, y):
    """``y[i] = float32(x[i])`` over flat arrays of one length."""
    for i in range(y.size):
        y[i] = np.float32(x[i])


def _to_float32(node: Node, graph: Graph) -> bool:
    return node.attrs.get("to") == FLOAT


@register("Cast", since=6, kind="fast", applies=_to_float32)
def cast_to_float32(x, *, to, saturate=1, round_mode="up"):
    if type(x) is not np.ndarray or to != FLOAT or not (x.dtype.kind in "biu" or x.dtype == np.float64):
        return reference.cast(x, to=to, saturate=saturate, round_mode=round_mode)
    y = new_output(x.shape)
    to_float32(np.ascontiguousarray(x).reshape(-1), y.reshape(-1))
    return y
