"""Shape arithmetic that folds under a dynamic batch: the dims a ``Gather`` or ``Slice`` of a shape
picks are static, so the arithmetic on them folds, and a fold makes later shapes static, so the
next ``Shape`` folds too (PyTorch's ``chunk``, twice in a row). What picks the batch stays a run-time
op. Outputs equal onnxruntime's at several batches."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from inference import Config, Predictor, load_model
from inference.ir import TensorType
from inference.passes.constant_folding import _refines, fold_constants
from inference.passes.eliminate import eliminate_dead_nodes

I64 = np.int64


def _chunk(nodes: list, inits: list, x: str, tag: str, index: int) -> str:
    """What torch writes for ``x.chunk(2, 1)[1]`` (then a Relu): the channel count from the run's
    shape, halved, as the Slice's start and end."""
    nodes += [helper.make_node("Shape", [x], [f"{tag}_shape"]),
              helper.make_node("Gather", [f"{tag}_shape", f"{tag}_index"], [f"{tag}_c"], axis=0),
              helper.make_node("Div", [f"{tag}_c", "two"], [f"{tag}_half"]),
              helper.make_node("Unsqueeze", [f"{tag}_half", "zero1"], [f"{tag}_start"]),
              helper.make_node("Mul", [f"{tag}_start", "two1"], [f"{tag}_end"]),
              helper.make_node("Slice", [x, f"{tag}_start", f"{tag}_end", "one1"], [f"{tag}_part"]),
              helper.make_node("Relu", [f"{tag}_part"], [f"{tag}_out"])]
    inits.append(numpy_helper.from_array(np.array(index, I64), f"{tag}_index"))
    return f"{tag}_out"


def _two_chunks(index: int = 1) -> onnx.ModelProto:
    nodes: list = []
    inits = [numpy_helper.from_array(np.array(2, I64), "two"), numpy_helper.from_array(np.array([0], I64), "zero1"),
             numpy_helper.from_array(np.array([2], I64), "two1"), numpy_helper.from_array(np.array([1], I64), "one1")]
    y = _chunk(nodes, inits, _chunk(nodes, inits, "x", "a", index), "b", index)
    nodes.append(helper.make_node("Identity", [y], ["y"]))
    graph = helper.make_graph(nodes, "chunks", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8, 3, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _check_against_onnxruntime(proto: onnx.ModelProto, shapes) -> None:
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=1))
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in shapes:
        x = np.random.default_rng(shape[0]).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(p.run({"x": x})["y"], s.run(None, {"x": x})[0])


def test_chunks_of_the_channels_fold_one_after_another_under_a_symbolic_batch():
    model = load_model(_two_chunks())
    assert fold_constants(model) and eliminate_dead_nodes(model)
    assert model.graph.op_histogram() == {"Slice": 2, "Relu": 2, "Identity": 1}  # both Shapes gone
    part = model.graph.type_of("b_part")
    assert isinstance(part, TensorType) and part.shape[1:] == (2, 3, 3)  # inferred again after the first fold
    _check_against_onnxruntime(_two_chunks(), [(1, 8, 3, 3), (3, 8, 3, 3)])


def test_a_gather_of_the_batch_stays():
    model = load_model(_two_chunks(index=0))  # Shape[0]: the symbolic batch
    fold_constants(model)
    eliminate_dead_nodes(model)
    assert model.graph.op_histogram()["Shape"] == 2 and model.graph.op_histogram()["Gather"] == 2
    _check_against_onnxruntime(_two_chunks(index=0), [(4, 8, 3, 3), (6, 8, 3, 3)])


@pytest.mark.parametrize("starts, ends, steps, folds", [([1], [4], [1], True), ([-3], [100], [1], True),
                                                        ([0], [2], [1], False), ([-1], [0], [-1], True),
                                                        ([-1], [-5], [-1], False)])
def test_a_slice_of_a_shape_folds_when_it_leaves_the_batch_out(starts, ends, steps, folds):
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "st", "en", "ax", "sp"], ["dims"]),
             helper.make_node("ReduceProd", ["dims"], ["k"], keepdims=1),
             helper.make_node("Concat", ["minus1", "k"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, I64), n) for n, v in
             (("st", starts), ("en", ends), ("ax", [0]), ("sp", steps), ("minus1", [-1]))]
    graph = helper.make_graph(nodes, "flatten", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2, 3, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = load_model(proto)
    fold_constants(model)
    assert ("Slice" not in model.graph.op_histogram()) == folds
    _check_against_onnxruntime(proto, [(1, 2, 3, 4), (5, 2, 3, 4)])


def test_inferred_types_only_ever_refine():
    f = onnx.TensorProto.FLOAT
    assert _refines(TensorType(f, ("N", 4)), TensorType(f, ("N", "unk__1")))
    assert _refines(TensorType(f, ("N", 4)), None)
    assert not _refines(TensorType(f, ("N", 4)), TensorType(f, ("N", 4)))  # nothing new
    assert not _refines(TensorType(f, ("N", 5)), TensorType(f, ("N", 4)))  # a contradiction keeps the old
    assert not _refines(TensorType(f, ("N", "M")), TensorType(f, (2, 4)))  # less known
    assert _refines(TensorType(f, ("N", 4)), TensorType(f, ("unk__1", "unk__2")))  # names may change with it
    assert not _refines(TensorType(f, ("unk__3", "M")), TensorType(f, ("N", "M")))  # names alone: nothing new
    assert not _refines(TensorType(f, ("N", 4, 1)), TensorType(f, ("N", "M")))  # another rank
    assert not _refines(TensorType(onnx.TensorProto.INT64, ("N", 4)), TensorType(f, ("N", "M")))
