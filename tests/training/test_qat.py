"""Quantization-aware training: fake quantization equals compress' QDQ, the straight-through
gradient, a QAT fine-tune on digits, and its conversion to a QDQ model onnxruntime runs alike."""
import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import training as T
from compress.quantize import QuantizationError, activation_params, clone, quantize_static
from inference.builder import GraphBuilder
from inference.onnx_export import model_to_proto, save_model
from inference.onnx_import import load_model
from inference.passes import optimize
from inference.passes.qdq_fusion import fuse_qdq
from inference.session import Session
from training import nn
from training.autograd import gradients
from training.data import load_digits
from training.kernels.fake_quant import fake_quantize, fake_quantize_weight
from training.protocols import TRAIN_DOMAIN
from training.qat import convert_qat, fake_quant_ranges, prepare_qat


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(images=True)
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def trained(digits):
    """A small CNN trained 3 epochs in float32 (the model QAT starts from)."""
    x, y = digits
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(8 * 16, 32), nn.ReLU(), nn.Linear(32, 10))
    trainer = T.Trainer(net.to_model([None, 1, 8, 8]), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=1e-2))
    trainer.fit(x[:1400], y[:1400], epochs=3, batch_size=32)
    return copy.deepcopy(trainer.forward)


def _ort(model, x):
    proto = model_to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def _qdq_pair_in_ort(x, scale, zp):
    """QuantizeLinear -> DequantizeLinear as a standard ONNX graph run by onnxruntime."""
    zt = TensorProto.UINT8 if zp.dtype == np.uint8 else TensorProto.INT8
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [float(scale)]), helper.make_tensor("z", zt, [], [int(zp)])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_fake_quantize_equals_qdq_pair_of_compress_scheme(dtype):
    x = np.random.default_rng(0).normal(0.5, 2.0, size=(4, 300)).astype(np.float32)
    lo, hi = -1.5, 3.0  # values beyond both ends saturate
    scale, zp = activation_params(lo, hi, dtype)
    got = fake_quantize(x, lo=lo, hi=hi, dtype=dtype)
    np.testing.assert_array_equal(got, _qdq_pair_in_ort(x, scale, zp))
    info = np.iinfo(zp.dtype)  # saturated at both ends of the integer range, exactly
    assert got.min() == np.float32((info.min - int(zp)) * scale)
    assert got.max() == np.float32((info.max - int(zp)) * scale)


def test_prepare_qat_matches_static_ptq(trained, digits):
    x, _ = digits
    calib = x[:256]
    qat, ptq = prepare_qat(trained, calib), quantize_static(trained, calib)
    init = ptq.graph.initializers
    for name, (lo, hi) in fake_quant_ranges(qat).items():  # same activations, same scale/zero point
        scale, zp = activation_params(lo, hi, "uint8")
        assert scale == init[f"{name}_scale"] and zp == init[f"{name}_zero_point"]
    for node in (n for n in qat.graph.nodes if n.op_type == "FakeQuantizeWeight"):
        w = qat.graph.initializers[node.inputs[0]]
        q, s = init[f"{node.inputs[0]}_quantized"], init[f"{node.inputs[0]}_scale"]
        np.testing.assert_array_equal(fake_quantize_weight(w, axis=node.attrs["axis"]),
                                      q.astype(np.float32) * s.reshape(-1, *[1] * (w.ndim - 1)))
    # the fake-quantized forward is the PTQ model up to the int32 rounding of the biases (which
    # may move a hidden activation across a rounding boundary: one step, in a few samples)
    a, b = Session(qat).run({"input": x[1400:]})[0], Session(ptq).run({"input": x[1400:]})[0]
    _close_but_for_a_few_steps(a, b)


def _close_but_for_a_few_steps(a, b):
    err, top = np.abs(a - b), np.abs(b).max()
    assert np.mean(err <= 1e-3 * top) > 0.97 and err.max() <= 0.03 * top
    assert np.mean(a.argmax(1) == b.argmax(1)) > 0.99


def _ste_graph(lo, hi, dtype, n):
    b = GraphBuilder("ste", opset=17)
    x = b.input("x", np.float32, [n])
    y = b.op("FakeQuantize", x, domain=TRAIN_DOMAIN, lo=lo, hi=hi, dtype=dtype)
    w = b.op("FakeQuantizeWeight", b.const(np.linspace(-1, 2, n, dtype=np.float32).reshape(1, n), "w"),
             domain=TRAIN_DOMAIN, axis=0)
    c = b.const(np.arange(1, n + 1, dtype=np.float32), "c")
    loss = b.op("ReduceSum", b.op("Mul", b.op("Mul", y, c), b.op("Reshape", w, b.const(np.asarray([n], np.int64)))),
                keepdims=0, outputs=["loss"])
    b.output(loss, np.float32, [])
    m = b.build()
    m.opset_imports[TRAIN_DOMAIN] = 1
    return m


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_straight_through_gradient(dtype):
    lo, hi, n = -1.0, 2.0, 64
    x = np.linspace(-3.0, 4.0, n).astype(np.float32)
    scale, zp = activation_params(lo, hi, dtype)
    qmin, qmax = (0, 255) if dtype == "uint8" else (-128, 127)
    inside = (np.rint(x / scale) + zp >= qmin) & (np.rint(x / scale) + zp <= qmax)
    assert 0 < inside.sum() < n  # both cases are exercised
    g = gradients(_ste_graph(lo, hi, dtype, n), {"x": x}, of="loss", wrt=["x", "w"])
    c = np.arange(1, n + 1, dtype=np.float32)
    wq = fake_quantize_weight(np.linspace(-1, 2, n, dtype=np.float32).reshape(1, n), axis=0).reshape(n)
    yq = fake_quantize(x, lo=lo, hi=hi, dtype=dtype)
    np.testing.assert_allclose(g["x"], np.where(inside, c * wq, 0.0), rtol=1e-6)  # STE: dy where not clipped
    np.testing.assert_allclose(g["w"].reshape(n), c * yq, rtol=1e-6)  # weights never clip: identity


def test_qat_finetune_converts_to_qdq_that_onnxruntime_runs_alike(trained, digits, tmp_path):
    x, y = digits
    xtr, ytr, xte, yte = x[:1400], y[:1400], x[1400:], y[1400:]
    qat = prepare_qat(trained, xtr[:256])
    trainer = T.Trainer(qat, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=1e-3))
    before = trainer.evaluate(xte, yte)
    h = trainer.fit(xtr, ytr, epochs=3, batch_size=32)
    after = trainer.evaluate(xte, yte)
    assert h["loss"][-1] < h["loss"][0] and after["loss"] < before["loss"]
    assert after["accuracy"] > 0.85

    int8 = convert_qat(trainer.forward)
    ptq = quantize_static(trained, xtr[:256])
    assert [n.op_type for n in int8.graph.nodes] == [n.op_type for n in ptq.graph.nodes]  # PTQ's format
    assert not any(n.domain == TRAIN_DOMAIN for n in int8.graph.nodes)
    ref = Session(int8).run({"input": xte})[0]
    tol = 0.05 * np.abs(ref).max()
    np.testing.assert_allclose(_ort(int8, xte), ref, atol=tol)  # onnxruntime's int8 execution
    m = clone(int8)
    fuse_qdq(m)
    optimize(m)
    assert any(n.domain == "edgelearn" for n in m.graph.nodes)  # our int8 kernels took over
    np.testing.assert_allclose(Session(m).run({"input": xte})[0], ref, atol=tol)
    # the fake-quantized forward the fine-tune saw is what the int8 model computes
    _close_but_for_a_few_steps(trainer.predict(xte), ref)
    assert np.mean(ref.argmax(1) == yte) == pytest.approx(after["accuracy"], abs=0.01)

    save_model(trainer.forward, str(tmp_path / "qat.onnx"))  # a saved QAT model converts the same
    again = convert_qat(load_model(str(tmp_path / "qat.onnx")))
    np.testing.assert_array_equal(Session(again).run({"input": xte})[0], ref)


def test_bad_input_raises_our_errors(trained, digits):
    with pytest.raises(QuantizationError, match="no FakeQuantize"):
        convert_qat(trained)
    with pytest.raises(QuantizationError, match="exclude"):
        prepare_qat(trained, digits[0][:64], keep_fp32=1)
    with pytest.raises(QuantizationError, match="no MatMul node"):
        prepare_qat(trained, digits[0][:64], op_types=("MatMul",))
