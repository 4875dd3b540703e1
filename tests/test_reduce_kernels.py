"""The fast float32 reductions (``inference.kernels.reduce``) give the reference's results over
every axis choice, keepdims, both axes forms and NaNs; what they do not take goes to the
reference; and a model pooling with ReduceMean is replayed."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper

from inference import Config, Predictor
from inference.kernels.reduce import _run_shape
from inference.ops.registry import lookup

OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin")
RNG = np.random.default_rng(5)


def _kernels(op: str, opset: int):
    return lookup(op, "", opset, "fast").fn, lookup(op, "", opset).fn


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 7, 1, 300), (5,), (3, 1, 4), (1, 1, 2048)], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_every_axis_choice_equals_the_reference(op, shape, threads):
    """Against the reference in float64 (our sums accumulate in float64; numpy's float32 pairwise
    sum of 300 values was 1.6e-6 off a sum near 0)."""
    fast, ref = _kernels(op, 18)
    x = RNG.standard_normal(shape).astype(np.float32)
    for k in range(len(shape) + 1):
        for axes in itertools.combinations(range(len(shape)), k):
            for keep in (0, 1):
                a = np.array(axes, np.int64) if axes else None
                want, got = ref(x.astype(np.float64), a, keepdims=keep), fast(x, a, keepdims=keep)
                assert got.shape == want.shape and got.dtype == np.float32, (axes, keep)
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=str((axes, keep)))


@pytest.mark.parametrize("op", OPS)
def test_attribute_form_and_negative_axes(op):
    fast, ref = _kernels(op, 11)
    x = RNG.standard_normal((4, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(fast(x, axes=[-1, -2], keepdims=0), ref(x, axes=[-1, -2], keepdims=0), rtol=1e-5)
    np.testing.assert_allclose(fast(x), ref(x), rtol=1e-5, atol=1e-6)  # every axis


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_a_nan_wins_as_in_numpy(op):
    fast, ref = _kernels(op, 18)
    x = RNG.standard_normal((3, 5, 4)).astype(np.float32)
    x[0, 0, 1] = x[1, 3, 2] = x[2, 4, 0] = np.nan  # first, middle and last row of a reduction
    for axes in ([1], [2], [0, 1]):
        np.testing.assert_array_equal(fast(x, np.array(axes)), ref(x, np.array(axes)))


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("length", [1, 15, 16, 17, 1000])
def test_a_contiguous_run_takes_its_extreme_and_nans_anywhere(op, length):
    """The last axis's runs go 16 lanes at a time then the tail: NaNs in the first value, the lanes
    and the tail, and the extreme in each of them, as numpy."""
    fast, ref = _kernels(op, 18)
    x = RNG.standard_normal((6, length)).astype(np.float32)
    x[1, 0] = np.nan
    x[2, length // 2] = np.nan
    x[3, -1] = np.nan
    x[4, -1] = 9.0 if op == "ReduceMax" else -9.0  # the extreme in the tail
    x[5, 0] = 9.0 if op == "ReduceMax" else -9.0  # and in the first value
    for keep in (0, 1):
        np.testing.assert_array_equal(fast(x, np.array([1]), keepdims=keep), ref(x, np.array([1]), keepdims=keep))


def test_what_it_does_not_take_goes_to_the_reference():
    fast, ref = _kernels("ReduceSum", 13)
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    assert _run_shape(x.shape, (0, 2)) is None  # not one run of axes
    np.testing.assert_allclose(fast(x, np.array([0, 2])), ref(x, np.array([0, 2])), rtol=1e-6)
    np.testing.assert_array_equal(fast(x, None, noop_with_empty_axes=1), x)
    ints = RNG.integers(0, 9, (2, 3)).astype(np.int64)
    assert fast(ints, np.array([1])).dtype == np.int64
    empty = np.zeros((2, 0, 3), np.float32)
    np.testing.assert_array_equal(fast(empty, np.array([1])), ref(empty, np.array([1])))
    with pytest.raises(Exception, match="axis 3 is out of range"):
        fast(x, np.array([3]))


def test_a_model_pooling_with_reduce_mean_is_replayed():
    """Before these kernels the numpy ReduceMean kept this model step by step."""
    w = RNG.standard_normal((16, 16)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("ReduceMean", ["r", "axes"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 9, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [16, 16], w.reshape(-1)),
                               helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    p = Predictor(Config(model_path=helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])))
    for _ in range(5):
        x = RNG.standard_normal((2, 9, 16)).astype(np.float32)
        np.testing.assert_allclose(p.run({"x": x})["y"], np.maximum(x @ w, 0).mean(axis=1), rtol=1e-5, atol=1e-6)
    assert "replayed" in p.replay_report()
