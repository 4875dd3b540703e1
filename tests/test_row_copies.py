"""Concat along the last axis as row copies and the binary ops split over the threads
(``inference.kernels.row_copies``), and nearest upsampling split over the threads
(``inference.kernels.resize``): equal to numpy at one and two threads, everything else through
the reference ops; in place over an operand as the arena runs them."""
from __future__ import annotations

import numpy as np
import pytest

from inference.errors import KernelError
from inference.kernels._jit import kernel_threads
from inference.kernels.arena_slot import arm, taken
from inference.kernels.resize import resize_fast
from inference.kernels.row_copies import _binary, _channels, _gate, concat_rows

RNG = np.random.default_rng(14)
OPS = ["Add", "Sub", "Mul", "Div"]  # row_copies' codes, in order


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("widths", [(16, 16, 16), (3, 0, 5), (1, 130)], ids=str)
@pytest.mark.parametrize("lead", [(7,), (2, 9, 11)], ids=str)
def test_concat_along_the_last_axis_equals_numpy(widths, lead, threads):
    assert kernel_threads() == threads
    parts = [_f32(*lead, w) for w in widths]
    parts[0] = np.asfortranarray(parts[0])  # not C-contiguous: copied first
    got = concat_rows(*parts, axis=-1)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, np.concatenate(parts, axis=-1))


@pytest.mark.parametrize("axis", [0, 1, 2, -3])
def test_concat_along_outer_axes_equals_numpy(axis, threads):
    sizes = (1, 16, 0, 3)
    parts = [_f32(*[s if i == axis % 3 else d for i, d in enumerate((2, 5, 4))]) for s in sizes]
    got = concat_rows(*parts, axis=axis)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, np.concatenate(parts, axis=axis))


def test_concat_of_other_types_goes_to_the_reference():
    ints = [RNG.integers(0, 9, (2, 3)), RNG.integers(0, 9, (2, 2))]
    np.testing.assert_array_equal(concat_rows(*ints, axis=1), np.concatenate(ints, axis=1))
    with pytest.raises(KernelError, match="differ outside axis"):
        concat_rows(_f32(2, 3), _f32(3, 3), axis=1)


@pytest.mark.parametrize("op,fn", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)])
def test_binary_ops_equal_numpy(op, fn, threads):
    kernel = _binary(op, OPS.index(op))
    a, b = _f32(3, 40, 40, 17), _f32(3, 40, 40, 17)  # past one chunk: split over the threads
    a[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    b[0, 0, 1, :3] = [0.0, -0.0, np.inf]  # a Div by zero: inf or NaN as numpy's
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_array_equal(kernel(a, b), fn(a, b))
        np.testing.assert_array_equal(kernel(a, b[:1]), fn(a, b[:1]))  # broadcasting: numpy's
        np.testing.assert_array_equal(kernel(a.astype(np.float64), b), fn(a.astype(np.float64), b))


@pytest.mark.parametrize("op,fn", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)])
def test_gated_binary_ops_equal_numpy(op, fn, threads):
    """A channels-last map and its per-channel gate (N, 1, 1, C), in either order."""
    kernel = _binary(op, OPS.index(op))
    x, g = _f32(2, 14, 14, 96), _f32(2, 1, 1, 96)
    g[0, 0, 0, :2] = [np.nan, np.inf]
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(kernel(x, g), fn(x, g))
        np.testing.assert_array_equal(kernel(g, x), fn(g, x))
        np.testing.assert_array_equal(kernel(x, g[:, :, :, :1]), fn(x, g[:, :, :, :1]))  # not a gate: numpy's


@pytest.mark.parametrize("shapes", [((4, 16, 16), (4, 1, 16)), ((2, 5, 24), (24,)), ((2, 3, 7, 9, 16), (2, 1, 1, 1, 16)),
                                    ((3, 8, 8), (1, 8))], ids=str)
@pytest.mark.parametrize("op,fn", [("Add", np.add), ("Sub", np.subtract), ("Div", np.divide)])
def test_operands_broadcast_over_middle_axes_equal_numpy(op, fn, shapes, threads):
    """An attention mask (B, 1, L) over scores (B, L, L), a bias over (N, L, C), a gate over
    several middle axes, either order, with NaN and inf in the broadcast operand; rows of one
    element too (a trailing axis of 1: small tensors loop over them)."""
    kernel = _binary(op, OPS.index(op))
    x, g = _f32(*shapes[0]), _f32(*shapes[1])
    assert _gate(x, g) is not None  # the rows kernel's case, not numpy's
    g.reshape(-1)[:2] = [np.nan, -np.inf]
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_array_equal(kernel(x, g), fn(x, g))
        np.testing.assert_array_equal(kernel(g, x), fn(g, x))
        short = _f32(*shapes[0][:-1], 1)
        np.testing.assert_array_equal(kernel(x, short), fn(x, short))


@pytest.mark.parametrize("shapes", [((2, 16, 9, 9), (16, 1, 1)), ((2, 16, 9, 9), (1, 16, 1, 1)), ((3, 6, 50), (6, 1)),
                                    ((2, 4, 3, 5), (4, 3, 1))], ids=str)
@pytest.mark.parametrize("op,fn", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)])
def test_per_channel_operands_of_nchw_maps_equal_numpy(op, fn, shapes, threads):
    """An NCHW map by per-channel values (torch's GroupNorm affine: (C, 1, 1)), either order, with
    NaN and inf, and in place; rows kernel, not numpy's broadcast."""
    kernel = _binary(op, OPS.index(op))
    x, g = _f32(*shapes[0]), _f32(*shapes[1])
    assert _gate(x, g) is None and _channels(x, g) is not None
    g.reshape(-1)[:2] = [np.nan, -np.inf]
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_array_equal(kernel(x, g), fn(x, g))
        np.testing.assert_array_equal(kernel(g, x), fn(g, x))
        want = fn(x, g)
        np.testing.assert_array_equal(_in_place(lambda: kernel(x, g), x), want)


def test_short_rows_loop_on_small_tensors_and_go_to_numpy_on_large_ones(threads):
    """A mask over a 7-token sequence's scores is the rows kernel's (a replay then covers it); a
    large map under a gate of 4 channels is numpy's (a loop per 4 elements is slower there)."""
    kernel = _binary("Add", OPS.index("Add"))
    for shapes, rows_kernel in ((((1, 4, 7, 7), (1, 1, 1, 7)), True), (((1, 128, 128, 4), (1, 1, 1, 4)), False)):
        x, g = _f32(*shapes[0]), _f32(*shapes[1])
        assert (_gate(x, g) is not None) == rows_kernel
        np.testing.assert_array_equal(kernel(x, g), x + g)
        np.testing.assert_array_equal(kernel(g, x), g + x)


@pytest.mark.parametrize("op,fn", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)])
def test_binary_ops_with_a_one_element_operand_equal_numpy(op, fn, threads):
    """A tensor and a one-element one (attention's scale), in either order, of rank 0 to the
    tensor's; a one-element operand of higher rank (the output grows) goes to numpy."""
    kernel = _binary(op, OPS.index(op))
    a = _f32(3, 40, 40, 17)  # past one chunk: split over the threads
    a[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    ones = (np.array(0.125, np.float32), _f32(1), _f32(1, 1, 1, 1), np.array([np.inf], np.float32), _f32(1, 1, 1, 1, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in ones:
            for got, want in ((kernel(a, s), fn(a, s)), (kernel(s, a), fn(s, a))):
                assert got.shape == want.shape and got.dtype == np.float32
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op,fn", [("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)])
@pytest.mark.parametrize("scalar_first", [False, True])
def test_one_element_operand_in_place_over_the_tensor(op, fn, scalar_first, threads):
    kernel = _binary(op, OPS.index(op))
    a, s = _f32(3, 40, 40, 17), _f32(1)
    want = fn(s, a) if scalar_first else fn(a, s)
    got = _in_place(lambda: kernel(s, a) if scalar_first else kernel(a, s), a)
    np.testing.assert_array_equal(got, want)
    assert np.shares_memory(got, a)


def _in_place(call, over: np.ndarray):
    """``call()`` with ``over``'s memory offered as its output (an in-place step of the arena)."""
    arm(over)
    try:
        return call()
    finally:
        taken()  # withdrawn if the kernel did not take it


@pytest.mark.parametrize("op,fn", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)])
@pytest.mark.parametrize("over", ["first", "second"])
def test_binary_ops_in_place_over_either_operand(op, fn, over, threads):
    """The output in an operand's memory (its loops then read and write one view), at one thread
    too (numba's loops there as well: a kernel replay repeats only numba calls)."""
    kernel = _binary(op, OPS.index(op))
    a, b = _f32(3, 40, 40, 17), _f32(3, 40, 40, 17)
    want = fn(a, b)
    got = _in_place(lambda: kernel(a, b), a if over == "first" else b)
    np.testing.assert_array_equal(got, want)
    assert np.shares_memory(got, a if over == "first" else b)


@pytest.mark.parametrize("op,fn", [("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)])
@pytest.mark.parametrize("gate_first", [False, True])
def test_gated_binary_ops_in_place_over_the_map(op, fn, gate_first, threads):
    kernel = _binary(op, OPS.index(op))
    x, g = _f32(2, 14, 14, 96), _f32(2, 1, 1, 96)
    want = fn(g, x) if gate_first else fn(x, g)
    got = _in_place(lambda: kernel(g, x) if gate_first else kernel(x, g), x)
    np.testing.assert_array_equal(got, want)


def test_overwritten_names_only_the_same_bytes():
    """Which operand an output is: the same bytes only; a partial overlap or a copy is none."""
    from inference.kernels.arena_slot import overwritten

    a = _f32(100)
    assert overwritten(a, a) == 1 and overwritten(a, a.copy(), a) == 2
    assert overwritten(a.reshape(10, 10), a) == 1  # the same bytes seen in another shape
    assert overwritten(a[1:], a[:-1]) == 0 and overwritten(a[:50], a) == 0 and overwritten(a, a.copy()) == 0


def _leaky(x):  # the kernel scales by alpha in float64, then rounds
    return np.where(x >= 0, x, (0.1 * x.astype(np.float64)).astype(np.float32))


@pytest.mark.parametrize("activation, fn", [("Relu", lambda x: np.maximum(x, 0)), ("LeakyRelu", _leaky),
                                            ("Clip", lambda x: np.clip(x, np.float32(0.1), np.float32(0.5)))])
def test_activations_in_place(activation, fn, threads):
    """The fast activations (``inference.kernels.elementwise``) over their input's own memory."""
    from inference.kernels.elementwise import _run

    x = _f32(3, 40, 40, 17)
    want = fn(x)
    got = _in_place(lambda: _run(x, activation, 0.1, 0.5), x)
    assert np.shares_memory(got, x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("scales", [(1, 2, 2, 1), (1, 3, 1, 1), (1, 0.5, 1.5, 1)], ids=str)
def test_channels_last_upsampling_equals_numpy_take(scales, threads):
    x = _f32(2, 9, 7, 33)
    got = resize_fast(x, None, np.array(scales, np.float32), mode="nearest", nearest_mode="floor",
                         coordinate_transformation_mode="asymmetric")
    rows = np.floor(np.arange(int(9 * scales[1])) / scales[1]).astype(np.int64)
    cols = np.floor(np.arange(int(7 * scales[2])) / scales[2]).astype(np.int64)
    np.testing.assert_array_equal(got, x[:, rows][:, :, cols])


def _ctx(outputs: int):
    from inference.ops.registry import KernelContext

    return KernelContext(node=None, opset=18, num_outputs=outputs)


@pytest.mark.parametrize("axis, sizes", [(2, [4, 4, 2]), (-1, [1, 9]), (1, [2, 4]), (0, [1, 1]), (1, [6, 0])])
def test_split_equals_numpy(axis, sizes, threads):
    """PyTorch's q/k/v split runs along the last axis: strided parts copied out by rows in numba
    (opset 13's split input and 18's num_outputs), outermost ones as views; as numpy's split."""
    from inference.kernels.row_copies import split_13, split_18

    x = _f32(2, 6, 10)
    want = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    for got in (split_13(x, np.array(sizes), axis=axis, ctx=_ctx(len(sizes))),
                split_18(x, np.array(sizes), axis=axis, ctx=_ctx(len(sizes)))):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.flags.c_contiguous
            np.testing.assert_array_equal(g, w)
    even = split_18(x[:, :, :9], axis=-1, num_outputs=3, ctx=_ctx(3))
    np.testing.assert_array_equal(np.concatenate(even, axis=-1), x[:, :, :9])


def test_split_errors_as_the_reference():
    from inference.kernels.row_copies import split_13, split_18

    with pytest.raises(KernelError):
        split_13(_f32(2, 6), np.array([2, 2]), axis=1, ctx=_ctx(2))
    with pytest.raises(KernelError, match="either the split input or the num_outputs"):
        split_18(_f32(2, 6), np.array([3, 3]), axis=1, num_outputs=2, ctx=_ctx(2))
