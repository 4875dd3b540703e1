"""Elementwise, activation and cast kernels: what onnx's node tests leave out (errors, edge cases)."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto

from inference.errors import KernelError, ShapeInferenceError
from inference.ops import activation, binary, cast, unary
from inference.ops.registry import lookup


def test_erf_matches_math_erf_to_double_precision():
    x = np.linspace(-7, 7, 20001)
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(unary.erf(x), expected, rtol=1e-14, atol=1e-300)
    special = unary.erf(np.array([np.inf, -np.inf, np.nan, -0.0]))
    assert special[0] == 1 and special[1] == -1 and np.isnan(special[2]) and np.signbit(special[3])


def test_zero_d_inputs_give_arrays_of_the_input_dtype():
    a = np.array(1.5, np.float32)
    add = lookup("Add", "", 14).fn
    for out in (add(a, a), activation.relu(a), unary.is_nan(a), cast.cast(a, to=TensorProto.INT32)):
        assert isinstance(out, np.ndarray) and out.ndim == 0
    assert add(a, a).dtype == np.float32


def test_float16_and_bfloat16_keep_their_dtype():
    for dtype in (np.float16, ml_dtypes.bfloat16):
        x = np.array([-1.0, 0.5, 3.0], dtype)
        assert activation.gelu(x).dtype == dtype
        assert activation.hard_swish(x).dtype == dtype
        assert lookup("Mul", "", 14).fn(x, x).dtype == dtype


def test_integer_div_truncates_toward_zero():
    div = lookup("Div", "", 14).fn
    got = div(np.array([7, -7, 7, -7, 6], np.int32), np.array([2, 2, -2, -2, -3], np.int32))
    np.testing.assert_array_equal(got, [3, -3, -3, 3, -2])


def test_legacy_broadcast_aligns_from_axis():
    add_1 = lookup("Add", "", 6).fn
    a = np.zeros((2, 3, 4), np.float32)
    got = add_1(a, np.array([1, 2, 3], np.float32), broadcast=1, axis=1)
    np.testing.assert_array_equal(got[:, :, 0], [[1, 2, 3], [1, 2, 3]])
    with pytest.raises(ShapeInferenceError, match="broadcast=0"):
        add_1(a, np.ones(4, np.float32))


def test_mod_rejects_bad_fmod():
    with pytest.raises(KernelError, match="fmod must be 0 or 1"):
        binary.mod(np.array([1]), np.array([2]), fmod=2)


def test_pow_negative_integer_exponent_is_an_error():
    with pytest.raises(KernelError, match="negative integer exponent"):
        binary.pow_(np.array([2], np.int32), np.array([-1], np.int32))


def test_bitshift_rejects_unknown_direction():
    with pytest.raises(KernelError, match="direction"):
        binary.bit_shift(np.array([1], np.uint8), np.array([1], np.uint8), direction="UP")


def test_clip_legacy_attributes_and_min_above_max():
    x = np.array([-2.0, 0.5, 2.0], np.float32)
    np.testing.assert_array_equal(activation.clip_6(x, min=-1.0), [-1.0, 0.5, 2.0])
    np.testing.assert_array_equal(
        activation.clip(x, np.array(1.0, np.float32), np.array(0.0, np.float32)), [0, 0, 0])
    with pytest.raises(ShapeInferenceError, match="min must be a scalar"):
        activation.clip(x, np.zeros(2, np.float32))


def test_prelu_errors_and_opset6_per_channel_slope():
    x = -np.ones((2, 3, 4), np.float32)
    with pytest.raises(ShapeInferenceError, match="does not broadcast"):
        activation.prelu(x, np.ones(3, np.float32))
    got = activation.prelu_6(x, np.array([1, 2, 3], np.float32))
    np.testing.assert_array_equal(got[0, :, 0], [-1, -2, -3])


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(KernelError, match="approximate"):
        activation.gelu(np.zeros(2, np.float32), approximate="fast")


def test_sigmoid_and_softplus_do_not_overflow():
    x = np.array([-1000.0, 1000.0], np.float32)
    np.testing.assert_array_equal(activation.sigmoid(x), [0.0, 1.0])
    np.testing.assert_array_equal(activation.softplus(x), [0.0, 1000.0])


def test_cast_strings_both_ways():
    parsed = cast.cast(np.array(["3.5", "1e-5", "+INF", "-inf", "NaN"], dtype=object), to=TensorProto.FLOAT)
    assert parsed.dtype == np.float32
    np.testing.assert_array_equal(parsed, np.array([3.5, 1e-5, np.inf, -np.inf, np.nan], np.float32))
    big = cast.cast(np.array(["9007199254740993"], dtype=object), to=TensorProto.INT64)
    assert big[0] == 9007199254740993  # parsed as an integer, not through float64
    text = cast.cast(np.array([314.15926, -1.5], np.float32), to=TensorProto.STRING)
    assert text.dtype == object and list(text) == ["314.15927", "-1.5"]
    with pytest.raises(KernelError, match="cannot parse"):
        cast.cast(np.array(["hello"], dtype=object), to=TensorProto.FLOAT)


def test_cast_opset1_takes_a_type_name():
    assert cast.cast_1(np.array([1.7]), to="INT32").dtype == np.int32
    with pytest.raises(KernelError, match="unknown target type"):
        cast.cast_1(np.array([1.7]), to="REAL")


@pytest.mark.parametrize("mode,saturate,expected", [
    ("up", 1, [2.0 ** -127, 0.25, 0.5, 2.0, 2.0 ** 127, 2.0 ** 127]),
    ("down", 1, [2.0 ** -127, 0.25, 0.25, 1.0, 2.0 ** 127, 2.0 ** 127]),
    ("nearest", 1, [2.0 ** -127, 0.25, 0.5, 1.0, 2.0 ** 127, 2.0 ** 127]),
    ("nearest", 0, [np.nan, 0.25, 0.5, 1.0, np.nan, np.nan]),
])
def test_cast_to_e8m0_rounding_modes(mode, saturate, expected):
    x = np.array([0.0, 0.25, 0.375, 1.4, 3e38, np.inf], np.float32)
    got = cast.cast(x, to=TensorProto.FLOAT8E8M0, round_mode=mode, saturate=saturate)
    assert got.dtype == ml_dtypes.float8_e8m0fnu
    np.testing.assert_array_equal(got.astype(np.float64), expected)


def test_cast_rejects_unknown_round_mode():
    with pytest.raises(KernelError, match="round_mode"):
        cast.cast(np.ones(1, np.float32), to=TensorProto.FLOAT8E8M0, round_mode="even")


def test_bitcast_width_mismatch_is_an_error():
    with pytest.raises(KernelError, match="differ in width"):
        cast.bit_cast(np.ones(2, np.float32), to=TensorProto.INT64)
