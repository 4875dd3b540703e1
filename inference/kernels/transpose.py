"""Transposes that swap two adjacent blocks of axes (NCHW <-> NHWC, a matrix's .T, attention's heads)
for float32.

Why: the layout pass leaves a Transpose at each channels-last region's boundary, and numpy copies
(N, HW, C) -> (N, C, HW) one element at a time through its strided loop: a YOLOv8-style head's
40x40x144 output took 126 us to go back to NCHW (onnxruntime's reorder: 40). Here each output row
takes 16 input rows at a time, a gathered vector load per 16 outputs (LLVM vectorises the fixed
16-long inner loop): 48 us alone. Where the swapped blocks keep trailing axes after them (attention's
(0, 2, 1, 3) head split and merge), whole rows of those move as ``memcpy`` runs: numpy's copy is
as fast there, but a kernel replay (:mod:`inference.kernel_replay`) repeats only numba calls.
Every other permutation (timm's and PyTorch's ``qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)``)
is a gather of rows (:func:`gather_rows`), for the same reason. float32 and 8-bit tensors (the
boundaries of an int8 model's channels-last regions; their last two axes swap in 16 x 16 register
blocks, :mod:`inference.kernels.transpose_ir`) run here; other dtypes go to the reference op.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.errors import EdgelearnError
from inference.kernels._applies import input_of_type
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.kernels.memcpy_ir import copy_run
from inference.kernels.transpose_ir import TILE, swap_last_two_bytes
from inference.ops import layout as reference
from inference.ops._axes import normalize_axes
from inference.ops._memo import remember
from inference.ops.registry import register

BLOCK = 16  # input rows per gathered vector
DTYPES = (np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.int8))  # what these kernels move


@threaded_kernel()
def swap_last_two(x, y):
    """``y[i, q, p] = x[i, p, q]`` for ``x`` (n, a, b) and ``y`` (n, b, a), in parallel over blocks of
    :data:`BLOCK` rows and ``TILE`` columns of ``x``, a thread's tasks running down the rows of a
    column tile: rows of ``y`` that no other thread writes. (By row blocks alone, two threads had
    shared every cache line of a 32-channel image's pixels: 1 x 32 x 112 x 112 to channels-last 138
    us on one thread, 270 on two.)"""
    n, a, b = x.shape
    blocks, col_tiles = -(-a // BLOCK), -(-b // TILE)
    for t in numba.prange(n * col_tiles * blocks):
        i, rest = t // (col_tiles * blocks), t % (col_tiles * blocks)
        q_lo, p0 = (rest // blocks) * TILE, (rest % blocks) * BLOCK
        width = min(TILE, b - q_lo)
        xt, yt = x[i, :, q_lo:q_lo + width], y[i, q_lo:q_lo + width]
        if p0 + BLOCK <= a:
            for q in range(width):
                for p in range(BLOCK):
                    yt[q, p0 + p] = xt[p0 + p, q]
        else:
            for q in range(width):
                for p in range(p0, a):
                    yt[q, p] = xt[p, q]


@threaded_kernel()
def swap_middle(x, y, n, a, b, c):
    """``y (n, b, a, c)[i, q, p] = x (n, a, b, c)[i, p, q]`` (both flat), rows of ``c`` as ``memcpy``
    runs, in parallel over the output's (i, q)."""
    for t in numba.prange(n * b):
        i, q = t // b, t % b
        for p in range(a):
            copy_run(y, ((i * b + q) * a + p) * c, x, ((i * a + p) * b + q) * c, c)


@threaded_kernel()
def gather_rows(x, y, dims, strides, run):
    """``y`` (flat, C order over ``dims`` then runs of ``run``) gathered from flat ``x``: output
    index (i_0, .., i_k) starts at ``sum(i_j * strides[j])`` in ``x``; the last axis's runs are
    ``memcpy``'s (``run`` > 1) or strided loads, a row of it per parallel step."""
    r = dims.size
    inner, step = dims[r - 1], strides[r - 1]
    rows = y.size // (inner * run)
    for t in numba.prange(rows):
        src = _row_start(np.int64(t), dims, strides)  # a prange index may be unsigned: keep int64 math
        out = np.int64(t) * inner * run
        if run == 1:
            for j in range(inner):
                y[out + j] = x[src + j * step]
        else:
            for j in range(inner):
                copy_run(y, out + j * run, x, src + j * step, run)


@numba.njit(cache=True, nogil=True)
def _row_start(row, dims, strides):
    """Where output row ``row`` (C order over ``dims[:-1]``) starts in the input."""
    src = 0
    for k in range(dims.size - 2, -1, -1):
        src += (row % dims[k]) * strides[k]
        row //= dims[k]
    return src


def gather_plan(shape: tuple[int, ...], perm: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
    """(dims, input strides, run) of :func:`gather_rows` for ``perm`` of ``shape`` (no axis of
    length 1, not the identity): output axes adjacent in the input merge, and the input's last
    axis, when it stays last, becomes the contiguous run."""
    groups: list[list[int]] = []
    for axis in perm:
        if groups and groups[-1][-1] + 1 == axis:
            groups[-1].append(axis)
        else:
            groups.append([axis])
    stride = [math.prod(shape[a + 1:]) for a in range(len(shape))]
    run = 1
    if groups[-1][-1] == len(shape) - 1:
        run = math.prod(shape[a] for a in groups.pop())
    dims = np.array([math.prod(shape[a] for a in g) for g in groups], np.int64)
    return dims, np.array([stride[g[-1]] for g in groups], np.int64), run


def block_swap(shape: tuple[int, ...], perm: list[int]) -> tuple[int, int, int, int] | None:
    """(n, a, b, c) when ``perm`` keeps a leading run of axes (n elements), swaps the two runs
    after it (a and b) and keeps the trailing run (c), so that the transpose is
    (n, a, b, c) -> (n, b, a, c); None otherwise (or when nothing moves)."""
    r = len(perm)
    k = next((i for i in range(r) if perm[i] != i), r)
    if k >= r - 1:
        return None
    e = next(i for i in range(r, 0, -1) if perm[i - 1] != i - 1)  # the kept trailing run is [e, r)
    j = perm[k]  # the second run [j, e) comes first, then the first run [k, j)
    if perm[k:e] != list(range(j, e)) + list(range(k, j)):
        return None
    return math.prod(shape[:k]), math.prod(shape[k:j]), math.prod(shape[j:e]), math.prod(shape[e:])


def _plan(shape: tuple[int, ...], perm) -> tuple[tuple[int, ...], tuple[int, int, int, int] | None] | None:
    """(output shape, (n, a, b, c) of a block swap, a :func:`gather_plan` for another permutation,
    or None for a plain reshape), or None when the reference should run (an invalid permutation:
    its error)."""
    axes = list(range(len(shape)))[::-1] if perm is None else normalize_axes(perm, len(shape), "Transpose perm")
    if sorted(axes) != list(range(len(shape))):
        return None
    out_shape = tuple(shape[i] for i in axes)
    # axes of length 1 move nothing: PyTorch's attention moves them about ((128, 1, 3, 256) -> (3, 1, 128, 256))
    kept = [i for i, d in enumerate(shape) if d != 1]
    moved = [kept.index(i) for i in axes if shape[i] != 1]
    if moved == sorted(moved):
        return out_shape, None  # the elements keep their order
    shape_kept = tuple(shape[i] for i in kept)
    swap = block_swap(shape_kept, moved)
    return out_shape, (swap if swap is not None else gather_plan(shape_kept, moved))


def copies(shape: tuple[int, ...], dtype: np.dtype, perm) -> bool:
    """Whether this kernel writes a new array for such an input (a block swap or gather) rather than
    a view of it (a plain reshape, or numpy's transpose for another dtype): the memory plan gives
    the former a region of its own (``memory_plan.views_input``)."""
    if np.dtype(dtype) not in DTYPES:
        return False
    try:
        plan = _plan(tuple(shape), perm)
    except EdgelearnError:  # an invalid permutation: the run names it
        return False
    return plan is not None and plan[1] is not None


def _transpose(x: np.ndarray, plan) -> np.ndarray:
    out_shape, swap = plan
    if swap is None:
        return np.ascontiguousarray(x).reshape(out_shape)
    y = new_output(out_shape, x.dtype)
    if y.size and len(swap) == 3:
        dims, strides, run = swap
        gather_rows(np.ascontiguousarray(x).reshape(-1), y.reshape(-1), dims, strides, run)
    elif y.size:
        n, a, b, c = swap
        if c == 1:
            swap = swap_last_two_bytes if x.dtype.itemsize == 1 else swap_last_two
            swap(np.ascontiguousarray(x).reshape(n, a, b), y.reshape(n, b, a))
        else:
            swap_middle(np.ascontiguousarray(x).reshape(-1), y.reshape(-1), n, a, b, c)
    return y


def _binder(fn):
    """Plan-time ``bind``: the permutation resolved once per input shape (a model's boundary
    transposes run on the same shapes run after run; resolving it per call cost ~5 us)."""

    def bind(*, perm=None):
        plans: dict = {}

        def run(x):
            if x.dtype not in DTYPES:
                return reference.transpose(x, perm=perm)
            plan = plans.get(x.shape, False)
            if plan is False:
                plan = remember(plans, x.shape, _plan(x.shape, perm))
            return reference.transpose(x, perm=perm) if plan is None else _transpose(x, plan)

        return run

    return bind


@register("Transpose", since=1, kind="fast", applies=lambda n, g: input_of_type(n, g, (1, 2, 3)), bind=_binder)
def transpose_blocks(x, *, perm=None):
    return _binder(transpose_blocks)(perm=perm)(x)
