"""``edgelearn::MatMulTransB(A, B)``: ``A @ B^T``, B's last two axes swapped, so that attention's
``Q @ K^T`` reads K where it is.

Why: torch.onnx writes ``q @ k.transpose(-2, -1)`` as a Transpose, then a MatMul, and the Transpose
copies K: for a KV-cache decoder the whole key cache at every step (at 1000 cached tokens of a
6-layer, 512-wide one 1.6-1.9 ms of a 7.9 ms replayed step, where onnxruntime fuses the pair into
its FusedMatMul). :mod:`inference.passes.transpose_matmul` makes the pair this op.

A decoder's few query rows take the dot product of each with every row of B (a head's width of
contiguous floats, summed in vector lanes); more rows (an encoder's whole sequence) transpose B
into the workspace and run :mod:`inference.kernels.activation_matmul`'s product. The reference is
numpy's matmul on B's transposed view (BLAS reads it so): what sessions that do not replay run.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from inference.ir import Node, TensorType
from inference.kernels._applies import float32_input
from inference.kernels._jit import kernel_threads, parallel_chunks, threaded_kernel
from inference.kernels.activation_matmul import REPLAYABLE, plans_by_shape, product_plan
from inference.kernels.arena_slot import new_output, new_scratch
from inference.kernels.fused import DOMAIN
from inference.kernels.rows_gemm import tile_shape
from inference.kernels.transpose import swap_last_two
from inference.ops.matmul import matmul as reference_matmul
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema

OP = "MatMulTransB"


def _shape(node: Node, types: list) -> list:
    """``A (..., P, K) @ B^T`` with B (..., N, K): (..., P, N), batch axes broadcast as MatMul's."""
    a, b = types[0], types[1] if len(types) > 1 else None
    if not isinstance(a, TensorType) or not isinstance(b, TensorType) or a.shape is None or b.shape is None \
            or len(a.shape) < 2 or len(b.shape) < 2:
        return [None]
    batch_a, batch_b = a.shape[:-2], b.shape[:-2]
    rank = max(len(batch_a), len(batch_b))
    batch_a, batch_b = (1,) * (rank - len(batch_a)) + batch_a, (1,) * (rank - len(batch_b)) + batch_b
    batch = tuple(x if y == 1 or x == y else y if x == 1 else None for x, y in zip(batch_a, batch_b))
    return [TensorType(a.elem_type, batch + (a.shape[-2], b.shape[-2]))]


register_schema(OpSchema(OP, DOMAIN, 1, (FormalParam("A"), FormalParam("B")), (FormalParam("Y"),), {},
                         shape_rule=_shape))


@register(OP, since=1, domain=DOMAIN)
def matmul_transb_reference(a, b):
    if np.ndim(b) < 2:
        from inference.errors import KernelError

        raise KernelError(f"{OP}: B must have at least 2 dims, got shape {np.shape(b)}")
    return reference_matmul(a, np.swapaxes(b, -1, -2))


@threaded_kernel(fastmath={"reassoc", "contract"})
def _row_dots(a, b, y, items, p, k, n, nchunks):
    """``y[i, r, j] = a[i, r] . b[i, j]`` for ``a`` (items, p, k) and ``b`` (items, n, k), all flat,
    in ``nchunks`` runs over (product, row of b): each row of b read once, against every row of a
    (reassociated: the sum of a row's k products in vector lanes)."""
    units = items * n
    for ch in numba.prange(nchunks):
        for u in range(ch * units // nchunks, (ch + 1) * units // nchunks):
            i, j = u // n, u % n
            row = b[(i * n + j) * k:(i * n + j + 1) * k]
            for r in range(p):
                q = a[(i * p + r) * k:(i * p + r + 1) * k]
                s = np.float32(0)
                for c in range(k):
                    s += q[c] * row[c]
                y[(i * p + r) * n + j] = s


class _Plan:
    """A product of these operand shapes: the dot products of a few rows, or B transposed into the
    workspace for :func:`~inference.kernels.activation_matmul.product_plan`'s product."""

    __slots__ = ("items", "p", "k", "n", "out_shape", "product", "bt_shape")

    def __init__(self, a_shape: tuple, b_shape: tuple, product):
        self.k, self.n = a_shape[-1], b_shape[-2]
        self.items = 1 if len(b_shape) == 2 else math.prod(b_shape[:-2])
        self.p = math.prod(a_shape[:-1]) // self.items
        self.out_shape = a_shape[:-1] + (self.n,)
        self.bt_shape = tuple(b_shape[:-2]) + (self.k, self.n)  # B transposed, as the product was planned
        self.product = product  # None: the few rows' dot products

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        threads = kernel_threads()
        af, bf = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b)
        if self.product is None:
            y = new_output(self.out_shape)
            runs = parallel_chunks(self.items * self.n, threads)
            kernel = _row_dots.parallel if threads > 1 else _row_dots.serial
            kernel(af, bf.reshape(-1), y.reshape(-1), self.items, self.p, self.k, self.n, runs)
            return y
        bt = new_scratch(self.bt_shape)
        swap = swap_last_two.parallel if threads > 1 else swap_last_two.serial
        swap(bf.reshape(self.items, self.n, self.k), bt.reshape(self.items, self.k, self.n))
        return self.product(a, bt)


def _plan(a_shape: tuple, b_shape: tuple) -> _Plan | None:
    """The plan for these shapes, or None where the reference op runs (broadcast batches, 1-D
    operands, empty products, its errors)."""
    if len(a_shape) < 2 or len(b_shape) < 2 or a_shape[-1] != b_shape[-1] or 0 in a_shape or 0 in b_shape:
        return None
    if len(b_shape) > 2 and a_shape[:-2] != b_shape[:-2]:
        return None
    rows = math.prod(a_shape[:-1]) if len(b_shape) == 2 else a_shape[-2]
    if rows < tile_shape(b_shape[-2])[0]:
        return _Plan(a_shape, b_shape, None)
    bt = b_shape[:-2] + (b_shape[-1], b_shape[-2])
    product = product_plan(a_shape, bt)
    return None if product is None else _Plan(a_shape, b_shape, product)


_binder = plans_by_shape(_plan, matmul_transb_reference)


@register(OP, since=1, domain=DOMAIN, kind=REPLAYABLE, applies=float32_input, bind=_binder)
def matmul_transb(a, b):
    return _binder(matmul_transb)()(a, b)
