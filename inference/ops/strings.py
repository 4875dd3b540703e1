"""String-tensor ops (object arrays of Python str): StringConcat, StringSplit, StringNormalizer,
RegexFullMatch. Splitting and regex matching run per string: numpy has no ragged string kernels."""
from __future__ import annotations

import re

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register


def _as_str(x: np.ndarray) -> np.ndarray:
    """An object array of str as a fixed-width unicode array, for numpy's vectorized string ops."""
    return np.asarray(x).astype(np.str_)


@register("StringConcat", since=20)
def string_concat(x, y):
    return np.asarray(np.strings.add(_as_str(x), _as_str(y))).astype(object)


@register("StringSplit", since=20)
def string_split(x, *, delimiter=None, maxsplit=None):
    """Substrings padded with "" to the longest split (Y) and the number of substrings (Z)."""
    sep = delimiter or None  # unset or "": split on whitespace runs, dropping the ends
    limit = -1 if maxsplit is None else maxsplit
    pieces = [s.split(sep, limit) for s in np.asarray(x, dtype=object).reshape(-1)]
    counts = np.array([len(p) for p in pieces], dtype=np.int64).reshape(x.shape)
    width = int(counts.max()) if counts.size else 0
    out = np.full((*x.shape, width), "", dtype=object)
    out[np.arange(width) < counts[..., None]] = [s for p in pieces for s in p]
    return out, counts


@register("StringNormalizer", since=10)
def string_normalizer(x, *, case_change_action="NONE", is_case_sensitive=0, locale=None,
                      stopwords=None):
    if not (x.ndim == 1 or (x.ndim == 2 and x.shape[0] == 1)):
        raise KernelError(f"StringNormalizer: input must be [C] or [1, C], got shape {x.shape}")
    if case_change_action not in ("NONE", "LOWER", "UPPER"):
        raise KernelError(f"StringNormalizer: case_change_action must be NONE, LOWER or UPPER, "
                          f"got {case_change_action!r}")
    words = _as_str(x.reshape(-1))
    if stopwords:
        fold = (lambda a: a) if is_case_sensitive else np.strings.lower
        words = words[~np.isin(fold(words), fold(_as_str(stopwords)))]
    if case_change_action == "LOWER":
        words = np.strings.lower(words)
    elif case_change_action == "UPPER":
        words = np.strings.upper(words)
    if words.size == 0:
        words = np.array([""])
    out = words.astype(object)
    return out if x.ndim == 1 else out.reshape(1, -1)


@register("RegexFullMatch", since=20)
def regex_full_match(x, *, pattern):
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise KernelError(f"RegexFullMatch: invalid pattern {pattern!r}: {exc}") from exc
    match = np.frompyfunc(lambda s: regex.fullmatch(s) is not None, 1, 1)
    return np.asarray(match(np.asarray(x, dtype=object)), dtype=bool).reshape(x.shape)
