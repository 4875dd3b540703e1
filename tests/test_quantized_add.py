"""The quantized residual Add (inference.kernels.int8_add, inference.passes.quantized_add): one pass
computing the bytes of DequantizeLinear, DequantizeLinear, Add, QuantizeLinear."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import inference.kernels  # noqa: F401  (registers the fast kernels)
from inference import Config, Predictor
from inference.builder import GraphBuilder
from inference.errors import KernelError
from inference.kernels.int8_add import qadd_fast, qadd_reference
from inference.onnx_export import model_to_proto
from inference.passes.quantized_add import fuse_quantized_add
from tests.conftest import run_as_standard_onnx

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("types", [(np.uint8, np.uint8, np.uint8), (np.int8, np.uint8, np.int8),
                                   (np.uint8, np.int8, np.uint8)])
def test_kernel_equals_its_four_steps(types):
    ta, tb, ty = types
    a = RNG.integers(np.iinfo(ta).min, np.iinfo(ta).max + 1, (2, 7, 9, 16)).astype(ta)
    b = RNG.integers(np.iinfo(tb).min, np.iinfo(tb).max + 1, a.shape).astype(tb)
    params = (np.array(0.031, np.float32), np.array(5, ta), np.array(0.017, np.float32), np.array(-3 if tb == np.int8
              else 120, tb), np.array(0.04, np.float32), np.array(9, ty))
    got = qadd_fast(a, *params[:2], b, *params[2:])
    assert got.dtype == ty and got.shape == a.shape
    np.testing.assert_array_equal(got, qadd_reference(a, *params[:2], b, *params[2:]))
    saturated = qadd_fast(a, *params[:2], b, *params[2:4], np.array(0.001, np.float32), params[5])  # clips
    np.testing.assert_array_equal(saturated, qadd_reference(a, *params[:2], b, *params[2:4],
                                                            np.array(0.001, np.float32), params[5]))
    assert saturated.max() == np.iinfo(ty).max


def test_shapes_must_agree():
    with pytest.raises(KernelError, match="one shape"):
        qadd_fast(np.zeros((1, 2), np.uint8), np.float32(1), np.uint8(0), np.zeros((2, 2), np.uint8), np.float32(1),
                  np.uint8(0), np.float32(1), np.uint8(0))


def _residual_model(other_reader: bool = False):
    """x -> Q -> (DQ -> Relu -> Q) and the quantized x both dequantized into an Add, then Q."""
    b = GraphBuilder("qres", opset=17)
    x = b.input("x", np.float32, ["N", 8, 6, 6])
    s = lambda v: b.const(np.array(v, np.float32))  # noqa: E731
    z = lambda v: b.const(np.array(v, np.uint8))  # noqa: E731
    qx = b.op("QuantizeLinear", x, s(0.02), z(128))
    branch = b.op("QuantizeLinear", b.op("Relu", b.op("DequantizeLinear", qx, s(0.02), z(128))), s(0.01), z(0))
    dq_branch = b.op("DequantizeLinear", branch, s(0.01), z(0))
    total = b.op("Add", dq_branch, b.op("DequantizeLinear", qx, s(0.02), z(128)))
    b.op("QuantizeLinear", total, s(0.03), z(100), outputs=["y"])
    b.output("y", np.uint8, ["N", 8, 6, 6])
    if other_reader:
        b.op("Sigmoid", dq_branch, outputs=["side"])
        b.output("side", np.float32, ["N", 8, 6, 6])
    return b.build()


def test_pass_fuses_and_keeps_the_bytes():
    x = RNG.standard_normal((2, 8, 6, 6)).astype(np.float32) * 2
    proto = model_to_proto(_residual_model())
    fused = Predictor(Config(model_path=proto))
    hist = fused.model.graph.op_histogram()
    assert hist.get("edgelearn::QAdd") == 1 and "Add" not in hist, hist
    plain = Predictor(Config(model_path=proto, passes={"fuse_quantized_add": False}))
    assert "edgelearn::QAdd" not in plain.model.graph.op_histogram()
    got = fused.run({"x": x})["y"]
    np.testing.assert_array_equal(got, plain.run({"x": x})["y"])
    peer = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got.astype(int) - peer.astype(int)).max() <= 1  # onnxruntime: its own rounding of the sum
    standard = run_as_standard_onnx(fused.model, {"x": x})[0]
    assert np.abs(standard.astype(int) - got.astype(int)).max() <= 1


def test_a_dequantized_tensor_read_elsewhere_is_not_fused():
    m = _residual_model(other_reader=True)
    assert not fuse_quantized_add(m)
