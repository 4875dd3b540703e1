"""Serving helpers: a thread-safe pool of Predictor replicas and a dynamic batcher.

The batcher merges concurrent requests along the batch axis until ``max_batch`` rows are waiting
or the oldest request has waited ``max_latency_ms``, runs them as one batch, and hands each caller
its own rows back. Requests whose non-batch dims differ are never merged with each other.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from inference.config import Config
from inference.errors import ConfigError, InputError
from inference.predictor import Predictor


class PredictorPool:
    """``size`` Predictors; each run borrows one, so up to ``size`` run at once. They are replicas
    of one load (:meth:`Predictor.replica`): own sessions and tensor handles, one copy of the
    weights and their packings."""

    def __init__(self, config: Config, size: int = 2):
        if size < 1:
            raise ConfigError(f"pool size must be at least 1, got {size}")
        self._free: queue.Queue[Predictor] = queue.Queue()
        first = Predictor(config)
        self._free.put(first)
        for _ in range(size - 1):
            self._free.put(first.replica())
        self.size = size

    @contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[Predictor]:
        try:
            predictor = self._free.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no free predictor within {timeout} s (pool of {self.size})") from None
        try:
            yield predictor
        finally:
            self._free.put(predictor)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        with self.acquire() as predictor:
            return predictor.run(feeds)


@dataclass
class _Request:
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    requests: int = 0
    batches: int = 0
    rows: int = 0


class DynamicBatcher:
    """Merge concurrent requests into batches for a Predictor or a PredictorPool."""

    def __init__(self, runner: Predictor | PredictorPool, max_batch: int = 32, max_latency_ms: float = 5.0):
        if max_batch < 1 or max_latency_ms < 0:
            raise ConfigError(f"max_batch must be >= 1 and max_latency_ms >= 0, got {max_batch}, {max_latency_ms}")
        self._runner = runner
        self._lock = threading.Lock() if isinstance(runner, Predictor) else None
        self.max_batch = max_batch
        self.max_latency = max_latency_ms / 1000.0
        self.stats = BatcherStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._pending: list[_Request] = []
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="edgelearn-batcher", daemon=True)
        self._worker.start()

    # -- public -----------------------------------------------------------------------------
    def submit(self, feeds: Mapping[str, Any]) -> Future:
        """Queue one request (arrays with a leading batch axis); its Future yields its outputs."""
        if self._closed:
            raise InputError("the batcher is closed")
        arrays = {k: np.asarray(v) for k, v in feeds.items()}
        rows = {a.shape[0] if a.ndim else None for a in arrays.values()}
        if len(rows) != 1 or None in rows:
            raise InputError(f"every input of a batched request needs the same leading batch dim, got "
                             f"{ {k: list(a.shape) for k, a in arrays.items()} }")
        key = tuple(sorted((k, a.dtype.str, a.shape[1:]) for k, a in arrays.items()))
        req = _Request(arrays, rows.pop(), key)
        self._queue.put(req)
        return req.future

    def run(self, feeds: Mapping[str, Any], timeout: float | None = None) -> dict[str, np.ndarray]:
        return self.submit(feeds).result(timeout)

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        self._closed = True
        self._queue.put(None)
        self._worker.join()

    def __enter__(self) -> "DynamicBatcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- worker -----------------------------------------------------------------------------
    def _loop(self) -> None:
        stop = False
        while not stop or self._pending:
            if not self._pending:
                req = self._queue.get()
                if req is None:
                    stop = True
                    continue
                self._pending.append(req)
            deadline = self._pending[0].arrived + self.max_latency
            while not stop and self._rows_ready() < self.max_batch:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                try:
                    req = self._queue.get(timeout=wait)
                except queue.Empty:
                    break
                if req is None:
                    stop = True
                else:
                    self._pending.append(req)
            self._dispatch(self._take_batch())

    def _rows_ready(self) -> int:
        key = self._pending[0].key
        return sum(r.rows for r in self._pending if r.key == key)

    def _take_batch(self) -> list[_Request]:
        key, batch, rows, rest = self._pending[0].key, [], 0, []
        for r in self._pending:
            if r.key == key and (not batch or rows + r.rows <= self.max_batch):
                batch.append(r)
                rows += r.rows
            else:
                rest.append(r)
        self._pending = rest
        return batch

    def _dispatch(self, batch: list[_Request]) -> None:
        try:
            feeds = {k: np.concatenate([r.feeds[k] for r in batch]) for k in batch[0].feeds}
            outputs = self._run(feeds)
            total = sum(r.rows for r in batch)
            bad = [k for k, v in outputs.items() if np.ndim(v) == 0 or np.shape(v)[0] != total]
            if bad:
                raise InputError(f"outputs {bad} have no leading batch dim of {total}: this model cannot be "
                                 "batched dynamically")
            start = 0
            for r in batch:
                r.future.set_result({k: v[start:start + r.rows] for k, v in outputs.items()})
                start += r.rows
        except Exception as e:  # noqa: BLE001 - every caller of the batch learns why it failed
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(e)
        self.stats.requests += len(batch)
        self.stats.batches += 1
        self.stats.rows += sum(r.rows for r in batch)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        if self._lock is None:
            return self._runner.run(feeds)
        with self._lock:
            return self._runner.run(feeds)
