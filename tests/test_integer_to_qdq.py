"""onnxruntime's dynamic quantization (``quantize_dynamic``: DynamicQuantizeLinear, then
MatMulInteger / ConvInteger -> Cast -> Mul by the scales): fused into our int8 ops, computing
what onnxruntime computes, and DynamicQuantizeLinear's parameters as the specification writes them."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import Config, Predictor
from inference.builder import GraphBuilder
from inference.kernels.int8_qdq import dynamic_quantize_linear_fast
from inference.onnx_export import model_to_proto
from inference.ops.quantize import dynamic_quantize_linear

RNG = np.random.default_rng(0)


def _weight(*shape) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(shape[1] if len(shape) == 4 else shape[0])).astype(np.float32)


def _mlp() -> onnx.ModelProto:
    b = GraphBuilder("mlp", opset=17)
    x = b.input("input", np.float32, ["batch", 64])
    h = b.op("Relu", b.op("Add", b.op("MatMul", x, b.const(_weight(64, 96))), b.const(_weight(96) * 0.1)))
    b.op("MatMul", h, b.const(_weight(96, 10)), outputs=["y"])
    b.output("y", np.float32, ["batch", 10])
    return model_to_proto(b.build())


def _cnn() -> onnx.ModelProto:
    b = GraphBuilder("cnn", opset=17)
    x = b.input("input", np.float32, ["batch", 3, 12, 12])
    h = b.op("Relu", b.op("Conv", x, b.const(_weight(16, 3, 3, 3)), b.const(_weight(16) * 0.1), pads=[1, 1, 1, 1]))
    b.op("Conv", h, b.const(_weight(8, 16, 3, 3)), strides=[2, 2], outputs=["y"])
    b.output("y", np.float32, ["batch", 8, 6, 6])
    return model_to_proto(b.build())


def _gelu_mlp() -> onnx.ModelProto:
    """64 -> 96 -> tanh GELU -> 10 with the GELU's constants as ``Constant`` nodes, as torch.onnx
    writes a GPT's ``x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))``."""
    nodes, inits = [], [numpy_helper.from_array(_weight(64, 96), "w1"),
                        numpy_helper.from_array(_weight(96) * 0.1, "b1"),
                        numpy_helper.from_array(_weight(96, 10), "w2")]

    def const(name, value):
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
            np.array(value, np.float32), name + "_value")))
        return name

    def op(kind, *inputs):
        out = f"{kind.lower()}{len(nodes)}"
        nodes.append(helper.make_node(kind, list(inputs), [out]))
        return out

    h = op("Add", op("MatMul", "x", "w1"), "b1")
    cube = op("Mul", h, op("Mul", h, h))
    inner = op("Add", h, op("Mul", cube, const("c0", 0.044715)))
    tanh = op("Tanh", op("Mul", inner, const("c1", np.sqrt(2 / np.pi))))
    g = op("Mul", op("Mul", h, const("c2", 0.5)), op("Add", tanh, const("c3", 1.0)))
    nodes.append(helper.make_node("MatMul", [g, "w2"], ["y"]))
    graph = helper.make_graph(nodes, "gelu_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _dynamic(tmp_path, proto: onnx.ModelProto, per_channel: bool) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, out = str(tmp_path / "float.onnx"), str(tmp_path / "dynamic.onnx")
    onnx.save(proto, src)
    quantize_dynamic(src, out, weight_type=QuantType.QInt8, per_channel=per_channel)
    return out


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_dynamic_int8_models_fuse_and_compute_onnxruntimes_result(tmp_path, name, per_channel):
    path = _dynamic(tmp_path, _mlp() if name == "mlp" else _cnn(), per_channel)
    integer_op = "MatMulInteger" if name == "mlp" else "ConvInteger"
    assert sum(n.op_type == integer_op for n in onnx.load(path).graph.node) == 2
    x = RNG.standard_normal((4, 64) if name == "mlp" else (4, 3, 12, 12)).astype(np.float32)
    p = Predictor(Config(model_path=path))
    hist = p.model.graph.op_histogram()
    fused = "edgelearn::QMatMul" if name == "mlp" else "edgelearn::QConv"
    assert hist.get(fused) == 2 and integer_op not in hist and "Cast" not in hist, hist
    got = p.run({"input": x})["y"]
    literal = ort.SessionOptions()  # the graph as written: onnxruntime's fused kernels compute their scales apart
    literal.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(path, literal, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_a_tanh_gelu_written_with_constant_nodes_fuses_into_the_quantized_product(tmp_path):
    """The GELU's constants are ``Constant`` nodes, which the QDQ fusion (run before folding) had not
    read as constants: the nine nodes stayed apart from the QMatMul (a quantized GPT's every layer)."""
    path = _dynamic(tmp_path, _gelu_mlp(), False)
    p = Predictor(Config(model_path=path))
    hist = p.model.graph.op_histogram()
    assert hist.get("edgelearn::QMatMul") == 2 and "Tanh" not in hist and "Constant" not in hist, hist
    up = next(n for n in p.model.graph.nodes if n.op_type == "QMatMul" and n.attrs.get("activation"))
    assert up.attrs["activation"] == "GeluTanh"
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    literal = ort.SessionOptions()
    literal.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(path, literal, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = p.run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_dynamic_quantize_linear_parameters_are_the_specifications():
    """Scale ``(hi - lo) / 255`` and zero point in float32, as onnxruntime's DynamicQuantizeLinear
    computes them (a float64 scale differed in the last bit for a quarter of these ranges, moving
    codes by one); all zeros: scale 1, as onnxruntime's."""
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    graph = helper.make_graph([node], "dql", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [None]),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
                               helper.make_tensor_value_info("z", TensorProto.UINT8, [])])
    peer = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                .SerializeToString(), providers=["CPUExecutionProvider"])
    cases = [(RNG.standard_normal(200) * RNG.uniform(0.01, 10) + RNG.uniform(-3, 3)).astype(np.float32)
             for _ in range(300)] + [np.zeros(7, np.float32), np.full(3, 2.5, np.float32)]
    for x in cases:
        want = peer.run(None, {"x": x})
        for ours in (dynamic_quantize_linear(x), dynamic_quantize_linear_fast(x)):
            for got, expected in zip(ours, want):
                np.testing.assert_array_equal(np.asarray(got), expected)


def test_a_dynamically_quantized_transformer_is_replayed_with_the_step_by_step_result(tmp_path):
    """Each run's activation scale and zero point are read inside the compiled kernels (the range in
    DynamicQuantizeLinear's, the zero-point terms in QMatMul's), so the model's run is one list of
    compiled calls: replayed, and equal to a session that runs it step by step, on new inputs."""
    from inference.zoo import transformer_encoder

    path = _dynamic(tmp_path, model_to_proto(transformer_encoder(seq=16, dim=64, heads=2, layers=2, ffn=128)), True)
    replayed = Predictor(Config(model_path=path, num_threads=1))
    stepwise = Predictor(Config(model_path=path, num_threads=1, kernel_replay=False))
    hist = replayed.model.graph.op_histogram()
    assert hist.get("edgelearn::QMatMul") == 12 and hist.get("DynamicQuantizeLinear"), hist
    for scale in (1.0, 0.01, 30.0, 1.0, 3.0):  # scales far apart: each run's own quantization parameters
        x = (RNG.standard_normal((1, 16, 64)) * scale).astype(np.float32)
        got, want = replayed.run({"input": x}), stepwise.run({"input": x})
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert "replayed" in replayed.replay_report(), replayed.replay_report()


@pytest.mark.parametrize("n", [1, 15, 16, 17, 48, 1001])
def test_fast_dynamic_quantize_linear_on_vector_tails_and_non_finite_values(n):
    """The vector range pass (16 lanes, a masked tail) gives the reference's bytes at every
    length, with a NaN (scale NaN, as numpy's reductions give) and with infinities."""
    x = (RNG.standard_normal(n) * 3).astype(np.float32)
    cases = [x, np.abs(x), -np.abs(x), np.zeros(n, np.float32)]
    for special in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[n // 2] = special
        cases.append(y)
    for case in cases:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            ours, ref = dynamic_quantize_linear_fast(case), dynamic_quantize_linear(case)
        for got, want in zip(ours, ref):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
