"""Where a kernel's result goes: the slot a session's activation arena holds for the running step,
else a new array.

A session that runs from an arena (:mod:`inference.arena`) arms, before each step, the region the
memory plan gave that step's output; a kernel that allocates its result with :func:`new_output`
takes it when the sizes agree (the first such allocation of the step takes it; a kernel's scratch
allocated this way is harmless: the region belongs to this step's output until its last reader).
Why: numpy's allocator hands each output memory that went cold since it was last written (on the
MobileNets, per-layer times in the model ran 1.2-1.3x the same calls repeated alone); the
arena's few megabytes are rewritten every run.

A kernel that takes the slot returns it (or a view of it) or an array of its own, never a view of
an input; the session checks everything else. The slot of an elementwise op (``memory_plan.
IN_PLACE_OPS``) may be its dying input's own memory: such a kernel reads each element before it
writes that element, and nothing else. The slot is per thread: concurrent runs of other
sessions in other threads never see it.
"""
from __future__ import annotations

import math
import threading

import numba
import numpy as np


class _State(threading.local):
    """A thread's armed slot and open workspace. Defaults on the class: reading an attribute this
    thread never set from a bare ``threading.local`` costs ~0.28 us (a caught AttributeError); a
    kernel asks twice per call, in every thread that runs without an arena."""

    slot: "np.ndarray | object | None" = None
    workspace: "np.ndarray | None" = None
    cursor = 0
    wanted = 0


_state = _State()
_F32 = np.dtype(np.float32)
#: armed for a step with no region: nothing takes it, and :func:`taken` says False
NOTHING = object()


def arm(slot: np.ndarray | object) -> None:
    """Offer ``slot`` (an arena region shaped as the plan expects the output, or :data:`NOTHING`)
    to the next :func:`new_output` of this thread; the step's scratch starts again from the
    workspace's beginning."""
    _state.slot = slot
    _state.cursor = 0


def open_workspace(block: np.ndarray) -> None:
    """Serve this thread's :func:`new_scratch` from ``block`` (64-byte aligned uint8) until
    :func:`close_workspace`."""
    _state.workspace, _state.cursor, _state.wanted = block, 0, 0


def close_workspace() -> int:
    """Withdraw the workspace; the bytes one step's scratch wanted at most (to size the next)."""
    _state.workspace = None
    return _state.wanted


def taken() -> bool:
    """Whether the armed slot was taken (withdrawing it if not): call once the step returned."""
    slot = _state.slot
    _state.slot = None
    return slot is None


def new_output(shape: tuple[int, ...], dtype: type | np.dtype = np.float32) -> np.ndarray:
    """An uninitialised array for a kernel's result: the armed slot when it holds exactly these
    bytes, else ``np.empty``."""
    slot = _state.slot
    if slot is not None and slot is not NOTHING:
        if slot.shape == shape and slot.dtype == dtype:
            _state.slot = None
            return slot
        if slot.nbytes == math.prod(shape) * np.dtype(dtype).itemsize:
            _state.slot = None
            return slot.reshape(-1).view(dtype).reshape(shape)
    return np.empty(shape, dtype)


def new_scratch(shape: tuple[int, ...] | int, dtype: type | np.dtype = np.float32) -> np.ndarray:
    """An uninitialised array a kernel uses only until it returns: from the open workspace when
    it has room, else ``np.empty``."""
    block = _state.workspace
    if block is not None:
        dtype = _F32 if dtype is np.float32 else np.dtype(dtype)
        nbytes = (math.prod(shape) if isinstance(shape, tuple) else shape) * dtype.itemsize
        start = _state.cursor
        _state.cursor = end = start + (nbytes + 63) // 64 * 64  # counted either way: the step's total
        if end <= block.size:  # one constructor (its base is the block's owner, as a slice's would be):
            return np.ndarray(shape, dtype, block, start)  # a slice, view and reshape took ~1 us, this 0.2
        _state.wanted = max(_state.wanted, end)
    return np.empty(shape, dtype)


#: what :func:`overwritten` returns: none of the operands, the first, the second
APART, OVER_FIRST, OVER_SECOND = range(3)


def overwritten(y: np.ndarray, *operands: np.ndarray) -> int:
    """Which of ``operands`` (1-based: :data:`OVER_FIRST` ...) the flat output ``y`` is, exactly
    (the same bytes), :data:`APART` for none: a kernel passes it on so its loops read and write that
    operand through one view. Why: given two arrays, LLVM vectorises an elementwise loop behind a
    check that they do not overlap, and when they do (an in-place step) it runs the loop's scalar
    copy: a 200K-element Add 49 us in place against 22, a Relu 31 against 20. A partial overlap (no
    plan makes one) stays APART: the scalar copy is then what keeps the result right."""
    for i, a in enumerate(operands):
        if a.nbytes == y.nbytes and np.may_share_memory(y, a) and _same_start(y, a):
            return i + 1
    return APART


@numba.njit(cache=True, nogil=True)
def _same_start(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` begin at the same address. Why compiled: numpy offers the address
    through ``__array_interface__`` or ``ctypes``, each building objects (~0.75 us a call, twice
    per in-place step: 1.5 of a standalone Relu's ~4 us of Python); this call takes ~0.15 us."""
    return a.ctypes.data == b.ctypes.data
