"""A NaN or inf in the input reaches the outputs the reference says it reaches, through every fused
kernel family: the register tile's epilogue (Relu, Clip, none; Sigmoid and SiLU), the depthwise stencil, the
fused inverted-residual block, the RGB stem read in place, Winograd, and a Gemm's epilogue; and
through the standalone activations.

The tile's clamp had used ``llvm.maxnum``/``minnum``, which return the other operand for a NaN: a
NaN sum came out as 0 after a Relu and -inf with no activation, so a NaN input vanished (the
reference and onnxruntime keep it). Winograd spreads an inf or NaN over its whole 2x2 tile (and
turns an inf into NaN): a call that meets one runs the direct algorithm instead, so its masks are
the reference's too.
"""
from __future__ import annotations

import numpy as np
import pytest

from inference import Config, Predictor
from inference.builder import GraphBuilder
from inference.kernels.inverted_residual import OP as BLOCK
from inference.kernels.nhwc import OP as CONV_NHWC
from inference.kernels.nhwc import WINOGRAD
from inference.onnx_export import model_to_proto
from inference.session import Session

RNG = np.random.default_rng(11)


def _conv(b: GraphBuilder, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1) -> str:
    w = (RNG.standard_normal((cout, cin // group, k, k)) / np.sqrt(k * k * cin / group)).astype(np.float32)
    bias = (RNG.standard_normal(cout) * 0.1).astype(np.float32)
    return b.op("Conv", x, b.const(w), b.const(bias), kernel_shape=[k, k], pads=[k // 2] * 4,
                strides=[stride, stride], group=group)


def _relu6(b: GraphBuilder, x: str) -> str:
    return b.op("Clip", x, b.const(np.float32(0)), b.const(np.float32(6)))


def _chain(size: int, layers: int):
    """3x3 convs of 64 channels with Relu, Clip and nothing after them in turn, a 1x1 and a
    residual. Five layers make the layout pass's region (channels-last, the gathered tile), one
    stays NCHW (the pixel-lane tile)."""
    b = GraphBuilder("chain", opset=17)
    x = b.input("x", np.float32, [1, 64, size, size])
    h = x
    for i in range(layers):
        h = _conv(b, h, 64, 64, 3)
        h = (lambda v: b.op("Relu", v), lambda v: _relu6(b, v), lambda v: v)[i % 3](h)
    b.op("Add", _conv(b, h, 64, 64, 1), x, outputs=["y"])
    b.output("y", np.float32, [1, 64, size, size])
    return b.build(), (1, 64, size, size)


def _sigmoid_chain(size: int, layers: int, channels: int):
    """3x3 convs with SiLU (``x * sigmoid(x)``) and Sigmoid after them in turn, which the tile
    computes in its registers: five layers make the layout pass's region (the gathered tile; on
    28x28 Winograd, whose activation is a pass after), one stays NCHW (the pixel-lane tile)."""
    b = GraphBuilder("sigmoids", opset=17)
    x = b.input("x", np.float32, [1, channels, size, size])
    h = x
    for i in range(layers):
        h = _conv(b, h, channels, channels, 3)
        h = b.op("Mul", h, b.op("Sigmoid", h)) if i % 2 == 0 else b.op("Sigmoid", h)
    b.op("Add", _conv(b, h, channels, channels, 1), x, outputs=["y"])
    b.output("y", np.float32, [1, channels, size, size])
    return b.build(), (1, channels, size, size)


def _inverted_residual():
    """MobileNetV2's block: 1x1 expansion, depthwise 3x3, 1x1 projection and the residual."""
    b = GraphBuilder("block", opset=17)
    x = b.input("x", np.float32, [1, 16, 14, 14])
    h = _relu6(b, _conv(b, x, 16, 16, 1))
    for _ in range(2):
        e = _relu6(b, _conv(b, h, 16, 64, 1))
        d = _relu6(b, _conv(b, e, 64, 64, 3, group=64))
        h = b.op("Add", _conv(b, d, 64, 16, 1), h)
    b.op("Identity", _conv(b, h, 16, 16, 1), outputs=["y"])
    b.output("y", np.float32, [1, 16, 14, 14])
    return b.build(), (1, 16, 14, 14)


def _stem():
    """An RGB stem (3x3/2, read in place from NCHW) into a strided depthwise and a 1x1."""
    b = GraphBuilder("stem", opset=17)
    x = b.input("x", np.float32, [1, 3, 32, 32])
    h = b.op("Relu", _conv(b, x, 3, 32, 3, stride=2))
    h = _relu6(b, _conv(b, h, 32, 32, 3, stride=2, group=32))
    b.op("Identity", _conv(b, h, 32, 24, 1), outputs=["y"])
    b.output("y", np.float32, [1, 24, 8, 8])
    return b.build(), (1, 3, 32, 32)


def _gemm():
    b = GraphBuilder("mlp", opset=17)
    x = b.input("x", np.float32, [4, 96])
    w1 = b.const((RNG.standard_normal((96, 128)) * 0.1).astype(np.float32))
    h = b.op("Relu", b.op("Add", b.op("MatMul", x, w1), b.const(np.zeros(128, np.float32))))
    w2 = b.const((RNG.standard_normal((128, 32)) * 0.1).astype(np.float32))
    b.op("Gemm", h, w2, b.const(np.zeros(32, np.float32)), outputs=["y"])
    b.output("y", np.float32, [4, 32])
    return b.build(), (4, 96)


def _gemm_silu():
    b = GraphBuilder("mlp_silu", opset=17)
    x = b.input("x", np.float32, [4, 96])
    w1 = b.const((RNG.standard_normal((96, 128)) * 0.1).astype(np.float32))
    h = b.op("Add", b.op("MatMul", x, w1), b.const(np.zeros(128, np.float32)))
    h = b.op("Mul", h, b.op("Sigmoid", h))
    w2 = b.const((RNG.standard_normal((128, 32)) * 0.1).astype(np.float32))
    b.op("Sigmoid", b.op("Gemm", h, w2, b.const(np.zeros(32, np.float32))), outputs=["y"])
    b.output("y", np.float32, [4, 32])
    return b.build(), (4, 96)


MODELS = {"nchw-tile": lambda: _chain(12, 1), "chain-direct": lambda: _chain(12, 5),
          "chain-winograd": lambda: _chain(28, 5),
          "inverted-residual": _inverted_residual, "rgb-stem": _stem, "gemm": _gemm,
          "sigmoid-nchw-tile": lambda: _sigmoid_chain(12, 1, 16), "sigmoid-gathered": lambda: _sigmoid_chain(12, 5, 64),
          "sigmoid-winograd": lambda: _sigmoid_chain(28, 5, 64), "gemm-sigmoid": _gemm_silu}


def _input(shape: tuple, with_inf: bool) -> np.ndarray:
    x = RNG.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[[3, flat.size // 4]] = np.nan  # all in the first third: the Gemm's last rows stay finite
    if with_inf:
        flat[flat.size // 3] = np.inf
        flat[flat.size // 3 + 7] = -np.inf
    return x


@pytest.mark.parametrize("name", list(MODELS))
def test_non_finite_inputs_reach_the_outputs_the_reference_says(name):
    model, shape = MODELS[name]()
    reference = Session(model, kinds=("reference",))  # the graph as built; the Predictor optimizes a copy
    predictor = Predictor(Config(model_path=model_to_proto(model)))
    ops = [(n.op_type, n.attrs.get("algorithm")) for n in predictor.model.graph.nodes]
    winograd = name.endswith("-winograd")  # at 12x12 marked too, but run directly: too few tiles
    assert (CONV_NHWC, WINOGRAD) in ops or not winograd
    assert any(op == CONV_NHWC for op, _ in ops) == (not name.endswith("nchw-tile") and not name.startswith("gemm"))
    if "sigmoid" in name:  # the activations fused, not left standalone
        assert not any(op in ("Sigmoid", "Mul") for op, _ in ops)
    if name == "inverted-residual":
        assert any(op == BLOCK for op, _ in ops)
    x = _input(shape, with_inf=True)
    with np.errstate(invalid="ignore"):
        want = reference.run({"x": x})[0]
    got = predictor.run({"x": x})["y"]
    assert np.isnan(want).any() and np.isfinite(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


ACTIVATIONS = {"Relu": {}, "LeakyRelu": {"alpha": 0.1}, "Sigmoid": {}, "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
               "HardSwish": {}, "Gelu": {}}


@pytest.mark.parametrize("op", list(ACTIVATIONS))
def test_standalone_activations_keep_nan(op):
    """Long enough to run vectorised: HardSigmoid's float64 clamp had vectorised into a max that
    turned NaN into 0 (its scalar remainder kept it)."""
    b = GraphBuilder("act", opset=20)
    x = b.input("x", np.float32, [4, 250])
    b.op(op, x, outputs=["y"], **ACTIVATIONS[op])
    b.output("y", np.float32, [4, 250])
    model = b.build()
    feeds = {"x": _input((4, 250), with_inf=True)}
    fast = Session(model, kinds=("fast", "reference"))
    assert fast.steps[0].kernel.kind == "fast"
    with np.errstate(invalid="ignore", over="ignore"):
        want = Session(model, kinds=("reference",)).run(feeds)[0]
    got = fast.run(feeds)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-5, atol=1e-6)
