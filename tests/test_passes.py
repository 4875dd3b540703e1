"""Each graph pass leaves outputs unchanged on real models, and does what it says."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from inference import Session, load_model, model_to_proto
from inference.passes import PIPELINE, optimize
from tests.conftest import LIGHT_MODELS

MODELS = ["light_resnet50", "light_squeezenet", "light_inception_v2", "light_shufflenet"]


def _run(model, x):
    name = model.graph.feed_inputs()[0].name
    return Session(model).run({name: x})[0]


@pytest.fixture(scope="module")
def baselines():
    out = {}
    for m in MODELS:
        model = load_model(str(LIGHT_MODELS / f"{m}.onnx"))
        shape = model.graph.feed_inputs()[0].type.shape
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        out[m] = (x, _run(model, x))
    return out


@pytest.mark.parametrize("pass_name", [p.name for p in PIPELINE])
@pytest.mark.parametrize("model_name", MODELS)
def test_single_pass_keeps_outputs(baselines, model_name, pass_name):
    model = load_model(str(LIGHT_MODELS / f"{model_name}.onnx"))
    optimize(model, switches={p.name: p.name == pass_name for p in PIPELINE})
    x, expected = baselines[model_name]
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_name", MODELS)
def test_full_pipeline_shrinks_graph_and_exports(baselines, model_name):
    model = load_model(str(LIGHT_MODELS / f"{model_name}.onnx"))
    before = model.graph.op_histogram()
    applied = optimize(model)
    after = model.graph.op_histogram()
    assert "fold_constants" in applied and "ConstantOfShape" not in after
    assert "BatchNormalization" not in after and "Dropout" not in after
    assert sum(after.values()) < sum(before.values())
    x, expected = baselines[model_name]
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-4, atol=1e-5)
    onnx.checker.check_model(model_to_proto(model), full_check=True)


def test_matmul_add_becomes_gemm(mlp_model):
    from inference.passes.matmul_add import fuse_matmul_add
    from inference.shape_inference import infer_shapes

    infer_shapes(mlp_model)  # the pass needs the activation's rank
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    expected = Session(mlp_model).run({"x": x})[0]
    assert fuse_matmul_add(mlp_model)
    hist = mlp_model.graph.op_histogram()
    assert hist.get("Gemm") == 2 and "MatMul" not in hist and "Add" not in hist
    np.testing.assert_allclose(Session(mlp_model).run({"x": x})[0], expected, rtol=1e-5, atol=1e-6)


def test_matmul_add_leaves_a_malformed_matmul_to_the_kernel(mlp_model):
    """A byte flip can leave a MatMul with one input: the pass skips it (the kernel names the
    error at run time) instead of failing on the missing weight."""
    from inference.passes.matmul_add import fuse_matmul_add
    from inference.shape_inference import infer_shapes

    infer_shapes(mlp_model)
    for node in mlp_model.graph.nodes:
        if node.op_type == "MatMul":
            node.inputs = node.inputs[:1]
    before = mlp_model.graph.op_histogram()
    assert before.get("MatMul")
    assert not fuse_matmul_add(mlp_model)
    assert mlp_model.graph.op_histogram() == before


def test_pad_folds_into_conv():
    from inference.builder import GraphBuilder
    from inference.passes.pad_conv import fold_pad_into_conv

    rng = np.random.default_rng(0)
    b = GraphBuilder("padconv", opset=17)
    x = b.input("x", np.float32, [1, 2, 6, 6])
    p = b.op("Pad", x, b.const(np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64)))
    y = b.op("Conv", p, b.const(rng.normal(size=(3, 2, 3, 3)).astype(np.float32)), kernel_shape=[3, 3],
             outputs=["y"])
    b.output(y, np.float32)
    model = b.build()
    xv = rng.normal(size=(1, 2, 6, 6)).astype(np.float32)
    expected = Session(model).run({"x": xv})[0]
    assert fold_pad_into_conv(model)
    assert model.graph.op_histogram() == {"Conv": 1}
    assert model.graph.nodes[0].attrs["pads"] == [1, 2, 1, 2]
    np.testing.assert_allclose(Session(model).run({"x": xv})[0], expected, rtol=1e-5, atol=1e-6)


def test_unknown_pass_name_is_refused(mlp_model):
    from inference.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown passes"):
        optimize(mlp_model, switches={"fold_everything": True})
