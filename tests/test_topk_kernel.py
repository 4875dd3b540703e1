"""The fast float32 TopK (``inference.kernels.topk``) gives the reference's values and indices
over every axis (negative ones, axes of length 1), k from 1 to the axis length, largest and
smallest, sorted or not, with ties (to the lower index), NaNs, infinities and signed zeros, at one
and two threads; what it does not take goes to the reference; a model with TopK takes it, is
replayed and matches onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from inference.errors import KernelError
from inference.ops.registry import lookup
from tests.conftest import fast_step_replays_as_onnxruntime

RNG = np.random.default_rng(29)


def _kernels(opset: int = 11):
    return lookup("TopK", "", opset, "fast").fn, lookup("TopK", "", opset).fn


def _assert_same(got: tuple, want: tuple, what: object) -> None:
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64 and got[0].shape == want[0].shape, what
    assert np.array_equal(got[1], want[1]), what
    assert np.array_equal(got[0].view(np.int32), want[0].view(np.int32)), what  # -0 stays -0, NaNs as found


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 7, 1, 300), (5,), (3, 1, 4), (4, 300), (2, 50, 3), (1, 1)],
                         ids=str)
def test_every_axis_and_k_equals_the_reference(shape, threads):
    """Few distinct values (ties everywhere) and some NaN, +-inf and -0."""
    fast, ref = _kernels()
    x = RNG.integers(-4, 4, shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[RNG.permutation(flat.size)[:4]] = np.float32([np.nan, np.inf, -np.inf, -0.0])[:min(4, flat.size)]
    for axis in range(-len(shape), len(shape)):
        n = shape[axis]
        for k in sorted({1, min(2, n), (n + 1) // 2, n}):
            for largest in (0, 1):
                for is_sorted in (0, 1):
                    attrs = {"axis": axis, "largest": largest, "sorted": is_sorted}
                    _assert_same(fast(x, np.array([k]), **attrs), ref(x, np.array([k]), **attrs), (axis, k, attrs))


@pytest.mark.parametrize("largest", [0, 1])
def test_small_k_of_long_rows_of_distinct_values(largest, threads):
    """The heap's common path: most elements rejected by one compare (rows of 5000, k = 10)."""
    fast, ref = _kernels()
    x = RNG.standard_normal((8, 5000)).astype(np.float32)
    x[3, ::7] = np.nan
    _assert_same(fast(x, np.array([10]), largest=largest), ref(x, np.array([10]), largest=largest), largest)
    _assert_same(fast(x.T, np.array([3]), axis=0, largest=largest), ref(x.T, np.array([3]), axis=0, largest=largest),
                 largest)


def test_opset_1_takes_k_as_an_attribute():
    fast, ref = _kernels(1)
    x = RNG.standard_normal((3, 40)).astype(np.float32)
    _assert_same(fast(x, k=5), ref(x, k=5), 1)
    _assert_same(fast(x, k=2, axis=0), ref(x, k=2, axis=0), 0)


def test_what_it_does_not_take_goes_to_the_reference():
    fast, ref = _kernels()
    ints = RNG.integers(0, 9, (3, 8))
    got, want = fast(ints, np.array([3])), ref(ints, np.array([3]))
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    got = fast(x, np.array([0]))
    assert got[0].shape == got[1].shape == (3, 0)
    with pytest.raises(KernelError, match="k=9 is out of range"):
        fast(x, np.array([9]))
    with pytest.raises(KernelError, match="TopK axis 2 is out of range"):
        fast(x, np.array([1]), axis=2)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_a_model_with_topk_is_replayed_and_matches_onnxruntime(num_threads):
    """A detector's best scores over its last axis, and the smallest along axis 1."""
    nodes = [helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=-1),
             helper.make_node("TopK", ["x", "k"], ["low", "where"], axis=1, largest=0)]
    outputs = {"values": onnx.TensorProto.FLOAT, "indices": onnx.TensorProto.INT64,
               "low": onnx.TensorProto.FLOAT, "where": onnx.TensorProto.INT64}
    fast_step_replays_as_onnxruntime(nodes, lambda rng: {"x": rng.standard_normal((2, 30, 400)).astype(np.float32)},
                                     outputs, {"k": np.array([5], np.int64)}, ("TopK",), threads=num_threads)
