"""The fast float32 LogSoftmax (``inference.kernels.log_softmax``, sharing Softmax's axis dispatch
and middle-axis columns in ``inference.kernels.norm``) against float64 and the reference: every
axis (negative ones, axes of length 1), both opset forms, NaN and inf as the reference, values far
from 0, one and two threads; what it does not take goes to the reference; a model ending in
LogSoftmax takes it, is replayed and matches onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from inference.errors import KernelError
from inference.ops.registry import lookup
from tests.conftest import fast_step_replays_as_onnxruntime

RNG = np.random.default_rng(3)
SHAPES = [(7,), (4, 33), (2, 5, 3, 7), (2, 3, 600), (1, 1, 5), (3, 1, 4), (4, 1), (2, 19, 3, 1), (64, 300)]


def _kernels(opset: int):
    return lookup("LogSoftmax", "", opset, "fast").fn, lookup("LogSoftmax", "", opset).fn


def _exact(x: np.ndarray, axis: int) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_axis_against_float64(shape, threads):
    """Within float32's rounding of the reference's own result (its error against float64 is
    ~1e-6 at these magnitudes)."""
    fast, ref = _kernels(13)
    x = (RNG.standard_normal(shape) * 4).astype(np.float32)
    for axis in range(-len(shape), len(shape)):
        got = fast(x, axis=axis)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got, _exact(x, axis), rtol=1e-6, atol=3e-6, err_msg=str(axis))
        np.testing.assert_allclose(got, ref(x, axis=axis), rtol=1e-5, atol=1e-5, err_msg=str(axis))


@pytest.mark.parametrize("shape", [(7,), (4, 33), (2, 5, 3, 7), (3, 1, 4)], ids=str)
def test_before_opset_13_rows_flattened_at_the_axis(shape):
    fast, ref = _kernels(11)
    x = (RNG.standard_normal(shape) * 4).astype(np.float32)
    for axis in range(-len(shape), len(shape)):
        rows = int(np.prod(shape[:axis % len(shape)]))
        want = _exact(x.reshape(rows, -1), 1).reshape(shape)
        np.testing.assert_allclose(fast(x, axis=axis), want, rtol=1e-6, atol=3e-6, err_msg=str(axis))
        np.testing.assert_allclose(fast(x, axis=axis), ref(x, axis=axis), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("offset", [1e4, -3e5])
@pytest.mark.parametrize("axis", [-1, 0])
def test_values_far_from_zero_keep_their_log_sum(offset, axis):
    """``(x - max) - log(sum)``: summed as ``x - (max + log sum)`` every output of such a row had
    been 1e-4 off, the log of the sum rounded to the maximum's ulp."""
    x = (RNG.standard_normal((6, 40)) * 2 + offset).astype(np.float32)
    np.testing.assert_allclose(_kernels(13)[0](x, axis=axis), _exact(x, axis), rtol=1e-6, atol=3e-6)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 100])
@pytest.mark.parametrize("axis", [-1, 0])
def test_nan_and_inf_as_the_reference(n, axis, threads):
    """A NaN or a +inf makes its row's (column's) outputs NaN, a row of -inf is NaN, one -inf
    gives -inf and leaves the rest finite: the reference's pattern, its values elsewhere."""
    fast, ref = _kernels(13)
    x = (RNG.standard_normal((6, n)) * 3).astype(np.float32)
    x[1, n // 2] = np.nan
    x[2, n - 1] = np.inf
    x[3] = -np.inf
    x[4, 0] = -np.inf
    x = x if axis == -1 else np.ascontiguousarray(x.T)
    with np.errstate(all="ignore"):
        want = ref(x, axis=axis)
    got = fast(x, axis=axis)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


def test_what_it_does_not_take_goes_to_the_reference():
    fast, ref = _kernels(13)
    x64 = RNG.standard_normal((3, 5))
    assert fast(x64, axis=0).dtype == np.float64 and np.array_equal(fast(x64, axis=0), ref(x64, axis=0))
    s = np.array(1.5, np.float32)
    assert np.array_equal(fast(s), ref(s))  # 0-d
    with pytest.raises(KernelError, match="axis 2 out of range"):
        fast(np.zeros((2, 3), np.float32), axis=2)
    with pytest.raises(KernelError, match="axis -3 out of range"):
        _kernels(11)[0](np.zeros((2, 3), np.float32), axis=-3)
    assert fast(np.zeros((0, 4), np.float32), axis=1).shape == (0, 4)


def test_softmax_still_takes_its_own_rows():
    """The shared dispatch: Softmax's last axis is its vector rows, its middle axis the columns."""
    fast = lookup("Softmax", "", 13, "fast").fn
    x = (RNG.standard_normal((2, 5, 9)) * 3).astype(np.float32)
    for axis in (-1, 1, 0):
        e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
        np.testing.assert_allclose(fast(x, axis=axis), e / e.sum(axis=axis, keepdims=True), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_a_model_ending_in_log_softmax_is_replayed_and_matches_onnxruntime(num_threads):
    """Over the last axis (a classifier's) and over axis 1 (per pixel, as a segmentation head's)."""
    nodes = [helper.make_node("LogSoftmax", ["x"], ["rows"], axis=-1),
             helper.make_node("LogSoftmax", ["x"], ["columns"], axis=1)]
    fast_step_replays_as_onnxruntime(
        nodes, lambda rng: {"x": (rng.standard_normal((2, 21, 40)) * 3).astype(np.float32)},
        {"rows": onnx.TensorProto.FLOAT, "columns": onnx.TensorProto.FLOAT}, {}, ("LogSoftmax",), threads=num_threads)
