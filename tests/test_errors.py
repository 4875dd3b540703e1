"""Bad files and bad models give our own errors with names in them, never an interpreter crash."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from inference import Config, Predictor
from inference.errors import EdgelearnError, InvalidModelError, ModelLoadError, UnsupportedOpError


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Predictor(Config(model_path=str(tmp_path / "nope.onnx")))


def test_truncated_file(tmp_path, mlp_path):
    data = mlp_path.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        Predictor(Config(model_path=str(bad)))


def test_garbage_bytes():
    with pytest.raises(ModelLoadError):
        Predictor(Config(model_path=b"\x00\x01not a model at all\xff" * 10))


def test_unsupported_op_names_op_domain_opset_and_node():
    node = helper.make_node("FrobnicateV9", ["x"], ["y"], name="the_frob", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 3)])
    with pytest.raises(UnsupportedOpError, match=r"com.example::FrobnicateV9 at opset 3 \(node 'the_frob'\)"):
        Predictor(Config(model_path=model))


@pytest.mark.parametrize("op,kernel_shape", [("Conv", [5, 5]), ("Conv", [1, 3]), ("Conv", [3]),
                                             ("ConvTranspose", [2, 2])])
def test_a_kernel_shape_other_than_the_weight_s_is_invalid(op, kernel_shape):
    """The kernels size their window by the attribute: one that disagrees with the weight had given
    an output of the wrong shape, silently (onnxruntime refuses it when it runs)."""
    w = onnx.numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "w")
    node = helper.make_node(op, ["x", "w"], ["y"], name="c", kernel_shape=kernel_shape, pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    with pytest.raises(InvalidModelError, match=rf"node c.*kernel_shape \{kernel_shape}\ does not match its "
                                                r"weight 'w' of shape \[4, 4, 3, 3\]"):
        Predictor(Config(model_path=helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))


def test_dangling_input_is_invalid():
    node = helper.make_node("Relu", ["ghost"], ["y"], name="r")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(InvalidModelError, match=r"node r \(Relu\) reads \['ghost'\]"):
        Predictor(Config(model_path=helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))


@pytest.mark.parametrize("inputs, outputs, says", [([], ["y"], "has 0 inputs; the op takes 1"),
                                                   (["x", "x"], ["y"], "has 2 inputs; the op takes 1"),
                                                   (["x"], ["y", "z"], "has 2 outputs; the op takes 1")])
def test_a_node_with_the_wrong_number_of_inputs_is_invalid(inputs, outputs, says):
    """Found by the byte-flip test: a Relu left without its input had raised IndexError in planning."""
    graph = helper.make_graph([helper.make_node("Relu", inputs, outputs, name="act")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidModelError, match=f"node act.*Relu, opset 17.*{says}"):
        Predictor(Config(model_path=model))


def test_an_attribute_of_the_wrong_type_is_invalid():
    """Found by the byte-flip test: Softmax's INT axis stored as a string had raised ValueError."""
    node = helper.make_node("Softmax", ["x"], ["y"], name="soft")
    node.attribute.append(helper.make_attribute("axis", "1"))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    with pytest.raises(InvalidModelError, match="node soft.*attribute 'axis' is STRING, the op declares INT"):
        Predictor(Config(model_path=helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))


def test_an_input_of_an_undefined_element_type_is_invalid():
    """Found by the byte-flip test: element type 0 had raised KeyError when a feed was made for it."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 0, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(InvalidModelError, match="'x' declares element type 0, which ONNX does not define"):
        Predictor(Config(model_path=helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))


def test_kernel_failure_names_the_node():
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("s", TensorProto.INT64, [2], [4, 4])])
    predictor = Predictor(Config(model_path=helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    with pytest.raises(EdgelearnError, match="bad_reshape"):
        predictor.run({"x": np.ones(6, np.float32)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_byte_flips_of_a_real_model_never_crash(mlp_path, data):
    """Random byte flips: each load/run either works or raises one of our errors."""
    raw = bytearray(mlp_path.read_bytes())
    flips = data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8))
    for pos in flips:
        raw[pos] ^= data.draw(st.integers(1, 255))
    try:
        predictor = Predictor(Config(model_path=bytes(raw)))
        feeds = {}
        for name in predictor.get_input_names():
            h = predictor.get_input_tensor(name)
            shape = [d if isinstance(d, int) and 0 <= d < 64 else 2 for d in h.shape]
            feeds[name] = np.ones(shape, dtype=h.dtype or np.float32)
        predictor.run(feeds)
    except EdgelearnError:
        pass
