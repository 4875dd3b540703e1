"""The fast float32 CumSum (``inference.kernels.cumsum``) gives the reference's sums bit for bit
(float32, added in the reference's order) over every axis (negative ones, axes of length 1, int32
and int64 axis tensors), exclusive and reverse, with -0, infinities and NaN, at one and two
threads; what it does not take goes to the reference; a model with CumSum takes it, is replayed
and matches onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from inference.errors import KernelError
from inference.ops.registry import lookup
from tests.conftest import fast_step_replays_as_onnxruntime

RNG = np.random.default_rng(23)


def _kernels():
    return lookup("CumSum", "", 14, "fast").fn, lookup("CumSum", "", 14).fn


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 7, 1, 300), (5,), (3, 1, 4), (4, 3000), (2, 1500, 3), (1, 1)],
                         ids=str)
def test_every_axis_and_attribute_is_the_references_bit_for_bit(shape, threads):
    """Values of mixed magnitudes (float32's rounding shows in every sum), a -0 first, an inf and
    a NaN somewhere: the same float32 additions in the same order give the same bits."""
    fast, ref = _kernels()
    x = (RNG.standard_normal(shape) * np.float32(10.0) ** RNG.integers(-3, 4, shape)).astype(np.float32)
    flat = x.reshape(-1)
    flat[0] = -0.0
    if flat.size > 3:
        flat[RNG.integers(1, flat.size, 2)] = [np.inf, np.nan]
    for axis in range(-len(shape), len(shape)):
        for dtype in (np.int64, np.int32):
            for exclusive in (0, 1):
                for reverse in (0, 1):
                    a = np.array(axis, dtype)
                    got = fast(x, a, exclusive=exclusive, reverse=reverse)
                    with np.errstate(invalid="ignore"):
                        want = ref(x, a, exclusive=exclusive, reverse=reverse)
                    assert got.dtype == np.float32 and got.shape == want.shape
                    assert np.array_equal(got.view(np.int32), want.view(np.int32)), (axis, exclusive, reverse)


def test_a_one_element_axis_tensor_and_a_non_contiguous_input():
    fast, ref = _kernels()
    x = RNG.standard_normal((6, 8, 10)).astype(np.float32)[:, ::2].transpose(0, 2, 1)
    for axis in (np.array([1]), np.array([-1], np.int32)):
        assert np.array_equal(fast(x, axis, reverse=1), ref(x, axis, reverse=1))


def test_what_it_does_not_take_goes_to_the_reference():
    fast, ref = _kernels()
    ints = RNG.integers(-9, 9, (3, 4))
    got = fast(ints, np.array(1))
    assert got.dtype == ints.dtype and np.array_equal(got, ref(ints, np.array(1)))
    x64 = RNG.standard_normal((3, 4))
    assert np.array_equal(fast(x64, np.array(0), exclusive=1), ref(x64, np.array(0), exclusive=1))
    assert fast(np.zeros((0, 4), np.float32), np.array(1)).shape == (0, 4)
    with pytest.raises(KernelError, match="axis 2 is out of range"):
        fast(np.zeros((3, 4), np.float32), np.array(2))


@pytest.mark.parametrize("num_threads", [1, 2])
def test_a_model_with_cumsum_is_replayed_and_matches_onnxruntime(num_threads):
    """Position-like running sums: along the sequence, reverse exclusive along the features."""
    nodes = [helper.make_node("CumSum", ["x", "one"], ["along"]),
             helper.make_node("CumSum", ["x", "minus_one"], ["back"], exclusive=1, reverse=1)]
    fast_step_replays_as_onnxruntime(
        nodes, lambda rng: {"x": rng.standard_normal((2, 50, 16)).astype(np.float32)},
        {"along": onnx.TensorProto.FLOAT, "back": onnx.TensorProto.FLOAT},
        {"one": np.array(1, np.int64), "minus_one": np.array(-1, np.int32)}, ("CumSum",), threads=num_threads)
