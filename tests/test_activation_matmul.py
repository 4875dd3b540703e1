"""MatMul of two activations on our tile (``inference.kernels.activation_matmul``): equal to a float64
product within float32 rounding at one and two threads, whatever the tile's row and column edges;
what it does not take (a broadcast batch, a 1-D operand, other dtypes, a bad shape) is numpy's."""
from __future__ import annotations

import numpy as np
import pytest

from inference.errors import KernelError
from inference.kernels._jit import kernel_threads
from inference.kernels.activation_matmul import activation_matmul, product_plan
from inference.kernels.rows_gemm import pack_panels

RNG = np.random.default_rng(21)


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("a_shape,b_shape", [
    ((1, 4, 128, 64), (1, 4, 64, 128)),  # attention's Q @ K^T
    ((1, 4, 128, 128), (1, 4, 128, 64)),  # and P @ V
    ((3, 5, 7), (3, 7, 9)),  # rows fewer than a tile, columns fewer than a panel
    ((2, 3, 1, 17), (2, 3, 17, 40)),  # one row
    ((5, 33), (33, 70)),  # 2-D: a partial last panel
    ((7, 20, 16), (16, 16)),  # a batch against one matrix: one product of 140 rows
    ((2, 13, 1), (2, 1, 100)),  # K = 1
    ((3, 1031), (1031, 700)),  # fewer rows than a tile: unpacked, two column blocks, K not of fours
], ids=str)
def test_products_equal_float64(a_shape, b_shape, threads):
    assert kernel_threads() == threads
    a, b = _f32(*a_shape), _f32(*b_shape)
    got = activation_matmul(a, b)
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert got.shape == want.shape and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(a_shape[-1]))


def test_views_and_non_finite_values(threads):
    a, b = _f32(2, 30, 80)[:, :, ::2], _f32(2, 50, 40).transpose(0, 2, 1)  # strided, transposed
    a[0, 3, 5], b[1, 7, 2] = np.nan, np.inf
    got = activation_matmul(a, b)
    with np.errstate(invalid="ignore"):
        want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)


def test_packing_pads_the_last_panel_with_zeros():
    b = _f32(3, 5, 20)
    wp = np.full(2 * 5 * 16 + 7, 9.0, np.float32)
    pack_panels(b.reshape(-1), 1 * 5 * 20, 5, 20, 20, 16, wp, 7, 0, 2)
    panels = wp[7:].reshape(2, 5, 16)
    np.testing.assert_array_equal(panels[0], b[1, :, :16])
    np.testing.assert_array_equal(panels[1, :, :4], b[1, :, 16:])
    assert not panels[1, :, 4:].any()
    assert (wp[:7] == 9.0).all()


def test_only_replaying_predictors_ask_for_it():
    """Training's sessions and a Predictor without replay keep numpy's product."""
    from inference import Config, Predictor, zoo
    from inference.onnx_export import model_to_proto

    proto = model_to_proto(zoo.transformer_encoder(seq=8, dim=16, heads=2, layers=1, ffn=32)).SerializeToString()

    def kernels(**config):
        p = Predictor(Config(model_path=proto, **config))
        return {s.kernel.fn for s in p.session.steps if s.node.op_type == "MatMul"}

    assert kernels() == {activation_matmul}
    assert activation_matmul not in kernels(kernel_replay=False) | kernels(memory_arena=False)


def test_what_the_tile_does_not_take_is_numpys():
    a, b = _f32(2, 3, 4, 5), _f32(1, 3, 5, 6)  # a broadcast batch
    np.testing.assert_array_equal(activation_matmul(a, b), np.matmul(a, b))
    assert product_plan(a.shape, b.shape) is None
    v, w = _f32(5), _f32(5, 3)  # a 1-D operand
    np.testing.assert_array_equal(activation_matmul(v, w), np.matmul(v, w))
    ints = RNG.integers(-5, 5, (3, 4)), RNG.integers(-5, 5, (4, 2))
    np.testing.assert_array_equal(activation_matmul(*ints), ints[0] @ ints[1])
    x64 = _f32(3, 4).astype(np.float64)
    assert activation_matmul(x64, _f32(4, 2)).dtype == np.float64
    assert product_plan((8, 1100), (1100, 1024)) is None  # 4.3 MB of panels: BLAS packs it in blocks
    assert product_plan((2, 1100), (1100, 1024)) is not None  # fewer rows than a tile: nothing packed
    empty = activation_matmul(_f32(2, 0, 4), _f32(2, 4, 3))
    assert empty.shape == (2, 0, 3)
    with pytest.raises((KernelError, ValueError)):
        activation_matmul(_f32(2, 3), _f32(4, 2))
