"""The per-node memos of bound kernels (plans, windows, output dims keyed by input shapes).

Why one helper: a bound kernel derives its plan once per distinct input shape, but a model fed
ever-changing shapes would grow that memo without end; every memo is emptied once it holds more
than :data:`MEMO_LIMIT` entries (with the shape values, ~3 MB more for a small KV-cache decoder
at 240 lengths).
Why 256: a decoder with a key/value cache cycles through every cache length, and a cycle longer
than the memo empties it before any length comes back (see ``shape_values.KEPT_SHAPES``).
"""
from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

MEMO_LIMIT = 256


def remember(memo: dict, key: object, value: T) -> T:
    """Store ``value`` under ``key`` (after emptying a full ``memo``) and return it."""
    if len(memo) > MEMO_LIMIT:  # shapes vary run to run: keep the memo small
        memo.clear()
    memo[key] = value
    return value
