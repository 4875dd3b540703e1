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
"""
from __future__ import annotations

import functools
import types
from typing import Any, Callable

import numba

_POLICY = {"parallel": False}


def use_parallel_kernels(enabled: bool) -> None:
    """Let numba kernels run their ``prange`` twin when numba has more than one thread.

    Only worth it when BLAS is single-threaded (one spinning pool): see the module docstring.
    """
    _POLICY["parallel"] = bool(enabled)


def _clone(fn: Callable, suffix: str) -> Callable:
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + suffix
    twin.__doc__ = fn.__doc__
    return twin


def threaded_kernel(fastmath: bool = False) -> Callable[[Callable], Callable[..., Any]]:
    """Decorator: ``fn`` (using ``numba.prange``) -> a dispatcher choosing its serial or parallel twin."""

    def deco(fn: Callable) -> Callable[..., Any]:
        serial = numba.njit(cache=True, fastmath=fastmath)(_clone(fn, "_serial"))
        parallel = numba.njit(cache=True, parallel=True, fastmath=fastmath)(_clone(fn, "_parallel"))

        @functools.wraps(fn)
        def call(*args: Any) -> Any:
            if _POLICY["parallel"] and numba.get_num_threads() > 1:
                return parallel(*args)
            return serial(*args)

        call.serial, call.parallel = serial, parallel  # type: ignore[attr-defined]
        return call

    return deco
