"""Run a large batch as contiguous chunks, one per core, on session replicas in Python threads.

Why: at ``num_threads=n`` only BLAS is threaded; the numba kernels (im2col, depthwise, epilogues,
pooling, norms) stay serial on purpose (``inference.kernels._jit``), so at batch 32 they ran on one
core. Splitting the batch gives every kernel a core: each chunk runs on its own ``Session`` (a
session's contexts and kernel memos are per run-loop, not meant to be shared across threads) with
BLAS capped at one thread and serial numba twins, and the kernels release the GIL (``nogil``) so
the threads overlap. Valid only for graphs ``inference.batch_split`` proves per-sample.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Callable, Mapping

import numpy as np

from inference.chunked import batch_rows, run_in_chunks
from inference.ir import Graph
from inference.kernels._jit import serial_kernels
from inference.session import Session
from inference.threads import blas_threads


#: a chunk should produce at least this many activation elements. Measured at 2 threads (2 cores,
#: load 9-10): chunks of 80k-148k elements ran 0.5-0.6x the whole batch's speed (thread wake-ups
#: and GIL handoffs between many small kernels; OpenBLAS does not thread such small GEMMs anyway),
#: chunks of 160k-1.2M ran 2.3-8x faster (MobileNetV2 at 32/64 px, a 2-layer width-64 transformer).
MIN_CHUNK_ELEMENTS = 150_000


def row_elements(graph: Graph) -> int:
    """Activation elements one batch row produces over the whole graph (other symbolic dims as 1)."""
    total = 0
    for node in graph.nodes:
        for name in node.outputs:
            shape = graph.concrete_shape(name, 1) if name else None
            total += math.prod(shape) if shape is not None else 0
    return total


def auto_min_rows(graph: Graph) -> int:
    """Rows per chunk so that a chunk has :data:`MIN_CHUNK_ELEMENTS` of work."""
    return max(1, -(-MIN_CHUNK_ELEMENTS // max(1, row_elements(graph))))


class SplitRunner:
    """Splits feeds along axis 0 into up to ``threads`` chunks of at least ``min_rows`` rows."""

    def __init__(self, make_session: Callable[[], Session], threads: int, min_rows: int, chunk_rows: int = 0):
        self._make_session = make_session
        self.threads, self.min_rows = threads, max(1, min_rows)
        self.chunk_rows = chunk_rows  # each thread runs its part in chunks of this many rows (0: whole)
        self._replicas: list[Session] = []  # built on the first split run: batch-1 users pay nothing
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # one split run at a time: replicas and BLAS limit are shared
        self.split_runs = 0  # how many runs were split (the rest ran whole on the Predictor's session)

    @property
    def sessions(self) -> list[Session]:
        """The replica sessions made so far (one per thread of a split run)."""
        return list(self._replicas)

    def chunks(self, rows: int) -> int:
        """How many chunks a batch of ``rows`` runs as (1: not split)."""
        return max(1, min(self.threads, rows // self.min_rows))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[Any] | None:
        """The outputs of the whole batch, concatenated from the chunks; None when not worth splitting."""
        rows = batch_rows(feeds)
        n = self.chunks(rows)
        if n < 2:
            return None
        bounds = [rows * i // n for i in range(n + 1)]
        parts = [{k: v[a:b] for k, v in feeds.items()} for a, b in zip(bounds, bounds[1:])]
        with self._lock, blas_threads(1):
            self._ensure(n)
            futures = [self._pool.submit(self._run_chunk, i, parts[i]) for i in range(1, n)]
            try:
                first = self._run_chunk(0, parts[0])
            finally:
                wait(futures)  # never leave a replica running when this call returns or raises
            results = [first] + [f.result() for f in futures]
            self.split_runs += 1
        return [np.concatenate(chunk_outs, axis=0) for chunk_outs in zip(*results)]

    def _run_chunk(self, i: int, feeds: dict[str, np.ndarray]) -> list[Any]:
        with serial_kernels():
            return run_in_chunks(self._replicas[i].run, feeds, self.chunk_rows)

    def _ensure(self, n: int) -> None:
        while len(self._replicas) < n:
            self._replicas.append(self._make_session())
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="edgelearn-split")

    def close(self) -> None:
        """Stop the worker threads (idle ones; they also end with the process)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
