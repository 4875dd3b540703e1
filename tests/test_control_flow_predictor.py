"""Models with If and Loop bodies that read the enclosing graph's values, run by a Predictor: from
several threads at once (each run's values reach its own bodies: they had reached whichever run
began last, and bodies failed to find them), and through the weight release (a weight a body reads
stays, and a body's reads of values that are not weights do not trip it)."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from inference import Config, Predictor
from inference.kernels._prepack import is_released
from tests.conftest import in_threads

RNG = np.random.default_rng(5)
W = (RNG.standard_normal((64, 128)) * 0.1).astype(np.float32)  # 32 KiB: big enough to be released


def _value(name: str, dims) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _if_model() -> bytes:
    """y = If(c, then: relu(x) @ W * 2, else: -relu(x)); z = relu(x) @ W outside (a packed product)."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    then_g = helper.make_graph([helper.make_node("MatMul", ["h", "W"], ["hw"]),
                                helper.make_node("Mul", ["hw", "two"], ["t"])], "then", [], [_value("t", None)],
                               [two])
    else_g = helper.make_graph([helper.make_node("Neg", ["h"], ["e"])], "else", [], [_value("e", None)])
    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("MatMul", ["h", "W"], ["z"])]
    graph = helper.make_graph(nodes, "if", [_value("x", ["n", 64]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [_value("y", None), _value("z", ["n", 128])], [numpy_helper.from_array(W, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _loop_model() -> bytes:
    """A Loop of ``trips`` steps adding relu(x) (from the outer graph) to its carried sum."""
    body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Add", ["acc_in", "h"], ["acc_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _value("acc_in", None)],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _value("acc_out", None)])
    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("Loop", ["trips", "", "zero"], ["y"], body=body)]
    graph = helper.make_graph(nodes, "loop", [_value("x", ["n", 16]),
                                              helper.make_tensor_value_info("trips", TensorProto.INT64, []),
                                              _value("zero", ["n", 16])], [_value("y", ["n", 16])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_concurrent_runs_of_an_if_model_each_see_their_own_values():
    p = Predictor(Config(model_path=_if_model()))

    def work(i: int) -> None:
        rng = np.random.default_rng(i)
        for j in range(100):
            x = rng.standard_normal((3, 64)).astype(np.float32) + i
            c = bool((i + j) % 2)
            out = p.run({"x": x, "c": np.array(c)})
            h = np.maximum(x, 0)
            np.testing.assert_allclose(out["y"], h @ W * 2 if c else -h, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(out["z"], h @ W, rtol=1e-4, atol=1e-4)

    errors = in_threads(work, 4)
    assert not errors, errors[0]


def test_concurrent_runs_of_a_loop_model_each_see_their_own_values():
    p = Predictor(Config(model_path=_loop_model()))

    def work(i: int) -> None:
        rng = np.random.default_rng(i)
        for j in range(100):
            x = rng.standard_normal((2, 16)).astype(np.float32)
            trips = 1 + (i + j) % 4
            y = p.run({"x": x, "trips": np.array(trips, np.int64), "zero": np.zeros((2, 16), np.float32)})["y"]
            np.testing.assert_allclose(y, trips * np.maximum(x, 0), rtol=1e-5, atol=1e-5)

    errors = in_threads(work, 4)
    assert not errors, errors[0]


def test_a_weight_a_body_reads_is_not_released():
    p = Predictor(Config(model_path=_if_model()))
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    for c in (False, True, True):
        out = p.run({"x": x, "c": np.array(c)})
        h = np.maximum(x, 0)
        np.testing.assert_allclose(out["y"], h @ W * 2 if c else -h, rtol=1e-4, atol=1e-4)
    assert not is_released(p.model.graph.initializers["W"])  # the then-branch reads it as it is
