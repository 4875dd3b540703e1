"""``Q @ K^T`` as exported (Transpose of K's last two axes, then MatMul) fused into
``edgelearn::MatMulTransB``, which reads K in place: the pass's rules, the kernel against numpy on
tile edges at one and two threads, and whole models against onnxruntime, replayed and not."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from inference import Config, Predictor
from inference.decompose import decompose_to_standard
from inference.kernels.matmul_transb import matmul_transb, matmul_transb_reference
from inference.onnx_export import model_to_proto
from inference.onnx_import import load_model
from inference.passes.transpose_matmul import fuse_transpose_matmul

RNG = np.random.default_rng(0)


def _attention_scores(perm=(0, 1, 3, 2), k_is_output: bool = False, second_reader: bool = False) -> onnx.ModelProto:
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=list(perm)),
             helper.make_node("MatMul", ["q", "kt"], ["scores"])]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)]
    if k_is_output:
        outputs.append(helper.make_tensor_value_info("kt", TensorProto.FLOAT, None))
    if second_reader:
        nodes.append(helper.make_node("Relu", ["kt"], ["kt_relu"]))
        outputs.append(helper.make_tensor_value_info("kt_relu", TensorProto.FLOAT, None))
    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["b", 2, "p", 8]),
              helper.make_tensor_value_info("k", TensorProto.FLOAT, ["b", 2, "n", 8])]
    graph = helper.make_graph(nodes, "scores", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(p: int, n: int) -> dict:
    return {"q": RNG.standard_normal((1, 2, p, 8)).astype(np.float32),
            "k": RNG.standard_normal((1, 2, n, 8)).astype(np.float32)}


@pytest.mark.parametrize("replay", [True, False], ids=["replayed", "step-by-step"])
def test_the_pair_fuses_and_computes_onnxruntimes_scores(replay):
    proto = _attention_scores()
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=1, kernel_replay=replay))
    hist = p.model.graph.op_histogram()
    assert hist == {"edgelearn::MatMulTransB": 1}, hist
    peer = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for rows, keys in [(1, 30), (1, 30), (1, 30), (1, 30), (40, 40), (3, 1)]:  # a decoder's query, replayed; a prefill
        feeds = _feeds(rows, keys)
        np.testing.assert_allclose(p.run(feeds)["scores"], peer.run(None, feeds)[0], rtol=1e-5, atol=1e-5)
    if replay:
        assert "replayed" in p.replay_report(), p.replay_report()


@pytest.mark.parametrize("case", ["other perm", "transposed K is an output", "transposed K read twice"])
def test_what_must_keep_its_transpose_is_not_fused(case):
    proto = {"other perm": lambda: _attention_scores(perm=(0, 2, 1, 3)),
             "transposed K is an output": lambda: _attention_scores(k_is_output=True),
             "transposed K read twice": lambda: _attention_scores(second_reader=True)}[case]()
    model = load_model(proto)
    assert not fuse_transpose_matmul(model)
    assert [n.op_type for n in model.graph.nodes][:2] == ["Transpose", "MatMul"]


def test_the_fused_graph_decomposes_to_standard_onnx_onnxruntime_runs():
    proto = _attention_scores()
    p = Predictor(Config(model_path=proto.SerializeToString(), num_threads=1))
    standard = model_to_proto(decompose_to_standard(p.model))
    onnx.checker.check_model(standard, full_check=True)
    assert {n.op_type for n in standard.graph.node} == {"Transpose", "MatMul"}
    feeds = _feeds(5, 7)
    got = ort.InferenceSession(standard.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, p.run(feeds)["scores"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("a_shape,b_shape", [
    ((1, 8, 1, 64), (1, 8, 1000, 64)),  # a decoder's query against a long cache
    ((2, 3, 1, 5), (2, 3, 17, 5)),  # odd widths
    ((1, 1, 2, 63), (1, 1, 1, 63)),  # one key
    ((4, 31, 16), (4, 33, 16)),  # rows just under and past a tile
    ((4, 32, 16), (4, 40, 16)),
    ((2, 2, 24, 8), (2, 2, 30, 8)),  # an encoder's heads: B transposed into the workspace
    ((2, 50, 64), (70, 64)),  # a 2-D B shared by every product
    ((3, 1, 7, 8), (1, 2, 9, 8)),  # broadcast batch axes: the reference
    ((0, 2, 4), (0, 5, 4)),  # empty
])
def test_the_kernel_is_numpys_product_with_b_transposed(threads, a_shape, b_shape):
    a = RNG.standard_normal(a_shape).astype(np.float32)
    b = RNG.standard_normal(b_shape).astype(np.float32)
    want = np.matmul(a.astype(np.float64), np.swapaxes(b, -1, -2).astype(np.float64))
    for got in (matmul_transb(a, b), matmul_transb_reference(a, b)):
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_b_of_one_dim_is_named():
    from inference.errors import KernelError

    with pytest.raises(KernelError, match="MatMulTransB: B must have at least 2 dims"):
        matmul_transb_reference(np.ones((2, 3), np.float32), np.ones(3, np.float32))


def test_a_torch_kv_cache_decoders_attention_fuses_and_keeps_onnxruntimes_outputs():
    """A real export (``benchmarks/decode_loop.py``'s decoder, two layers): the cache's keys are
    concatenated, then transposed for ``q @ k^T``; fused, the scores read the concatenated keys.
    (An encoder's K^T composes with its head split into one other Transpose, which stays.)"""
    torch = pytest.importorskip("torch")
    from benchmarks.decode_loop import KvDecoder, export_kv

    torch.manual_seed(0)
    proto = export_kv(KvDecoder(vocab=60, dim=32, heads=2, layers=2, context=40).eval())
    p = Predictor(Config(model_path=proto, num_threads=1))
    unfused = Predictor(Config(model_path=proto, num_threads=1, passes={"fuse_transpose_matmul": False}))
    assert p.model.graph.op_histogram().get("edgelearn::MatMulTransB") == 2
    assert "edgelearn::MatMulTransB" not in unfused.model.graph.op_histogram()
    assert len(p.model.graph.nodes) == len(unfused.model.graph.nodes) - 2
    peer = ort.InferenceSession(proto, providers=["CPUExecutionProvider"])
    names = [n for n in p.get_input_names() if n != "ids"]
    for length in (4, 4, 4, 4, 30):  # step by step, captured, replayed; a longer cache
        feeds = {"ids": np.array([[5]], np.int64),
                 **{n: RNG.standard_normal((1, 2, length, 16)).astype(np.float32) for n in names}}
        got = p.run(feeds)
        for name, want in zip([o.name for o in peer.get_outputs()], peer.run(None, feeds)):
            np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=name)
    assert "replayed" in p.replay_report()
