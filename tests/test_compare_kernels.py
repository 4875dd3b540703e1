"""The fast comparisons of float32 and int64 tensors and logic of bool ones
(``inference.kernels.compare``) give the reference's bool outputs for same-shape operands, a
one-element operand on either side and any other numpy broadcast, with NaN, infinities and signed
zeros, at one and two threads; what they do not take goes to the reference; models of masks (of
floats, of token ids) take them, are replayed and match onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from inference.ops.registry import lookup
from tests.conftest import fast_step_replays_as_onnxruntime

RNG = np.random.default_rng(31)
COMPARISONS = ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")
LOGIC = ("And", "Or", "Xor")
SHAPES = [  # same shape (flat), one element either side (scalar), broadcast rows
    ((2, 3, 4), (2, 3, 4)), ((70000,), (70000,)), ((2, 3, 4), (1,)), ((1,), (2, 3, 4)), ((), (2, 3)), ((2, 3), ()),
    ((1, 1), (5, 40000)), ((), ()), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((2, 1, 4), (3, 1)), ((4, 1, 1), (4, 3, 5)),
    ((1, 300), (300, 1)), ((5,), (2, 1, 5)), ((2, 3, 1), (2, 3, 7)),
]


def _kernels(op: str):
    return lookup(op, "", 13, "fast").fn, lookup(op, "", 13).fn


def _floats(shape: tuple[int, ...]) -> np.ndarray:
    """Few distinct values (equal pairs everywhere) and some NaN, +-inf, +-0."""
    x = RNG.integers(-2, 3, shape).astype(np.float32)
    flat = x.reshape(-1)
    picks = RNG.permutation(flat.size)[:5]
    flat[picks] = RNG.choice(np.float32([np.nan, np.inf, -np.inf, -0.0, 0.0]), picks.size)
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("a_shape, b_shape", SHAPES, ids=str)
def test_comparisons_equal_the_reference(a_shape, b_shape, dtype, threads):
    if dtype is np.float32:
        a, b = _floats(a_shape), _floats(b_shape)
    else:  # token ids: few distinct values, so equal pairs everywhere, and the int64 extremes
        a, b = RNG.integers(-2, 3, a_shape), RNG.integers(-2, 3, b_shape)
        a.reshape(-1)[:1] = np.iinfo(np.int64).max
        b.reshape(-1)[-1:] = np.iinfo(np.int64).min
    for op in COMPARISONS:
        fast, ref = _kernels(op)
        got, want = fast(a, b), ref(a, b)
        assert got.dtype == np.bool_ and got.shape == want.shape, op
        assert np.array_equal(got, want), op


@pytest.mark.parametrize("a_shape, b_shape", SHAPES, ids=str)
def test_logic_equals_the_reference(a_shape, b_shape, threads):
    a, b = RNG.integers(0, 2, a_shape).astype(bool), RNG.integers(0, 2, b_shape).astype(bool)
    for op in LOGIC:
        fast, ref = _kernels(op)
        got, want = fast(a, b), ref(a, b)
        assert got.dtype == np.bool_ and got.shape == want.shape, op
        assert np.array_equal(got, want), op
    fast, ref = _kernels("Not")
    assert np.array_equal(fast(a), ref(a))


def test_non_contiguous_operands_and_the_row_maps():
    fast, ref = _kernels("Greater")
    a = _floats((6, 8, 10))[:, ::2].transpose(0, 2, 1)  # (6, 10, 4), strided
    b = _floats((8, 10))[::2, :].T[None, :, 1:]  # (1, 10, 3): not broadcasting to a
    with pytest.raises(ValueError, match="could not be broadcast"):
        fast(a, b)  # the reference's error (numpy's)
    b = _floats((8, 10))[::2, :].T[None]  # (1, 10, 4)
    assert np.array_equal(fast(a, b), ref(a, b))
    assert np.array_equal(fast(b, a[:1]), ref(b, a[:1]))


def test_what_they_do_not_take_goes_to_the_reference():
    ints = RNG.integers(0, 3, (3, 4))
    for op in COMPARISONS:
        fast, ref = _kernels(op)
        assert np.array_equal(fast(ints, ints.T[:1].T), ref(ints, ints.T[:1].T))
        x64 = RNG.standard_normal((3, 4))
        assert np.array_equal(fast(x64, x64[:1]), ref(x64, x64[:1]))
        x32 = x64.astype(np.float32)
        assert np.array_equal(fast(x32, x64), ref(x32, x64))  # mixed dtypes
        assert fast(np.zeros((0, 3), np.float32), np.zeros(3, np.float32)).shape == (0, 3)
    fast, ref = _kernels("And")
    assert np.array_equal(fast(ints > 0, ints > 1), ref(ints > 0, ints > 1))
    assert lookup("Equal", "", 6, "fast") is None  # broadcast/axis attributes: the reference's alone


@pytest.mark.parametrize("num_threads", [1, 2])
def test_a_model_of_masks_is_replayed_and_matches_onnxruntime(num_threads):
    """``x > t``, ``x <= y`` of a broadcast row, ``Equal``, their logic and ``Not``, fed floats and
    a bool mask; every op the fast kernel."""
    nodes = [helper.make_node("Greater", ["x", "t"], ["above"]),
             helper.make_node("LessOrEqual", ["x", "row"], ["below"]),
             helper.make_node("Less", ["t", "x"], ["above_too"]),
             helper.make_node("GreaterOrEqual", ["row", "x"], ["below_too"]),
             helper.make_node("Equal", ["rounded", "rounded_row"], ["same"]),
             helper.make_node("And", ["above", "mask"], ["both"]),
             helper.make_node("Or", ["both", "same"], ["either"]),
             helper.make_node("Xor", ["either", "below"], ["one"]),
             helper.make_node("Not", ["one"], ["y"])]

    def feeds(rng):
        x = rng.standard_normal((4, 8, 32)).astype(np.float32)
        return {"x": x, "row": rng.standard_normal((1, 32)).astype(np.float32),
                "rounded": np.round(x), "rounded_row": np.round(rng.standard_normal((8, 1))).astype(np.float32),
                "mask": rng.integers(0, 2, (4, 1, 32)).astype(bool)}

    outputs = {"y": onnx.TensorProto.BOOL, "above_too": onnx.TensorProto.BOOL, "below_too": onnx.TensorProto.BOOL}
    fast_step_replays_as_onnxruntime(nodes, feeds, outputs, {"t": np.float32([0.25])}, COMPARISONS + LOGIC + ("Not",),
                                     threads=num_threads)


def test_a_mask_made_from_token_ids_is_replayed():
    """``ids != pad`` (Equal then Not) and ``ids < vocab`` on int64 ids, as a model makes its
    attention mask: the int64 comparisons take the fast kernel, so the model is replayed (on the
    reference it had run step by step)."""
    nodes = [helper.make_node("Equal", ["ids", "pad"], ["is_pad"]), helper.make_node("Not", ["is_pad"], ["keep"]),
             helper.make_node("Less", ["ids", "vocab"], ["known"]), helper.make_node("And", ["keep", "known"], ["y"])]

    def feeds(rng):
        ids = rng.integers(0, 60, (2, 16))
        ids[:, 12:] = 0  # padded
        return {"ids": ids}

    fast_step_replays_as_onnxruntime(nodes, feeds, {"y": onnx.TensorProto.BOOL},
                                     {"pad": np.array(0, np.int64), "vocab": np.array([50], np.int64)},
                                     ("Equal", "Less", "Not", "And"))
