"""Run a large batch as consecutive chunks of rows, so that each chunk's activations stay in cache.

Why: a layer reads its input and writes its output once per run, so at batch 32 MobileNetV2
(~5.7 MiB of live activations per image at its peak, ~180 MiB for the batch) streams every layer
through memory, where at a few images per chunk the next layer finds its input still in cache.
Measured at one thread, batch 32, against onnxruntime in the same process, four runs of
``benchmarks/batch_chunks.py`` on a loaded 2-core VM: MobileNetV2 whole 1.38-1.60x, in chunks of
3 rows 1.08-1.35x, 4 rows 1.14-1.18x, 1 row 1.31-1.76x (batch-1 runs pay per-call overhead);
ResNet-18 whole 1.14-1.27x, chunks of 2-6 rows 0.92-1.28x; the transformer about the same either
way (0.94-1.15x). At two threads (each thread chunking its half) MobileNetV2 1.63x -> 1.31x.
Too small a chunk pays per-run overhead and reads every weight once more per chunk, too large a
one leaves the cache: chunks hold :data:`CHUNK_BYTES` of planned activations (MobileNetV2 3 rows,
ResNet-18 5, the transformer 26).

Valid only for graphs whose output rows each depend on their own input row
(``inference.batch_split``); the Predictor checks that before it chunks.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

#: planned activation bytes (the memory plan's peak, ``inference.memory_plan``) one chunk may hold
CHUNK_BYTES = 20 * 2**20


def auto_chunk_rows(peak_bytes_per_row: int) -> int:
    """Rows per chunk for a model whose activations peak at ``peak_bytes_per_row`` per row."""
    return max(1, CHUNK_BYTES // max(1, peak_bytes_per_row))


def batch_rows(feeds: Mapping[str, Any]) -> int:
    """The batch size of batch-major ``feeds`` (their first array's leading dim; 0 if none)."""
    for value in feeds.values():
        if isinstance(value, np.ndarray) and value.ndim:
            return value.shape[0]
    return 0


def run_in_chunks(run: Callable[[dict[str, Any]], list[Any]], feeds: Mapping[str, Any], rows_per_chunk: int
                  ) -> list[Any]:
    """``run(feeds)``, as consecutive chunks of ``rows_per_chunk`` rows when the batch is larger,
    the chunks' outputs joined along axis 0 (every feed and output batch-major)."""
    rows = batch_rows(feeds)
    if rows_per_chunk < 1 or rows <= rows_per_chunk:
        return run(dict(feeds))
    bounds = list(range(0, rows, rows_per_chunk)) + [rows]
    parts = [run({k: v[a:b] for k, v in feeds.items()}) for a, b in zip(bounds, bounds[1:])]
    return [np.concatenate(outs, axis=0) for outs in zip(*parts)]
