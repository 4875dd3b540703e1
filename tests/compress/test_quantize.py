"""Post-training quantization: calibrators, parameters, static/dynamic QDQ rewrites checked
against the float model, onnxruntime (as the oracle of the exported QDQ file) and our int8 path."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import inference.kernels  # noqa: F401
from compress.calibrate import (CalibrationError, EntropyCalibrator, MinMaxCalibrator, PercentileCalibrator,
                                _AbsHistogram, make_calibrator)
from compress.quantize import (QuantConfig, QuantizationError, activation_params, model_bytes, quantize_dynamic,
                               quantize_static, sensitivity_report, weight_params)
from edgelearn.commands.compress import runnable
from inference.builder import GraphBuilder
from inference.onnx_export import model_to_proto
from inference.session import Session

ort = pytest.importorskip("onnxruntime")


def small_cnn(seed: int = 0, opset: int = 17):
    """Conv-BN-Relu, MaxPool, a residual block, Conv, GAP, Gemm: the shapes PTQ meets in a CNN."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("cnn", opset=opset)
    x = b.input("x", np.float32, ["N", 1, 16, 16])

    def conv(h, cin, cout, relu=True):
        w = b.const((rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32))
        y = b.op("Conv", h, w, b.const((rng.standard_normal(cout) * 0.1).astype(np.float32)),
                 kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        return b.op("Relu", y) if relu else y

    h = conv(x, 1, 16, relu=False)
    h = b.op("Relu", b.op("BatchNormalization", h, *(b.const(v.astype(np.float32)) for v in (
        rng.uniform(0.5, 1.5, 16), rng.standard_normal(16) * 0.1, rng.standard_normal(16) * 0.1,
        rng.uniform(0.5, 1.5, 16)))))
    h = b.op("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Relu", b.op("Add", conv(conv(h, 16, 16), 16, 16, relu=False), h))
    h = b.op("Flatten", b.op("GlobalAveragePool", conv(h, 16, 24)), axis=1)
    b.op("Gemm", h, b.const(rng.standard_normal((10, 24)).astype(np.float32)),
         b.const(np.zeros(10, np.float32)), transB=1, outputs=["y"])
    b.output("y", np.float32, ["N", 10])
    return b.build()


@pytest.fixture(scope="module")
def cnn():
    return small_cnn()


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).random((48, 1, 16, 16)).astype(np.float32)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _ort(model, feeds):
    proto = model_to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


# -- calibration ----------------------------------------------------------------------------------
def test_minmax_is_running_extremes():
    c = MinMaxCalibrator()
    c.update("t", np.array([1.0, -2.0]))
    c.update("t", np.array([5.0, 0.0]))
    assert c.range("t") == (-2.0, 5.0)
    with pytest.raises(CalibrationError):
        c.range("never")


def test_histogram_widens_by_merging_without_losing_counts():
    h = _AbsHistogram()
    h.add(np.linspace(0, 1, 1000))
    h.add(np.array([7.5]))
    assert h.counts.sum() == 1001 and h.edge >= 7.5


def test_percentile_and_entropy_clip_an_outlier_minmax_keeps():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(100_000), [80.0]]).astype(np.float32)
    lo_mm, hi_mm = make_calibrator("minmax"), None
    lo_mm.update("t", x)
    for cal in (PercentileCalibrator(99.9), EntropyCalibrator()):
        cal.update("t", x)
        lo, hi = cal.range("t")
        assert 2.0 < hi < 10.0 and -10.0 < lo < -2.0
    assert lo_mm.range("t")[1] == 80.0
    with pytest.raises(CalibrationError):
        make_calibrator("median")


# -- parameters -----------------------------------------------------------------------------------
def test_weight_params_symmetric_per_channel():
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[2] = 0  # an all-zero channel must not divide by zero
    q, s = weight_params(w, 0, True)
    assert q.dtype == np.int8 and s.shape == (4,) and q.min() >= -127
    assert np.all(np.abs(q).max(axis=(1, 2, 3))[[0, 1, 3]] == 127)
    np.testing.assert_allclose(q * s.reshape(-1, 1, 1, 1), w, atol=float(s.max()) / 2 + 1e-7)
    q1, s1 = weight_params(w, 0, False)
    assert s1.shape == ()


def test_activation_params():
    s, z = activation_params(-1.0, 3.0, "uint8")
    assert z.dtype == np.uint8 and int(z) == 64 and np.isclose(s, 4 / 255)
    s, z = activation_params(0.5, 2.0, "int8")  # the range always holds 0
    assert z.dtype == np.int8 and int(z) == 0 and np.isclose(s, 2 / 127)


# -- static ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    dict(), dict(calibration="percentile"), dict(calibration="entropy"),
    dict(per_channel=False), dict(activations="int8"), dict(activations="int8", per_channel=False)])
def test_static_qdq_close_to_float_and_onnxruntime_agrees(cnn, data, options):
    q = quantize_static(cnn, data, **options)
    ref = Session(cnn).run({"x": data})[0]
    ours = Session(q).run({"x": data})[0]
    assert _rel(ours, ref) < 0.05
    hist = q.graph.op_histogram()
    assert hist["QuantizeLinear"] >= 4 and "BatchNormalization" not in hist  # BN folded before quantizing
    theirs = _ort(q, {"x": data})
    step = float(np.abs(ref).max()) * 0.02  # a one-step difference of an activation moves outputs ~1%
    np.testing.assert_allclose(ours, theirs, atol=step)
    fused = runnable(q).run({"x": data})[0]  # our int8 kernels
    np.testing.assert_allclose(fused, theirs, atol=step)


def test_static_int8_weights_shrink_the_file(cnn, data):
    q = quantize_static(cnn, data)
    assert model_bytes(q) < 0.5 * model_bytes(cnn)
    w = [a for a in q.graph.initializers.values() if a.dtype == np.int8 and a.ndim == 4]
    assert len(w) == 4


def test_sensitivity_report_and_keep_fp32(cnn, data):
    report = sensitivity_report(cnn, data)
    assert len(report) == 5 and all(r.error >= 0 for r in report)
    assert [r.error for r in report] == sorted((r.error for r in report), reverse=True)
    q = quantize_static(cnn, data, keep_fp32=2)
    kept = {r.node for r in report[:2]}
    float_nodes = {n.label() for n in q.graph.nodes if n.op_type in ("Conv", "Gemm")
                   and not any(i.endswith("_dequantized") or "_dequantized_" in i for i in n.inputs[1:2])}
    assert kept <= float_nodes
    assert quantize_static(cnn, data, exclude=tuple(kept)).graph.op_histogram()["DequantizeLinear"] < \
        quantize_static(cnn, data).graph.op_histogram()["DequantizeLinear"]


def test_static_rejects_bad_requests(cnn, data):
    with pytest.raises(QuantizationError, match="opset"):
        quantize_static(small_cnn(opset=12), data)
    with pytest.raises(QuantizationError):
        quantize_static(cnn, data, activations="int4")
    with pytest.raises(QuantizationError, match="no samples|not model inputs"):
        quantize_static(cnn, {"z": data})
    b = GraphBuilder("nothing", opset=17)
    b.output(b.op("Relu", b.input("x", np.float32, [1, 4]), outputs=["y"]), np.float32, [1, 4])
    with pytest.raises(QuantizationError, match="no Conv"):
        quantize_static(b.build(), np.zeros((1, 4), np.float32))
    assert isinstance(QuantConfig(), QuantConfig)


# -- dynamic --------------------------------------------------------------------------------------
def mlp(seed: int = 0):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("mlp", opset=17)
    x = b.input("x", np.float32, ["N", 8, 32])
    h = b.op("Relu", b.op("Add", b.op("MatMul", x, b.const(rng.standard_normal((32, 64)).astype(np.float32) / 6)),
                          b.const(rng.standard_normal(64).astype(np.float32) * 0.1)))
    b.op("MatMul", h, b.const(rng.standard_normal((64, 16)).astype(np.float32) / 8), outputs=["y"])
    b.output("y", np.float32, ["N", 8, 16])
    return b.build()


def test_dynamic_matmul_model():
    m = mlp()
    x = np.random.default_rng(2).standard_normal((3, 8, 32)).astype(np.float32)
    d = quantize_dynamic(m)
    hist = d.graph.op_histogram()
    assert hist["DynamicQuantizeLinear"] == 2 and hist["MatMul"] == 2
    ref = Session(m).run({"x": x})[0]
    ours = Session(d).run({"x": x})[0]
    assert _rel(ours, ref) < 0.03
    np.testing.assert_allclose(ours, _ort(d, {"x": x}), atol=1e-4)
    fused_session = runnable(d)
    assert any(s.node.op_type == "QMatMul" for s in fused_session.steps)
    np.testing.assert_allclose(fused_session.run({"x": x})[0], ours, atol=1e-4)


# -- CLI ------------------------------------------------------------------------------------------
def test_compress_cli_int8_fp16(tmp_path, cnn, data, capsys):
    from edgelearn.cli import main
    from inference.onnx_export import save_model

    src, out = tmp_path / "m.onnx", tmp_path / "small.onnx"
    save_model(cnn, src)
    np.savez(tmp_path / "calib.npz", x=data)
    np.savez(tmp_path / "eval.npz", x=data, y=np.arange(len(data)) % 10)
    rc = main(["compress", str(src), "--int8", "--calib", str(tmp_path / "calib.npz"), "--eval",
               str(tmp_path / "eval.npz"), "--fp16", "--repeats", "2", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and out.exists() and out.stat().st_size < 0.5 * src.stat().st_size
    assert "size:" in text and "accuracy:" in text and "latency:" in text
    assert main(["compress", str(src), "-o", str(out)]) == 2  # nothing asked for
    assert main(["compress", str(src), "--int8", "-o", str(out)]) == 2  # static int8 without --calib
