"""Quantization-aware training: fake quantization equals compress' QDQ, the straight-through
gradient, a QAT fine-tune on digits, and its conversion to a QDQ model onnxruntime runs alike;
per-tensor weights on depthwise convs, where QAT recovers what post-training quantization loses."""
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
from training.kernels.fake_quant import fake_quantize, fake_quantize_bias, fake_quantize_weight
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
    # the fake-quantized forward (int32-rounded biases included) computes the PTQ model
    a, b = Session(qat).run({"input": x[1400:]})[0], Session(ptq).run({"input": x[1400:]})[0]
    _same_model(a, b)


def _same_model(a, b):
    """Outputs of the same arithmetic, up to float32 summation order."""
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())


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
    _same_model(trainer.predict(xte), ref)
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


# -- per-tensor weights on depthwise convolutions (the MobileNet case, benchmarks/qat.py) -----------
def test_straight_through_gradient_into_depthwise_conv_per_tensor():
    """Through a per-tensor FakeQuantizeWeight into a depthwise Conv: dw is the Conv's gradient at
    the fake-quantized weight (checked against finite differences), even for the filters that one
    scale for the whole tensor rounds to zero; dx passes where the int8 activation did not clip;
    db through FakeQuantizeBias (int32 at x_scale * w_scale) is the Conv's."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (2, 4, 5, 5)).astype(np.float32)
    w = rng.normal(0.0, 0.1, (4, 1, 3, 3)).astype(np.float32)
    w[0] *= 3000.0  # one filter's range sets the scale: the other three round to 0
    c = rng.normal(size=(2, 4, 5, 5)).astype(np.float32)
    bias = rng.normal(0.0, 0.5, 4).astype(np.float32)
    lo, hi = -1.5, 1.5
    conv = {"group": 4, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}

    def graph(fake: bool):
        b = GraphBuilder("dw", opset=17)
        xi = b.input("x", np.float32, list(x.shape))
        wi = b.const(w if fake else fake_quantize_weight(w, axis=0, per_channel=0), "w")
        bi = b.const(bias if fake else bq, "b")
        if fake:
            xi = b.op("FakeQuantize", xi, domain=TRAIN_DOMAIN, lo=lo, hi=hi, dtype="int8")
            bi = b.op("FakeQuantizeBias", bi, wi, domain=TRAIN_DOMAIN, lo=lo, hi=hi, dtype="int8", axis=0,
                      per_channel=0)
            wi = b.op("FakeQuantizeWeight", wi, domain=TRAIN_DOMAIN, axis=0, per_channel=0)
        y = b.op("Conv", xi, wi, bi, **conv)
        b.output(b.op("ReduceSum", b.op("Mul", y, b.const(c, "c")), keepdims=0, outputs=["loss"]), np.float32, [])
        m = b.build()
        m.opset_imports[TRAIN_DOMAIN] = 1
        return m

    scale, _ = activation_params(lo, hi, "int8")
    wq = fake_quantize_weight(w, axis=0, per_channel=0)
    assert np.all(wq[1:] == 0) and np.any(wq[0] != 0)
    step = scale * np.abs(w).max() / 127  # the bias step: x_scale * w_scale, about 0.07 here
    bq = fake_quantize_bias(bias, w, lo=lo, hi=hi, dtype="int8", axis=0, per_channel=0)
    np.testing.assert_allclose(bq, np.rint(bias / step) * step, rtol=1e-5)
    assert np.abs(bq - bias).max() > 1e-3
    xq = fake_quantize(x, lo=lo, hi=hi, dtype="int8")
    g = gradients(graph(True), {"x": x}, of="loss", wrt=["x", "w", "b"])
    ref = gradients(graph(False), {"x": xq}, of="loss", wrt=["x", "w", "b"])
    np.testing.assert_allclose(g["w"], ref["w"], rtol=1e-6)
    np.testing.assert_allclose(g["b"], ref["b"], rtol=1e-6)
    assert np.all(np.abs(g["w"][1:]).sum(axis=(1, 2, 3)) > 0)  # rounded-to-zero filters still learn
    inside = np.abs(np.rint(x / scale)) <= 127
    assert 0 < inside.mean() < 1
    np.testing.assert_allclose(g["x"], np.where(inside, ref["x"], 0.0), rtol=1e-6)

    plain, eps = graph(False), 0.5  # the reference itself: finite differences (exact: linear in w)
    base = plain.graph.initializers["w"]
    for idx in [(1, 0, 1, 1), (2, 0, 0, 2), (3, 0, 2, 0)]:
        losses = []
        for sign in (1, -1):
            plain.graph.initializers["w"] = base.copy()
            plain.graph.initializers["w"][idx] += sign * eps
            losses.append(float(Session(plain).run({"x": xq})[0]))
        assert (losses[0] - losses[1]) / (2 * eps) == pytest.approx(float(ref["w"][idx]), rel=1e-2, abs=1e-3)


@pytest.fixture(scope="module")
def dead_channel_dw(digits):
    """A depthwise-separable CNN trained on digits, then one channel entering its second depthwise
    conv made dead (always 0 after ReLU), so that BatchNorm's running variance of it is 0: folding
    BN multiplies that filter by 1/sqrt(eps), the MobileNet per-tensor failure built on purpose."""
    x, y = digits

    def separable(cin, cout, stride):
        return [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                        *separable(16, 32, 1), *separable(32, 32, 2), nn.GlobalAvgPool2d(), nn.Flatten(),
                        nn.Linear(32, 10))
    trainer = T.Trainer(net.to_model([None, 1, 8, 8]), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=1e-2))
    trainer.fit(x[:1400], y[:1400], epochs=3, batch_size=32)
    m = copy.deepcopy(trainer.forward)
    init = m.graph.initializers
    bn_in, bn_dw = "7", "10"  # the BN feeding the second depthwise conv (32 channels), and the one after it
    init[f"{bn_in}.weight"][0], init[f"{bn_in}.bias"][0] = 0.0, -1.0  # ReLU(-1) = 0: channel 0 is dead
    init[f"{bn_dw}.running_mean"][0], init[f"{bn_dw}.running_var"][0] = 0.0, 0.0
    return m


def test_qat_recovers_per_tensor_depthwise_collapse(dead_channel_dw, digits):
    x, y = digits
    xtr, ytr, xte, yte = x[:1400], y[:1400], x[1400:], y[1400:]

    def acc(model):
        return float(np.mean(Session(model).run({"input": xte})[0].argmax(1) == yte))

    fp32 = acc(dead_channel_dw)
    ptq = quantize_static(dead_channel_dw, xtr[:256], per_channel=False)
    assert acc(ptq) < fp32 - 0.05  # the collapse is there to recover from
    qat = prepare_qat(dead_channel_dw, xtr[:256], per_channel=False)
    # before training the fake-quantized forward is that PTQ model (per-tensor, BN folded alike)
    _same_model(Session(qat).run({"input": xte})[0], Session(ptq).run({"input": xte})[0])
    trainer = T.Trainer(qat, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=1e-3))
    trainer.fit(xtr, ytr, epochs=2, batch_size=32)
    int8 = convert_qat(trainer.forward)
    assert all(n.attrs.get("axis") is None for n in int8.graph.nodes if n.op_type == "DequantizeLinear"
               and n.inputs[0].endswith("weight_quantized"))  # one scale per weight tensor
    ref = Session(int8).run({"input": xte})[0]
    _same_model(trainer.predict(xte), ref)  # int8 computes what the fine-tune saw
    np.testing.assert_allclose(_ort(int8, xte), ref, atol=0.05 * np.abs(ref).max())
    assert acc(int8) > fp32 - 0.03 and acc(int8) > acc(ptq) + 0.05
