"""Batch-split data parallelism: split runs equal whole runs, and graphs that mix rows never split."""
from __future__ import annotations

import numpy as np
import pytest

from inference import Config, Predictor, zoo
from inference.batch_split import check_batch_split
from inference.builder import GraphBuilder
from inference.errors import ConfigError
from inference.onnx_export import model_to_proto
from inference.shape_inference import infer_shapes
from tests.conftest import in_threads

SMALL = {
    "mobilenet_v2": lambda: zoo.mobilenet_v2(size=32, classes=10),
    "resnet18": lambda: zoo.resnet18(size=32, classes=10),
    "transformer": lambda: zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=1, ffn=64),
}


def _feed(predictor: Predictor, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    v = predictor.model.graph.feed_inputs()[0]
    shape = [batch if isinstance(d, str) else d for d in v.type.shape]
    return {v.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _pair(proto) -> tuple[Predictor, Predictor]:
    split = Predictor(Config(model_path=proto, num_threads=2, min_rows_per_thread=1))
    whole = Predictor(Config(model_path=proto, num_threads=2, batch_split=False, chunk_rows=0))
    return split, whole


@pytest.mark.parametrize("name", sorted(SMALL))
def test_split_run_equals_whole_run(name):
    split, whole = _pair(model_to_proto(SMALL[name]()))
    assert split.batch_split.ok, split.batch_split.reason
    assert whole.splitter is None
    for batch in (2, 5):  # even and uneven chunks
        feeds = _feed(split, batch, seed=batch)
        got, want = split.run(feeds), whole.run(feeds)
        for k in want:
            assert got[k].shape == want[k].shape
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)
    assert split.splitter.split_runs == 2


def test_batch_one_and_small_batches_run_whole():
    proto = model_to_proto(SMALL["resnet18"]())
    p = Predictor(Config(model_path=proto, num_threads=2, min_rows_per_thread=4))
    assert p.splitter.chunks(1) == 1 and p.splitter.chunks(7) == 1 and p.splitter.chunks(8) == 2
    p.run(_feed(p, 1))
    p.run(_feed(p, 7))
    assert p.splitter.split_runs == 0
    p.run(_feed(p, 8))
    assert p.splitter.split_runs == 1


def test_tiny_models_keep_whole_batches(mlp_model):
    """The automatic threshold: an 8-16-4 MLP is too little work per row to pay for threads."""
    p = Predictor(Config(model_path=model_to_proto(mlp_model), num_threads=2))
    assert p.batch_split.ok and p.splitter.chunks(256) == 1
    x = np.random.default_rng(4).standard_normal((256, 8)).astype(np.float32)
    p.run({"x": x})
    assert p.splitter.split_runs == 0


def test_one_thread_or_switched_off_never_splits():
    proto = model_to_proto(SMALL["transformer"]())
    assert Predictor(Config(model_path=proto, num_threads=1)).splitter is None
    assert Predictor(Config(model_path=proto)).splitter is None
    off = Predictor(Config(model_path=proto, num_threads=2, batch_split=False, chunk_rows=0))
    assert off.splitter is None and off.batch_split is None


def test_min_rows_per_thread_is_validated():
    with pytest.raises(ConfigError, match="min_rows_per_thread"):
        Predictor(Config(model_path=model_to_proto(SMALL["transformer"]()), min_rows_per_thread=0))


def test_concurrent_callers_of_one_predictor_get_their_own_rows():
    split, whole = _pair(model_to_proto(SMALL["mobilenet_v2"]()))
    cases = [_feed(split, b, seed=b) for b in (1, 2, 3, 4, 6)]
    want = [whole.run(f)["logits"] for f in cases]
    def work(tid: int) -> None:
        for i in range(6):
            k = (tid + i) % len(cases)
            got = split.run(cases[k])["logits"]
            assert got.shape == want[k].shape
            np.testing.assert_allclose(got, want[k], rtol=1e-5, atol=1e-5,
                                       err_msg=f"thread {tid} call {i}: rows of batch {len(cases[k]['input'])}")

    assert in_threads(work, 4) == []
    assert split.splitter.split_runs > 0


# -- the analysis on small graphs: (x: [batch, 4, 6]) -> ops -> (y) -------------------------------------
def _graph(build, out_shape) -> GraphBuilder:
    b = GraphBuilder("g", opset=17)
    x = b.input("x", np.float32, ["batch", 4, 6])
    b.op("Identity", build(b, x), outputs=["y"])
    b.output("y", np.float32, out_shape)
    return b


def _const(b: GraphBuilder, *shape: int):
    return b.const(np.random.default_rng(1).standard_normal(shape).astype(np.float32))


PER_SAMPLE = {
    "softmax_last_axis": (lambda b, x: b.op("Softmax", x, axis=-1), ["batch", 4, 6]),
    "reduce_inner_axes": (lambda b, x: b.op("ReduceMean", x, axes=[1, 2], keepdims=0), ["batch"]),
    "reshape_keeps_dim0": (lambda b, x: b.op("Reshape", x, b.const(np.array([0, 24], np.int64))), ["batch", 24]),
    "reshape_minus1_rows": (lambda b, x: b.op("Reshape", x, b.const(np.array([-1, 24], np.int64))),
                            ["batch", 24]),
    "matmul_const_b": (lambda b, x: b.op("MatMul", x, _const(b, 6, 3)), ["batch", 4, 3]),
    "concat_axis1": (lambda b, x: b.op("Concat", x, b.op("Relu", x), axis=1), ["batch", 8, 6]),
    "add_row_broadcast": (lambda b, x: b.op("Add", x, _const(b, 4, 6)), ["batch", 4, 6]),
    "channel_shuffle": (lambda b, x: b.op("Reshape", b.op("Transpose", b.op(
        "Reshape", x, b.const(np.array([0, 2, 2, 6], np.int64))), perm=[0, 2, 1, 3]),
        b.const(np.array([0, 4, 6], np.int64))), ["batch", 4, 6]),  # fused into one ChannelShuffle
}

MIXES_ROWS = {  # case: (graph, output shape, the op the verdict must name)
    "reduce_over_batch": (lambda b, x: b.op("ReduceMean", x, axes=[0], keepdims=1), [1, 4, 6], "ReduceMean"),
    "reshape_folds_batch": (lambda b, x: b.op("Reshape", x, b.const(np.array([4, -1], np.int64))), [4, "n"],
                            "Reshape"),
    "softmax_over_batch": (lambda b, x: b.op("Softmax", x, axis=0), ["batch", 4, 6], "Softmax"),
    "transpose_moves_batch": (lambda b, x: b.op("Transpose", x, perm=[1, 0, 2]), [4, "batch", 6], "Transpose"),
    "concat_axis0": (lambda b, x: b.op("Concat", x, x, axis=0), ["b2", 4, 6], "Concat"),
    "gram_over_batch": (lambda b, x: b.op("Gemm", *[b.op("Reshape", x, b.const(np.array([0, 24], np.int64)))] * 2,
                                          transA=1), [24, 24], "Gemm"),
    "const_against_batch_axis": (lambda b, x: b.op("Add", x, _const(b, 3, 4, 6)), ["batch", 4, 6], "Add"),
    "unknown_op": (lambda b, x: b.op("CumSum", x, b.const(np.array(0, np.int64))), ["batch", 4, 6], "CumSum"),
}


@pytest.mark.parametrize("case", sorted(PER_SAMPLE))
def test_per_sample_graphs_split_and_match(case):
    build, shape = PER_SAMPLE[case]
    proto = model_to_proto(_graph(build, shape).build())
    split, whole = _pair(proto)
    assert split.batch_split.ok, split.batch_split.reason
    if case == "channel_shuffle":
        assert [n.op_type for n in split.model.graph.nodes] == ["ChannelShuffle"]
    x = {"x": np.random.default_rng(2).standard_normal((5, 4, 6)).astype(np.float32)}
    np.testing.assert_allclose(split.run(x)["y"], whole.run(x)["y"], rtol=1e-6, atol=1e-6)
    assert split.splitter.split_runs == 1


@pytest.mark.parametrize("case", sorted(MIXES_ROWS))
def test_graphs_mixing_rows_never_split(case):
    build, shape, op = MIXES_ROWS[case]
    model = infer_shapes(_graph(build, shape).build())
    verdict = check_batch_split(model.graph)
    assert not verdict.ok and f"({op})" in verdict.reason, verdict.reason
    if case == "reduce_over_batch":  # and the Predictor still computes the whole-batch answer
        p = Predictor(Config(model_path=model_to_proto(model), num_threads=2, min_rows_per_thread=1))
        x = np.random.default_rng(3).standard_normal((6, 4, 6)).astype(np.float32)
        assert p.splitter is None and "ReduceMean" in p.batch_split.reason
        np.testing.assert_allclose(p.run({"x": x})["y"], x.mean(axis=0, keepdims=True), rtol=1e-5, atol=1e-6)


def test_fixed_batch_inputs_never_split():
    b = GraphBuilder("g", opset=17)
    x = b.input("x", np.float32, [8, 4])
    b.output(b.op("Relu", x), np.float32, [8, 4])
    verdict = check_batch_split(b.build().graph)
    assert not verdict.ok and "symbolic" in verdict.reason


def test_static_int8_splits_and_dynamic_int8_does_not():
    """Static scales are per-tensor constants (per-sample); DynamicQuantizeLinear's span the batch."""
    proto = model_to_proto(SMALL["resnet18"]())
    x = {"input": np.random.default_rng(5).standard_normal((6, 3, 32, 32)).astype(np.float32)}
    calib = np.random.default_rng(6).standard_normal((4, 3, 32, 32)).astype(np.float32)
    static = dict(precision="int8", calibration_data=calib)
    split = Predictor(Config(model_path=proto, num_threads=2, min_rows_per_thread=1, **static))
    whole = Predictor(Config(model_path=proto, num_threads=2, batch_split=False, **static))
    assert split.batch_split.ok, split.batch_split.reason
    np.testing.assert_allclose(split.run(x)["logits"], whole.run(x)["logits"], rtol=1e-5, atol=1e-5)
    assert split.splitter.split_runs == 1
    dynamic = Predictor(Config(model_path=proto, num_threads=2, min_rows_per_thread=1, precision="int8"))
    assert dynamic.splitter is None and "DynamicQuantizeLinear" in dynamic.batch_split.reason


def test_a_profiled_run_stays_whole_so_every_op_is_traced():
    p = Predictor(Config(model_path=model_to_proto(SMALL["transformer"]()), num_threads=2, min_rows_per_thread=1))
    seen: list[str] = []
    p.session.profiler = lambda node, kernel, start, end: seen.append(node.op_type)
    p.run(_feed(p, 4))
    assert len(seen) == len(p.model.graph.nodes) and p.splitter.split_runs == 0
