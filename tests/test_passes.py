"""Each graph pass leaves outputs unchanged on real models, and does what it says."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from inference import Session, load_model, model_to_proto
from inference.passes import PIPELINE, optimize
from tests.conftest import LIGHT_MODELS

MODELS = ["light_resnet50", "light_squeezenet", "light_inception_v2", "light_shufflenet"]


def _load(model_name: str):
    """A light model without its closing Softmax: with their constant 0.02 weights the logits
    reach ~7e9 (float32 spacing 512), so which of them tie at the maximum, and with it the whole
    softmax, depends on summation order (BLAS's kernel choice flipped it). The logits compare
    within rtol 1e-4 whatever the order."""
    proto = onnx.load(str(LIGHT_MODELS / f"{model_name}.onnx"))
    last = proto.graph.node[-1]
    assert last.op_type == "Softmax" and proto.graph.output[0].name == last.output[0]
    proto.graph.output[0].name = last.input[0]
    proto.graph.node.remove(last)
    return load_model(proto)


def _run(model, x):
    name = model.graph.feed_inputs()[0].name
    return Session(model).run({name: x})[0]


@pytest.fixture(scope="module")
def baselines():
    out = {}
    for m in MODELS:
        model = _load(m)
        shape = model.graph.feed_inputs()[0].type.shape
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        out[m] = (x, _run(model, x))
    return out


@pytest.mark.parametrize("pass_name", [p.name for p in PIPELINE])
@pytest.mark.parametrize("model_name", MODELS)
def test_single_pass_keeps_outputs(baselines, model_name, pass_name):
    model = _load(model_name)
    optimize(model, switches={p.name: p.name == pass_name for p in PIPELINE})
    x, expected = baselines[model_name]
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_name", MODELS)
def test_full_pipeline_shrinks_graph_and_exports(baselines, model_name):
    model = _load(model_name)
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


def _dense_bn_model(kind: str, training_mode: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """A linear layer (5 inputs, 6 outputs, 4 rows) then an inference-mode BatchNormalization and Relu, as
    exporters write them: ``kind`` picks the layer (and its attributes)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(len(kind))
    n, k, m = 4, 5, 6

    def const(name, a):
        return numpy_helper.from_array(np.asarray(a, np.float32), name)

    inits = [const("scale", rng.uniform(0.5, 1.5, m)), const("shift", rng.normal(size=m)),
             const("mean", rng.normal(size=m)), const("var", rng.uniform(0.5, 1.5, m))]
    x_shape = [k, n] if kind == "gemm_trans_a" else [n, k]
    nodes = []
    if kind.startswith("matmul"):
        inits.append(const("w", rng.normal(size=(k, m))))
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["mm"]))
        if kind == "matmul_add":
            inits.append(const("b", rng.normal(size=m)))
            nodes.append(helper.make_node("Add", ["mm", "b"], ["lin"]))
        else:
            nodes[-1].output[0] = "lin"
    else:
        c_shape = {"gemm": (1, m), "gemm_trans_a": (m,), "gemm_full_c": (n, m), "gemm_no_c": None}[kind]
        inputs = ["x", "w"] + (["c"] if c_shape else [])
        inits.append(const("w", rng.normal(size=(m, k))))
        if c_shape:
            inits.append(const("c", rng.normal(size=c_shape)))
        nodes.append(helper.make_node("Gemm", inputs, ["lin"], alpha=0.5, beta=2.0, transB=1,
                                      transA=int(kind == "gemm_trans_a")))
    bn_outputs = ["bn"] if not training_mode else ["bn", "running_mean", "running_var"]
    nodes.append(helper.make_node("BatchNormalization", ["lin", "scale", "shift", "mean", "var"], bn_outputs,
                                  epsilon=1e-3, **({"training_mode": 1} if training_mode else {})))
    nodes.append(helper.make_node("Relu", ["bn"], ["y"]))
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    return proto, rng.normal(size=x_shape).astype(np.float32)


@pytest.mark.parametrize("kind", ["matmul", "matmul_add", "gemm", "gemm_trans_a", "gemm_full_c", "gemm_no_c"])
def test_batchnorm_folds_into_the_linear_layer_before_it(kind):
    """Gemm (alpha, beta, transA, transB, C of any broadcast shape or none) and a 2-D MatMul (with
    or without its Add) absorb the BatchNormalization after them: outputs as onnxruntime's, and
    the optimized graph exports to a model onnx checks."""
    ort = pytest.importorskip("onnxruntime")
    proto, x = _dense_bn_model(kind)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    model = load_model(proto)
    assert "fold_conv_batchnorm" in optimize(model)
    assert "BatchNormalization" not in model.graph.op_histogram()
    np.testing.assert_allclose(_run(model, x), want, rtol=1e-5, atol=1e-5)
    onnx.checker.check_model(model_to_proto(model), full_check=True)


def test_batchnorm_in_training_mode_or_after_a_fed_weight_stays():
    """Only an inference-mode BatchNormalization after a constant weight folds."""
    from inference.passes.conv_bn import fold_conv_batchnorm

    training = load_model(_dense_bn_model("gemm", training_mode=1)[0])
    assert not fold_conv_batchnorm(training)
    proto, _ = _dense_bn_model("gemm")
    proto.graph.input.append(onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [6, 5]))
    fed = load_model(proto)  # an initializer that is also an input: a feed may replace it
    assert not fold_conv_batchnorm(fed)
    assert fed.graph.op_histogram().get("BatchNormalization") == 1


def _shape_model(batch) -> onnx.ModelProto:
    """x (batch, 3, 4) -> Reshape to (Shape(x)[0], 12) -> Mul by Cast(Shape(x)[1:], float) summed."""
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Shape", ["x"], ["tail"], start=1),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0), helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
             helper.make_node("Concat", ["n1", "twelve"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["r"]), helper.make_node("Cast", ["tail"], ["tf"], to=1),
             helper.make_node("ReduceSum", ["tf"], ["k"], keepdims=0), helper.make_node("Mul", ["r", "k"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array([0], np.int64), "zero1"),
             numpy_helper.from_array(np.array([12], np.int64), "twelve")]
    graph = helper.make_graph(nodes, "shapes", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 3, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("batch", [2, "N"])
def test_shapes_of_static_tensors_fold(batch):
    """Shape of a tensor whose shape is fully known folds (and the arithmetic after it); with a
    symbolic batch dim the Shape that reads it stays a run-time op, the one that starts past it
    (``start=1``) folds. Outputs unchanged either way."""
    from inference.passes.constant_folding import fold_constants

    model = load_model(_shape_model(batch))
    assert fold_constants(model)
    hist = model.graph.op_histogram()
    if batch == 2:
        assert hist == {"Reshape": 1, "Mul": 1}
    else:
        assert hist == {"Shape": 1, "Gather": 1, "Unsqueeze": 1, "Concat": 1, "Reshape": 1, "Mul": 1}
    x = np.random.default_rng(4).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(model, x), x.reshape(2, 12) * 7, rtol=1e-6)
