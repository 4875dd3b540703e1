"""SiLU as exporters write it, ``Mul(x, Sigmoid(x))``, runs as one fused activation ("Silu") of the
convolution or product before it, channels-last or not, and goes back to the pair in standard ONNX.

Why it matters: a YOLO-style CNN with SiLU after every convolution ran 6.5x onnxruntime's time,
its standalone Sigmoids on libm's scalar exp taking more than the convolutions.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from inference import Config, Predictor
from inference.builder import GraphBuilder
from inference.kernels.activations import SIGMOID, SILU, activate_row
from inference.kernels.nhwc import OP as CONV_NHWC
from inference.onnx_export import model_to_proto
from inference.session import Session
from tests.conftest import run_as_standard_onnx

RNG = np.random.default_rng(21)


def _conv(b: GraphBuilder, x: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
    w = (RNG.standard_normal((cout, cin, k, k)) / np.sqrt(k * k * cin)).astype(np.float32)
    bias = (RNG.standard_normal(cout) * 0.1).astype(np.float32)
    return b.op("Conv", x, b.const(w), b.const(bias), kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2)


def _silu(b: GraphBuilder, x: str, swapped: bool = False) -> str:
    s = b.op("Sigmoid", x)
    return b.op("Mul", s, x) if swapped else b.op("Mul", x, s)


def _cnn(size: int, layers: int):
    """3x3 convolutions of 32 channels, each followed by SiLU (the Mul's operands in both orders)."""
    b = GraphBuilder("silu_cnn", opset=17)
    h = _silu(b, _conv(b, b.input("x", np.float32, [1, 3, size, size]), 3, 32, 3, stride=2))
    for i in range(layers):
        h = _silu(b, _conv(b, h, 32, 32, 3), swapped=i % 2 == 1)
    b.op("Identity", h, outputs=["y"])
    b.output("y", np.float32, [1, 32, size // 2, size // 2])
    return b.build()


def _mlp():
    b = GraphBuilder("silu_mlp", opset=17)
    x = b.input("x", np.float32, [8, 64])
    h = b.op("Add", b.op("MatMul", x, b.const((RNG.standard_normal((64, 96)) * 0.2).astype(np.float32))),
             b.const(np.full(96, 0.1, np.float32)))
    b.op("Identity", _silu(b, h), outputs=["y"])
    b.output("y", np.float32, [8, 96])
    return b.build()


def _ops(p: Predictor) -> list[tuple[str, str]]:
    return [(n.op_type, n.attrs.get("activation", "")) for n in p.model.graph.nodes]


@pytest.mark.parametrize("size, layers, layout", [(16, 2, "NCHW"), (64, 6, "NHWC")])
def test_conv_silu_fuses_and_equals_onnxruntime(size, layers, layout, threads):
    model = _cnn(size, layers)
    proto = model_to_proto(model)
    p = Predictor(Config(model_path=proto))
    ops = _ops(p)
    assert not any(op in ("Sigmoid", "Mul") for op, _ in ops)
    conv = CONV_NHWC if layout == "NHWC" else "FusedConv"
    assert ops.count((conv, "Silu")) >= layers  # the layout pass took the fused SiLU along (NHWC)
    x = {"x": RNG.standard_normal((1, 3, size, size)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_allclose(p.run(x)["y"], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run_as_standard_onnx(p.model, x)[0], want, rtol=1e-4, atol=1e-5)  # Sigmoid, Mul again


def test_matmul_silu_fuses():
    model = _mlp()
    p = Predictor(Config(model_path=model_to_proto(model)))
    assert _ops(p) == [("FusedMatMul", "Silu")]
    x = {"x": RNG.standard_normal((8, 64)).astype(np.float32)}
    np.testing.assert_allclose(p.run(x)["y"], Session(model, kinds=("reference",)).run(x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["sigmoid-read-elsewhere", "input-read-elsewhere", "other-operand"])
def test_not_silu_when_more_reads_the_pair(case):
    """Only the exact pair fuses: a sigmoid or input with a third reader, or a Mul of something else, stays."""
    b = GraphBuilder("not_silu", opset=17)
    x = b.input("x", np.float32, [1, 8, 6, 6])
    h = _conv(b, x, 8, 8, 3)
    s = b.op("Sigmoid", h)
    other = b.op("Relu", h) if case == "other-operand" else h
    y = b.op("Mul", other, s)
    extra = {"sigmoid-read-elsewhere": s, "input-read-elsewhere": h, "other-operand": x}[case]
    b.op("Add", y, b.op("Neg", extra) if case != "other-operand" else y, outputs=["y"])
    b.output("y", np.float32, [1, 8, 6, 6])
    model = b.build()
    p = Predictor(Config(model_path=model_to_proto(model)))
    assert ("Mul", "") in _ops(p) and not any(act == "Silu" for _, act in _ops(p))
    feeds = {"x": RNG.standard_normal((1, 8, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(p.run(feeds)["y"], Session(model, kinds=("reference",)).run(feeds)[0],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("code", [SIGMOID, SILU], ids=["sigmoid", "silu"])
def test_vectorised_sigmoid_matches_float64_and_keeps_non_finite_semantics(code):
    x = (RNG.standard_normal(10_000) * 30).astype(np.float32)
    x[:5] = [np.nan, np.inf, -np.inf, 0.0, -100.0]
    got = x.copy()
    activate_row(got, code, 0.0, 0.0)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        sig = 1.0 / (1.0 + np.exp(-x64))
        want = sig * x64 if code == SILU else sig  # -inf * 0: NaN, as the unfused Mul gives
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=1e-30 if code == SIGMOID else 1e-35)
    assert np.array_equal(np.isinf(got), np.isinf(want))
