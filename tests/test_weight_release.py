"""A Predictor holds each packed weight once (``inference.weight_release``): after the first run the
originals are freed, later runs (other batch sizes, other tiles) stay equal to onnxruntime's, and
exports still write every value."""
from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inference import Config, Predictor, zoo
from inference.kernels._prepack import is_released
from inference.onnx_export import model_to_proto
from inference.weight_release import PANEL_INPUTS, values
from tests.conftest import in_threads

MODELS = {
    "mobilenet_v2": lambda: model_to_proto(zoo.mobilenet_v2(size=64)),
    "resnet18": lambda: model_to_proto(zoo.resnet18(size=64)),
    "transformer": lambda: model_to_proto(zoo.transformer_encoder(seq=16, dim=64, heads=2, layers=1, ffn=256)),
}


def _feeds(proto: onnx.ModelProto, batch: int, seed: int = 0) -> dict:
    inp = proto.graph.input[0]
    shape = [batch] + [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]
    return {inp.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _released(p: Predictor) -> list[str]:
    return [n for n, a in p.model.graph.initializers.items() if is_released(a)]


@pytest.mark.parametrize("name", list(MODELS))
def test_runs_after_the_release_equal_onnxruntime(name, threads):
    proto = MODELS[name]()
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    p = Predictor(Config(model_path=proto.SerializeToString()))
    for i, batch in enumerate((1, 1, 3, 1)):  # batch 3 picks other tiles: packed again from restored values
        feeds = _feeds(proto, batch, seed=i)
        got, want = list(p.run(feeds).values()), ref.run(None, feeds)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        if i == 0:
            released = _released(p)
            assert released  # every benchmark model has products of at least MIN_BYTES
    assert _released(p) == released
    ops = {(n.domain, n.op_type) for n in p.model.graph.nodes for name in released if name in n.inputs}
    assert ops <= set(PANEL_INPUTS)


def test_switched_off_keeps_every_weight():
    proto = MODELS["mobilenet_v2"]()
    p = Predictor(Config(model_path=proto.SerializeToString(), release_weights=False))
    p.run(_feeds(proto, 1))
    assert not _released(p)


def test_the_originals_are_freed():
    """The released arrays' memory is really returned (no memo of a kernel still holds them):
    numpy's allocations after a first run, with and without the release."""
    proto = MODELS["resnet18"]()
    feeds = _feeds(proto, 2)
    held = {}
    for release in (False, True):
        gc.collect()
        tracemalloc.start()
        p = Predictor(Config(model_path=proto.SerializeToString(), release_weights=release))
        p.run(feeds)
        gc.collect()
        held[release] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        nbytes = sum(values(p.model.graph.initializers[n]).nbytes for n in _released(p))
        del p
    assert nbytes > 0.7 * 46.7e6  # of ResNet-18's 46.7 MB (its Winograd-only 3x3 weights stay)
    assert held[False] - held[True] > 0.9 * nbytes


def test_exports_write_the_released_values(tmp_path):
    proto = MODELS["mobilenet_v2"]()
    feeds = _feeds(proto, 2)
    kept = Predictor(Config(model_path=proto.SerializeToString(), release_weights=False))
    p = Predictor(Config(model_path=proto.SerializeToString()))
    kept.run(feeds)
    p.run(feeds)
    assert _released(p)
    ours, theirs = model_to_proto(p.model), model_to_proto(kept.model)
    assert [t.raw_data for t in ours.graph.initializer] == [t.raw_data for t in theirs.graph.initializer]
    from inference.decompose import decompose_to_standard

    standard = model_to_proto(decompose_to_standard(p.model))
    onnx.checker.check_model(standard)
    got = ort.InferenceSession(standard.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], list(kept.run(feeds).values())[0], rtol=1e-4, atol=1e-5)


def test_concurrent_first_runs_of_several_batch_sizes():
    proto = MODELS["mobilenet_v2"]()
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    p = Predictor(Config(model_path=proto.SerializeToString()))

    def work(i: int) -> None:
        for j in range(3):
            feeds = _feeds(proto, 1 + (i + j) % 3, seed=10 * i + j)
            np.testing.assert_allclose(list(p.run(feeds).values())[0], ref.run(None, feeds)[0], rtol=1e-4, atol=1e-5)

    errors = in_threads(work, 4)
    assert not errors, errors[0]
    assert _released(p)


def test_a_path_off_the_panels_reads_the_restored_values():
    """A packed kernel's inputs off its fast path (here a float64 X handed to the bound FusedMatMul)
    go to the reference kernel: after the release that must see the weight's values, not the
    placeholder's zeros."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((64, 128)).astype(np.float32), rng.standard_normal(128).astype(np.float32)
    node = helper.make_node("FusedMatMul", ["x", "W", "B"], ["y"], domain="edgelearn", activation="Relu")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 128])],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edgelearn", 1)])
    p = Predictor(Config(model_path=model.SerializeToString()))
    x = rng.standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_allclose(p.run({"x": x})["y"], np.maximum(x @ w + b, 0), rtol=1e-4, atol=1e-4)
    assert _released(p) == ["W"]
    (step,) = p.session.steps
    held = p.model.graph.initializers["W"]
    got = step.call(x.astype(np.float64), held, p.model.graph.initializers["B"])
    np.testing.assert_allclose(got, np.maximum(x @ w + b, 0), rtol=1e-4, atol=1e-4)


def test_an_empty_first_batch_leaves_the_release_to_the_next_run():
    proto = MODELS["mobilenet_v2"]()
    p = Predictor(Config(model_path=proto.SerializeToString()))
    p.run(_feeds(proto, 0))  # no rows: the kernels may not have packed anything
    assert not _released(p)
    p.run(_feeds(proto, 1))
    assert _released(p)
