"""Import -> IR -> export keeps a model valid for onnx.checker and equal in onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inference import Session, load_model, model_to_proto, save_model
from inference.ir import TensorType
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
