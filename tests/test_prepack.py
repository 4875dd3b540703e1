"""The one cache of what kernels derive from a weight array (``inference.kernels._prepack``)."""
from __future__ import annotations

import gc

import numpy as np

from inference.kernels import _prepack


def test_built_once_per_array_and_tag_and_dropped_with_the_array():
    calls = []
    w = np.ones(4, np.float32)
    first = _prepack.prepacked(w, "a", lambda: calls.append("a") or object())
    assert _prepack.prepacked(w, "a", lambda: calls.append("a") or object()) is first  # kept
    _prepack.prepacked(w, "b", lambda: calls.append("b") or object())  # another tag: its own entry
    assert calls == ["a", "b"]
    key = (id(w), "a")
    assert key in _prepack._KEPT
    del w
    gc.collect()
    assert key not in _prepack._KEPT  # gone with the array: a new array at the same address starts afresh


def test_an_equal_but_other_array_is_built_again():
    w, v = np.ones(4, np.float32), np.ones(4, np.float32)
    assert _prepack.prepacked(w, "t", lambda: "w") == "w"
    assert _prepack.prepacked(v, "t", lambda: "v") == "v"
