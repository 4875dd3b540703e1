"""The one cache of what kernels derive from a weight array (``inference.kernels._prepack``), and
weights released to their packing."""
from __future__ import annotations

import gc

import numpy as np
import pytest

from inference.kernels import _prepack
from inference.kernels.rows_gemm import padded_weight, unpacked_panels


def test_built_once_per_array_and_tag_and_dropped_with_the_array():
    calls = []
    w = np.ones(4, np.float32)
    first = _prepack.prepacked(w, "a", lambda v: calls.append("a") or object())
    assert _prepack.prepacked(w, "a", lambda v: calls.append("a") or object()) is first  # kept
    _prepack.prepacked(w, "b", lambda v: calls.append("b") or object())  # another tag: its own entry
    assert calls == ["a", "b"]
    key = (id(w), "a")
    assert key in _prepack._KEPT
    del w
    gc.collect()
    assert key not in _prepack._KEPT  # gone with the array: a new array at the same address starts afresh


def test_an_equal_but_other_array_is_built_again():
    w, v = np.ones(4, np.float32), np.ones(4, np.float32)
    assert _prepack.prepacked(w, "t", lambda _: "w") == "w"
    assert _prepack.prepacked(v, "t", lambda _: "v") == "v"


@pytest.mark.parametrize("k, m, nl, groups", [(9, 64, 64, 1), (27, 40, 32, 1), (4, 300, 64, 1), (18, 68, 32, 2),
                                              (8, 28, 16, 4), (1, 1, 16, 1)])
def test_panels_give_the_weight_back_exactly(k, m, nl, groups):
    w = np.random.default_rng(k * m).standard_normal((k, m)).astype(np.float32)
    panels, _ = padded_weight(w, nl, groups=groups)
    assert np.array_equal(unpacked_panels(panels, k, m, nl, groups), w)


def test_a_released_weight_keeps_its_packings_and_gives_its_values_back():
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    packing = _prepack.prepacked(w, "p", lambda v: v * 2)
    held = _prepack.release(w, lambda: np.arange(12, dtype=np.float32).reshape(3, 4))
    assert held.shape == w.shape and held.dtype == w.dtype and not held.flags.writeable
    assert not held.any()  # reads as zeros: no memory behind it
    assert _prepack.is_released(held) and not _prepack.is_released(w)
    assert _prepack.prepacked(held, "p", lambda v: pytest.fail("rebuilt")) is packing  # moved, not rebuilt
    assert np.array_equal(_prepack.source(held), w)  # restored on demand
    # a packing first wanted after the release is built from the restored values, not the zeros
    assert np.array_equal(_prepack.prepacked(held, "q", lambda v: v + 1), w + 1)
    assert _prepack.source(w) is w  # an array never released is its own values
    key = id(held)
    del held
    gc.collect()
    assert key not in _prepack._RELEASED  # the record goes with the placeholder


def test_last_weights_keeps_what_was_derived_while_the_same_arrays_come_back():
    """A prepared call's memo of its constant weights' arguments (``_prepack.LastWeights``): kept for
    the very same arrays (None in the same places), derived again for any other, equal or not."""
    memo, calls = _prepack.LastWeights(), []
    w, b = np.ones(4, np.float32), np.zeros(2, np.float32)

    def derive(tag):
        return lambda: calls.append(tag) or tag

    assert memo.get((w, None, b), derive("first")) == "first"
    assert memo.get((w, None, b), derive("again")) == "first"  # the same objects: kept
    assert memo.get((w.copy(), None, b), derive("copy")) == "copy"  # equal values, another array
    assert memo.get((w, b, None), derive("moved")) == "moved"  # None elsewhere
    assert memo.get((w, b), derive("fewer")) == "fewer"
    assert calls == ["first", "copy", "moved", "fewer"]
    v = np.ones(4, np.float32)
    memo.get((v,), derive("v"))
    del v
    gc.collect()
    assert memo.get((np.ones(4, np.float32),), derive("new")) == "new"  # a dead array's memo never answers
