"""The batch-1 small-node kernels against their reference ops: direct 3x3 conv, 2x2/2 pooling,
the bound FusedMatMul and the memoised Flatten/Reshape."""
from __future__ import annotations

import numpy as np
import pytest

import inference.kernels  # noqa: F401  (registers the fast kernels and the fused ops)
from inference.errors import KernelError
from inference.kernels import direct_conv, pool
from inference.kernels.fused import DOMAIN
from inference.ops.registry import KernelContext, lookup

RTOL, ATOL = 1e-4, 1e-5
ACTIVATIONS = [("", 0.0, 0.0), ("Relu", 0.0, 0.0), ("Clip", -0.5, 0.5), ("LeakyRelu", 0.1, 0.0),
               ("Sigmoid", 0.0, 0.0), ("HardSigmoid", 0.2, 0.5), ("HardSwish", 0.0, 0.0), ("Gelu", 0.0, 0.0),
               ("GeluTanh", 0.0, 0.0), ("Silu", 0.0, 0.0)]


def _rand(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def _bound(op: str, domain: str = "", opset: int = 13, kind: str = "fast", **attrs):
    """The ``kind`` kernel of ``op`` bound to ``attrs`` the way the session binds it, and the reference."""
    fast, ref = lookup(op, domain, opset, kind), lookup(op, domain, opset, "reference")
    return fast.bind(**attrs), (lambda *xs: ref.fn(*xs, **attrs))


# -- direct 3x3 convolution ---------------------------------------------------------------------------
DIRECT_CASES = [  # (N, C, M, H, W, pads, dilations, auto_pad)
    (1, 1, 16, 28, 28, [1, 1, 1, 1], [1, 1], "NOTSET"),  # MNIST first layer
    (1, 16, 32, 14, 14, [1, 1, 1, 1], [1, 1], "NOTSET"),
    (1, 3, 7, 11, 13, [1, 1, 1, 1], [1, 1], "NOTSET"),  # odd output channels and sizes
    (2, 4, 5, 9, 6, [0, 2, 1, 0], [1, 1], "NOTSET"),  # asymmetric pads, batch 2
    (1, 5, 6, 12, 10, [2, 2, 2, 2], [2, 2], "NOTSET"),  # dilation 2
    (1, 2, 3, 10, 9, [1, 0, 2, 1], [2, 1], "NOTSET"),
    (3, 3, 4, 8, 8, [0, 0, 0, 0], [1, 1], "NOTSET"),  # valid conv, batch 3
    (1, 6, 1, 7, 5, None, [1, 1], "SAME_UPPER"),  # a single output channel
    (1, 6, 8, 5, 7, None, [1, 1], "SAME_LOWER"),
]


@pytest.mark.parametrize("case", DIRECT_CASES)
@pytest.mark.parametrize("activation,alpha,beta", ACTIVATIONS)
def test_direct_conv_matches_reference(case, activation, alpha, beta):
    n, c, m, h, w, pads, dil, auto = case
    rng = np.random.default_rng(1)
    x, wt, b = _rand(rng, n, c, h, w), _rand(rng, m, c, 3, 3), _rand(rng, m)
    attrs = dict(kernel_shape=[3, 3], strides=[1, 1], dilations=dil, group=1, auto_pad=auto,
                 activation=activation, alpha=alpha, beta=beta)
    if pads is not None:
        attrs["pads"] = pads
    fast, ref = _bound("FusedConv", DOMAIN, 1, **attrs)
    want = ref(x, wt, b)
    assert direct_conv.prefer_direct(c, m, 3, 3, 1, 1, *want.shape[2:], 1)  # the case runs the direct kernel
    _close(fast(x, wt, b), want)
    z = _rand(rng, *want.shape)  # residual
    _close(fast(x, wt, b, z), ref(x, wt, b, z))


def test_direct_conv_plain_conv_without_bias():
    rng = np.random.default_rng(2)
    x, wt = _rand(rng, 1, 8, 14, 14), _rand(rng, 16, 8, 3, 3)
    fast, ref = _bound("Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    _close(fast(x, wt), ref(x, wt))


@pytest.mark.parametrize("shape,expected", [
    ((1, 16, 3, 3, 1, 1, 28, 28, 1), True),  # one input channel
    ((1, 64, 3, 3, 1, 1, 112, 112, 1), True),
    ((16, 32, 3, 3, 1, 1, 14, 14, 1), True),
    ((64, 128, 3, 3, 1, 1, 14, 14, 1), True),  # 14 of 16 lanes live
    ((128, 128, 3, 3, 1, 1, 14, 14, 1), False),  # past C_in * C_out = 8192
    ((64, 64, 3, 3, 1, 1, 10, 10, 1), False),  # 10 of 16 lanes live
    ((32, 16, 3, 3, 1, 1, 7, 7, 1), True),  # C_in * C_out = 512
    ((32, 32, 3, 3, 1, 1, 7, 7, 1), False),
    ((16, 16, 3, 3, 1, 1, 28, 28, 1), True),
    ((32, 32, 3, 3, 1, 1, 28, 28, 1), False),  # the tile's size on wider rows
    ((16, 16, 3, 3, 1, 1, 20, 20, 1), False),  # 20 columns: 10 of 16 lanes live in the second vector
    ((3, 32, 3, 3, 1, 1, 56, 56, 1), True),  # an RGB input
    ((3, 32, 3, 3, 1, 1, 112, 112, 1), False),
    ((16, 16, 3, 3, 2, 2, 14, 14, 1), False),  # strided
    ((16, 16, 3, 3, 1, 1, 14, 14, 2), False),  # grouped
    ((16, 16, 5, 5, 1, 1, 14, 14, 1), False),  # not 3x3
])
def test_direct_conv_size_rule(shape, expected):
    assert direct_conv.prefer_direct(*shape) is expected


def test_direct_conv_runs_every_3x3_when_the_weight_is_not_packed():
    """Against im2col + BLAS (a weight that changes) the direct kernel won every measured shape."""
    assert direct_conv.prefer_direct(64, 128, 3, 3, 1, 1, 56, 56, 1, packed=False)
    assert not direct_conv.prefer_direct(64, 128, 3, 3, 2, 2, 28, 28, 1, packed=False)


def _direct(x, wt, b, z, y, parts, activation="", alpha=0.0, beta=0.0, dil=1, pad=1, twin="serial"):
    """The direct kernel's ``twin`` on NCHW ``x`` into ``y`` as :func:`conv.conv2d_direct` calls it."""
    from inference.kernels.activations import activation_code
    from inference.kernels.tile_lanes import clamp_epilogue
    code = activation_code(activation)
    clamps, amin, amax = clamp_epilogue(code, alpha, beta)
    zz = np.zeros((1, 1, 1, 1), np.float32) if z is None else z
    getattr(direct_conv.direct_conv3x3, twin)(x, wt, b, zz, z is not None, dil, dil, pad, pad, y, parts, clamps,
                                              amin, amax, code, alpha, beta)
    return y


@pytest.mark.parametrize("twin", ["serial", "parallel"])
@pytest.mark.parametrize("parts", [1, 3, 7])
@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
def test_direct_conv_tiles_channel_blocks_and_row_pieces(twin, parts, activation):
    """20 output channels (blocks of 8, 8 and a partial 4), rows of 37 columns (three vectors, the
    last 5 lanes live), an odd number of row pieces, cut into runs that split rows: each output
    once, equal to the reference (a non-clamp activation runs over each run's own outputs)."""
    rng = np.random.default_rng(11)
    x, wt, b = _rand(rng, 2, 4, 9, 37), _rand(rng, 20, 4, 3, 3), _rand(rng, 20)
    z = _rand(rng, 2, 20, 9, 37)
    ref = lookup("FusedConv", DOMAIN, 1, "reference").fn
    want = ref(x, wt, b, z, kernel_shape=[3, 3], pads=[1, 1, 1, 1], activation=activation)
    _close(_direct(x, wt, b, z, np.full_like(want, np.nan), parts, activation, twin=twin), want)


def test_direct_conv_residual_in_place():
    """The output written over its residual input (a plan's in-place step): a partial channel block
    repeats its last channel, and must not store it twice (the second would add the residual again)."""
    rng = np.random.default_rng(12)
    x, wt, b = _rand(rng, 1, 3, 14, 14), _rand(rng, 5, 3, 3, 3), _rand(rng, 5)
    z = _rand(rng, 1, 5, 14, 14)
    want = lookup("FusedConv", DOMAIN, 1, "reference").fn(x, wt, b, z, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    _close(_direct(x, wt, b, z, z, 1), want)


def test_direct_conv_nan_reaches_exactly_its_window():
    """A NaN input pixel makes NaN exactly the outputs whose window holds it, in every channel, Relu
    after it (the clamp keeps NaN)."""
    rng = np.random.default_rng(13)
    x, wt, b = _rand(rng, 1, 2, 10, 19), _rand(rng, 9, 2, 3, 3), _rand(rng, 9)
    x[0, 1, 4, 17] = np.nan
    y = _direct(x, wt, b, None, np.empty((1, 9, 10, 19), np.float32), 1, "Relu")
    expected = np.zeros((10, 19), bool)
    expected[3:6, 16:19] = True
    assert (np.isnan(y) == expected[None, None]).all()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout", [True, False], ids=["nhwc", "nchw"])
def test_resnet8_cifar_equals_onnxruntime(threads, layout):
    """MLPerf Tiny's ResNet-8 at batch 2: channels-last, and left NCHW, where its 3x3 stride-1
    layers but the 64-channel one run the direct kernel (the 3-channel stem, 16 channels on 32x32,
    32 on 16x16)."""
    ort = pytest.importorskip("onnxruntime")
    from inference import Config, Predictor, zoo
    from inference.onnx_export import model_to_proto
    proto = model_to_proto(zoo.resnet8_cifar())
    onnx_checker = pytest.importorskip("onnx").checker
    onnx_checker.check_model(proto)
    x = np.random.default_rng(14).standard_normal((2, 3, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=threads, passes={"layout_nhwc": layout}))
    assert any(s.node.op_type == "FusedConvNHWC" for s in p.session.steps) == layout
    np.testing.assert_allclose(p.run({"input": x})["logits"], want, rtol=RTOL, atol=ATOL)


# -- 2x2 stride-2 pooling ---------------------------------------------------------------------------
POOL_CASES = [  # (shape, attrs)
    ((1, 16, 28, 28), {}),
    ((2, 3, 9, 7), {}),  # odd sizes, floor mode: the last row/column is dropped
    ((1, 5, 6, 10), {"pads": [0, 0, 0, 0]}),
    ((1, 4, 7, 7), {"ceil_mode": 1}),  # windows past the edge: the separable kernel
    ((1, 4, 8, 8), {"pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("shape,extra", POOL_CASES)
def test_pool_2x2_matches_reference(op, shape, extra):
    rng = np.random.default_rng(3)
    x = _rand(rng, *shape)
    attrs = dict(kernel_shape=[2, 2], strides=[2, 2], **extra)
    ref = lookup(op, "", 13, "reference").fn
    fast = lookup(op, "", 13, "fast")
    if fast.wants_ctx:
        ctx = KernelContext(node=None, opset=13, num_outputs=1)
        run, want = fast.bind(ctx=ctx, **attrs), ref(x, ctx=ctx, **attrs)
    else:
        run, want = fast.bind(**attrs), ref(x, **attrs)
    if op == "MaxPool" or not (extra.get("ceil_mode") or any(extra.get("pads", []))):
        np.testing.assert_array_equal(run(x), want)  # max and (a+b+c+d)/4 are exact in float32
    else:  # partial windows run the separable kernel: column sums first, another rounding order
        np.testing.assert_allclose(run(x), want, rtol=1e-6, atol=1e-7)
    assert run(x).dtype == np.float32


def test_pool_2x2_plan_uses_the_specialised_kernel():
    plan = pool._pool_plan((28, 28), (2, 2), (2, 2), None, None, "NOTSET", 0, 0, "MaxPool")
    assert plan[2] == pool.POOL_2X2
    ceil = pool._pool_plan((7, 7), (2, 2), (2, 2), None, None, "NOTSET", 1, 0, "MaxPool")
    assert ceil[2] == pool.POOL_ROWS  # windows past the edge: the separable kernel
    ceil_avg = pool._pool_plan((7, 7), (2, 2), (2, 2), None, None, "NOTSET", 1, 0, "AveragePool")
    assert ceil_avg[2] == pool.POOL_ROWS
    dilated = pool._pool_plan((9, 9), (2, 2), (2, 2), (2, 2), None, "NOTSET", 0, 0, "AveragePool")
    assert dilated[2] == pool.POOL_UNPADDED  # dilated windows: not separable here


# -- FusedMatMul, bound -------------------------------------------------------------------------------
@pytest.mark.parametrize("xshape", [(1, 1568), (3, 20), (2, 3, 20), (20,), (2, 67, 40)])
@pytest.mark.parametrize("activation,alpha,beta", ACTIVATIONS[:4] + ACTIVATIONS[7:8])
@pytest.mark.parametrize("with_b,with_z", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("kind,n", [("fast", 10), ("packed", 10), ("packed", 70)])
def test_fused_matmul_bound_matches_reference(xshape, activation, alpha, beta, with_b, with_z, kind, n):
    """"packed" (a constant weight: our tile) and "fast" (BLAS), clamped and not (Gelu)."""
    rng = np.random.default_rng(4)
    x = _rand(rng, *xshape)
    w = _rand(rng, xshape[-1], n) / np.float32(np.sqrt(xshape[-1]))  # unit-scale outputs, as a trained layer's
    b = _rand(rng, n) if with_b else None
    z = _rand(rng, *(xshape[:-1] + (n,))) if with_z else None
    fast, ref = _bound("FusedMatMul", DOMAIN, 1, kind, activation=activation, alpha=alpha, beta=beta)
    for _ in range(2):  # the second call reuses the packed weight
        _close(fast(x, w, b, z), ref(x, w, b, z))


def test_fused_matmul_bound_falls_back_off_the_fast_path():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 6)), rng.standard_normal((6, 3))  # float64: the reference runs
    fast, ref = _bound("FusedMatMul", DOMAIN, 1, activation="Relu")
    np.testing.assert_allclose(fast(x, w), ref(x, w))


# -- Flatten / Reshape, memoised -----------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2, -1, 4])
def test_flatten_bound_matches_reference(axis):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    fast = lookup("Flatten", "", 13).bind(axis=axis)
    ref = lookup("Flatten", "", 13).fn
    for _ in range(2):  # second call: from the memo
        got = fast(x)
        np.testing.assert_array_equal(got, ref(x, axis=axis))
        assert np.shares_memory(got, x)
    y = x[:1]  # another input shape gets its own dims
    assert fast(y).shape == ref(y, axis=axis).shape


def test_flatten_bound_rejects_bad_axis():
    with pytest.raises(KernelError, match="out of range"):
        lookup("Flatten", "", 13).bind(axis=5)(np.zeros((1, 2, 3), np.float32))


def test_reshape_bound_memo_follows_the_shape_input():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    run = lookup("Reshape", "", 13).bind()
    assert run(x, np.array([0, -1], np.int64)).shape == (2, 12)
    assert run(x, np.array([-1, 4], np.int64)).shape == (6, 4)
    assert run(x, np.array([0, -1], np.int64)).shape == (2, 12)
    assert run(x.reshape(4, 6), np.array([0, -1], np.int64)).shape == (4, 6)
    with pytest.raises(KernelError, match="cannot"):
        run(x, np.array([5, -1], np.int64))


# -- serial and prange twins agree -------------------------------------------------------------------
def test_direct_conv_and_pool_twins_agree():
    rng = np.random.default_rng(6)
    x, wt, b = _rand(rng, 2, 3, 9, 8), _rand(rng, 5, 3, 3, 3), _rand(rng, 5)
    z = _rand(rng, 2, 5, 9, 8)
    want = lookup("FusedConv", DOMAIN, 1, "reference").fn(x, wt, b, z, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                                           activation="Relu")
    for twin in (direct_conv.direct_conv3x3.serial, direct_conv.direct_conv3x3.parallel):
        y = np.empty_like(want)
        twin(x, wt, b, z, True, 1, 1, 1, 1, y, 2, True, np.float32(0), np.float32(np.inf), 1, 0.0, 0.0)
        _close(y, want)
    pooled = lookup("MaxPool", "", 13, "reference").fn(x, kernel_shape=[2, 2], strides=[2, 2],
                                                       ctx=KernelContext(node=None, opset=13, num_outputs=1))
    for twin in (pool.pool2x2s2.serial, pool.pool2x2s2.parallel):
        y = np.empty_like(pooled)
        twin(x, y, True)
        np.testing.assert_array_equal(y, pooled)
