"""Validation of client updates before they reach aggregation.

An update is rejected (UpdateRejected, logged by the caller, the reply dropped) when its payload
is truncated or corrupt, its shapes differ from the global model's, it holds NaN/Inf, or its L2
norm exceeds a bound. The checks run on the *decoded* delta, so every codec is covered; a rejected
update never touches the global model. Byzantine updates that pass these checks (bounded noise)
are the robust strategies' job (Krum, FedMedian, FedTrimmedAvg, Bulyan).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from compress import PayloadError, decode_payload

from .errors import UpdateRejected


def update_norm(delta: Sequence[np.ndarray]) -> float:
    """Global L2 norm over all arrays (float64 accumulation)."""
    return float(np.sqrt(sum(float(np.square(d, dtype=np.float64).sum()) for d in delta)))


def validate_delta(delta: Sequence[np.ndarray], shapes: Sequence[tuple[int, ...]],
                   max_norm: float = 0.0, node_id: int | None = None) -> None:
    """Raise UpdateRejected unless `delta` matches `shapes`, is finite and (if max_norm > 0) bounded."""
    if len(delta) != len(shapes):
        raise UpdateRejected(f"update has {len(delta)} arrays, the model has {len(shapes)}", node_id)
    for i, (d, s) in enumerate(zip(delta, shapes)):
        if tuple(d.shape) != tuple(s):
            raise UpdateRejected(f"array {i} has shape {tuple(d.shape)}, expected {tuple(s)}", node_id)
        if not np.isfinite(d).all():
            raise UpdateRejected(f"array {i} holds NaN or Inf", node_id)
    if max_norm > 0:
        n = update_norm(delta)
        if not n <= max_norm:
            raise UpdateRejected(f"update norm {n:.4g} exceeds the bound {max_norm:.4g}", node_id)


def decode_update(payload: object, shapes: Sequence[tuple[int, ...]], max_norm: float = 0.0,
                  node_id: int | None = None) -> list[np.ndarray]:
    """Decode a codec payload into a validated float32 delta, or raise UpdateRejected."""
    if not isinstance(payload, (bytes, bytearray)):
        raise UpdateRejected(f"payload is {type(payload).__name__}, not bytes", node_id)
    try:
        delta = decode_payload(bytes(payload), expected_shapes=[tuple(s) for s in shapes])
    except PayloadError as e:
        raise UpdateRejected(f"undecodable payload: {e}", node_id) from None
    delta = [np.asarray(d, dtype=np.float32) for d in delta]
    validate_delta(delta, shapes, max_norm, node_id)
    return delta
