"""One knob for every thread pool the runtime uses (BLAS through numpy, and numba)."""
from __future__ import annotations

_limiter = None


def set_num_threads(n: int) -> None:
    """Cap BLAS and numba at ``n`` threads so the two never oversubscribe the cores."""
    global _limiter
    from threadpoolctl import threadpool_limits

    _limiter = threadpool_limits(limits=n)
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def pin_to_cores(cores: list[int]) -> None:
    """Run this process (and the pools it starts) on ``cores`` only."""
    import os

    os.sched_setaffinity(0, set(cores))
