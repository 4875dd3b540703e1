"""LayerNorm written out in primitive ops (opset < 17: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt,
Div [, Mul, Add]) fuses into one LayerNormalization (``passes.layer_norm``): outputs as
onnxruntime's, the op in our domain below opset 17; anything else is left alone."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from inference import Config, Predictor, load_model, model_to_proto
from inference.passes import optimize
from inference.passes.layer_norm import fuse_layer_norm

ort = pytest.importorskip("onnxruntime")

SHAPE = (2, 5, 24)


def _layer_norm_model(opset: int = 14, square: str = "Pow", affine: str = "both", axes=(-1,), tap: str = "",
                      gamma_shape=(24,), eps_input: bool = False) -> onnx.ModelProto:
    """x -> the written-out LayerNorm over ``axes`` (``affine``: "both", "scale" or "none") -> y."""
    rng = np.random.default_rng(opset)
    inits = {"two": np.array(2.0), "eps": np.array(1e-5), "gamma": rng.uniform(0.5, 1.5, gamma_shape),
             "beta": rng.standard_normal(gamma_shape), "axes": np.array(axes, np.int64)}
    if opset >= 18:
        mean = lambda i, o: helper.make_node("ReduceMean", [i, "axes"], [o])  # noqa: E731
    else:
        mean = lambda i, o: helper.make_node("ReduceMean", [i], [o], axes=list(axes))  # noqa: E731
    nodes = [mean("x", "m"), helper.make_node("Sub", ["x", "m"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["p"]) if square == "Pow" else helper.make_node("Mul", ["d", "d"], ["p"]),
             mean("p", "v"), helper.make_node("Add", ["v", "eps_in" if eps_input else "eps"], ["e"]),
             helper.make_node("Sqrt", ["e"], ["s"]), helper.make_node("Div", ["d", "s"], ["n"])]
    last = "n"
    if affine in ("both", "scale"):
        nodes.append(helper.make_node("Mul", ["gamma", last], ["g"]))
        last = "g"
    if affine == "both":
        nodes.append(helper.make_node("Add", [last, "beta"], ["b"]))
        last = "b"
    nodes.append(helper.make_node("Relu", [last], ["y"]))
    inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, SHAPE)]
    if eps_input:
        inputs.append(helper.make_tensor_value_info("eps_in", onnx.TensorProto.FLOAT, []))
    outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]
    if tap:
        outputs.append(helper.make_tensor_value_info(tap, onnx.TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "layer_norm", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v, np.int64 if k == "axes" else np.float32), k)
                               for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _compare(proto: onnx.ModelProto, feeds: dict | None = None) -> None:
    feeds = feeds or {"x": np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32) * 3 + 1}
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = Predictor(Config(model_path=proto.SerializeToString(), num_threads=1)).run(feeds)
    for name, w in zip([o.name for o in proto.graph.output], want):
        np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset, square, affine, axes, gamma_shape", [
    (14, "Pow", "both", (-1,), (24,)),
    (13, "Mul", "scale", (2,), (1, 1, 24)),  # a positive axis; a scale with leading ones
    (14, "Pow", "none", (-1,), (24,)),
    (17, "Pow", "both", (-1,), (24,)),
    (18, "Pow", "both", (-1,), (24,)),  # axes as an input
    (14, "Pow", "both", (-2, -1), (5, 24)),  # two trailing axes
])
def test_the_written_out_form_fuses(opset, square, affine, axes, gamma_shape):
    proto = _layer_norm_model(opset, square, affine, axes, gamma_shape=gamma_shape)
    model = load_model(proto)
    optimize(model)
    hist = model.graph.op_histogram()
    fused = "LayerNormalization" if opset >= 17 else "edgelearn::LayerNormalization"
    assert hist.get(fused) == 1, hist
    for gone in ("ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Add" if affine == "both" else "Sqrt"):
        assert gone not in hist, gone
    node = next(n for n in model.graph.nodes if n.op_type == "LayerNormalization")
    assert node.attrs["axis"] == -len(axes) and node.attrs["epsilon"] == pytest.approx(1e-5)
    onnx.checker.check_model(model_to_proto(model), full_check=True)
    _compare(proto)


@pytest.mark.parametrize("case", ["d", "m", "p", "s", "v", "n"])
def test_a_chain_value_read_elsewhere_stays(case):
    """Each intermediate that is also a graph output must still be computed: nothing fuses, but
    the normalized value itself may be the fused node's output, its scale and shift kept apart."""
    proto = _layer_norm_model(tap=case)
    model = load_model(proto)
    fused = fuse_layer_norm(model)
    hist = model.graph.op_histogram()
    if case == "n":
        assert fused and hist.get("Mul") == 1 and hist.get("Add") == 1
    else:
        assert not fused and "LayerNormalization" not in str(hist)
    _compare(proto)


@pytest.mark.parametrize("kwargs", [{"axes": (1,)}, {"axes": (0, 2)}, {"eps_input": True}, {"gamma_shape": (5, 1)}])
def test_other_forms_are_left_alone(kwargs):
    """A mean over a leading axis or non-trailing axes, an epsilon fed at run time: no LayerNorm.
    A scale over another axis is no LayerNorm's scale: the chain fuses without it."""
    proto = _layer_norm_model(**kwargs)
    model = load_model(proto)
    fused = fuse_layer_norm(model)
    hist = model.graph.op_histogram()
    if "gamma_shape" in kwargs:
        assert fused and hist.get("Mul") == 1
        ln = next(n for n in model.graph.nodes if n.op_type == "LayerNormalization")
        assert len(ln.inputs) == 2  # a unit scale, and no bias: the Add follows the Mul it stays after
    else:
        assert not fused and hist.get("ReduceMean") == 2
    feeds = {"x": np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)}
    if kwargs.get("eps_input"):
        feeds["eps_in"] = np.array(1e-3, np.float32)
    _compare(proto, feeds)
