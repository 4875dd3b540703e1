"""Transposes that swap two blocks of trailing axes (NCHW <-> NHWC, a matrix's .T) for float32.

Why: the layout pass leaves a Transpose at each channels-last region's boundary, and numpy copies
(N, HW, C) -> (N, C, HW) one element at a time through its strided loop: a YOLOv8-style head's
40x40x144 output took 126 us to go back to NCHW (onnxruntime's reorder: 40). Here each output row
takes 16 input rows at a time, a gathered vector load per 16 outputs (LLVM vectorises the fixed
16-long inner loop): 48 us alone. Other permutations and dtypes go to the reference op.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels._jit import threaded_kernel
from inference.ops import layout as reference
from inference.ops._axes import normalize_axes
from inference.ops.registry import register

BLOCK = 16  # input rows per gathered vector


@threaded_kernel()
def swap_last_two(x, y):
    """``y[i, q, p] = x[i, p, q]`` for ``x`` (n, a, b) and ``y`` (n, b, a), in parallel over
    blocks of :data:`BLOCK` rows of ``x``."""
    n, a, b = x.shape
    blocks = -(-a // BLOCK)
    for t in numba.prange(n * blocks):
        i, p0 = t // blocks, (t % blocks) * BLOCK
        if p0 + BLOCK <= a:
            for q in range(b):
                for p in range(BLOCK):
                    y[i, q, p0 + p] = x[i, p0 + p, q]
        else:
            for q in range(b):
                for p in range(p0, a):
                    y[i, q, p] = x[i, p, q]


def block_swap(shape: tuple[int, ...], perm: list[int]) -> tuple[int, int, int] | None:
    """(n, a, b) when ``perm`` keeps a leading run of axes and swaps the two runs after it, so that
    the transpose is (n, a, b) -> (n, b, a); None otherwise (or when nothing moves)."""
    r = len(perm)
    k = next((i for i in range(r) if perm[i] != i), r)
    if k >= r - 1:
        return None
    j = perm[k]  # the second run [j, r) comes first, then the first run [k, j)
    if perm[k:] != list(range(j, r)) + list(range(k, j)):
        return None
    return math.prod(shape[:k]), math.prod(shape[k:j]), math.prod(shape[j:])


@register("Transpose", since=1, kind="fast", applies=float32_input)
def transpose_blocks(x, *, perm=None):
    axes = list(range(x.ndim))[::-1] if perm is None else normalize_axes(perm, x.ndim, "Transpose perm")
    swap = block_swap(x.shape, axes) if sorted(axes) == list(range(x.ndim)) else None
    if swap is None or x.dtype != np.float32:
        return reference.transpose(x, perm=perm)  # and its errors
    n, a, b = swap
    y = np.empty(tuple(x.shape[i] for i in axes), np.float32)
    if y.size:
        swap_last_two(np.ascontiguousarray(x).reshape(n, a, b), y.reshape(n, b, a))
    return y
