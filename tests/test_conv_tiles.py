"""The float32 implicit-GEMM convolution (``inference.kernels.conv_f32``) against the reference
FusedConv: every layout of its plan, groups, pads, dilation, batches, residuals, activations, both
tile orders and both thread twins; the depthwise kernels (flat, channels-last, rows) and the
separable max and average pools against the reference ops."""
from __future__ import annotations

import numba
import numpy as np
import pytest

import inference.kernels  # noqa: F401  (registers the fast kernels and the fused ops)
from inference.kernels import conv as fast_conv
from inference.kernels import conv_f32, pool
from inference.kernels._jit import serial_kernels
from inference.kernels.activations import activation_code
from inference.kernels.fused import DOMAIN
from inference.ops.registry import KernelContext, lookup

RTOL, ATOL = 1e-4, 1e-5

CASES = [  # (N, C, M, H, W, kernel, strides, pads, dilations, group, layout the tile plans)
    (1, 16, 24, 20, 20, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "direct"),
    (2, 5, 7, 13, 11, (3, 3), (1, 1), (0, 2, 1, 0), (1, 1), 1, "direct"),  # asymmetric pads, batch 2
    (1, 8, 13, 12, 10, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1, "direct"),  # dilated
    (1, 12, 30, 9, 9, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "direct"),  # pointwise
    (1, 3, 16, 30, 30, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, "s2d2"),  # a stem
    (3, 6, 10, 15, 17, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, "s2d2"),  # odd sizes, batch 3
    (1, 4, 9, 16, 16, (5, 5), (3, 3), (2, 2, 2, 2), (1, 1), 1, "s2d3"),
    (1, 16, 12, 14, 14, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, "subsample"),
    (1, 24, 36, 8, 8, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 4, "direct"),  # grouped (shufflenet)
    (2, 12, 18, 10, 10, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3, "direct"),
    (2, 8, 12, 11, 11, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 2, "s2d2"),  # grouped phases: a call per group
    (3, 20, 14, 10, 12, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2, "direct"),  # pointwise in place: block + tail
]


def _rand(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _fused(case, activation="", alpha=0.0, beta=0.0):
    n, c, m, h, w, k, s, p, d, g, _ = case
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(p), dilations=list(d), group=g,
                 activation=activation, alpha=alpha, beta=beta)
    # the kind a Predictor plans for a constant weight: the one that runs the tile
    fast, ref = lookup("FusedConv", DOMAIN, 1, fast_conv.PACKED), lookup("FusedConv", DOMAIN, 1, "reference")
    return fast.bind(**attrs), (lambda *xs: ref.fn(*xs, **attrs))


def _inputs(case, seed=0, residual=False):
    n, c, m, h, w, k, s, p, d, g, _ = case
    rng = np.random.default_rng(seed)
    x, wt, b = _rand(rng, n, c, h, w), _rand(rng, m, c // g, *k), _rand(rng, m)
    oh = (h + p[0] + p[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (w + p[1] + p[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    return x, wt, b, (_rand(rng, n, m, oh, ow) if residual else None)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[-1]}-{i}" for i, c in enumerate(CASES)])
def test_the_tile_plans_the_expected_layout(case):
    x, wt, _, _ = _inputs(case)
    n, c, m, h, w, k, s, p, d, g, layout = case
    win = fast_conv._window((h, w), k, s, d, p, "NOTSET")
    plan = fast_conv.tile_plan(x.shape, wt.shape, win, g)
    assert plan is not None and plan.layout == layout


@pytest.mark.parametrize("case", CASES, ids=[f"{c[-1]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("activation,alpha,beta", [("", 0.0, 0.0), ("Relu", 0.0, 0.0), ("Clip", -0.5, 0.5),
                                                   ("HardSwish", 0.0, 0.0), ("Gelu", 0.0, 0.0)])
@pytest.mark.parametrize("residual", [False, True])
def test_tile_conv_matches_reference(case, activation, alpha, beta, residual):
    x, wt, b, z = _inputs(case, residual=residual)
    fast, ref = _fused(case, activation, alpha, beta)
    args = (x, wt, b, z) if residual else (x, wt, b)
    got, want = fast(*args), ref(*args)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # the tile itself, also where the session's size rule picks the direct 3x3 kernel
    tile = _direct_call(case, x, wt, b, z, activation, alpha, beta)
    np.testing.assert_allclose(tile, want, rtol=RTOL, atol=ATOL)


def _direct_call(case, x, wt, b, z=None, activation="Relu", alpha=0.0, beta=0.0):
    n, c, m, h, w, k, s, p, d, g, _ = case
    win = fast_conv._window((h, w), k, s, d, p, "NOTSET")
    plan = fast_conv.tile_plan(x.shape, wt.shape, win, g)
    return conv_f32.conv2d_tiles(x, wt, b, z, plan, g, activation_code(activation), alpha, beta)


@pytest.mark.parametrize("case", [CASES[0], CASES[5], CASES[9]])
def test_serial_and_parallel_twins_agree(case):
    x, wt, b, z = _inputs(case, seed=3, residual=True)
    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        threaded = _direct_call(case, x, wt, b, z)
        with serial_kernels():
            serial = _direct_call(case, x, wt, b, z)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(threaded, serial)  # each output is one tile's sum: same order


def test_both_tile_orders_agree():
    """Weights larger than the input run channel blocks outermost; the other order must agree."""
    case = (1, 64, 70, 5, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "direct")
    x, wt, b, _ = _inputs(case, seed=4)
    assert conv_f32.packed_weights(wt, 1, "direct").size > 64 * 7 * 7  # the weights-outer order
    small = _inputs((1, 64, 70, 30, 30) + case[5:], seed=4)
    for xx in (x, small[0]):
        got = _direct_call(case[:3] + xx.shape[2:] + case[5:], xx, wt, b)
        want = _fused(case[:3] + xx.shape[2:] + case[5:], "Relu")[1](xx, wt, b)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-4)  # 576-term sums of magnitude ~25


def test_packed_weights_follow_the_array_not_its_shape():
    case = CASES[0]
    x, wt, b, _ = _inputs(case, seed=5)
    first = _direct_call(case, x, wt, b)
    assert conv_f32.packed_weights(wt, 1, "direct") is conv_f32.packed_weights(wt, 1, "direct")  # packed once
    other = wt * np.float32(-2.0)  # same shape, another array: packed anew
    second = _direct_call(case, x, other, b)
    np.testing.assert_allclose(second, _fused(case, "Relu")[1](x, other, b), rtol=RTOL, atol=ATOL)
    assert not np.allclose(first, second)


def test_dilated_strided_convolutions_stay_on_im2col():
    x, wt = np.zeros((1, 4, 12, 12), np.float32), np.zeros((8, 4, 3, 3), np.float32)
    win = fast_conv._window((12, 12), (3, 3), (2, 2), (2, 2), (2, 2, 2, 2), "NOTSET")
    assert fast_conv.tile_plan(x.shape, wt.shape, win, 1) is None


def test_depthwise_convolutions_keep_their_stencil():
    x, wt = np.zeros((1, 8, 12, 12), np.float32), np.zeros((8, 1, 3, 3), np.float32)
    win = fast_conv._window((12, 12), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), "NOTSET")
    assert fast_conv.tile_plan(x.shape, wt.shape, win, 8) is None


# -- separable pooling (max and average), 3x3/2 pools specialised ------------------------------------------------------------
MAX_POOL_CASES = [  # (shape, kernel, strides, pads, ceil_mode)
    ((1, 64, 112, 112), (3, 3), (2, 2), (1, 1, 1, 1), 0),  # ResNet's stem pool
    ((1, 16, 111, 111), (3, 3), (2, 2), (0, 0, 0, 0), 1),  # squeezenet's, past the edge
    ((2, 8, 9, 9), (3, 2), (1, 2), (0, 1, 1, 0), 1),
    ((1, 4, 10, 7), (2, 3), (3, 1), (1, 0, 0, 2), 0),
    ((1, 3, 5, 5), (5, 5), (1, 1), (2, 2, 2, 2), 0),
    ((2, 5, 8, 9), (3, 3), (2, 2), (0, 1, 2, 0), 1),  # 3x3/2 asymmetric pads, past the edge, batch 2
    ((1, 3, 4, 3), (3, 3), (2, 2), (2, 2, 2, 2), 0),  # pads of 2: windows that hold one row
]


@pytest.mark.parametrize("shape,kernel,strides,pads,ceil", MAX_POOL_CASES)
@pytest.mark.parametrize("op,include_pad", [("MaxPool", 0), ("AveragePool", 0), ("AveragePool", 1)])
def test_separable_pool_matches_reference(shape, kernel, strides, pads, ceil, op, include_pad):
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    plan = pool._pool_plan(shape[2:], kernel, strides, None, pads, "NOTSET", ceil, include_pad, op)
    assert plan[2] == (pool.POOL_3X3S2 if kernel == (3, 3) and strides == (2, 2) else pool.POOL_ROWS)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads), ceil_mode=ceil)
    if op == "MaxPool":
        ctx = KernelContext(node=None, opset=13, num_outputs=1)
        want = lookup("MaxPool", "", 13, "reference").fn(x, ctx=ctx, **attrs)
        np.testing.assert_array_equal(pool._run_plan(x, plan), want)
    else:
        want = lookup("AveragePool", "", 19, "reference").fn(x, count_include_pad=include_pad, **attrs)
        np.testing.assert_allclose(pool._run_plan(x, plan), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_3x3s2_pool_parallel_twin_agrees(op):
    from inference.kernels._jit import use_parallel_kernels

    x = np.random.default_rng(7).standard_normal((2, 6, 15, 14)).astype(np.float32)
    plan = pool._pool_plan(x.shape[2:], (3, 3), (2, 2), None, (1, 1, 1, 1), "NOTSET", 0, 0, op)
    serial = pool._run_plan(x, plan)
    before = numba.get_num_threads()
    use_parallel_kernels(True)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        threaded = pool._run_plan(x, plan)
    finally:
        use_parallel_kernels(False)
        numba.set_num_threads(before)
    np.testing.assert_array_equal(threaded, serial)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("shape,strides", [((2, 6, 7, 7), (1, 1)), ((1, 5, 4, 6), (2, 3))])
def test_a_window_over_the_whole_plane_runs_the_global_kernel(op, shape, strides):
    x = np.random.default_rng(12).standard_normal(shape).astype(np.float32)
    plan = pool._pool_plan(shape[2:], shape[2:], strides, None, (0, 0, 0, 0), "NOTSET", 0, 1, op)
    assert plan[2] == pool.POOL_GLOBAL and plan[0] == (1, 1)
    attrs = dict(kernel_shape=list(shape[2:]), strides=list(strides))
    if op == "MaxPool":
        want = lookup(op, "", 13, "reference").fn(x, ctx=KernelContext(node=None, opset=13, num_outputs=1), **attrs)
    else:
        want = lookup(op, "", 19, "reference").fn(x, **attrs)
    np.testing.assert_allclose(pool._run_plan(x, plan), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", [(5, 6, 10, 15, 17, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, "s2d2"),
                                  (4, 8, 10, 9, 15, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2, "direct")])
def test_batches_cut_into_calls_agree(case, monkeypatch):
    """Images are swept a few per GEMM call (their inputs stay in L2); one per call must agree."""
    x, wt, b, z = _inputs(case, seed=7, residual=True)
    whole = _direct_call(case, x, wt, b, z)
    monkeypatch.setattr(conv_f32, "IMAGE_BYTES", 1)
    np.testing.assert_array_equal(_direct_call(case, x, wt, b, z), whole)
    np.testing.assert_allclose(whole, _fused(case, "Relu")[1](x, wt, b, z), rtol=RTOL, atol=ATOL)


# -- depthwise: flat NCHW planes, or channels-last on small and strided maps ---------------------------
DEPTHWISE_CASES = [  # (N, C, H, W, kernel, strides, pads, dilations)
    (1, 16, 14, 14, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # shufflenet-sized
    (2, 5, 9, 12, (3, 3), (1, 1), (0, 2, 1, 0), (1, 1)),  # asymmetric pads, batch 2
    (1, 6, 13, 11, (5, 5), (1, 1), (4, 4, 4, 4), (2, 2)),  # 5x5 dilated: the general tap loop
    (1, 4, 8, 8, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1)),  # valid
    (1, 3, 7, 6, (1, 3), (1, 1), (0, 1, 0, 1), (1, 1)),
    (1, 16, 14, 14, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # MobileNet's and shufflenet's strided layers
    (2, 5, 13, 10, (3, 3), (2, 2), (0, 1, 1, 0), (1, 1)),  # odd sizes, asymmetric pads
    (1, 4, 15, 15, (5, 5), (3, 3), (2, 2, 2, 2), (1, 1)),  # 5x5 stride 3: the general tap loop
    (1, 6, 20, 18, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # 360 pixels: the flat kernel
    (2, 4, 21, 19, (5, 5), (1, 1), (4, 4, 4, 4), (2, 2)),  # flat, dilated 5x5
    (1, 5, 61, 60, (3, 3), (2, 2), (1, 0, 0, 1), (1, 1)),  # strided 3x3 on a large map: the row kernel
    (2, 3, 64, 62, (3, 3), (2, 2), (1, 1, 1, 1), (2, 2)),  # dilated, batch 2
    (1, 20, 9, 9, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),  # channels-last 3x3, dilated: 16 lanes + 4 masked
    (2, 40, 7, 8, (3, 3), (2, 1), (1, 0, 1, 1), (1, 1)),  # channels-last 3x3, mixed strides and pads
    (1, 16, 2, 1, (3, 3), (1, 1), (2, 2, 2, 2), (1, 1)),  # pads past a one-column map: border columns only
    (1, 32, 3, 3, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # 2x2 output, every column a border one
]


@pytest.mark.parametrize("hw,strides,kernel", [((7, 7), (1, 1), "channels_last"), ((14, 14), (1, 1), "channels_last"),
                                               ((28, 28), (1, 1), "flat"), ((56, 56), (2, 2), "channels_last"),
                                               ((112, 112), (2, 2), "rows")])
def test_depthwise_kernel_choice(hw, strides, kernel):
    win = fast_conv._window(hw, (3, 3), strides, (1, 1), (1, 1, 1, 1), "NOTSET")
    assert fast_conv.depthwise_kernel(hw, win) == kernel


@pytest.mark.parametrize("case", DEPTHWISE_CASES)
@pytest.mark.parametrize("activation,alpha,beta", [("Relu", 0.0, 0.0), ("Clip", 0.0, 6.0), ("HardSwish", 0.0, 0.0)])
@pytest.mark.parametrize("residual", [False, True])
def test_depthwise_matches_reference(case, activation, alpha, beta, residual):
    n, c, h, w, k, s, p, d = case
    conv_case = (n, c, c, h, w, k, s, p, d, c, "depthwise")
    x, wt, b, z = _inputs(conv_case, seed=8, residual=residual)
    fast, ref = _fused(conv_case, activation, alpha, beta)
    args = (x, wt, b, z) if residual else (x, wt, b)
    np.testing.assert_allclose(fast(*args), ref(*args), rtol=RTOL, atol=ATOL)


# -- weights that change between runs ---------------------------------------------------------------
def _one_conv_model():
    from inference.builder import GraphBuilder

    b = GraphBuilder("one_conv", opset=17)
    x = b.input("x", np.float32, [1, 40, 12, 12])  # past the direct kernel's size rule: the tile runs it
    w = b.const(np.random.default_rng(9).standard_normal((48, 40, 3, 3)).astype(np.float32), "w")
    b.output(b.op("Conv", x, w, kernel_shape=[3, 3], pads=[1, 1, 1, 1]), np.float32)
    return b.build()


def test_a_plain_session_sees_weights_rewritten_in_place():
    """Training rewrites its parameter arrays in place between runs of the same session: no kernel
    may serve a packing of the old values (outside Predictors convolutions run im2col + BLAS)."""
    from inference import Session

    model = _one_conv_model()
    x = {"x": np.random.default_rng(10).standard_normal((1, 40, 12, 12)).astype(np.float32)}
    session = Session(model)
    first = session.run(x)[0]
    w = model.graph.initializers["w"]
    w *= np.float32(-0.5)  # in place, as an optimizer step does
    np.testing.assert_allclose(session.run(x)[0], first * np.float32(-0.5), rtol=1e-5, atol=1e-5)


def test_a_predictor_keeps_its_constant_weights_packed():
    from inference import Config, Predictor

    pred = Predictor(Config(model_path=_one_conv_model(), optimize_graph=False))
    kinds = {step.node.op_type: step.kernel.kind for step in pred.session.steps}
    assert kinds["Conv"] == "packed"
