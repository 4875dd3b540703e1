"""Sequential batch chunks: chunked runs equal whole runs, the rule sizes chunks from the memory
plan, and graphs that mix rows never chunk."""
from __future__ import annotations

import numpy as np
import pytest

from inference import Config, Predictor, zoo
from inference.builder import GraphBuilder
from inference.chunked import CHUNK_BYTES, auto_chunk_rows, run_in_chunks
from inference.errors import ConfigError
from inference.onnx_export import model_to_proto


@pytest.fixture(scope="module")
def mobilenet_proto():
    return model_to_proto(zoo.mobilenet_v2(size=32, classes=10))


def _feed(p: Predictor, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    v = p.model.graph.feed_inputs()[0]
    shape = [batch if isinstance(d, str) else d for d in v.type.shape]
    return {v.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _runs_of_first_node(p: Predictor, feeds: dict) -> tuple[dict, int]:
    """Run ``p`` on ``feeds``, counting the session runs through its per-step profiler hook."""
    first = p.session.steps[0].node
    count = [0]
    p.session.profiler = lambda node, kernel, start, end: count.__setitem__(0, count[0] + (node is first))
    try:
        return p.run(feeds), count[0]
    finally:
        p.session.profiler = None


def test_chunked_run_equals_whole_run(mobilenet_proto):
    chunked = Predictor(Config(model_path=mobilenet_proto, chunk_rows=3))
    whole = Predictor(Config(model_path=mobilenet_proto, chunk_rows=0))
    assert chunked.batch_split.ok and chunked.chunk_rows == 3 and whole.chunk_rows == 0
    for batch, runs in ((7, 3), (3, 1), (1, 1)):  # uneven chunks; a batch of one chunk runs whole
        feeds = _feed(whole, batch, seed=batch)
        got, n = _runs_of_first_node(chunked, feeds)
        want = whole.run(feeds)
        assert n == runs
        for k in want:
            assert got[k].shape == want[k].shape
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)


def test_threads_chunk_their_parts(mobilenet_proto):
    """At two threads each thread's part of the batch runs in chunks too."""
    both = Predictor(Config(model_path=mobilenet_proto, num_threads=2, min_rows_per_thread=1, chunk_rows=2))
    whole = Predictor(Config(model_path=mobilenet_proto, chunk_rows=0))
    assert both.splitter.chunk_rows == 2
    feeds = _feed(whole, 9, seed=9)
    got, want = both.run(feeds), whole.run(feeds)
    assert both.splitter.split_runs == 1
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6, atol=1e-6)


def test_chunk_rows_follow_the_memory_plan(mobilenet_proto):
    p = Predictor(Config(model_path=mobilenet_proto))
    peak = p.memory_plan(1).peak_bytes
    assert p.chunk_rows == auto_chunk_rows(peak) == CHUNK_BYTES // peak
    assert auto_chunk_rows(CHUNK_BYTES * 3) == 1 and auto_chunk_rows(0) == CHUNK_BYTES
    big = Predictor(Config(model_path=model_to_proto(zoo.mobilenet_v2(size=224, classes=10))))
    # ~2.3 MiB of activations per 224x224 image (5.7 with each block's expanded tensors apart)
    assert 1 <= big.chunk_rows <= 10


def test_graphs_that_mix_rows_never_chunk():
    b = GraphBuilder("g", opset=17)
    x = b.input("x", np.float32, ["batch", 4])
    b.op("ReduceSum", x, b.const(np.array([0], np.int64)), keepdims=1, outputs=["y"])
    b.output("y", np.float32, [1, 4])
    p = Predictor(Config(model_path=model_to_proto(b.build()), chunk_rows=1))
    assert not p.batch_split.ok and p.chunk_rows == 0
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    np.testing.assert_array_equal(p.run({"x": x})["y"], x.sum(axis=0, keepdims=True))


def test_run_in_chunks_joins_every_output_along_the_batch():
    def run(feeds):
        a = feeds["a"]
        return [a * 2, a.sum(axis=1, keepdims=True)]

    a = np.arange(14, dtype=np.float32).reshape(7, 2)
    sizes = []
    got = run_in_chunks(lambda f: sizes.append(len(f["a"])) or run(f), {"a": a}, 3)
    assert sizes == [3, 3, 1]
    for g, w in zip(got, run({"a": a})):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "4"])
def test_chunk_rows_is_validated(bad, mobilenet_proto):
    with pytest.raises(ConfigError, match="chunk_rows"):
        Predictor(Config(model_path=mobilenet_proto, chunk_rows=bad))
