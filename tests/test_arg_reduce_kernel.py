"""The fast float32 ArgMax and ArgMin (``inference.kernels.arg_reduce``) give the reference's
indices over every axis (negative ones, axes of length 1), keepdims and select_last_index, with
ties, NaNs, infinities and signed zeros, at one and two threads; what they do not take goes to the
reference; a model ending in ArgMax takes it, is replayed and matches onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from inference.errors import KernelError
from inference.ops.registry import lookup
from tests.conftest import fast_step_replays_as_onnxruntime

RNG = np.random.default_rng(17)
OPS = ("ArgMax", "ArgMin")


def _kernels(op: str):
    return lookup(op, "", 13, "fast").fn, lookup(op, "", 13).fn


def _ties(shape: tuple[int, ...], specials: int = 3) -> np.ndarray:
    """Few distinct values (ties everywhere) and a few of -0, NaN, +-inf."""
    x = RNG.integers(-2, 3, shape).astype(np.float32)
    flat = x.reshape(-1)
    picks = RNG.permutation(flat.size)[:specials]
    flat[picks] = RNG.choice(np.float32([-0.0, np.nan, np.inf, -np.inf]), picks.size)
    return x


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 7, 1, 300), (5,), (3, 1, 4), (4, 600), (2, 300, 3), (1, 1)],
                         ids=str)
@pytest.mark.parametrize("op", OPS)
def test_every_axis_and_attribute_equals_the_reference(op, shape, threads):
    fast, ref = _kernels(op)
    for specials in (0, 3):
        x = _ties(shape, specials)
        for axis in range(-len(shape), len(shape)):
            for keepdims in (0, 1):
                for last in (0, 1):
                    attrs = {"axis": axis, "keepdims": keepdims, "select_last_index": last}
                    got, want = fast(x, **attrs), ref(x, **attrs)
                    assert got.dtype == np.int64 and got.shape == want.shape, attrs
                    assert np.array_equal(got, want), attrs


@pytest.mark.parametrize("op", OPS)
def test_nan_signed_zeros_and_infinities_along_a_row(op):
    """The row scan's integer keys: -0 ties +0, a NaN (of either sign) is the extreme of both,
    +-inf order as numbers; lanes of whole blocks and the tail alike (rows of 1 to 40)."""
    fast, ref = _kernels(op)
    negative_nan = np.float32(np.nan) * np.float32(-1)
    for values in ([-0.0, 0.0, -0.0], [0.0, -0.0], [1, np.nan, 2, np.nan], [-np.inf, -np.inf], [np.inf, 3, np.inf],
                   [-1e-45, -0.0, 1e-45, 0.0], [3, negative_nan, 5], [np.float32(3.4e38), np.inf, -3.4e38, -np.inf]):
        for n in (len(values), 17, 40):
            x = np.resize(np.float32(values), n)[None]
            for last in (0, 1):
                assert np.array_equal(fast(x, axis=1, select_last_index=last),
                                      ref(x, axis=1, select_last_index=last)), (values, n, last)


def test_a_non_contiguous_input():
    fast, ref = _kernels("ArgMax")
    x = _ties((6, 8, 10))[:, ::2].transpose(2, 0, 1)
    for axis in range(3):
        assert np.array_equal(fast(x, axis=axis), ref(x, axis=axis))


def test_what_it_does_not_take_goes_to_the_reference():
    fast, ref = _kernels("ArgMax")
    ints = RNG.integers(0, 9, (3, 4))
    assert np.array_equal(fast(ints, axis=1), ref(ints, axis=1))
    x64 = RNG.standard_normal((3, 4))
    assert np.array_equal(fast(x64, axis=0), ref(x64, axis=0))
    assert fast(np.zeros((0, 4), np.float32), axis=1).shape == (0, 1)
    with pytest.raises(KernelError, match="empty axis"):
        fast(np.zeros((3, 0), np.float32), axis=1)
    with pytest.raises(KernelError, match="axis 2 is out of range"):
        fast(np.zeros((3, 4), np.float32), axis=2)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_a_model_ending_in_argmax_is_replayed_and_matches_onnxruntime(num_threads):
    """A classifier's ArgMax over its logits' last axis and a per-pixel ArgMin over axis 1."""
    nodes = [helper.make_node("ArgMax", ["x"], ["classes"], axis=-1, keepdims=0),
             helper.make_node("ArgMin", ["x"], ["pixels"], axis=1, keepdims=1, select_last_index=1)]
    fast_step_replays_as_onnxruntime(
        nodes, lambda rng: {"x": rng.standard_normal((2, 10, 300)).astype(np.float32)},
        {"classes": onnx.TensorProto.INT64, "pixels": onnx.TensorProto.INT64}, {}, ("ArgMax", "ArgMin"),
        threads=num_threads)
