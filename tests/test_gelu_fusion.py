"""GELU written out after a dense layer fuses into the layer's FusedMatMul as its epilogue: the erf
form ``x * 0.5 * (1 + erf(x / sqrt 2))`` as torch.onnx and Hugging Face's BERT export it, as Gelu
(``passes._epilogue.gelu_erf_chain``), and the tanh approximation as PyTorch and GPT-2 write it,
as GeluTanh (``gelu_tanh_chain``): outputs as onnxruntime's; anything else is left alone."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from inference import Config, Predictor, load_model, model_to_proto
from inference.passes import optimize

ort = pytest.importorskip("onnxruntime")


def _gelu_model(form: str, root2: float = math.sqrt(2.0), tap: str = "") -> onnx.ModelProto:
    """x (3, 16) -> MatMul + Add -> GELU written as ``form`` -> MatMul -> y. ``tap``: a value in the
    chain that is also a graph output (then nothing may fuse)."""
    rng = np.random.default_rng(len(form))
    inits = {"w1": rng.standard_normal((16, 32)) / 4, "b1": rng.standard_normal(32) / 4,
             "w2": rng.standard_normal((32, 8)) / 6, "root2": np.array(root2), "half": np.array(0.5),
             "one": np.array(1.0), "inv_root2": np.array(1.0 / root2), "three": np.array(3.0),
             "cubic": np.array(0.044715), "root_2_pi": np.array(math.sqrt(2.0 / math.pi))}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["mm"]), helper.make_node("Add", ["b1", "mm"], ["h"])]
    if form == "torch":  # Div, Erf, Add, Mul(x, .), Mul(., 0.5)
        nodes += [helper.make_node("Div", ["h", "root2"], ["t1"]), helper.make_node("Erf", ["t1"], ["t2"]),
                  helper.make_node("Add", ["t2", "one"], ["t3"]), helper.make_node("Mul", ["h", "t3"], ["t4"]),
                  helper.make_node("Mul", ["t4", "half"], ["g"])]
    elif form == "torch_commuted":  # the scale as a Mul by 1/sqrt 2, operands swapped everywhere
        nodes += [helper.make_node("Mul", ["inv_root2", "h"], ["t1"]), helper.make_node("Erf", ["t1"], ["t2"]),
                  helper.make_node("Add", ["one", "t2"], ["t3"]), helper.make_node("Mul", ["t3", "h"], ["t4"]),
                  helper.make_node("Mul", ["half", "t4"], ["g"])]
    elif form == "tanh_torch":  # gelu(approximate="tanh") as torch.onnx writes it: the cube as x * (x * x)
        nodes += [helper.make_node("Mul", ["h", "h"], ["s1"]), helper.make_node("Mul", ["h", "s1"], ["s2"]),
                  helper.make_node("Mul", ["cubic", "s2"], ["s3"]), helper.make_node("Add", ["h", "s3"], ["s4"]),
                  helper.make_node("Mul", ["root_2_pi", "s4"], ["s5"]), helper.make_node("Tanh", ["s5"], ["t2"]),
                  helper.make_node("Add", ["one", "t2"], ["t3"]), helper.make_node("Mul", ["h", "t3"], ["t4"]),
                  helper.make_node("Mul", ["half", "t4"], ["g"])]
    elif form == "tanh_gpt2":  # GPT-2's NewGELU: Pow(x, 3), the half taken first
        nodes += [helper.make_node("Pow", ["h", "three"], ["s2"]), helper.make_node("Mul", ["s2", "cubic"], ["s3"]),
                  helper.make_node("Add", ["s3", "h"], ["s4"]), helper.make_node("Mul", ["s4", "root_2_pi"], ["s5"]),
                  helper.make_node("Tanh", ["s5"], ["t2"]), helper.make_node("Add", ["t2", "one"], ["t3"]),
                  helper.make_node("Mul", ["half", "h"], ["t4"]), helper.make_node("Mul", ["t4", "t3"], ["g"])]
    else:  # "bert": (x * 0.5) * (1 + erf(x / sqrt 2))
        nodes += [helper.make_node("Mul", ["h", "half"], ["t0"]), helper.make_node("Div", ["h", "root2"], ["t1"]),
                  helper.make_node("Erf", ["t1"], ["t2"]), helper.make_node("Add", ["t2", "one"], ["t3"]),
                  helper.make_node("Mul", ["t0", "t3"], ["g"])]
    nodes.append(helper.make_node("MatMul", ["g", "w2"], ["y"]))
    outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]
    if tap:
        outputs.append(helper.make_tensor_value_info(tap, onnx.TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, form, [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 16])],
                              outputs, [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _compare(proto: onnx.ModelProto) -> None:
    x = np.random.default_rng(3).standard_normal((3, 16)).astype(np.float32) * 3
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = Predictor(Config(model_path=proto.SerializeToString(), num_threads=1)).run({"x": x})
    for name, w in zip([o.name for o in proto.graph.output], want):
        np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["torch", "torch_commuted", "bert"])
def test_the_erf_form_fuses_into_the_dense_layer(form):
    proto = _gelu_model(form)
    model = load_model(proto)
    optimize(model)
    ops = model.graph.op_histogram()
    assert not {"Erf", "Div", "Mul", "Add"} & set(ops), ops
    fused = [n for n in model.graph.nodes if n.op_type == "FusedMatMul" and n.attrs.get("activation") == "Gelu"]
    assert len(fused) == 1
    onnx.checker.check_model(model_to_proto(model), full_check=True)  # what edgelearn optimize saves
    _compare(proto)


@pytest.mark.parametrize("case", ["another constant", "t2", "t3", "t4"])
def test_anything_else_is_left_alone(case):
    """A different constant, or a value of the chain also read elsewhere (a graph output)."""
    proto = _gelu_model("torch", root2=math.sqrt(3.0)) if case == "another constant" else _gelu_model("torch", tap=case)
    model = load_model(proto)
    optimize(model)
    assert "Erf" in model.graph.op_histogram()
    assert not any(n.attrs.get("activation") == "Gelu" for n in model.graph.nodes)
    _compare(proto)


@pytest.mark.parametrize("form", ["tanh_torch", "tanh_gpt2"])
def test_the_tanh_form_fuses_into_the_dense_layer(form):
    """GELU's tanh approximation (PyTorch's ``approximate="tanh"``, GPT-2's NewGELU) becomes the
    layer's GeluTanh epilogue: nine or ten nodes gone, outputs as onnxruntime's."""
    proto = _gelu_model(form)
    model = load_model(proto)
    optimize(model)
    ops = model.graph.op_histogram()
    assert not {"Tanh", "Pow", "Mul", "Add"} & set(ops), ops
    # the dense layer's epilogue, then the lone second product (fused too, no epilogue)
    assert [n.attrs.get("activation") for n in model.graph.nodes if n.op_type == "FusedMatMul"] == ["GeluTanh", None]
    onnx.checker.check_model(model_to_proto(model), full_check=True)
    _compare(proto)


@pytest.mark.parametrize("case", ["s1", "s3", "s5", "t2", "t3", "t4"])
def test_a_tanh_chain_value_read_elsewhere_is_left_alone(case):
    proto = _gelu_model("tanh_torch", tap=case)
    model = load_model(proto)
    optimize(model)
    assert "Tanh" in model.graph.op_histogram()
    assert not any(n.attrs.get("activation") == "GeluTanh" for n in model.graph.nodes)
    _compare(proto)
