"""MatMul of two float32 activations (attention's ``Q @ K^T`` and ``P @ V``) on our matrix tile.

Why not numpy's BLAS, which is as fast on these shapes: it is a call numba's kernel replay
(:mod:`inference.kernel_replay`) cannot repeat, so one such product kept a whole transformer
running step by step, ~18% of its batch-1 run in Python. Here each matrix of ``B`` is packed into
:func:`~inference.kernels.rows_gemm.padded_weight`'s panels inside the kernel (its
:func:`~inference.kernels.rows_gemm.pack_panels`) (a 64 x 128 one is
32 KB, ~1 us), then every tile of every product runs in one parallel region.

Handles ``A (..., P, K) @ B (..., K, N)`` with equal batch axes, and ``A (..., K) @ B (K, N)``; a
broadcast batch, a 1-D operand, another dtype, an empty product or a second operand past
:data:`MAX_PACKED_BYTES` go to the reference op. Products of fewer rows than a tile (a decoder's
one query) skip the packing (:func:`_few_rows`).

Registered as kind :data:`REPLAYABLE`, which only replaying sessions ask for: against OpenBLAS on
one thread (``/tmp`` script, min of 5) attention's 4 x (128 x 64 @ 64 x 128) in 41.5 us against
40.8 and batch 32's 128 of them in 1501 against 1487, but small products ~2.5 us slower (the
Python around the call) and (1 x 4096) @ (4096 x 4096) 1.22x. Training's sessions keep BLAS.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numba
import numpy as np

from inference.kernels._applies import float32_input
from inference.kernels._jit import kernel_threads, parallel_chunks, threaded_kernel
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.rows_gemm import LANES, matrix_product, pack_panels, panel_row_offsets, tile_shape
from inference.ops._memo import remember
from inference.ops.matmul import matmul as reference_matmul
from inference.ops.registry import register

#: the kernel kind of numba twins of numpy work, worth their cost where a replay skips the Python
#: around them (``inference.session.REPLAY_KINDS``)
REPLAYABLE = "replayable"
#: a second operand whose panels would take more than this goes to numpy: each parallel run packs
#: a whole matrix into the arena's workspace, which keeps its largest size (attention's K^T of 512
#: tokens x 64 is 128 KB), while OpenBLAS packs cache-sized blocks; a product that large runs long
#: enough for its Python not to matter
MAX_PACKED_BYTES = 4 << 20
_UNBOUNDED = (np.float32(-np.inf), np.float32(np.inf))
_NO_Z = np.zeros(1, np.float32)


@threaded_kernel()
def _products(a, b, y, items, p, k, n, koff, bias, mr, nv, nchunks, wp, tails):
    """``y[i] = a[i] @ b[i]`` for the ``items`` products of ``a`` (items, p, k) and ``b`` (items, k, n),
    all flat, in ``nchunks`` parallel runs. ``wp``: scratch for a packed ``b[i]`` per run (one in
    all when the runs share a product); ``tails``: a zero-padded partial row block's per run. Both
    forms multiply through :func:`~inference.kernels.rows_gemm.matrix_product`: one compiled
    function, not a second inlined copy of the tiles."""
    nl = nv * LANES
    panels = bias.size // nl
    packed = panels * k * nl
    lo, hi = _UNBOUNDED
    if items >= nchunks:  # whole products per run: each packs its b[i] and multiplies it while cached
        for ch in numba.prange(nchunks):
            w, tail = wp[ch * packed:(ch + 1) * packed], tails[ch * mr * k:(ch + 1) * mr * k]
            for i in range(ch * items // nchunks, (ch + 1) * items // nchunks):
                pack_panels(b, i * k * n, k, n, n, nl, w, 0, 0, panels)
                matrix_product(a, i * p * k, p, tail, koff, w, bias, _NO_Z, False, lo, hi, y, i * p * n, n, mr, nv)
    else:  # fewer products than runs: each packed by all runs, then its row blocks shared
        w = wp[:packed]
        blocks = -(-p // mr)
        for i in range(items):
            for ch in numba.prange(nchunks):
                pack_panels(b, i * k * n, k, n, n, nl, w, 0, ch * panels // nchunks, (ch + 1) * panels // nchunks)
            for ch in numba.prange(nchunks):
                r0, r1 = ch * blocks // nchunks * mr, min(p, (ch + 1) * blocks // nchunks * mr)
                if r1 > r0:
                    matrix_product(a, (i * p + r0) * k, r1 - r0, tails[ch * mr * k:(ch + 1) * mr * k], koff, w,
                                   bias, _NO_Z, False, lo, hi, y, (i * p + r0) * n, n, mr, nv)


#: columns per unit of :func:`_few_rows` (its rows' sums, at most ``mr`` x this, stay in L1)
ROW_BLOCK = 512


@threaded_kernel()
def _few_rows(a, b, y, items, p, k, n, nchunks):
    """The products of fewer rows than a tile (a decoder's one query) without packing: ``b[i]``'s
    rows are read once, each scaled into every row's sums, in units of (product, column block)."""
    blocks = -(-n // ROW_BLOCK)
    units = items * blocks
    for ch in numba.prange(nchunks):
        for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
            i, j0 = u // blocks, (u % blocks) * ROW_BLOCK
            cols = min(ROW_BLOCK, n - j0)
            for r in range(p):
                acc = y[(i * p + r) * n + j0:(i * p + r) * n + j0 + cols]
                for j in range(cols):
                    acc[j] = 0
            kk = 0
            while kk < k:  # four of b's rows per pass over the sums: a load and store of each per 4 FMAs
                four = min(4, k - kk)
                for r in range(p):
                    base = (i * p + r) * k + kk
                    acc = y[(i * p + r) * n + j0:(i * p + r) * n + j0 + cols]
                    if four == 4:
                        a0, a1, a2, a3 = a[base], a[base + 1], a[base + 2], a[base + 3]
                        o = (i * k + kk) * n + j0
                        r0, r1, r2, r3 = (b[o:o + cols], b[o + n:o + n + cols], b[o + 2 * n:o + 2 * n + cols],
                                          b[o + 3 * n:o + 3 * n + cols])
                        for j in range(cols):
                            acc[j] += (a0 * r0[j] + a1 * r1[j]) + (a2 * r2[j] + a3 * r3[j])
                    else:
                        for q in range(four):
                            av = a[base + q]
                            row = b[(i * k + kk + q) * n + j0:(i * k + kk + q) * n + j0 + cols]
                            for j in range(cols):
                                acc[j] += av * row[j]
                kk += four


class _Plan:
    """What a product of these operand shapes needs, settled once: items, rows, the tile, the
    panels' row offsets and their zero bias, the split over threads."""

    __slots__ = ("items", "p", "k", "n", "out_shape", "mr", "nv", "koff", "bias", "_split")

    def __init__(self, a_shape: tuple, b_shape: tuple):
        self.k, self.n = b_shape[-2], b_shape[-1]
        if len(b_shape) == 2:
            self.items, self.p = 1, math.prod(a_shape[:-1])
        else:
            self.items, self.p = math.prod(a_shape[:-2]), a_shape[-2]
        self.out_shape = a_shape[:-1] + (self.n,)
        self.mr, self.nv = tile_shape(self.n)  # matrix tiles only (p = 2)
        nl = self.nv * LANES
        self.koff = panel_row_offsets(self.k, nl)
        self.bias = np.zeros(-(-self.n // nl) * nl, np.float32)
        self._split: dict = {}  # threads -> (runs, scratch floats for packed panels, for tails)

    def split(self, threads: int) -> tuple[int, int, int]:
        """(parallel runs, packed-panel scratch, tail scratch) at ``threads``: whole products per run
        when there are at least as many as threads, else each product's row blocks shared."""
        got = self._split.get(threads)
        if got is None:
            packed = self.bias.size * self.k
            if self.p < self.mr:
                runs = parallel_chunks(self.items * -(-self.n // ROW_BLOCK), threads)
                got = (runs, 0, 0)
            elif self.items >= threads:
                runs = min(self.items, 4 * threads) if threads > 1 else 1
                got = (runs, runs * packed, runs * self.mr * self.k)
            else:  # row blocks shared: a few per thread, or the products one per run if no more
                runs = max(self.items, parallel_chunks(-(-self.p // self.mr), threads))
                got = (runs, packed if runs > self.items else runs * packed, runs * self.mr * self.k)
            got = remember(self._split, threads, got)
        return got

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        y = new_output(self.out_shape)
        threads = kernel_threads()
        runs, packed, tails = self.split(threads)
        af, bf, yf = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1), y.reshape(-1)
        if self.p < self.mr:
            kernel = _few_rows.parallel if threads > 1 else _few_rows.serial
            kernel(af, bf, yf, self.items, self.p, self.k, self.n, runs)
        else:
            kernel = _products.parallel if threads > 1 else _products.serial
            kernel(af, bf, yf, self.items, self.p, self.k, self.n, self.koff, self.bias, self.mr, self.nv, runs,
                   new_scratch(packed), new_scratch(tails))
        return y


def product_plan(a_shape: tuple, b_shape: tuple) -> _Plan | None:
    """The plan for these shapes, or None where the reference op runs (its broadcasting, its errors)."""
    if len(a_shape) < 2 or len(b_shape) < 2 or a_shape[-1] != b_shape[-2] or 0 in a_shape or 0 in b_shape:
        return None
    if len(b_shape) > 2 and a_shape[:-2] != b_shape[:-2]:
        return None
    plan = _Plan(a_shape, b_shape)
    return None if plan.p >= plan.mr and plan.bias.size * plan.k * 4 > MAX_PACKED_BYTES else plan


def plans_by_shape(plan_of: Callable[[tuple, tuple], Any], reference: Callable[[Any, Any], Any]):
    """A registry ``bind`` for a product of two float32 activations: per operand shapes (the same
    ones run after run) the plan ``plan_of(a_shape, b_shape)`` makes once, called on the operands;
    other dtypes, and shapes it has no plan for (None), go to ``reference``."""

    def binder(fn):
        def bind():
            plans: dict = {}

            def run(a, b):
                if a.dtype != np.float32 or b.dtype != np.float32:
                    return reference(a, b)
                key = (a.shape, b.shape)
                plan = plans.get(key, False)
                if plan is False:
                    plan = remember(plans, key, plan_of(a.shape, b.shape))
                return reference(a, b) if plan is None else plan(a, b)

            return run

        return bind

    return binder


_binder = plans_by_shape(product_plan, reference_matmul)


@register("MatMul", since=1, kind=REPLAYABLE, applies=float32_input, bind=_binder)
def activation_matmul(a, b):
    return _binder(activation_matmul)()(a, b)
