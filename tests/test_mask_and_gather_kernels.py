"""Gather, Where, Expand and Cast to float32 in numba (``inference.kernels.gather``, ``.broadcast``,
``.cast``), the ops of token embeddings, PyTorch's q/k/v split and attention masks: equal to
numpy at one and two threads, anything else through the reference ops and their errors."""
from __future__ import annotations

import numpy as np
import pytest

from inference.errors import KernelError
from inference.kernels.broadcast import MAX_ELEMENTS, expand_float32, where_float32
from inference.kernels.cast import fast_cast
from inference.kernels.gather import gather_table, gather_rows

RNG = np.random.default_rng(21)


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape, axis, indices", [
    ((50, 16), 0, np.array([[3, 7, 49], [0, -1, -50]])),  # token ids, negative ones from the end
    ((3, 8, 1, 32), 0, np.array(1)),  # a scalar index: PyTorch's q/k/v split
    ((4, 6, 5), 1, np.array([5, 0, 0, 2], np.int32)),
    ((4, 6, 5), -1, np.array([4, 1])),  # the last axis: rows of one element
    ((4, 0, 5), 2, np.array([1])),  # an empty tensor
], ids=str)
def test_gather_equals_numpy_take(shape, axis, indices, threads):
    data = _f32(*shape)
    got = gather_table(data, indices, axis=axis)
    np.testing.assert_array_equal(got, np.take(data, indices, axis=axis))
    assert got.dtype == np.float32 and got.flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.float64])
def test_gather_of_tables_of_other_types_equals_numpy_take(dtype, threads):
    """A quantized model's int8 or uint8 token table, and the other numeric tables: the same kernel."""
    if np.dtype(dtype).kind == "f":
        data = RNG.standard_normal((40, 24)).astype(dtype)
    else:  # the type's whole range, its extremes included
        info = np.iinfo(dtype)
        data = RNG.integers(info.min, info.max, (40, 24), endpoint=True).astype(dtype)
    indices = np.array([[0, 39, -1], [7, 7, -40]])
    got = gather_table(data, indices, axis=0)
    np.testing.assert_array_equal(got, np.take(data, indices, axis=0))
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(gather_table(data, np.array([3, 1]), axis=1), data[:, [3, 1]])


def test_gather_index_out_of_range_is_the_reference_error():
    with pytest.raises(KernelError, match="Gather index out of range"):
        gather_table(_f32(5, 4), np.array([0, 5]), axis=0)
    with pytest.raises(KernelError, match="Gather index out of range"):
        gather_table(_f32(5, 4), np.array([-6]), axis=0)


def test_gather_rows_checks_indices_itself():
    """A replay calls the numba kernel alone: a bad index raises there, never reads past the data."""
    out = np.empty((1, 2, 4), np.float32)
    with pytest.raises(IndexError):
        gather_rows(_f32(1, 5, 4), np.array([1, 5]), out)


def test_gather_of_other_dtypes_goes_to_the_reference():
    data = RNG.integers(0, 9, (5, 3))
    np.testing.assert_array_equal(gather_table(data, np.array([4, 0]), axis=0), data[[4, 0]])


@pytest.mark.parametrize("shapes", [
    ((2, 16), (), ()),  # PyTorch's Where(mask, -inf, 0)
    ((2, 1, 16), (), (2, 4, 16)),  # masked_fill of scores
    ((1, 1, 256, 256), (), (1, 4, 256, 256)),  # a causal mask over GPT-2's scores: 262K elements
    ((16,), (16,), (1,)),
    ((), (3, 5), (3, 5)),  # a rank-0 condition
    ((4,), (), ()),  # rank 1 output
], ids=str)
def test_where_equals_numpy(shapes, threads):
    c = RNG.random(shapes[0]) > 0.5
    x, y = _f32(*shapes[1]), _f32(*shapes[2])
    x.reshape(-1)[:1] = -np.inf
    y.reshape(-1)[:1] = np.nan
    got = where_float32(c, x, y)
    np.testing.assert_array_equal(got, np.where(c, x, y))
    assert got.dtype == np.float32


def test_where_elsewhere_goes_to_numpy():
    c = RNG.random((3, 4)) > 0.5
    ints = RNG.integers(0, 9, (3, 4))
    np.testing.assert_array_equal(where_float32(c, ints, ints * 2), np.where(c, ints, ints * 2))
    empty = _f32(0, 3)
    assert where_float32(np.ones((0, 3), bool), empty, empty).shape == (0, 3)
    with pytest.raises(ValueError, match="could not be broadcast"):  # the reference's (the session names the node)
        where_float32(c, _f32(3, 5), _f32(3, 4))


@pytest.mark.parametrize("shape, target", [((1, 1, 1, 16), (1, 4, 1, 16)), ((3, 1), (2, 3, 5)), ((), (2, 2)),
                                           ((5,), (1,)), ((2, 1, 3), (2, 4, 3))], ids=str)
def test_expand_equals_numpy(shape, target, threads):
    x = _f32(*shape)
    got = expand_float32(x, np.array(target, np.int64))
    want = x * np.ones(target, np.float32)
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous and got.flags.writeable


def test_a_large_expand_goes_to_numpy():
    x = _f32(1, 128)
    got = expand_float32(x, np.array([MAX_ELEMENTS // 128 + 1, 128], np.int64))
    np.testing.assert_array_equal(got, np.broadcast_to(x, got.shape))


def test_expand_errors_as_the_reference():
    with pytest.raises(KernelError, match="not broadcast-compatible"):
        expand_float32(_f32(3, 4), np.array([2, 3], np.int64))


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint8, np.int32, np.int64, np.uint64, np.float64])
def test_cast_to_float32_equals_numpy(dtype):
    """Hugging Face's int64 attention mask, bool masks, ids; values past float32's 24-bit mantissa
    round to nearest even as numpy's; float64's inf, NaN and overflow as numpy's."""
    if dtype == np.float64:
        x = np.array([0.1, -2.5, np.inf, -np.inf, np.nan, 1e300, -1e-300, 16777217.0])
    elif dtype == np.bool_:
        x = RNG.random((2, 1, 1, 9)) < 0.5
    else:
        info = np.iinfo(dtype)
        x = np.array([info.min, info.max, 0, 1, 16777217 % (int(info.max) + 1)], dtype)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(fast_cast(x, to=1), x.astype(np.float32))


def test_other_casts_go_to_the_reference():
    x = _f32(3)
    np.testing.assert_array_equal(fast_cast(x, to=7), x.astype(np.int64))
    assert fast_cast(x, to=1) is x  # float32 to float32: the input itself


@pytest.mark.parametrize("value", [None, np.array([0.0], np.float32), np.array([-2.5], np.float32)])
def test_constant_of_shape_fills_float32_in_numba(value):
    from inference.kernels.broadcast import constant_of_shape_float32
    from inference.ops.generators import constant_of_shape
    shape = np.array([2, 3, 64], np.int64)
    got, want = constant_of_shape_float32(shape, value=value), constant_of_shape(shape, value=value)
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_constant_of_shape_of_other_values_goes_to_the_reference():
    from inference.kernels.broadcast import constant_of_shape_float32
    got = constant_of_shape_float32(np.array([2, 2], np.int64), value=np.array([7], np.int64))
    assert got.dtype == np.int64 and got.tolist() == [[7, 7], [7, 7]]
    with pytest.raises(KernelError, match="negative dim"):
        constant_of_shape_float32(np.array([2, -1], np.int64))
