"""Operands read at their strides (``inference.kernels.strided``): the coalesced layout, Where,
Expand and PRelu over broadcast, transposed, reversed and sliced operands equal to numpy, views it
cannot window sent to numpy, and a masked attention's Where replayed as onnxruntime runs it."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from inference.kernels.broadcast import expand_float32, where_float32
from inference.kernels.prelu import prelu
from inference.kernels.strided import copy_into, strided
from tests.conftest import fast_step_replays_as_onnxruntime

RNG = np.random.default_rng(5)


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_a_causal_mask_coalesces_to_rows_per_head():
    """(1, 1, T, T) mask, scalar fill, (1, H, T, T) scores: H rows of T*T, the mask repeated."""
    s = strided(np.ones((1, 1, 32, 32), bool), np.array(-np.inf, np.float32), _f32(1, 4, 32, 32))
    assert s.out_shape == (1, 4, 32, 32) and s.size == 4096
    assert s.shape.tolist() == [4, 1024]
    assert s.strides.tolist() == [[0, 1], [0, 0], [1024, 1]]
    assert s.offsets.tolist() == [0, 0, 0]


def test_axes_that_do_not_step_as_one_stay_apart():
    s = strided(_f32(3, 1, 5), _f32(3, 4, 5))
    assert s.shape.tolist() == [3, 4, 5] and s.strides.tolist() == [[5, 0, 1], [20, 5, 1]]


def test_shapes_that_do_not_broadcast_raise_as_numpy():
    with pytest.raises(ValueError):
        strided(_f32(3, 4), _f32(3, 5))


@pytest.mark.parametrize("make", [
    lambda a: a.T,  # transposed
    lambda a: a[::-1, ::2],  # reversed rows, every other column
    lambda a: a[1:, 3:7],  # a window
    lambda a: a[:, ::-1],  # the last axis reversed: each row read backwards
    lambda a: a[::-2, 7:0:-3],  # both axes stepping back
], ids=["transposed", "reversed-strided", "sliced", "last-reversed", "both-back"])
def test_where_reads_views_at_their_strides(make):
    base = _f32(8, 8)
    y = make(base)
    c = make(RNG.random((8, 8)) > 0.5)
    x = make(_f32(8, 8))
    got = where_float32(c, x, y)
    np.testing.assert_array_equal(got, np.where(c, x, y))
    assert np.shares_memory(strided(c, x, y).windows[2], base)  # read in place, not copied first


def test_a_view_of_another_dtype_goes_to_numpy():
    ints = RNG.integers(-5, 5, (6, 8), dtype=np.int32)
    y = ints.view(np.float32)[:, ::2]  # float32 bits of an int32 array: no float32 array to window
    assert strided(y) is None
    c = RNG.random((6, 4)) > 0.5
    want = np.where(c, np.float32(1), y)
    np.testing.assert_array_equal(where_float32(c, np.ones((), np.float32), y), want)


def test_a_copy_stepping_back_along_the_row():
    x = _f32(20, 10, 5)
    part = x[20:0:-1, 10:0:-3, 4:1:-2]  # ONNX's slice_neg_steps
    out = np.empty(part.shape, np.float32)
    assert copy_into(part, out)
    np.testing.assert_array_equal(out, part)


def test_expand_of_a_strided_input(threads):
    x = _f32(4, 6)[::2, 1::2]  # (2, 3), neither axis contiguous
    got = expand_float32(x[:, None, :], np.array([5, 2, 4, 3], np.int64))
    np.testing.assert_array_equal(got, np.broadcast_to(x[:, None, :], (5, 2, 4, 3)))
    assert got.flags.c_contiguous


def test_prelu_of_a_slope_varying_along_axes_apart():
    x = _f32(2, 3, 4, 5)
    x.reshape(-1)[:3] = [np.nan, -0.0, -np.inf]
    slope = _f32(3, 1, 5)  # varies along axes 1 and 3, not along 2 between them
    np.testing.assert_array_equal(prelu(x, slope), np.where(x < 0, x * slope, x))


def test_a_masked_fill_replays_as_onnxruntime():
    """GPT's causal ``masked_fill``: Where(mask == 0, -inf, scores) over the heads, then Softmax."""
    tri = np.tril(np.ones((1, 1, 16, 16), np.float32))
    nodes = [helper.make_node("Equal", ["tri", "zero"], ["masked"]),
             helper.make_node("Where", ["masked", "ninf", "scores"], ["filled"]),
             helper.make_node("Softmax", ["filled"], ["probs"], axis=-1)]
    fast_step_replays_as_onnxruntime(
        nodes, lambda rng: {"scores": rng.standard_normal((2, 4, 16, 16)).astype(np.float32)},
        {"probs": TensorProto.FLOAT},
        {"tri": tri, "zero": np.zeros((), np.float32), "ninf": np.array(-np.inf, np.float32)}, ("Where",))
