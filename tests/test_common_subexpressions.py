"""Common subexpressions merged: what repeats is computed once, results unchanged (onnxruntime's
and the unmerged graph's), graph outputs keep their names, random ops stay apart."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import Config, Predictor
from inference.onnx_import import load_model
from inference.passes.common_subexpressions import eliminate_common_subexpressions

OFF = {"eliminate_common_subexpressions": False}


def _int64(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _blocks(random: bool = False) -> onnx.ModelProto:
    """Two blocks that each reshape ``x`` (batch, seq, 8) to (batch, seq, 2, 4) by their own
    Shape -> Gather -> Unsqueeze -> Concat (the constants equal but named apart, as torch.onnx
    writes them) and each cast the same mask; block two's shape arithmetic also a graph output."""
    nodes, inits = [], [_int64("heads", [2, 4])]
    outs = []
    for b in range(2):
        inits += [_int64(f"zero{b}", 0), _int64(f"one{b}", 1), _int64(f"axis{b}", [0])]
        nodes += [helper.make_node("Shape", ["x"], [f"shape{b}"]),
                  helper.make_node("Gather", [f"shape{b}", f"zero{b}"], [f"batch{b}"], axis=0),
                  helper.make_node("Gather", [f"shape{b}", f"one{b}"], [f"seq{b}"], axis=0),
                  helper.make_node("Unsqueeze", [f"batch{b}", f"axis{b}"], [f"b{b}"]),
                  helper.make_node("Unsqueeze", [f"seq{b}", f"axis{b}"], [f"s{b}"]),
                  helper.make_node("Concat", [f"b{b}", f"s{b}", "heads"], [f"target{b}"], axis=0),
                  helper.make_node("Reshape", ["x", f"target{b}"], [f"r{b}"]),
                  helper.make_node("Cast", ["mask"], [f"m{b}"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"r{b}", f"m{b}"], [f"y{b}"])]
        outs.append(helper.make_tensor_value_info(f"y{b}", TensorProto.FLOAT, None))
    outs.append(helper.make_tensor_value_info("target1", TensorProto.INT64, [4]))
    if random:
        for b in range(2):
            nodes.append(helper.make_node("RandomUniformLike", ["x"], [f"noise{b}"], seed=1.0))
            outs.append(helper.make_tensor_value_info(f"noise{b}", TensorProto.FLOAT, None))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8]),
              helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 1, 1, 4])]
    graph = helper.make_graph(nodes, "blocks", inputs, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(seq: int = 5) -> dict:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((3, seq, 8)).astype(np.float32),
            "mask": np.array([True, False, True, True]).reshape(1, 1, 1, 4)}


def test_repeated_shape_arithmetic_and_casts_run_once_with_the_same_results():
    proto = _blocks()
    merged, unmerged = Predictor(Config(model_path=proto)), Predictor(Config(model_path=proto, passes=OFF))
    hist, before = merged.model.graph.op_histogram(), unmerged.model.graph.op_histogram()
    # block two's Shape, Gathers, Unsqueezes and Cast repeat block one's; its Concat is a graph
    # output, so it stays (named as the model names it), and so do the Reshape and Mul reading it
    assert before["Shape"] == before["Cast"] == before["Concat"] == 2 and before["Unsqueeze"] == 4
    assert hist["Shape"] == hist["Cast"] == 1 and hist["Gather"] == 2 and hist["Unsqueeze"] == 2, hist
    assert hist["Concat"] == 2 and merged.get_output_names() == unmerged.get_output_names()
    peer = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for seq in (5, 2, 7):
        feeds = _feeds(seq)
        got, alone = merged.run(feeds), unmerged.run(feeds)
        for name, want in zip([o.name for o in peer.get_outputs()], peer.run(None, feeds)):
            np.testing.assert_array_equal(got[name], want, err_msg=name)
            np.testing.assert_array_equal(got[name], alone[name], err_msg=name)


def test_random_ops_and_other_constants_are_not_merged():
    model = load_model(_blocks(random=True))
    g = model.graph
    g.initializers["one1"] = np.array(2, np.int64)  # block two now reads dim 2: not the same Gather
    assert eliminate_common_subexpressions(model)
    ops = [n.op_type for n in g.nodes]
    assert ops.count("RandomUniformLike") == 2 and ops.count("Gather") == 3 and ops.count("Shape") == 1
    assert not eliminate_common_subexpressions(model)  # nothing left that repeats


def test_a_merged_node_keeps_reading_through_earlier_merges():
    """Block two's Concat reads two Unsqueezes that merged into block one's: it must read those
    (then it is block one's Concat itself, when not a graph output)."""
    proto = _blocks()
    proto.graph.output.pop()  # target1 no longer a graph output
    model = load_model(proto)
    eliminate_common_subexpressions(model)
    concat = [n for n in model.graph.nodes if n.op_type == "Concat"]
    reshapes = [n for n in model.graph.nodes if n.op_type == "Reshape"]
    assert len(concat) == 1 and len(reshapes) == 1, [n.op_type for n in model.graph.nodes]


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
def test_a_torch_exported_kv_cache_decoder_merges_its_per_layer_arithmetic(int8):
    """A real export (``benchmarks/decode_loop.py``'s decoder, two layers): each layer's reshape
    targets and mask Cast merged, logits and cache equal to the unmerged graph's on new lengths."""
    torch = pytest.importorskip("torch")
    from benchmarks.decode_loop import KvDecoder, export_kv, quantized

    torch.manual_seed(0)
    proto = export_kv(KvDecoder(vocab=60, dim=32, heads=2, layers=2, context=24).eval())
    if int8:
        proto = quantized(proto)
    merged = Predictor(Config(model_path=proto, num_threads=1, kernel_replay=False))
    unmerged = Predictor(Config(model_path=proto, num_threads=1, kernel_replay=False, passes=OFF))
    assert len(merged.model.graph.nodes) < len(unmerged.model.graph.nodes) - 10
    assert merged.model.graph.op_histogram().get("Cast", 0) <= 1
    rng = np.random.default_rng(1)
    caches = [n for n in merged.get_input_names() if n != "ids"]
    for length in (0, 3, 9):
        feeds = {"ids": np.array([[7]], np.int64),
                 **{n: rng.standard_normal((1, 2, length, 16)).astype(np.float32) for n in caches}}
        got, want = merged.run(feeds), unmerged.run(feeds)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} at cached length {length}")
