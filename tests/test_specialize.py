"""A CNN exported with symbolic image sizes runs the graph optimized for the sizes it is fed
(``inference.specialize``): channels-last and fused as a static model would be, equal to
onnxruntime at every size and batch, a few graphs kept, and the whole path (thread split, trace)
following the graph in use."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgelearn.commands.bench import write_trace
from inference import Config, Predictor, zoo
from inference.kernels.inverted_residual import OP as BLOCK
from inference.kernels.nhwc import OP as CONV_NHWC
from inference.onnx_export import model_to_proto
from inference.onnx_import import load_model
from inference.specialize import symbolic_image_inputs, with_sizes
from tests.conftest import in_threads

RTOL, ATOL = 1e-4, 1e-5


def _dynamic(model) -> bytes:
    proto = model_to_proto(model)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    del proto.graph.value_info[:]
    return proto.SerializeToString()


@pytest.fixture(scope="module")
def mobilenet() -> bytes:
    return _dynamic(zoo.mobilenet_v2(size=64))


def _image(batch: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(h * w + batch).standard_normal((batch, 3, h, w)).astype(np.float32)


def _ops(p: Predictor) -> set[str]:
    return {n.op_type for n in p.model.graph.nodes}


def test_each_size_runs_its_optimized_graph(mobilenet):
    peer = ort.InferenceSession(mobilenet, providers=["CPUExecutionProvider"])
    p = Predictor(Config(model_path=mobilenet))
    assert CONV_NHWC not in _ops(p)  # as loaded: sizes unknown, the layout pass left it NCHW
    name = p.get_input_names()[0]
    for batch, h, w in ((1, 64, 64), (3, 48, 80), (2, 33, 47)):
        x = _image(batch, h, w)
        got = p.run({name: x})["logits"]
        np.testing.assert_allclose(got, peer.run(None, {name: x})[0], rtol=RTOL, atol=ATOL)
        assert {CONV_NHWC, BLOCK} <= _ops(p) and "layout_nhwc" in p.applied_passes
    off = Predictor(Config(model_path=mobilenet, specialize_sizes=0))
    x = _image(1, 64, 64)
    np.testing.assert_allclose(off.run({name: x})["logits"], peer.run(None, {name: x})[0], rtol=RTOL, atol=ATOL)
    assert CONV_NHWC not in _ops(off)


@pytest.mark.parametrize("kept", [1, 3])
def test_a_few_graphs_are_kept_least_recently_used_dropped(mobilenet, kept):
    p = Predictor(Config(model_path=mobilenet, specialize_sizes=kept))
    name = p.get_input_names()[0]
    sizes = [(32 + 8 * i, 40) for i in range(kept + 1)]
    first = {}
    for h, w in sizes:
        first[(h, w)] = p.run({name: _image(1, h, w)})["logits"]
    assert len(p._variants) == kept and ((3, 32, 40),) not in p._variants  # the oldest went
    session = p.session
    np.testing.assert_array_equal(p.run({name: _image(1, *sizes[-1])})["logits"], first[sizes[-1]])
    assert p.session is session  # the same sizes again: the same graph, not optimized again
    np.testing.assert_array_equal(p.run({name: _image(1, *sizes[0])})["logits"], first[sizes[0]])  # made again


def test_thread_split_and_trace_follow_the_graph_in_use(mobilenet, tmp_path):
    p = Predictor(Config(model_path=mobilenet, num_threads=2, min_rows_per_thread=1))
    name = p.get_input_names()[0]
    x = _image(4, 56, 40)
    want = ort.InferenceSession(mobilenet, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    np.testing.assert_allclose(p.run({name: x})["logits"], want, rtol=RTOL, atol=ATOL)
    assert p.splitter is not None
    trace = tmp_path / "trace.json"
    assert write_trace(p, {name: _image(1, 72, 72)}, str(trace)) > 0
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e["cat"] == f"edgelearn::{CONV_NHWC}" for e in events)  # the specialised graph was traced


def test_only_image_inputs_of_convolutional_graphs():
    transformer = load_model(model_to_proto(zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=1, ffn=64)))
    assert symbolic_image_inputs(transformer) == []  # no convolutions: one graph serves every length
    static = load_model(model_to_proto(zoo.resnet18(size=32)))
    assert symbolic_image_inputs(static) == []  # batch only symbolic
    dynamic = load_model(_dynamic(zoo.resnet18(size=32)))
    assert symbolic_image_inputs(dynamic) == ["input"]


def test_with_sizes_shares_the_weights_and_fixes_the_sizes():
    model = load_model(_dynamic(zoo.resnet18(size=32)))
    sized = with_sizes(model, ["input"], ((3, 40, 24),))
    assert sized.graph.inputs[0].type.shape[1:] == (3, 40, 24) and model.graph.inputs[0].type.shape[2] == "height"
    assert all(sized.graph.initializers[k] is a for k, a in model.graph.initializers.items())
    assert not sized.graph.value_info and sized.graph.nodes is not model.graph.nodes


def test_optimize_command_says_symbolic_sizes_stay_generic(mobilenet, tmp_path, capsys):
    from edgelearn.cli import main

    src, out = tmp_path / "dynamic.onnx", tmp_path / "fast.onnx"
    src.write_bytes(mobilenet)
    assert main(["optimize", str(src), "-o", str(out)]) == 0
    assert "inputs ['input'] have symbolic image sizes" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_a_bad_count_is_named(mobilenet, bad):
    from inference.errors import ConfigError

    with pytest.raises(ConfigError, match="specialize_sizes must be an int >= 0"):
        Predictor(Config(model_path=mobilenet, specialize_sizes=bad))


def test_concurrent_runs_of_two_sizes_each_get_their_own_graph(mobilenet):
    p = Predictor(Config(model_path=mobilenet, specialize_sizes=1))  # one kept: every switch evicts
    name = p.get_input_names()[0]
    images = {hw: _image(2, *hw) for hw in ((40, 40), (56, 48))}
    want = {hw: p.run({name: x})["logits"] for hw, x in images.items()}
    sizes = [hw for hw in images for _ in range(2)]  # two threads per size

    def work(i: int) -> None:
        for _ in range(6):
            hw = sizes[i]
            np.testing.assert_allclose(p.run({name: images[hw]})["logits"], want[hw], rtol=RTOL, atol=ATOL,
                                       err_msg=str(hw))

    assert in_threads(work, len(sizes)) == []


@pytest.mark.parametrize("release", [True, False])
def test_sizes_share_the_weights_the_passes_derive(mobilenet, release):
    """Folded and channels-last weights do not depend on the sizes: a second size's graph holds
    the first's arrays (released or not), and still equals onnxruntime."""
    peer = ort.InferenceSession(mobilenet, providers=["CPUExecutionProvider"])
    p = Predictor(Config(model_path=mobilenet, release_weights=release))
    name = p.get_input_names()[0]
    graphs = []
    for h, w in ((64, 64), (48, 80)):
        x = _image(2, h, w)
        np.testing.assert_allclose(p.run({name: x})["logits"], peer.run(None, {name: x})[0], rtol=RTOL, atol=ATOL)
        graphs.append(p.model.graph)
    first, second = (g.initializers for g in graphs)
    assert graphs[0] is not graphs[1]
    shared = sum(a.nbytes for n, a in second.items() if first.get(n) is a)
    assert shared > 0.95 * sum(a.nbytes for a in second.values())
