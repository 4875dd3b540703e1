"""Compile a kernel twice, serial and multi-threaded, and call the one the thread policy wants.

Why two twins, and serial by default: numpy's GEMMs run on OpenBLAS's pthread pool and numba's
``prange`` on an OpenMP pool. Both spin-wait after their work, so alternating them (GEMM, then
epilogue, then GEMM ...) makes each pool's worker fight the other's spinning worker for the second
core. Measured on MobileNetV2 at 2 threads (batch 1, 2 cores): both pools 1.1-3.4 s per run; serial
numba + threaded BLAS 50-535 ms (the spread is other jobs' load); threaded numba with an
actively spinning OpenMP pool + single-threaded BLAS 38 ms; one thread 31 ms. So numba kernels stay
serial unless :func:`use_parallel_kernels` says the caller has made numba the only threaded pool
(BLAS capped at 1). Both twins are ``cache=True`` under distinct names, so their on-disk cache
entries never collide, and a twin is only compiled (or loaded) when first called.

Both twins are ``nogil``: the batch-split runner (``inference.split_runner``) runs one chunk of a
batch per Python thread, which only overlaps if the kernels drop the GIL. Inside such a thread
:func:`serial_kernels` forces the serial twin whatever the policy, so chunks never nest pools.
The twins' names carry ``_nogil`` because numba's cache key ignores the flag: under the old names
a cache written before the flag loads the GIL-holding wrapper (measured: a 1.6 s kernel call
stalled another Python thread for 1.6 s; with a fresh cache entry, for at most 56 ms).

A call whose arrays are all small runs the serial twin whatever the policy
(:data:`PARALLEL_FROM`): waking the pool costs more than it saves. A KV-cache decoder's token is
rows of 512 values, and on two threads its replayed step spent 0.83 ms in such kernels' parallel
twins against 0.33 serial (an Add of 512 floats 0.5 us serial, 1.9 parallel alone, ~4.4 in the
model). A replay records the twin each call ran, so it keeps the choice.

Every kernel of ours compiles with ``error_model="numpy"`` (these twins and each ``numba.njit``):
a float division by zero gives inf or NaN as numpy's does, where numba's default checks each
divisor to raise ZeroDivisionError. That check, one branch per element, kept loops with a division
scalar: Gelu's vectorised erf (``vmath.erf_row``) ran 4 ns per element with it, 0.5 without.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import types
from typing import Any, Callable, Iterator

import numba
import numpy as np
from numba.np.ufunc import parallel as _numba_parallel

_POLICY = {"parallel": False}


class _Local(threading.local):
    """``serial``: this thread runs the serial twins only. A class default, not ``getattr`` with
    one: a bare ``threading.local`` raised and caught an AttributeError (~0.28 us) on every
    kernel's question in a thread that never set it."""

    serial = False


_LOCAL = _Local()


def use_parallel_kernels(enabled: bool) -> None:
    """Let numba kernels run their ``prange`` twin when numba has more than one thread.

    Only worth it when BLAS is single-threaded (one spinning pool): see the module docstring.
    """
    _POLICY["parallel"] = bool(enabled)


@contextlib.contextmanager
def serial_kernels() -> Iterator[None]:
    """Within the block, this thread's kernels run their serial twin (a batch-split chunk)."""
    before = _LOCAL.serial
    _LOCAL.serial = True
    try:
        yield
    finally:
        _LOCAL.serial = before


def kernel_threads() -> int:
    """How many threads a threaded kernel called now runs on: numba's count when its parallel twin
    would run, else 1 (what kernels size their parallel chunks by)."""
    if _POLICY["parallel"] and not _LOCAL.serial:
        return numba_threads()
    return 1


def numba_threads() -> int:
    """``numba.get_num_threads()`` (this thread's count), without the launch check it makes on every
    call once numba's pool is up. Why: that check takes two locks, ~1.8 us of the ~2 us call,
    and every threaded kernel asks twice per call (its chunks, its twin): ~70 kernel calls per
    MobileNetV2 run at 2 threads. Falls back to the public call before the pool is up (or if a
    numba release renames what this reads)."""
    if getattr(_numba_parallel, "_is_initialized", False):
        get = getattr(_numba_parallel, "_get_num_threads", None)
        n = get() if get is not None else 0
        if n > 0:
            return n
    return numba.get_num_threads()


def parallel_chunks(tiles: int, threads: int | None = None) -> int:
    """The parallel runs to split ``tiles`` of work into: a few per thread (balance; numba's static
    schedule hands each thread an equal share), few in all (each run allocates its scratch).
    ``threads``: those the kernel runs on (default :func:`kernel_threads`, a threaded kernel's)."""
    return max(1, min(tiles, 4 * (threads or kernel_threads())))


def _clone(fn: Callable, suffix: str) -> Callable:
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + suffix
    twin.__doc__ = fn.__doc__
    return twin


#: the elements of a kernel's largest array from which its parallel twin runs (break-even alone, two
#: threads: an Add ~32K elements, a LayerNormalization's rows ~8K; in a model the pool's wake-up
#: costs more than alone)
PARALLEL_FROM = 16384


def threaded_kernel(fastmath: bool | set = False) -> Callable[[Callable], Callable[..., Any]]:
    """Decorator: ``fn`` (using ``numba.prange``) -> a dispatcher choosing its serial or parallel twin."""

    def deco(fn: Callable) -> Callable[..., Any]:
        serial = numba.njit(cache=True, error_model="numpy", nogil=True, fastmath=fastmath)(_clone(fn, "_serial_nogil"))
        parallel = numba.njit(cache=True, error_model="numpy", nogil=True, parallel=True, fastmath=fastmath)(
            _clone(fn, "_parallel_nogil"))

        @functools.wraps(fn)
        def call(*args: Any) -> Any:
            if kernel_threads() > 1:
                for a in args:  # a loop, not any(): ~0.1 us a call
                    if type(a) is np.ndarray and a.size >= PARALLEL_FROM:
                        return parallel(*args)
            return serial(*args)

        call.serial, call.parallel = serial, parallel  # type: ignore[attr-defined]
        return call

    return deco
