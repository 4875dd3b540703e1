"""Transpose/Reshape chain simplification: each rule on a crafted graph, the "other reader" and
"graph output" safety, and real models whose outputs stay those of onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inference import Session, load_model, model_to_proto, zoo
from inference.builder import GraphBuilder
from inference.passes import PIPELINE, optimize
from inference.passes.transpose_reshape import reshape_target
from inference.shape_inference import infer_shapes

ONLY_THIS = {p.name: p.name == "simplify_transpose_reshape" for p in PIPELINE}


def _ort(proto: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _check(model, feeds: dict, only: bool = True) -> list[str]:
    """Optimize ``model`` in place; its outputs must equal onnxruntime's on the original graph."""
    infer_shapes(model)  # graph outputs get their types (the checker wants them)
    want = _ort(model_to_proto(model), feeds)
    applied = optimize(model, switches=ONLY_THIS if only else None)
    proto = model_to_proto(model, standard=True)  # fused ops (full pipeline) as standard ONNX
    onnx.checker.check_model(proto, full_check=True)
    got = Session(model).run(feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    for g, w in zip(_ort(proto, feeds), want):  # the rewritten file is still standard ONNX
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    return applied


def _x(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _transposes(p1, p2, shape=(2, 3, 4, 5), output_inner: bool = False, extra_reader: bool = False):
    b = GraphBuilder("tt", opset=17)
    x = b.input("x", np.float32, list(shape))
    t1 = b.op("Transpose", x, perm=p1, outputs=["t1"])
    b.op("Transpose", t1, perm=p2, outputs=["y"])
    b.output("y")
    if output_inner:
        b.output("t1")
    if extra_reader:
        b.op("Relu", t1, outputs=["r"])
        b.output("r")
    return b.build()


def test_two_transposes_compose_into_one():
    m = _transposes([0, 2, 1, 3], [0, 1, 3, 2])  # the K path of attention: split heads, then K^T
    assert _check(m, {"x": _x(2, 3, 4, 5)}) == ["simplify_transpose_reshape"]
    (node,) = m.graph.nodes
    assert node.op_type == "Transpose" and node.attrs["perm"] == [0, 2, 3, 1]


def test_inverse_transposes_vanish():
    m = _transposes([0, 2, 3, 1], [0, 3, 1, 2])
    _check(m, {"x": _x(2, 3, 4, 5)})
    assert [n.op_type for n in m.graph.nodes] == ["Identity"]  # y is a graph output: the name stays
    optimize(m)  # the whole pipeline then leaves nothing to compute but the copy to a distinct output
    assert len(m.graph.nodes) <= 1


def test_default_perm_is_reversed_axes():
    b = GraphBuilder("rev", opset=17)
    t = b.op("Transpose", b.input("x", np.float32, [2, 3, 4]))
    b.op("Relu", b.op("Transpose", t), outputs=["y"])
    b.output("y")
    m = b.build()
    _check(m, {"x": _x(2, 3, 4)})
    assert m.graph.op_histogram() == {"Relu": 1}


def test_inner_transpose_with_another_reader_is_kept():
    m = _transposes([0, 2, 1, 3], [0, 1, 3, 2], extra_reader=True)
    assert _check(m, {"x": _x(2, 3, 4, 5)}) == []  # composing would not save the inner copy
    assert m.graph.op_histogram() == {"Transpose": 2, "Relu": 1}


def test_identity_composition_bypasses_outer_even_with_other_readers():
    m = _transposes([1, 0, 2, 3], [1, 0, 2, 3], output_inner=True)
    _check(m, {"x": _x(2, 3, 4, 5)})
    hist = m.graph.op_histogram()
    assert hist == {"Transpose": 1, "Identity": 1}  # t1 still computed for its own output
    assert m.graph.output_names == ["y", "t1"]


def _reshape_chain(shape, batch_dim="n", output_mid: bool = False):
    b = GraphBuilder("rr", opset=17)
    x = b.input("x", np.float32, [batch_dim, *shape])
    f = b.op("Flatten", x, axis=1, outputs=["flat"])
    u = b.op("Unsqueeze", f, b.const(np.array([1], np.int64)))
    r = b.op("Reshape", u, b.const(np.array([0, 1, -1, 2], np.int64)))
    b.op("Relu", r, outputs=["y"])
    b.output("y")
    if output_mid:
        b.output("flat")
    return b.build()


def test_reshape_chain_with_static_shape_becomes_one_reshape():
    m = _reshape_chain((3, 4), batch_dim=2)
    _check(m, {"x": _x(2, 3, 4)})
    assert m.graph.op_histogram() == {"Reshape": 1, "Relu": 1}
    shape = m.graph.initializers[m.graph.nodes[0].inputs[1]]
    assert shape.tolist() == [2, 1, 6, 2]


def test_reshape_chain_keeps_a_symbolic_batch():
    m = _reshape_chain((3, 4))
    _check(m, {"x": _x(5, 3, 4)})
    assert m.graph.op_histogram() == {"Reshape": 1, "Relu": 1}
    assert m.graph.initializers[m.graph.nodes[0].inputs[1]].tolist() == [0, 1, 6, 2]
    np.testing.assert_allclose(Session(m).run({"x": _x(3, 3, 4)})[0].shape, (3, 1, 6, 2))


def test_reshape_chain_stops_at_a_graph_output():
    m = _reshape_chain((3, 4), batch_dim=2, output_mid=True)
    _check(m, {"x": _x(2, 3, 4)})
    hist = m.graph.op_histogram()
    assert hist == {"Flatten": 1, "Reshape": 1, "Relu": 1}  # flat is read by the caller


def test_reshape_to_the_same_shape_is_dropped():
    b = GraphBuilder("same", opset=17)
    x = b.input("x", np.float32, ["n", 6])
    r = b.op("Reshape", b.op("Relu", x), b.const(np.array([0, 6], np.int64)))
    b.op("Sigmoid", r, outputs=["y"])
    b.output("y")
    m = b.build()
    _check(m, {"x": _x(4, 6)})
    assert m.graph.op_histogram() == {"Relu": 1, "Sigmoid": 1}


def test_transpose_of_a_constant_is_folded():
    b = GraphBuilder("tc", opset=17)
    x = b.input("x", np.float32, [2, 3])
    w = b.op("Transpose", b.const(_x(4, 3)), perm=[1, 0])
    b.op("MatMul", x, w, outputs=["y"])
    b.output("y")
    m = b.build()
    _check(m, {"x": _x(2, 3)}, only=False)
    assert "Transpose" not in m.graph.op_histogram()


def test_reshape_target_rules():
    assert reshape_target(("n", 12), ("n", 3, 4)) == [0, 3, 4]
    assert reshape_target(("n", 12), (2, "m", 6)) == [2, -1, 6]
    assert reshape_target(("n", "k"), ("a", "b")) is None  # two unknowns cannot be expressed
    assert reshape_target((0, 3), (0, 3)) is None  # a static 0 would read as "copy"


def test_transformer_attention_transposes_compose():
    proto = model_to_proto(zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=2, ffn=64))
    m = load_model(proto)
    before = m.graph.op_histogram()["Transpose"]
    assert _check(m, {"input": _x(2, 16, 32)}) == ["simplify_transpose_reshape"]
    assert m.graph.op_histogram()["Transpose"] == before - 2  # one K^T per layer merged away
    m = load_model(proto)
    assert "simplify_transpose_reshape" in _check(m, {"input": _x(2, 16, 32)}, only=False)


@pytest.mark.parametrize("name", ["shufflenet", "squeezenet"])
def test_light_models_unchanged_vs_onnxruntime(name):
    proto = zoo.light_model(name)
    m = load_model(proto)
    _check(m, {m.graph.feed_inputs()[0].name: _x(*m.graph.feed_inputs()[0].type.shape)}, only=False)


def test_switchable_by_name_from_config():
    from inference import Config, Predictor

    proto = model_to_proto(zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=2, ffn=64))
    # K^T fused into its MatMul only where it was not composed with the head split: kept apart here
    on = Predictor(Config(model_path=proto, passes={"fuse_transpose_matmul": False}))
    off = Predictor(Config(model_path=proto,
                           passes={"simplify_transpose_reshape": False, "fuse_transpose_matmul": False}))
    assert "simplify_transpose_reshape" in on.applied_passes
    assert "simplify_transpose_reshape" not in off.applied_passes
    assert on.model.graph.op_histogram()["Transpose"] == off.model.graph.op_histogram()["Transpose"] - 2
    x = _x(2, 16, 32)
    np.testing.assert_allclose(on.run({"input": x})["output"], off.run({"input": x})["output"], rtol=1e-5, atol=1e-6)
