"""fp16 weight storage: half the file, same results within fp16 rounding, io types kept or made fp16."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from compress.fp16 import Fp16Error, convert_fp16
from compress.quantize import model_bytes, quantize_static
from inference.builder import GraphBuilder
from inference.onnx_export import model_to_proto
from inference.session import Session
from tests.compress.test_quantize import small_cnn

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    return small_cnn()


X = np.random.default_rng(3).random((4, 1, 16, 16)).astype(np.float32)


def _ort(m, feeds):
    proto = model_to_proto(m)
    onnx.checker.check_model(proto, full_check=True)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_fp16_halves_the_file_and_keeps_results(model):
    h = convert_fp16(model)
    assert model_bytes(h) < 0.55 * model_bytes(model)
    assert {a.dtype for a in h.graph.initializers.values() if a.size >= 16} == {np.dtype(np.float16)}
    ref = Session(model).run({"x": X})[0]
    got = Session(h).run({"x": X})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2 * float(np.abs(ref).max()))
    np.testing.assert_allclose(_ort(h, {"x": X}), got, rtol=1e-4, atol=1e-4)


def test_fp16_io_types(model):
    h = convert_fp16(model, keep_io_types=False)
    assert h.graph.inputs[0].type.elem_type == onnx.TensorProto.FLOAT16
    assert h.graph.outputs[0].type.elem_type == onnx.TensorProto.FLOAT16
    assert [v.name for v in h.graph.inputs] == ["x"] and [v.name for v in h.graph.outputs] == ["y"]
    x16 = X.astype(np.float16)
    got = Session(h).run({"x": x16})[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), Session(model).run({"x": X})[0], rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(_ort(h, {"x": x16}).astype(np.float32), got.astype(np.float32), rtol=1e-2, atol=1e-2)


def test_fp16_keeps_out_of_range_weights_and_quantization_scales():
    b = GraphBuilder("big", opset=17)
    x = b.input("x", np.float32, [1, 32])
    b.op("Mul", x, b.const(np.full(32, 1e6, np.float32), "big"), outputs=["y"])
    b.output("y", np.float32, [1, 32])
    with pytest.raises(Fp16Error):
        convert_fp16(b.build())  # the only weight does not fit fp16
    q = quantize_static(small_cnn(), X)  # every weight int8: nothing left to store as fp16, so not strict
    h = convert_fp16(q, strict=False)
    scales = [h.graph.initializers[n.inputs[1]] for n in h.graph.nodes if n.op_type == "DequantizeLinear"]
    assert all(s.dtype == np.float32 for s in scales)
