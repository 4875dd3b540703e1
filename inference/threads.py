"""One knob for every thread pool the runtime uses (BLAS through numpy, and numba)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

_limiter = None
_controller: Any = None  # threadpoolctl's view of the loaded BLAS libraries, built once (~30 ms)


def set_num_threads(n: int, numba_pool: bool = False) -> None:
    """Cap BLAS and numba at ``n`` threads so the two never oversubscribe the cores.

    ``numba_pool`` (a graph whose work is mostly numba kernels, see ``inference.thread_policy``):
    numba's kernels run threaded and BLAS on the calling thread; otherwise BLAS runs threaded and
    numba's kernels serial.
    Process-wide, like the pools themselves: the last Predictor built sets them."""
    global _limiter
    from threadpoolctl import threadpool_limits

    import numba

    from inference.kernels._jit import use_parallel_kernels

    threaded_numba = numba_pool and n > 1
    _limiter = threadpool_limits(limits=1 if threaded_numba else n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    use_parallel_kernels(threaded_numba)


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """BLAS at ``n`` threads within the block (process-wide), then back to what it was.

    For callers that bring their own threads, e.g. one batch chunk per core: a threaded BLAS under
    each of them would oversubscribe the cores. Entering and leaving costs ~10 us.
    """
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    with _controller.limit(limits=n, user_api="blas"):
        yield


def pin_to_cores(cores: list[int]) -> None:
    """Run this process (and the pools it starts) on ``cores`` only."""
    import os

    os.sched_setaffinity(0, set(cores))
