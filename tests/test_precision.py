"""Config(precision=...): the Predictor converts a float model at load time through the converters
compress declares as entry points, and then runs the int8 kernels (or fp16-rounded weights)."""
from __future__ import annotations

import numpy as np
import pytest

import inference.precision as precision
from edgelearn.commands.demo import build_model, fit_random_feature_classifier, load_digits_split
from inference import Config, Predictor, save_model, zoo
from inference.errors import ConfigError
from inference.onnx_export import model_to_proto

INT8_ACCURACY_POINTS = 1.5  # int8 may cost at most this much held-out accuracy (percentage points)
INT8_PROB_ATOL = 0.05  # and move no class probability by more than this
FP16_PROB_ATOL = 2e-3
INT8_VS_ORT_REL = 1e-3  # our fused int8 kernels vs onnxruntime running the QDQ file (measured 3e-7)


@pytest.fixture(scope="module")
def digits():
    """A real classifier (random ReLU features + ridge readout) fitted on sklearn's digits."""
    x_tr, y_tr, x_te, y_te = load_digits_split()
    return model_to_proto(build_model(*fit_random_feature_classifier(x_tr, y_tr))), x_tr, x_te, y_te


def _predict(config: Config, x: np.ndarray) -> tuple[Predictor, np.ndarray]:
    p = Predictor(config)
    return p, p.run({p.get_input_names()[0]: x})[p.get_output_names()[0]]


def _accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float((probs.argmax(1) == y).mean() * 100)


@pytest.mark.parametrize("calibrated", [False, True], ids=["dynamic", "static"])
def test_int8_runs_the_int8_kernels_close_to_fp32(digits, calibrated):
    proto, x_tr, x_te, y_te = digits
    _, ref = _predict(Config(model_path=proto), x_te)
    cfg = Config(model_path=proto, precision="int8", calibration_data=x_tr[:512] if calibrated else None)
    p, got = _predict(cfg, x_te)
    hist = p.model.graph.op_histogram()
    assert hist.get("edgelearn::QMatMul") == 2, hist  # both layers run the int8 GEMM
    assert not any(k in hist for k in ("Gemm", "MatMul", "edgelearn::FusedMatMul")), hist
    assert ("DynamicQuantizeLinear" in hist) != calibrated
    assert p.model.graph.initializers  # int8 weights, not float ones
    assert any(a.dtype == np.int8 for a in p.model.graph.initializers.values())
    np.testing.assert_allclose(got, ref, atol=INT8_PROB_ATOL)
    assert abs(_accuracy(got, y_te) - _accuracy(ref, y_te)) <= INT8_ACCURACY_POINTS
    assert not np.array_equal(got, ref)  # it really is a different (quantized) computation


def test_int8_static_quantizes_a_cnn():
    """On a CNN the oracle is onnxruntime running the same QDQ model compress writes (random
    MobileNet weights make the int8-vs-fp32 error itself meaningless; the digits tests cover that)."""
    import onnxruntime as ort

    from compress.precision import int8
    from inference.onnx_import import load_model

    proto = model_to_proto(zoo.mobilenet_v2(size=32, classes=10))
    x = np.random.default_rng(0).random((9, 3, 32, 32)).astype(np.float32)
    p, got = _predict(Config(model_path=proto, precision="int8", calibration_data=x[1:]), x[:1])
    hist = p.model.graph.op_histogram()
    # all 52 of MobileNetV2's convs: channels-last (kernels.int8_nhwc) but the stem, which reads the image
    assert hist.get("edgelearn::QConvNHWC", 0) == 51 and hist.get("edgelearn::QConv", 0) == 1, hist
    assert "Conv" not in hist, hist
    qdq = model_to_proto(int8(load_model(proto), x[1:]))
    want = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x[:1]})[0]
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel < INT8_VS_ORT_REL, rel


def test_int8_without_calibration_on_a_cnn_says_what_to_do():
    from inference.builder import GraphBuilder

    b = GraphBuilder("convonly", opset=17)
    w = b.const(np.random.default_rng(0).standard_normal((4, 1, 3, 3)).astype(np.float32))
    b.op("Conv", b.input("x", np.float32, [1, 1, 8, 8]), w, kernel_shape=[3, 3], outputs=["y"])
    b.output("y", np.float32, [1, 4, 6, 6])
    with pytest.raises(ConfigError, match="calibration_data"):
        Predictor(Config(model_path=model_to_proto(b.build()), precision="int8"))


def test_fp16_rounds_weights_and_stays_close(digits):
    proto, _, x_te, y_te = digits
    p32, ref = _predict(Config(model_path=proto), x_te)
    p16, got = _predict(Config(model_path=proto, precision="fp16"), x_te)
    weights = {k: v for k, v in p16.model.graph.initializers.items() if v.size >= 16}
    assert weights and all(v.dtype == np.float32 for v in weights.values())  # folded back for compute
    for v in weights.values():
        np.testing.assert_array_equal(v, v.astype(np.float16).astype(np.float32))  # fp16 values
    original = p32.model.graph.initializers
    assert any(not np.array_equal(v, original[k]) for k, v in weights.items() if k in original)
    np.testing.assert_allclose(got, ref, atol=FP16_PROB_ATOL)
    assert _accuracy(got, y_te) == pytest.approx(_accuracy(ref, y_te), abs=0.6)


def test_a_quantized_file_runs_int8_at_fp32_precision(digits, tmp_path):
    from compress.quantize import quantize_dynamic
    from inference.onnx_import import load_model

    proto, _, x_te, _ = digits
    path = tmp_path / "q.onnx"
    save_model(quantize_dynamic(load_model(proto)), path)
    p, _ = _predict(Config(model_path=str(path)), x_te[:4])
    assert p.model.graph.op_histogram().get("edgelearn::QMatMul") == 2


def test_unknown_precision_is_a_config_error(digits):
    with pytest.raises(ConfigError, match="precision 'int4' is unknown"):
        Predictor(Config(model_path=digits[0], precision="int4"))
    with pytest.raises(ConfigError, match="calibration_data"):
        Predictor(Config(model_path=digits[0], precision="fp16", calibration_data=digits[1]))


def test_missing_converter_names_the_precision_and_the_fix(digits, monkeypatch):
    monkeypatch.setattr(precision, "_CONVERTERS", {})
    monkeypatch.setattr(precision, "_discovered", True)  # as if compress were not installed
    with pytest.raises(ConfigError, match=r"precision 'int8' needs a converter.*register_precision"):
        Predictor(Config(model_path=digits[0], precision="int8"))


def test_converters_come_from_entry_points():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group=precision.ENTRY_POINT_GROUP)}
    assert names == {"int8": "compress.precision:int8", "fp16": "compress.precision:fp16"}
    assert precision.available() == ["fp16", "fp32", "int8"]


def test_int8_of_a_file_saved_optimized(digits, tmp_path):
    """Fused ops are decomposed back to standard ones first, so the converter finds its MatMul/Gemm."""
    from edgelearn.cli import main

    proto, _, x_te, _ = digits
    src, dst = tmp_path / "in.onnx", tmp_path / "opt.onnx"
    src.write_bytes(proto.SerializeToString())
    assert main(["optimize", str(src), "-o", str(dst)]) == 0
    p, got = _predict(Config(model_path=str(dst), precision="int8"), x_te)
    assert p.model.graph.op_histogram().get("edgelearn::QMatMul") == 2
    assert p.preoptimized is None and p.applied_passes  # converted, so optimized again
    _, ref = _predict(Config(model_path=proto), x_te)
    np.testing.assert_allclose(got, ref, atol=INT8_PROB_ATOL)
