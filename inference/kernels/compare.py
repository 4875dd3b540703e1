"""Fast comparisons of float32 or int64 tensors (Equal, Less, Greater, LessOrEqual, GreaterOrEqual)
and logic of bool ones (Not, And, Or, Xor), with numpy's broadcasting, in numba; bool outputs.

Why: the reference runs these as numpy ufuncs, which a kernel replay (:mod:`inference.
kernel_replay`) cannot repeat: the masks of a PyTorch export (``x > threshold``, ``Equal`` of two
ids, ``Not``/``And`` of masks) keep the whole model step by step. Operands of one shape go flat,
in chunks two threads split; one of one element (a threshold) is read from its array (not as a
Python number, so that a replay reads its current value), the operands swapped (and the order
mirrored: ``s < x`` is ``x > s``) when it comes first. Any other broadcast runs row by row of the
output's last axis, as :mod:`~inference.kernels.broadcast` walks its views, but each output row
reads a contiguous row of each operand (or one element broadcast along it), the rows' numbers
from numpy's broadcast of the operands' row numbers (kept per shapes): a contiguous row
vectorises where a zero-stride view's did not (256 x 256 against a 256-row: 29 us of kernel as
views, 13.7 a call so, numpy's ufunc 11).

Step by step these are no faster than numpy's ufuncs (``benchmarks/select_ops.py``, one thread, a
shared machine: ``x < s`` on (1, 128, 200) 9.8 us a step, the reference 8.9, onnxruntime 8.7);
what they buy is the replay, which removes the step's Python in a model. One loop per op, each a
plain IEEE compare: NaN compares unequal and unordered, -0 equals +0, as numpy's. Other dtypes,
empty outputs and shapes that do not broadcast (the reference's error) go to the reference
(:mod:`inference.ops.binary`); so do opsets before 7, whose ``broadcast``/``axis`` attributes only
the reference reads.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np

from inference.ir import Graph, Node, TensorType
from inference.kernels._jit import threaded_kernel
from inference.kernels.arena_slot import new_output
from inference.ops.registry import lookup, register

_CHUNK = 1 << 14  # elements per parallel work item
EQUAL, LESS, GREATER, LESS_EQUAL, GREATER_EQUAL, AND, OR, XOR = range(8)
#: the op with its operands swapped: ``a op b`` is ``b MIRROR[op] a``
MIRROR = {EQUAL: EQUAL, LESS: GREATER, GREATER: LESS, LESS_EQUAL: GREATER_EQUAL, GREATER_EQUAL: LESS_EQUAL,
          AND: AND, OR: OR, XOR: XOR}
_BOOL = 9  # ONNX's TensorProto.BOOL
_ELEM_TYPES = {np.dtype(np.float32): 1, np.dtype(np.int64): 7, np.dtype(np.bool_): _BOOL}  # ONNX's, per dtype


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _block(aa, bb, yy, op):
    """``yy = aa op bb`` for arrays of one length (any strides), one loop per op so each vectorises.
    The logic ops are written so that they also compile for floats (``and``, ``or``, ``!=``; numba
    types every branch), though only bools reach them."""
    n = yy.size
    if op == EQUAL:
        for k in range(n):
            yy[k] = aa[k] == bb[k]
    elif op == LESS:
        for k in range(n):
            yy[k] = aa[k] < bb[k]
    elif op == GREATER:
        for k in range(n):
            yy[k] = aa[k] > bb[k]
    elif op == LESS_EQUAL:
        for k in range(n):
            yy[k] = aa[k] <= bb[k]
    elif op == GREATER_EQUAL:
        for k in range(n):
            yy[k] = aa[k] >= bb[k]
    elif op == AND:
        for k in range(n):
            yy[k] = aa[k] and bb[k]
    elif op == OR:
        for k in range(n):
            yy[k] = aa[k] or bb[k]
    else:  # XOR, of bools
        for k in range(n):
            yy[k] = aa[k] != bb[k]


@numba.njit(cache=True, error_model="numpy", nogil=True, inline="always")
def _by_scalar(aa, s, yy, op):
    """``yy = aa op s`` for a scalar ``s``, one loop per op."""
    n = yy.size
    if op == EQUAL:
        for k in range(n):
            yy[k] = aa[k] == s
    elif op == LESS:
        for k in range(n):
            yy[k] = aa[k] < s
    elif op == GREATER:
        for k in range(n):
            yy[k] = aa[k] > s
    elif op == LESS_EQUAL:
        for k in range(n):
            yy[k] = aa[k] <= s
    elif op == GREATER_EQUAL:
        for k in range(n):
            yy[k] = aa[k] >= s
    elif op == AND:
        for k in range(n):
            yy[k] = aa[k] and s
    elif op == OR:
        for k in range(n):
            yy[k] = aa[k] or s
    else:  # XOR, of bools
        for k in range(n):
            yy[k] = aa[k] != s


@threaded_kernel()
def compare_flat(a, b, y, op):
    """``y = a op b`` over flat arrays: ``b`` of ``a``'s length, or of one element (a scalar), in
    chunks of :data:`_CHUNK` elements the threads share."""
    n = y.size
    for c in numba.prange((n + _CHUNK - 1) // _CHUNK):
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        if b.size == 1:
            _by_scalar(a[lo:hi], b[0], y[lo:hi], op)
        else:
            _block(a[lo:hi], b[lo:hi], y[lo:hi], op)


@threaded_kernel()
def compare_rows(a, a_rows, b, b_rows, y, op, mirrored):
    """``y[r] = a[a_rows[r]] op b[b_rows[r]]`` for the rows of ``y`` (rows, n), a row per parallel
    step: an operand's rows (``a`` (ra, n or 1), ``b`` (rb, n or 1)) of one element are a value
    broadcast along the row (``mirrored``: ``op`` with its operands swapped)."""
    for r in numba.prange(y.shape[0]):
        aa, bb, yy = a[a_rows[r]], b[b_rows[r]], y[r]
        if aa.size == bb.size:
            _block(aa, bb, yy, op)
        elif bb.size == 1:
            _by_scalar(aa, bb[0], yy, op)
        else:
            _by_scalar(bb, aa[0], yy, mirrored)


@threaded_kernel()
def not_flat(x, y):
    """``y = not x`` over flat bool arrays, in chunks the threads share."""
    n = y.size
    for c in numba.prange((n + _CHUNK - 1) // _CHUNK):
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        xx, yy = x[lo:hi], y[lo:hi]  # views indexed from 0: the loop vectorises
        for k in range(yy.size):
            yy[k] = not xx[k]


def _run(a: np.ndarray, b: np.ndarray, op: int) -> np.ndarray | None:
    """``a op b`` into a bool output of the broadcast shape; None when the shapes do not broadcast
    or the output is empty (the reference then)."""
    if a.shape == b.shape or (b.size == 1 and b.ndim <= a.ndim):
        x, s, code = a, b, op
    elif a.size == 1 and a.ndim <= b.ndim:
        x, s, code = b, a, MIRROR[op]
    else:
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            return None
        if not math.prod(shape):
            return None
        y = new_output(shape, np.bool_)
        lead, n = shape[:-1], shape[-1]
        (ra, a2), (rb, b2) = _rows_of(lead, a), _rows_of(lead, b)
        compare_rows(a2, ra, b2, rb, y.reshape(-1, n), op, MIRROR[op])
        return y
    if not x.size:
        return None
    y = new_output(x.shape, np.bool_)
    compare_flat(np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(s).reshape(-1), y.reshape(-1), code)
    return y


def _rows_of(lead: tuple[int, ...], a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` as contiguous rows (of the output's row length, or of one element to broadcast), and
    the row of it that each output row (of the ``lead`` axes, row-major) reads."""
    full = (1,) * (len(lead) + 1 - a.ndim) + a.shape
    return _row_map(lead, full[:-1]), np.ascontiguousarray(a).reshape(-1, full[-1])


@functools.lru_cache(maxsize=256)
def _row_map(lead: tuple[int, ...], own: tuple[int, ...]) -> np.ndarray:
    """For each index of ``lead`` (row-major), the row-major index of the operand's leading axes
    ``own`` (each 1 or ``lead``'s) that broadcasting reads there; kept per shapes (a read-only
    array that a replay's record holds)."""
    rows = np.broadcast_to(np.arange(math.prod(own), dtype=np.int64).reshape(own), lead).reshape(-1)
    rows = np.ascontiguousarray(rows)
    rows.flags.writeable = False
    return rows


def _input_of(elem_types: set[int]):
    """An ``applies`` test: the node's first input is of one of ONNX's ``elem_types``, or its type is
    only known at run time (checked again there)."""

    def applies(node: Node, graph: Graph) -> bool:
        t = graph.type_of(node.inputs[0])
        return not isinstance(t, TensorType) or t.elem_type in elem_types

    return applies


_bool_input = _input_of({_BOOL})


def _binary(op_type: str, since: int, code: int, dtypes: tuple[type, ...]) -> None:
    reference = lookup(op_type, "", since).fn
    kinds = tuple(np.dtype(d) for d in dtypes)

    def kernel(a, b):
        if not (type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype and a.dtype in kinds):
            return reference(a, b)
        y = _run(a, b, code)
        return reference(a, b) if y is None else y

    kernel.__name__ = kernel.__qualname__ = f"fast_{op_type.lower()}"
    register(op_type, since=since, kind="fast", applies=_input_of({_ELEM_TYPES[d] for d in kinds}))(kernel)


#: comparisons take int64 too: a mask a model makes from its token ids (``ids != pad``, ``ids == eos``)
for _op, _since, _code in (("Equal", 7, EQUAL), ("Less", 7, LESS), ("Greater", 7, GREATER),
                           ("LessOrEqual", 12, LESS_EQUAL), ("GreaterOrEqual", 12, GREATER_EQUAL)):
    _binary(_op, _since, _code, (np.float32, np.int64))
for _op, _code in (("And", AND), ("Or", OR), ("Xor", XOR)):
    _binary(_op, 7, _code, (np.bool_,))


@register("Not", since=1, kind="fast", applies=_bool_input)
def not_(x):
    if type(x) is not np.ndarray or x.dtype != np.bool_ or not x.size:
        return lookup("Not", "", 1).fn(x)
    y = new_output(x.shape, np.bool_)
    not_flat(np.ascontiguousarray(x).reshape(-1), y.reshape(-1))
    return y
