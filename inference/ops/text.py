"""TfIdfVectorizer (opset 9): counts (optionally IDF-weighted) of pooled n-grams with skips, per row.

For every gram length n and skip s, all n-grams of each row are gathered at once with a strided
index array and compared against the pool's n-grams of that length.
"""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register

_MODES = ("TF", "IDF", "TFIDF")


def _pool_grams(pool: np.ndarray, ngram_counts: list[int]) -> dict[int, tuple[int, np.ndarray]]:
    """n -> (index of its first n-gram among all pooled n-grams, array (count, n) of its n-grams)."""
    bounds = list(ngram_counts) + [len(pool)]
    grams, first = {}, 0
    for n in range(1, len(ngram_counts) + 1):
        chunk = pool[bounds[n - 1]:bounds[n]]
        if len(chunk) % n:
            raise KernelError(f"TfIdfVectorizer: pool section of {n}-grams has {len(chunk)} items, "
                              f"not a multiple of {n}")
        grams[n] = (first, chunk.reshape(-1, n))
        first += len(chunk) // n
    return grams


def _windows(x: np.ndarray, n: int, skip: int) -> np.ndarray:
    """(rows, starts, n): every n-gram of each row whose items are ``skip + 1`` apart."""
    span = (n - 1) * (skip + 1)
    starts = np.arange(max(x.shape[1] - span, 0))
    return x[:, starts[:, None] + np.arange(n) * (skip + 1)]


@register("TfIdfVectorizer", since=9)
def tfidf_vectorizer(X, *, mode, min_gram_length, max_gram_length, max_skip_count, ngram_counts,
                     ngram_indexes, pool_int64s=None, pool_strings=None, weights=None):
    if mode not in _MODES:
        raise KernelError(f"TfIdfVectorizer: mode must be one of {_MODES}, got {mode!r}")
    if (pool_int64s is None) == (pool_strings is None):
        raise KernelError("TfIdfVectorizer: exactly one of pool_int64s and pool_strings must be set")
    if not 1 <= min_gram_length <= max_gram_length:
        raise KernelError(f"TfIdfVectorizer: need 1 <= min_gram_length <= max_gram_length, "
                          f"got {min_gram_length}, {max_gram_length}")
    pool = np.array(pool_int64s if pool_int64s is not None else pool_strings,
                    dtype=np.int64 if pool_int64s is not None else object)
    rows = X.reshape(1, -1) if X.ndim == 1 else X
    if rows.dtype.kind in "US":
        rows = rows.astype(object)
    grams = _pool_grams(pool, ngram_counts)
    total = sum(len(g) for _, g in grams.values())
    counts = np.zeros((rows.shape[0], total), np.float32)
    for n in range(min_gram_length, min(max_gram_length, len(ngram_counts)) + 1):
        first, pooled = grams[n]
        for skip in range(max_skip_count + 1 if n > 1 else 1):
            win = _windows(rows, n, skip)  # (rows, starts, n)
            hits = (win[:, :, None, :] == pooled[None, None]).all(axis=-1)  # (rows, starts, pooled)
            counts[:, first:first + len(pooled)] += hits.sum(axis=1)
    w = np.ones(total, np.float32) if weights is None else np.asarray(weights, np.float32)
    if mode == "IDF":
        counts = np.minimum(counts, 1) * w
    elif mode == "TFIDF":
        counts = counts * w
    out = np.zeros((rows.shape[0], max(ngram_indexes) + 1), np.float32)
    out[:, ngram_indexes] = counts  # ngram_indexes maps pooled n-gram i to its output column
    return out[0] if X.ndim == 1 else out
