"""Import -> IR -> export keeps a model valid for onnx.checker and equal in onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, shape_inference

from inference import Session, load_model, model_to_proto, save_model, zoo
from inference.ir import TensorType
from inference.onnx_import import SHAPE_DATA_LIMIT, with_inferred_shapes
from tests.conftest import LIGHT_MODELS, build_mlp


def _ort(proto: onnx.ModelProto, feeds: dict) -> list:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_built_model_exports_valid_onnx(mlp_model):
    proto = model_to_proto(mlp_model)
    onnx.checker.check_model(proto, full_check=True)
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    ours = Session(mlp_model).run({"x": x})[0]
    np.testing.assert_allclose(_ort(proto, {"x": x})[0], ours, rtol=1e-5, atol=1e-6)


def test_shapes_known_before_run(mlp_model):
    model = load_model(model_to_proto(mlp_model))
    t = model.graph.type_of("y")
    assert isinstance(t, TensorType) and t.shape == ("batch", 4)
    every = [o for n in model.graph.nodes for o in n.outputs]
    assert all(isinstance(model.graph.type_of(o), TensorType) and model.graph.type_of(o).rank == 2 for o in every)


def test_external_data_roundtrip(tmp_path):
    model = build_mlp()
    path = tmp_path / "ext.onnx"
    save_model(model, path, external_data=True)
    assert (tmp_path / "ext.onnx.data").exists()
    again = load_model(str(path))
    for name, arr in model.graph.initializers.items():
        np.testing.assert_array_equal(again.graph.initializers[name], arr)


@pytest.mark.parametrize("name", ["light_squeezenet", "light_shufflenet"])
def test_light_model_roundtrip(name):
    proto = onnx.load(str(LIGHT_MODELS / f"{name}.onnx"))
    model = load_model(proto)
    exported = model_to_proto(model)
    onnx.checker.check_model(exported, full_check=True)
    feed_value = model.graph.feed_inputs()[0]
    x = np.random.default_rng(0).normal(size=feed_value.type.shape).astype(np.float32)
    ours = Session(model).run({feed_value.name: x})[0]
    np.testing.assert_allclose(_ort(exported, {feed_value.name: x})[0], ours, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(_ort(proto, {feed_value.name: x})[0], ours, rtol=1e-3, atol=1e-5)


def test_ir_shape_inference_with_symbolic_batch(mlp_model):
    from inference.shape_inference import infer_shapes

    mlp_model.graph.value_info.clear()
    infer_shapes(mlp_model, strict=True)
    for node in mlp_model.graph.nodes:
        t = mlp_model.graph.type_of(node.outputs[0])
        assert t.shape[0] == "batch", (node.op_type, t)
    assert mlp_model.graph.type_of("y").shape == ("batch", 4)


def test_schema_defaults_from_the_spec():
    from inference.schema import get_schema

    conv = get_schema("Conv", "", 17)
    assert conv.attributes["group"] == 1 and conv.attributes["auto_pad"] == "NOTSET"
    assert [p.name for p in conv.inputs] == ["X", "W", "B"] and conv.inputs[2].optional


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "transformer_encoder", "squeezenet", "shufflenet"])
def test_shapes_inferred_without_the_weights_equal_onnx_on_the_whole_model(name):
    """The load-time shape inference runs on a copy without the large initializers; it must give
    exactly what onnx infers on the whole model, and hand the initializers back unchanged."""
    proto = zoo.light_model(name) if name in ("squeezenet", "shufflenet") else model_to_proto(getattr(zoo, name)())
    assert any(np.prod(t.dims) > SHAPE_DATA_LIMIT for t in proto.graph.initializer)
    whole = shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    light = with_inferred_shapes(proto)
    as_bytes = lambda vs: {v.name: v.SerializeToString() for v in vs}  # noqa: E731
    assert len(light.graph.value_info) > 0
    assert as_bytes(light.graph.value_info) == as_bytes(whole.graph.value_info)
    assert [v.SerializeToString() for v in light.graph.input] == [v.SerializeToString() for v in proto.graph.input]
    assert [v.SerializeToString() for v in light.graph.output] == [v.SerializeToString() for v in whole.graph.output]
    assert as_bytes(light.graph.initializer) == as_bytes(proto.graph.initializer)
    assert light.producer_name == proto.producer_name and list(light.opset_import) == list(proto.opset_import)


def test_shape_inference_reads_small_initializers_as_data():
    """A Reshape whose shape is an initializer keeps its inferred output shape (data propagation)."""
    w = onnx.numpy_helper.from_array(np.zeros((2000, 6), np.float32), "w")
    shape = onnx.numpy_helper.from_array(np.array([3, 4], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, shape])
    out = with_inferred_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    y = next(v for v in out.graph.output if v.name == "y")
    assert [d.dim_value for d in y.type.tensor_type.shape.dim] == [3, 4]
    assert [t.name for t in out.graph.initializer] == ["shape", "w"]
