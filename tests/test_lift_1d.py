"""1-D convolution chains run as 2-D ones of height 1 (``inference.passes.lift_1d``): the same
outputs as onnxruntime at every opset form of Unsqueeze/Squeeze, at a static and a symbolic length;
every conv and pool on a fast 2-D kernel with its epilogue fused; tensors read outside a region
come back under their own names; the optimized model saves, reloads and decomposes to standard
ONNX that onnxruntime runs."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import Config, Predictor
from inference.onnx_import import load_model
from inference.passes import optimize
from inference.session import Session
from tests.conftest import run_as_standard_onnx

RTOL, ATOL = 1e-4, 1e-5
WINDOWED = {"Conv", "MaxPool", "AveragePool", "FusedConv"}


def _audio_net(opset: int, length: int | str = 64) -> onnx.ModelProto:
    """Conv-BN-Relu, a pool, a dilated depthwise conv with a residual Add, a per-channel constant
    Mul, a channel Concat, a padded ceil-mode average pool, a global pool and a Dense head; the
    Relu's output is also a graph output (read outside the region)."""
    rng = np.random.default_rng(opset)

    def const(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [const("w0", (8, 4, 5)), const("b0", (8,)), const("w1", (8, 1, 3)), const("gate", (1, 8, 1)),
             const("fc", (16, 3)), const("fcb", (3,)),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_s"), const("bn_b", (8,)),
             const("bn_m", (8,)), numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_v")]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[2, 2]),
        helper.make_node("BatchNormalization", ["c0", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r0"]),
        helper.make_node("MaxPool", ["r0"], ["p0"], kernel_shape=[2], strides=[2]),
        helper.make_node("Conv", ["p0", "w1"], ["c1"], group=8, dilations=[2], pads=[2, 2]),
        helper.make_node("Add", ["c1", "p0"], ["res"]),
        helper.make_node("Mul", ["res", "gate"], ["gated"]),
        helper.make_node("Concat", ["gated", "p0"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["p1"], kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1,
                         count_include_pad=0),
        helper.make_node("GlobalAveragePool", ["p1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "audio", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, length])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3]),
                               helper.make_tensor_value_info("r0", TensorProto.FLOAT, ["n", 8, length])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


def _feeds(length: int = 64, batch: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(length).standard_normal((batch, 4, length)).astype(np.float32)}


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _check(got: dict | list, want: list) -> None:
    got = list(got.values()) if isinstance(got, dict) else got
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("opset", [11, 17])  # Unsqueeze's axes an attribute, then an input
def test_lifted_net_matches_onnxruntime_on_fast_kernels(opset):
    model = _audio_net(opset)
    p = Predictor(Config(model_path=model))
    assert "lift_1d_to_2d" in p.applied_passes
    _check(p.run(_feeds()), _ort(model, _feeds()))
    g = p.model.graph
    for n in g.nodes:
        if n.op_type.split("NHWC")[0] in WINDOWED:
            assert g.type_of(n.inputs[0]).rank == 4, n.label()
    assert not any(n.op_type == "Relu" for n in g.nodes)  # went into the first conv's epilogue
    windowed = [s for s in p.session.steps if s.node.op_type.split("NHWC")[0] in WINDOWED]
    assert len(windowed) == 4 and all(s.kernel.kind != "reference" for s in windowed)


def test_switched_off_runs_the_1d_ops_as_they_are():
    model = _audio_net(17)
    p = Predictor(Config(model_path=model, passes={"lift_1d_to_2d": False}))
    assert "lift_1d_to_2d" not in p.applied_passes
    assert any(n.op_type == "Conv" and p.model.graph.type_of(n.inputs[0]).rank == 3 for n in p.model.graph.nodes)
    _check(p.run(_feeds()), _ort(model, _feeds()))


def test_symbolic_length_runs_at_several_lengths():
    model = _audio_net(17, length="time")
    p = Predictor(Config(model_path=model))
    assert "lift_1d_to_2d" in p.applied_passes
    for length, batch in ((64, 2), (37, 1), (200, 3)):
        _check(p.run(_feeds(length, batch)), _ort(model, _feeds(length, batch)))


def test_region_outputs_keep_their_names_and_the_model_saves():
    model = load_model(_audio_net(13))
    optimize(model)
    g = model.graph
    squeezed = [n for n in g.nodes if n.op_type == "Squeeze"]
    assert {n.outputs[0] for n in squeezed} >= {"r0"}  # the graph output, back to (n, 8, 64)
    assert g.type_of("r0").shape == ("n", 8, 64)
    want = _ort(_audio_net(13), _feeds())
    _check(Session(model).run(_feeds()), want)
    _check(run_as_standard_onnx(model, _feeds()), want)


def test_lifts_only_what_works_on_the_lifted_tensor():
    """A Softmax over the length and a fed (not constant) 2-D operand stay 3-D; a conv with a
    fed weight is not lifted (its weight would need a reshape every run)."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((6, 4, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
             helper.make_node("Softmax", ["c"], ["s"], axis=-1),
             helper.make_node("Add", ["c", "bias2d"], ["a"]),
             helper.make_node("Conv", ["a", "wfed"], ["c2"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 16]),
                                           helper.make_tensor_value_info("bias2d", TensorProto.FLOAT, [6, 16]),
                                           helper.make_tensor_value_info("wfed", TensorProto.FLOAT, [5, 6, 1])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 6, 16]),
                               helper.make_tensor_value_info("c2", TensorProto.FLOAT, [2, 5, 16])], [w])
    proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    model = load_model(proto)
    optimize(model)
    g = model.graph
    ops = {n.op_type: n for n in g.nodes}
    assert g.type_of(ops["Softmax"].inputs[0]).rank == 3 and g.type_of(ops["Add"].inputs[0]).rank == 3
    assert sum(g.type_of(n.inputs[0]).rank == 4 for n in g.nodes if n.op_type in WINDOWED) == 1
    feeds = {"x": rng.standard_normal((2, 4, 16)).astype(np.float32),
             "bias2d": rng.standard_normal((6, 16)).astype(np.float32),
             "wfed": rng.standard_normal((5, 6, 1)).astype(np.float32)}
    _check(Session(model).run(feeds), _ort(proto, feeds))


def test_torch_conv1d_keyword_spotter():
    torch = pytest.importorskip("torch")
    import io
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 16, 80, 4), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(4),
                        nn.Conv1d(16, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(4),
                        nn.Conv1d(32, 32, 3, padding=2, dilation=2, groups=32), nn.Hardswish(),
                        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = np.random.default_rng(0).standard_normal((3, 1, 4000)).astype(np.float32)
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.from_numpy(x),), buf, opset_version=17, input_names=["audio"], dynamo=False,
                      dynamic_axes={"audio": {0: "batch"}})
    p = Predictor(Config(model_path=buf.getvalue()))
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    _check(p.run({"audio": x}), [want])
    assert all(s.kernel.kind != "reference" for s in p.session.steps
               if s.node.op_type.split("NHWC")[0] in WINDOWED | {"GlobalAveragePool", "AveragePool"})


def test_a_pointwise_and_a_dilated_depthwise_layer_on_200_steps_are_replayed():
    """A TCN's layers on a 200-step map (not a multiple of the tile's 64 pixels; small enough that
    the depthwise layer runs channels-last around the NHWC stencil): the pointwise conv's last,
    partial pixel block and the depthwise layer's transposes are numba copies into the workspace,
    so the model is replayed (numpy's copies had kept it step by step)."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for n, s in (("w1", (64, 40, 1)), ("b1", (64,)), ("w2", (64, 1, 3)), ("b2", (64,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["d"], group=64, dilations=[2], pads=[2, 2]),
             helper.make_node("Add", ["d", "r"], ["y"])]
    graph = helper.make_graph(nodes, "tcn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 40, 200])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64, 200])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=1))
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for seed in range(5):
        x = np.random.default_rng(seed).standard_normal((2, 40, 200)).astype(np.float32)
        np.testing.assert_allclose(p.run({"x": x})["y"], s.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
    assert "x [2, 40, 200] at 1 thread(s): replayed" in p.replay_report(), p.replay_report()
