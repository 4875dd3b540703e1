"""Fusion passes keep the outputs of real models, and a fused graph exports and reloads as is."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import Config, Predictor, zoo
from inference.onnx_export import model_to_proto
from inference.onnx_import import load_model
from inference.passes import optimize
from inference.session import Session

RTOL, ATOL = 1e-4, 1e-5


def _models():
    return {
        "mobilenet_v2": lambda: model_to_proto(zoo.mobilenet_v2(size=64)),
        "resnet18": lambda: model_to_proto(zoo.resnet18(size=64)),
        "transformer": lambda: model_to_proto(zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=2, ffn=64)),
        "squeezenet": lambda: zoo.light_model("squeezenet"),
        "shufflenet": lambda: zoo.light_model("shufflenet"),
    }


def _fix_batch(proto: onnx.ModelProto) -> dict:
    """Feed shapes of a model whose batch may be fixed (the light models are batch 1)."""
    model = load_model(proto)
    rng = np.random.default_rng(0)
    out = {}
    for v in model.graph.feed_inputs():
        shape = [d if isinstance(d, int) else 2 for d in v.type.shape]
        out[v.name] = rng.standard_normal(shape).astype(np.float32)
    return out


@pytest.fixture(scope="module", params=list(_models()))
def case(request):
    proto = _models()[request.param]()
    feeds = _fix_batch(proto)
    plain = load_model(proto)  # no passes: reference semantics of the original graph
    want = Session(plain, kinds=("reference",)).run(feeds)
    fused = load_model(proto)
    applied = optimize(fused, fusion=True)
    return request.param, proto, feeds, want, fused, applied


def test_fusion_keeps_outputs(case):
    name, _, feeds, want, fused, applied = case
    assert "fuse_conv_epilogue" in applied or "fuse_matmul_epilogue" in applied, applied
    hist = fused.graph.op_histogram()
    assert any(k.startswith("edgelearn::Fused") for k in hist), hist
    for kinds in (("reference",), ("fast", "reference")):
        got = Session(fused, kinds=kinds).run(feeds)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"{name} with kernels {kinds}")


def test_residual_and_activation_are_absorbed(case):
    name, _, _, _, fused, _ = case
    hist = fused.graph.op_histogram()
    if name in ("mobilenet_v2", "resnet18"):
        assert "Add" not in hist and "Relu" not in hist and "Clip" not in hist, hist
        assert any(n.op_type in ("FusedConv", "FusedConvNHWC") and len(n.inputs) == 4  # NHWC: the layout pass
                   or n.op_type == "InvertedResidualNHWC" and len(n.inputs) == 8  # a fused block's residual
                   for n in fused.graph.nodes)
    if name == "transformer":
        assert "Gelu" not in hist and "Add" not in hist, hist


def test_fused_graph_exports_and_loads_without_passes(case, tmp_path):
    name, _, feeds, want, fused, _ = case
    proto = model_to_proto(fused)
    onnx.checker.check_model(proto)
    assert any(o.domain == "edgelearn" for o in proto.opset_import)
    path = tmp_path / f"{name}.opt.onnx"
    onnx.save(proto, str(path))
    pred = Predictor(Config(model_path=str(path), optimize_graph=False))
    got = pred.run(feeds)
    assert pred.applied_passes == []
    assert pred.model.graph.op_histogram() == fused.graph.op_histogram()
    for g, w in zip(got.values(), want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_fusion_can_be_switched_off():
    proto = model_to_proto(zoo.resnet18(size=32))
    model = load_model(proto)
    optimize(model, fusion=True, switches={"fuse_conv_epilogue": False})
    assert not any(n.domain == "edgelearn" and n.op_type == "FusedConv" for n in model.graph.nodes)


def test_a_lone_product_by_a_constant_weight_is_fused():
    """A bias-free projection (LLaMA's, a tied LM head) becomes a FusedMatMul with no epilogue (its
    weight packed once, a one-row product streamed), with onnxruntime's outputs; a product of two
    activations stays MatMul."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((512, 300)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("MatMul", ["h", "t"], ["y"])]
    graph = helper.make_graph(nodes, "lone", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 512]),
                                              helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 300, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = load_model(proto)
    optimize(model)
    assert [(n.op_type, n.attrs.get("activation")) for n in model.graph.nodes] == [("FusedMatMul", None),
                                                                                    ("MatMul", None)]
    feeds = {"x": rng.standard_normal((1, 1, 512)).astype(np.float32),
             "t": rng.standard_normal((1, 300, 7)).astype(np.float32)}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=1))
    for _ in range(4):  # step by step, then replayed
        np.testing.assert_allclose(p.run(feeds)["y"], want, rtol=1e-4, atol=1e-3)
    assert "replayed (4 runs)" in p.replay_report()
