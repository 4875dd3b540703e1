"""Which pool runs a graph's work at n threads (``inference.thread_policy``), the FLOP counts it
rests on, and that a Predictor sets the pools accordingly."""
from __future__ import annotations

import numba
import numpy as np
import onnx
import pytest
from onnx import helper
from threadpoolctl import threadpool_info

from inference import Config, Predictor, zoo
from inference.flops import node_flops
from inference.kernels import _jit
from inference.onnx_export import model_to_proto
from inference.thread_policy import numba_share, prefers_numba_pool, runs_on_blas


def _blas_threads() -> int:
    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


@pytest.fixture(scope="module")
def resnet():
    return Predictor(Config(model_path=model_to_proto(zoo.resnet18(size=32, classes=10)), num_threads=1))


@pytest.fixture(scope="module")
def transformer():
    model = zoo.transformer_encoder(seq=8, dim=32, heads=2, layers=1, ffn=64)
    return Predictor(Config(model_path=model_to_proto(model), num_threads=1))


def test_fused_ops_count_their_multiply_adds(resnet, transformer):
    nchw = Predictor(Config(model_path=model_to_proto(zoo.resnet18(size=32, classes=10)), num_threads=1,
                            passes={"layout_nhwc": False})).model.graph
    conv = next(n for n in nchw.nodes if n.op_type == "FusedConv")
    out, w = nchw.concrete_shape(conv.outputs[0]), nchw.concrete_shape(conv.inputs[1])
    assert node_flops(nchw, conv) == 2 * int(np.prod(out)) * int(np.prod(w[1:]))  # OIHW
    g = resnet.model.graph
    stem = g.nodes[0]  # reads the NCHW input in place: its weight is HWIO all the same
    assert stem.op_type == "FusedConvNHWC" and stem.attrs["input_layout"] == "NCHW"
    kxk = next(n for n in g.nodes[1:] if n.op_type == "FusedConvNHWC" and n.attrs.get("kernel_shape") == [3, 3])
    for nhwc in (stem, kxk):
        out, w = g.concrete_shape(nhwc.outputs[0]), g.concrete_shape(nhwc.inputs[1])
        assert node_flops(g, nhwc) == 2 * int(np.prod(out)) * int(np.prod(w[:3]))  # HWIO
    t = transformer.model.graph
    mm = next(n for n in t.nodes if n.op_type == "FusedMatMul")
    a, y = t.concrete_shape(mm.inputs[0]), t.concrete_shape(mm.outputs[0])
    assert node_flops(t, mm) == 2 * int(np.prod(y)) * a[-1]


def _fed_products() -> onnx.ModelProto:
    """x @ w1 @ w2 with both matrices fed at run time: nothing to pack, BLAS does the work."""
    f32 = onnx.TensorProto.FLOAT
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])]
    inputs = [helper.make_tensor_value_info(n, f32, s) for n, s in (("x", [8, 64]), ("w1", [64, 64]), ("w2", [64, 16]))]
    graph = helper.make_graph(nodes, "products", inputs, [helper.make_tensor_value_info("y", f32, [8, 16])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_cnn_and_a_transformer_run_on_numba(resnet, transformer):
    """The transformer's projections have constant weights, so they run on our tile; only the
    attention's products of two activations stay BLAS."""
    assert numba_share(resnet.model.graph) > 0.95 and prefers_numba_pool(resnet.model.graph)
    t = transformer.model.graph
    assert 0.5 < numba_share(t) < 1 and prefers_numba_pool(t)
    assert {n.op_type for n in t.nodes if runs_on_blas(t, n)} == {"MatMul"}


def test_products_of_fed_matrices_run_on_blas():
    g = Predictor(Config(model_path=_fed_products(), num_threads=1)).model.graph
    assert numba_share(g) == 0 and not prefers_numba_pool(g)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_predictor_sets_one_busy_pool():
    cnn = model_to_proto(zoo.resnet18(size=32, classes=10))
    try:
        Predictor(Config(model_path=cnn, num_threads=2))
        assert _blas_threads() == 1 and _jit._POLICY["parallel"] and numba.get_num_threads() == 2
        Predictor(Config(model_path=_fed_products(), num_threads=2))
        assert _blas_threads() == 2 and not _jit._POLICY["parallel"]
    finally:
        Predictor(Config(model_path=cnn, num_threads=1))
    assert _blas_threads() == 1 and not _jit._POLICY["parallel"]


def _mnist_cnn() -> bytes:
    """The MNIST CNN of ``benchmarks/overhead.py`` (conv 1->16, pool, conv 16->32, pool, linear): 2.1 MFLOP."""
    from inference.builder import GraphBuilder

    b = GraphBuilder("mnist_cnn", opset=17)
    rng = np.random.default_rng(0)
    x = b.input("input", np.float32, ["N", 1, 28, 28])
    for cin, cout in ((1, 16), (16, 32)):
        w = b.const(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32))
        x = b.op("MaxPool", b.op("Relu", b.op("Conv", x, w, pads=[1, 1, 1, 1])), kernel_shape=[2, 2], strides=[2, 2])
    y = b.op("MatMul", b.op("Flatten", x, axis=1), b.const(rng.standard_normal((32 * 49, 10)).astype(np.float32)))
    b.op("Identity", y, outputs=["logits"])
    b.output("logits", np.float32, ["N", 10])
    return model_to_proto(b.build()).SerializeToString()


def test_a_small_run_keeps_its_kernels_serial(two_threads):
    """Below MIN_THREADED_FLOPS a whole run's kernels run serial at any thread count (a batch-1
    MNIST CNN); larger batches of it, and larger models, thread theirs."""
    from inference.thread_policy import MIN_THREADED_FLOPS, serial_rows

    p = Predictor(Config(model_path=_mnist_cnn(), num_threads=2))
    flops = sum(node_flops(p.model.graph, n) for n in p.model.graph.nodes)
    assert p._serial_rows == serial_rows(p.model.graph) == MIN_THREADED_FLOPS // flops >= 1
    seen = []
    p.session.profiler = lambda node, kernel, start, end: seen.append(_jit.kernel_threads())
    x = np.random.default_rng(1).standard_normal((p._serial_rows + 1, 1, 28, 28)).astype(np.float32)
    small, large = p.run({"input": x[:1]})["logits"], p.run({"input": x})["logits"]
    steps = len(p.session.steps)
    assert seen[:steps] == [1] * steps and seen[steps:] == [two_threads] * steps
    np.testing.assert_allclose(small, large[:1], rtol=1e-5, atol=1e-5)
    assert serial_rows(zoo.resnet8_cifar().graph) == 0  # 25 MFLOP: threaded from batch 1


def test_a_symbolic_sequence_length_leaves_the_run_threaded():
    """With a symbolic dim past the batch axis (a dynamic sequence length) the FLOPs per row are
    unknown: taken at one token, a small transformer looked small enough to run serial at every
    batch (a BERT export's batch 1 of 128 tokens ran on one core of two)."""
    from inference.flops import row_flops
    from inference.thread_policy import serial_rows

    proto = model_to_proto(zoo.transformer_encoder(seq=8, dim=16, heads=2, layers=1, ffn=32))
    fixed = Predictor(Config(model_path=proto.SerializeToString(), num_threads=2))
    assert row_flops(fixed.model.graph) and serial_rows(fixed.model.graph) >= 1  # 8 tokens: small
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "sequence"
    dynamic = Predictor(Config(model_path=proto.SerializeToString(), num_threads=2))
    assert row_flops(dynamic.model.graph) is None
    assert serial_rows(dynamic.model.graph) == dynamic._serial_rows == 0


def test_ops_that_move_data_count_no_flops_even_without_shapes():
    """A Reshape or Transpose whose output shape inference lost still counts 0 FLOPs, so one lost
    shape does not make a whole model's total unknown (a ViT's had, and its batch 1 ran threaded);
    an op that computes with an unknown shape stays unknown."""
    from inference.ir import Graph, Node
    g = Graph()
    assert node_flops(g, Node("Reshape", ["x", "s"], ["r"])) == 0
    assert node_flops(g, Node("Transpose", ["x"], ["t"], {"perm": [1, 0]})) == 0
    assert node_flops(g, Node("Relu", ["x"], ["y"])) is None
