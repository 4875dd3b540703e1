"""`edgelearn optimize`: the saved model loads without passes and computes what the original does;
``--keep-standard`` writes standard ONNX that onnx.checker and onnxruntime accept."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import inference.passes
from edgelearn.cli import main
from inference import Config, Predictor, zoo
from inference.decompose import decompose_to_standard
from inference.errors import UnsupportedOpError
from inference.ir import Node
from inference.onnx_export import model_to_proto
from inference.onnx_import import load_model
from inference.passes import OPTIMIZED_KEY


def _save(proto: onnx.ModelProto, path) -> str:
    onnx.save(proto, str(path))
    return str(path)


def _feeds(path: str) -> dict:
    model = load_model(path)
    rng = np.random.default_rng(0)
    return {v.name: rng.standard_normal([d if isinstance(d, int) else 2 for d in v.type.shape]).astype(np.float32)
            for v in model.graph.feed_inputs()}


def _ort(path: str, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


def _run(predictor: Predictor, feeds: dict) -> list[np.ndarray]:
    out = predictor.run(feeds)
    return [out[n] for n in predictor.get_output_names()]


def _no_passes(monkeypatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("the pass pipeline ran on a model saved optimized")

    monkeypatch.setattr(inference.passes, "optimize", refuse)


@pytest.mark.parametrize("name", ["squeezenet", "transformer"])
def test_optimized_file_loads_without_passes(tmp_path, capsys, monkeypatch, name):
    proto = zoo.light_model(name) if name == "squeezenet" else model_to_proto(
        zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=2, ffn=64))
    src, dst = _save(proto, tmp_path / "in.onnx"), str(tmp_path / "out.onnx")
    assert main(["optimize", src, "-o", dst]) == 0
    out = capsys.readouterr().out
    fused = "edgelearn::FusedConv" if name == "squeezenet" else "edgelearn::FusedMatMul"
    row = next(line for line in out.splitlines() if line.startswith(fused)).split()
    assert row[1] == "0" and int(row[2]) > 0  # before / after counts per op type
    total = next(line for line in out.splitlines() if line.startswith("total")).split()
    assert int(total[2]) < int(total[1])
    saved = onnx.load(dst)
    onnx.checker.check_model(saved)
    recorded = {p.key: p.value for p in saved.metadata_props}[OPTIMIZED_KEY].split(",")
    assert any(p.startswith("fuse_") for p in recorded), recorded

    feeds = _feeds(src)
    original = Predictor(Config(model_path=src))
    want = _run(original, feeds)
    fast_kinds = [s.kernel.kind for s in original.session.steps]
    _no_passes(monkeypatch)
    reloaded = Predictor(Config(model_path=dst))
    assert reloaded.applied_passes == [] and reloaded.preoptimized == recorded
    assert reloaded.model.graph.op_histogram() == original.model.graph.op_histogram()
    assert [s.kernel.kind for s in reloaded.session.steps] == fast_kinds  # same fast kernels chosen
    for g, w in zip(_run(reloaded, feeds), want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    for g, w in zip(want, _ort(src, feeds)):  # and the original's outputs are onnxruntime's
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    monkeypatch.undo()
    forced = Predictor(Config(model_path=dst, reoptimize=True))  # running the passes again is harmless
    for g, w in zip(_run(forced, feeds), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_keep_standard_is_plain_onnx_for_onnxruntime(tmp_path, capsys):
    proto = model_to_proto(zoo.transformer_encoder(seq=16, dim=32, heads=2, layers=2, ffn=64))
    src, dst = _save(proto, tmp_path / "in.onnx"), str(tmp_path / "std.onnx")
    assert main(["optimize", src, "-o", dst, "--keep-standard"]) == 0
    assert "(standard ONNX)" in capsys.readouterr().out
    saved = onnx.load(dst)
    onnx.checker.check_model(saved, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in saved.graph.node)
    assert OPTIMIZED_KEY not in {p.key for p in saved.metadata_props}  # our runtime fuses it again
    feeds = _feeds(src)
    for g, w in zip(_ort(dst, feeds), _ort(src, feeds)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    refused = Predictor(Config(model_path=dst))
    assert "fuse_matmul_epilogue" in refused.applied_passes


def _int8_std(tmp_path, model, data: np.ndarray) -> tuple[str, str]:
    from compress.quantize import quantize_static

    src = _save(model_to_proto(quantize_static(model, data)), tmp_path / "q.onnx")
    dst = str(tmp_path / "q_std.onnx")
    assert main(["optimize", src, "-o", dst, "--keep-standard"]) == 0
    onnx.checker.check_model(dst, full_check=True)
    return src, dst


def test_keep_standard_writes_int8_ops_as_qdq(tmp_path):
    """QConv/QMatMul decompose to their QDQ meaning: onnxruntime computes what our int8 kernels do."""
    from edgelearn.commands.demo import build_model, fit_random_feature_classifier, load_digits_split

    x_tr, y_tr, x_te, _ = load_digits_split()
    src, dst = _int8_std(tmp_path, build_model(*fit_random_feature_classifier(x_tr, y_tr)), x_tr[:512])
    ours = Predictor(Config(model_path=src))
    assert ours.model.graph.op_histogram().get("edgelearn::QMatMul") == 2
    want = _run(ours, {"pixels": x_te})[0]
    np.testing.assert_allclose(_ort(dst, {"pixels": x_te})[0], want, atol=1e-5)


def test_keep_standard_int8_cnn_means_what_our_kernels_compute(tmp_path):
    """QConv with residual and Clip epilogues. Compared with onnxruntime *without* graph optimizations:
    its optimizer drops the Q->DQ pair in front of a float Conv (here the depthwise convs, whose
    weights our passes fold to float), an approximation that this random MobileNet amplifies.

    Per image: a value that lands within an ulp of a rounding tie may quantize one step apart in
    our fused requantization and in the literal QDQ graph (the float sums run in another order),
    and this random network amplifies one such step to a few percent of its output. Which image
    meets a tie depends on the calibration scales down to the last bit (measured: image 0 of 9 for
    some calibrations, none for others), so one image of nine may differ, by less than 5%; a real
    mismatch of the decomposition shows on every image."""
    x = np.random.default_rng(0).random((9, 3, 32, 32)).astype(np.float32)
    src, dst = _int8_std(tmp_path, zoo.mobilenet_v2(size=32, classes=10), x[1:])
    ours = Predictor(Config(model_path=src))
    assert ours.model.graph.op_histogram().get("edgelearn::QConv", 0) > 0
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    peer = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    errors = []
    for i in range(len(x)):
        want = _run(ours, {"input": x[i:i + 1]})[0]
        got = peer.run(None, {"input": x[i:i + 1]})[0]
        errors.append(float(np.linalg.norm(got - want) / np.linalg.norm(want)))
    assert sum(e < 1e-5 for e in errors) >= len(x) - 1 and max(errors) < 5e-2, errors


def test_disable_and_no_fusion_switch_passes_off(tmp_path, capsys):
    src = _save(zoo.light_model("squeezenet"), tmp_path / "in.onnx")
    dst = str(tmp_path / "out.onnx")
    assert main(["optimize", src, "-o", dst, "--disable", "fuse_conv_epilogue"]) == 0
    saved = load_model(dst).graph
    hist = saved.op_histogram()  # the layout pass still converts the bare convolutions
    assert "edgelearn::FusedConv" not in hist and hist["Relu"] == hist["edgelearn::FusedConvNHWC"] == 26
    assert not any(n.attrs.get("activation") for n in saved.nodes)
    assert main(["optimize", src, "-o", dst, "--no-fusion"]) == 0
    assert not any(k.startswith("edgelearn::") for k in load_model(dst).graph.op_histogram())
    capsys.readouterr()
    assert main(["optimize", src, "-o", dst, "--disable", "fold_everything"]) == 2
    assert "unknown passes ['fold_everything']" in capsys.readouterr().err


def test_op_without_decomposition_is_named():
    model = load_model(model_to_proto(zoo.transformer_encoder(seq=8, dim=16, heads=2, layers=1, ffn=32)))
    model.graph.nodes.append(Node("Mystery", ["output"], ["z"], domain="edgelearn", name="mystery_node"))
    with pytest.raises(UnsupportedOpError, match="Mystery.*mystery_node.*no decomposition"):
        decompose_to_standard(model)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_before_opset_20_is_written_out_for_standard_onnx(approximate):
    """A fused GELU at opset 17 (no Gelu op before 20) decomposes to the chain exporters write
    (Erf, or Tanh of the cubic), which onnxruntime runs and our passes fuse again."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array((rng.standard_normal((16, 24)) * 0.5).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Gelu", ["h"], ["y"], approximate=approximate)]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 24])], [w])
    at20 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    fused = Predictor(Config(model_path=at20.SerializeToString())).model
    fused.opset_imports[""] = 17  # as a GPT exported at 17 with its GELU fused: no Gelu op to write
    assert [n.op_type for n in fused.graph.nodes] == ["FusedMatMul"]
    standard = model_to_proto(decompose_to_standard(fused))
    onnx.checker.check_model(standard, full_check=True)
    ops = {n.op_type for n in standard.graph.node}
    assert "Gelu" not in ops and ("Tanh" if approximate == "tanh" else "Erf") in ops, ops
    x = rng.standard_normal((5, 16)).astype(np.float32)
    want = ort.InferenceSession(at20.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(standard.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    again = Predictor(Config(model_path=standard.SerializeToString()))
    assert [n.op_type for n in again.model.graph.nodes] == ["FusedMatMul"]
    np.testing.assert_allclose(again.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
