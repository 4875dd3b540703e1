"""Neural-network reference kernels: behaviour the ONNX node tests do not cover."""
from __future__ import annotations

import numpy as np
import pytest

import inference.ops  # noqa: F401  (registers kernels)
from inference.errors import KernelError
from inference.ops._window import window_geometry
from inference.ops.registry import KernelContext, lookup

RNG = np.random.default_rng(0)


def run(op: str, *inputs, opset: int = 22, num_outputs: int = 1, **attrs):
    entry = lookup(op, "", opset)
    assert entry is not None, f"no kernel for {op} at opset {opset}"
    if entry.wants_ctx:
        attrs["ctx"] = KernelContext(node=None, opset=opset, num_outputs=num_outputs)
    return entry.fn(*inputs, **attrs)


def randn(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# --- window geometry and errors ---------------------------------------------------------------

def test_window_geometry_same_upper_puts_extra_pad_at_end():
    win = window_geometry((5,), (4,), (2,), auto_pad="SAME_UPPER")
    assert win.out_shape == (3,) and win.pads_begin == (1,) and win.pads_end == (2,)
    win = window_geometry((5,), (4,), (2,), auto_pad="SAME_LOWER")
    assert win.pads_begin == (2,) and win.pads_end == (1,)


def test_window_geometry_rejects_bad_auto_pad_and_oversized_kernel():
    with pytest.raises(KernelError, match="auto_pad"):
        window_geometry((5, 5), (3, 3), auto_pad="SAME")
    with pytest.raises(KernelError, match="does not fit"):
        window_geometry((2, 2), (3, 3))


def test_conv_channel_mismatch_names_shapes():
    with pytest.raises(KernelError, match="group=2"):
        run("Conv", randn(1, 3, 5, 5), randn(4, 1, 3, 3), group=2)


def test_pool_needs_kernel_shape():
    with pytest.raises(KernelError, match="kernel_shape"):
        run("MaxPool", randn(1, 1, 4, 4))


def test_unit_kernel_pool_returns_a_fresh_writeable_array():
    x = randn(1, 2, 3, 3)
    y = run("MaxPool", x, kernel_shape=[1, 1])
    assert y.flags.writeable and not np.shares_memory(x, y)
    np.testing.assert_array_equal(y, x)


def test_maxpool_indices_column_major_storage_order():
    x = randn(2, 3, 4, 5)
    y, idx = run("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2], storage_order=1, num_outputs=2)
    n, c, h, w = np.unravel_index(idx, (2, 3, 5, 4))  # column-major within each image: W before H
    np.testing.assert_array_equal(x[n, c, w, h], y)


# --- conv family ------------------------------------------------------------------------------

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_is_adjoint_of_conv(nd):
    """<conv(x, w), y> == <x, conv_transpose(y, w)> for strided, dilated, padded geometry."""
    x = randn(2, 4, *([7] * nd)).astype(np.float64)
    w = randn(6, 2, *([3] * nd)).astype(np.float64)
    attrs = dict(strides=[2] * nd, dilations=[2] * nd, pads=[1] * (2 * nd), group=2)
    y = run("Conv", x, w, **attrs)
    y_probe = RNG.standard_normal(y.shape)
    back = run("ConvTranspose", y_probe, w, output_shape=list(x.shape[2:]), **attrs)  # W is (C_in, M/g, k)
    assert back.shape == x.shape
    np.testing.assert_allclose((y * y_probe).sum(), (x * back).sum(), rtol=1e-9)


@pytest.mark.parametrize("nd", [1, 3])
def test_deform_conv_with_zero_offsets_is_conv(nd):
    x, w, b = randn(2, 4, *([5] * nd)), randn(6, 2, *([2] * nd)), randn(6)
    out = run("Conv", x, w, b, group=2, pads=[1] * (2 * nd))
    offset = np.zeros((2, 2 * nd * 2 ** nd) + out.shape[2:], np.float32)
    got = run("DeformConv", x, w, offset, b, group=2, offset_group=2, pads=[1] * (2 * nd))
    np.testing.assert_allclose(got, out, rtol=1e-5, atol=1e-5)


def test_qlinear_conv_per_channel_weight_scale():
    x = RNG.integers(0, 255, (1, 2, 4, 4), dtype=np.uint8)
    w = RNG.integers(-100, 100, (3, 2, 2, 2), dtype=np.int8)
    w_scale = np.array([0.01, 0.02, 0.03], np.float32)
    y = run("QLinearConv", x, np.float32(0.05), np.uint8(128), w, w_scale, np.zeros(3, np.int8),
            np.float32(0.2), np.uint8(100), opset=10)
    real = run("Conv", (x.astype(np.float32) - 128) * 0.05, w.astype(np.float32) * w_scale[:, None, None, None])
    expected = np.clip(np.rint(real / 0.2) + 100, 0, 255)
    assert y.dtype == np.uint8
    np.testing.assert_allclose(y, expected, atol=1)


# --- quantization -----------------------------------------------------------------------------

def test_quantize_blocked_scale_shape_is_checked():
    with pytest.raises(KernelError, match="blocked scale"):
        run("QuantizeLinear", randn(2, 6), np.ones((2, 2), np.float32), np.zeros((2, 2), np.uint8),
            opset=21, axis=1, block_size=2)


def test_quantize_then_dequantize_per_axis_roundtrip():
    x = randn(3, 4)
    scale = np.array([0.01, 0.02, 0.03], np.float32)
    q = run("QuantizeLinear", x, scale, np.zeros(3, np.int8), axis=0)
    back = run("DequantizeLinear", q, scale, np.zeros(3, np.int8), axis=0)
    assert q.dtype == np.int8 and back.dtype == np.float32
    inside = np.abs(x) < 1.2  # values that do not saturate
    np.testing.assert_allclose(back[inside], x[inside], atol=0.016)


def test_dynamic_quantize_all_zero_input():
    y, scale, zp = run("DynamicQuantizeLinear", np.zeros((2, 3), np.float32), opset=11)
    assert y.dtype == np.uint8 and not y.any() and scale == 1 and zp == 0  # scale 1: onnxruntime's, not a zero divisor


# --- softmax, dropout, losses -----------------------------------------------------------------

def test_softmax_axis_out_of_range():
    with pytest.raises(KernelError, match="axis 2"):
        run("Softmax", randn(3, 4), opset=13, axis=2)


def test_softmax_before_opset_13_flattens():
    x = randn(2, 3, 4)
    y = run("Softmax", x, opset=11, axis=1)
    np.testing.assert_allclose(y.reshape(2, 12).sum(axis=1), 1.0, rtol=1e-6)


def test_training_dropout_rescales_kept_values():
    x = np.ones((1000,), np.float32)
    y, mask = run("Dropout", x, np.float32(0.5), np.bool_(True), num_outputs=2, seed=3)
    assert y.dtype == np.float32 and mask.dtype == bool
    assert set(np.unique(y)) <= {0.0, 2.0} and np.array_equal(y == 2.0, mask)
    assert 400 < mask.sum() < 600


def test_dropout_rejects_ratio_one():
    with pytest.raises(KernelError, match="ratio"):
        run("Dropout", randn(3), np.float32(1.0), np.bool_(True))


def test_nll_loss_bad_reduction():
    with pytest.raises(KernelError, match="reduction"):
        run("NegativeLogLikelihoodLoss", randn(2, 3), np.array([0, 1]), opset=13, reduction="avg")


# --- resize and sampling ----------------------------------------------------------------------

def test_resize_integer_input_rounds_and_keeps_dtype():
    x = np.array([[[[0, 255]]]], np.uint8)
    y = run("Resize", x, None, None, np.array([1, 1, 1, 3], np.int64), opset=19, mode="linear",
            coordinate_transformation_mode="align_corners")
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, [[[[0, 128, 255]]]])


def test_resize_needs_scales_or_sizes():
    with pytest.raises(KernelError, match="scales or sizes"):
        run("Resize", randn(1, 1, 2, 2), None, None, None, opset=19)


@pytest.mark.parametrize("align_corners", [0, 1])
@pytest.mark.parametrize("mode", ["linear", "cubic", "nearest"])
def test_identity_affine_grid_resamples_input_exactly(align_corners, mode):
    x = randn(2, 3, 4, 5)
    theta = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))
    grid = run("AffineGrid", theta, np.array(x.shape, np.int64), opset=20, align_corners=align_corners)
    y = run("GridSample", x, grid, mode=mode, align_corners=align_corners)
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


def test_nms_limits_per_class_and_suppresses_overlap():
    boxes = np.array([[[0, 0, 1, 1], [0, 0.05, 1, 1.05], [2, 2, 3, 3]]], np.float32)
    scores = np.array([[[0.9, 0.8, 0.7]]], np.float32)
    sel = run("NonMaxSuppression", boxes, scores, np.array([5]), np.array([0.5], np.float32), opset=11)
    np.testing.assert_array_equal(sel, [[0, 0, 0], [0, 0, 2]])
    sel = run("NonMaxSuppression", boxes, scores, np.array([1]), np.array([0.5], np.float32), opset=11)
    np.testing.assert_array_equal(sel, [[0, 0, 0]])
