"""Binary weights: exact packing, per-channel scales, real file shrinkage, our runtime against
onnxruntime on the decoded export, errors that name the node, straight-through fine-tuning."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from sklearn.datasets import load_digits

import inference.kernels  # noqa: F401
from compress.binarize import (BinarizationError, binarize, binarize_weight, binarized_layers, select_layers,
                               to_fp32)
from compress.quantize import model_bytes
from inference import Predictor
from inference.builder import GraphBuilder
from inference.errors import KernelError, ShapeInferenceError
from inference.ir import Model
from inference.kernels.binarized import OP_TYPE, decode, packed_size
from inference.onnx_export import model_to_proto, save_model
from inference.onnx_import import load_model
from inference.session import Session
from inference.shape_inference import infer_shapes

ort = pytest.importorskip("onnxruntime")


def digits_images(n: int = 64) -> np.ndarray:
    x = load_digits().images[:n] / 16.0
    return x.reshape(n, 1, 8, 8).astype(np.float32)


def small_net(seed: int = 0) -> Model:
    """Conv, grouped Conv, Conv, Gemm (transB=0), MatMul, Gemm (transB=1): every weight layout."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("bnet", opset=17)
    x = b.input("x", np.float32, ["N", 1, 8, 8])

    def w(*shape):
        return b.const((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32))

    def bias(n):
        return b.const((rng.standard_normal(n) * 0.1).astype(np.float32))

    h = b.op("Relu", b.op("Conv", x, w(8, 1, 3, 3), bias(8), pads=[1, 1, 1, 1], name="conv1"))
    h = b.op("Relu", b.op("Conv", h, w(16, 4, 3, 3), bias(16), pads=[1, 1, 1, 1], group=2, name="conv2"))
    h = b.op("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Relu", b.op("Conv", h, w(12, 16, 3, 3), None, pads=[1, 1, 1, 1], name="conv3"))
    h = b.op("Flatten", h, axis=1)
    h = b.op("Relu", b.op("Gemm", h, b.const((rng.standard_normal((192, 40)) / 14).astype(np.float32)), bias(40),
                          name="fc1"))
    h = b.op("Relu", b.op("MatMul", h, b.const((rng.standard_normal((40, 24)) / 6).astype(np.float32)), name="fc2"))
    b.op("Gemm", h, w(10, 24), bias(10), transB=1, outputs=["y"], name="fc3")
    b.output("y", np.float32, ["N", 10])
    return b.build()


@pytest.fixture(scope="module")
def net() -> Model:
    return small_net()


def _binary_nodes(m: Model):
    return [n for n in m.graph.nodes if n.op_type == OP_TYPE]


# -- packing and scales -------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axis", [((8, 1, 3, 3), 0), ((13, 7), 1), ((5, 3, 1, 1), 0), ((3,), 0)])
def test_packing_round_trip_is_exact(shape, axis):
    rng = np.random.default_rng(1)
    w = rng.standard_normal(shape).astype(np.float32)
    w.reshape(-1)[::5] = 0.0  # sign(0) is +1, as the bit says
    bits, alpha = binarize_weight(w, axis)
    assert bits.dtype == np.uint8 and bits.size == packed_size(shape) == -(-w.size // 8)
    assert np.array_equal(np.unpackbits(bits, count=w.size).astype(bool), (w >= 0).reshape(-1))
    bshape = [1] * w.ndim
    bshape[axis] = -1
    expected = np.where(w >= 0, 1.0, -1.0).astype(np.float32) * alpha.reshape(bshape)
    assert np.array_equal(decode(bits, alpha, shape, axis), expected)
    # decoding then binarizing again is a fixed point: same bits, same scales
    bits2, alpha2 = binarize_weight(decode(bits, alpha, shape, axis), axis)
    assert np.array_equal(bits2, bits) and np.allclose(alpha2, alpha, rtol=1e-6)


def test_scales_are_per_channel_mean_abs_and_l2_optimal():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32) * rng.uniform(0.1, 3.0, (6, 1, 1, 1)).astype(np.float32)
    bits, alpha = binarize_weight(w, 0)
    assert alpha.shape == (6,) and np.allclose(alpha, np.abs(w).reshape(6, -1).mean(1), rtol=1e-6)
    signs = np.sign(decode(bits, np.ones(6, np.float32), w.shape, 0)).reshape(6, -1)
    err = ((w.reshape(6, -1) - alpha[:, None] * signs) ** 2).sum(1)
    for f in (0.9, 1.1):  # mean |w| minimises the channel's squared error for these signs
        assert np.all(((w.reshape(6, -1) - f * alpha[:, None] * signs) ** 2).sum(1) > err)
    _, alpha_cols = binarize_weight(w.reshape(6, -1).T.copy(), 1)  # (K, N) MatMul layout: axis 1
    assert np.allclose(alpha_cols, alpha, rtol=1e-6)


def test_model_scales_follow_each_layout(net):
    bm = binarize(net, skip_first_last=False)
    by_layer = {n.outputs[0].rsplit("_binarized", 1)[0]: n for n in _binary_nodes(bm)}
    assert len(by_layer) == 6
    expected_axis = {"Conv": 0, "MatMul": 1, "Gemm": None}
    for node in net.graph.nodes:
        if node.op_type not in expected_axis:
            continue
        w = net.graph.initializers[node.inputs[1]]
        axis = expected_axis[node.op_type] if node.op_type != "Gemm" else (0 if node.attrs.get("transB") else 1)
        bn = by_layer[node.inputs[1]]
        assert bn.attrs == {"shape": list(w.shape), "axis": axis}
        alpha = bm.graph.initializers[bn.inputs[1]]
        other = tuple(i for i in range(w.ndim) if i != axis)
        assert np.allclose(alpha, np.abs(w).mean(axis=other), rtol=1e-6)


# -- selection ----------------------------------------------------------------------------------
def test_default_keeps_first_and_last_float(net):
    bm = binarize(net)
    assert binarized_layers(bm) == ["conv2", "conv3", "fc1", "fc2"]
    assert {n.name for n in bm.graph.nodes if n.op_type in ("Conv", "Gemm", "MatMul")
            and n.inputs[1] in bm.graph.initializers} == {"conv1", "fc3"}
    assert binarized_layers(binarize(net, layers=["fc*", "conv1"])) == ["conv1", "fc1", "fc2", "fc3"]


def test_shared_weight_is_stored_once():
    b = GraphBuilder("shared", opset=17)
    x = b.input("x", np.float32, ["N", 16])
    w = b.const(np.random.default_rng(3).standard_normal((16, 16)).astype(np.float32))
    b.op("MatMul", b.op("MatMul", x, w, name="a"), w, outputs=["y"], name="b")
    b.output("y", np.float32, ["N", 16])
    bm = binarize(b.build(), layers=["a", "b"])
    assert len(_binary_nodes(bm)) == 1 and binarized_layers(bm) == ["a", "b"]


# -- size ---------------------------------------------------------------------------------------
def test_file_really_shrinks(net):
    fp32_size = model_bytes(net)
    for skip in (True, False):
        bm = binarize(net, skip_first_last=skip)
        nodes = _binary_nodes(bm)
        dense = sum(int(np.prod(n.attrs["shape"])) * 4 for n in nodes)
        packed = sum(bm.graph.initializers[i].nbytes for n in nodes for i in n.inputs)
        bits = sum(bm.graph.initializers[n.inputs[0]].nbytes for n in nodes)
        assert bits == sum(packed_size(n.attrs["shape"]) for n in nodes)
        assert dense / packed > 20  # 32x for the bits, less the per-channel float scales
        saved = fp32_size - model_bytes(bm)
        overhead = (dense - packed) - saved  # the decode node, its names and attributes
        assert 0 < overhead < 300 * len(nodes)
        onnx.checker.check_model(model_to_proto(bm))  # our domain's file is a valid ONNX model


# -- our runtime against onnxruntime on the decoded export --------------------------------------
@pytest.mark.parametrize("skip", [True, False])
def test_predictor_matches_onnxruntime_on_decoded_export(net, skip, tmp_path):
    x = digits_images()
    bm = binarize(net, skip_first_last=skip)
    path = tmp_path / "binary.onnx"
    save_model(bm, path)
    ours = Predictor(str(path)).run({"x": x})["y"]
    plain = model_to_proto(to_fp32(bm))
    onnx.checker.check_model(plain, full_check=True)
    assert {o.domain for o in plain.opset_import} == {""}
    assert not any(n.domain for n in plain.graph.node)
    ref = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # the reference kernels (no passes, no cache) agree, and binarization did change the outputs
    exact = Session(load_model(str(path)), kinds=("reference",)).run({"x": x})[0]
    np.testing.assert_allclose(exact, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    fp32 = Session(net).run({"x": x})[0]
    assert np.abs(fp32 - ref).max() > 1e-2 * np.abs(fp32).max()


def test_fast_kernel_decodes_once_and_returns_read_only():
    from inference.kernels.binarized import binarized_weight

    w = np.random.default_rng(4).standard_normal((4, 9)).astype(np.float32)
    bits, alpha = binarize_weight(w, 0)
    first = binarized_weight(bits, alpha, shape=[4, 9], axis=0)
    assert binarized_weight(bits, alpha, shape=[4, 9], axis=0) is first
    assert not first.flags.writeable
    assert np.array_equal(first, decode(bits, alpha, [4, 9], 0))
    other = binarized_weight(bits, alpha * 2, shape=[4, 9], axis=0)  # a new alpha array: decoded again
    assert np.array_equal(other, 2 * first)


# -- errors -------------------------------------------------------------------------------------
def test_unsupported_layers_are_named(net):
    relu = next(n for n in net.graph.nodes if n.op_type == "Relu")
    with pytest.raises(BinarizationError, match=relu.name):
        binarize(net, layers=[relu.name])
    with pytest.raises(BinarizationError, match="nope.*matches no node"):
        binarize(net, layers=["nope"])
    b = GraphBuilder("two", opset=17)
    x = b.input("x", np.float32, ["N", 4])
    b.op("MatMul", x, b.const(np.ones((4, 2), np.float32)), outputs=["y"], name="only")
    b.output("y", np.float32, ["N", 2])
    with pytest.raises(BinarizationError, match="first and last stay float32"):
        binarize(b.build())


def _tampered(net: Model, which: int, cut: int) -> tuple[Model, str]:
    bm = binarize(net)
    node = _binary_nodes(bm)[0]
    name = node.inputs[which]
    bm.graph.initializers[name] = bm.graph.initializers[name][:-cut]
    return bm, node.label()


@pytest.mark.parametrize("which,what", [(0, "bits hold"), (1, "alpha has")])
def test_bad_packed_sizes_name_the_node(net, which, what):
    bm, label = _tampered(net, which, 1)
    with pytest.raises(KernelError, match=f"{label}.*{what}"):
        Session(bm).run({"x": digits_images(2)})
    with pytest.raises(ShapeInferenceError, match=f"{label}.*{what}"):
        infer_shapes(bm, strict=True)
    with pytest.raises(BinarizationError, match=f"{label}.*{what}"):
        to_fp32(bm)


def test_bad_bits_dtype_is_named(net):
    bm = binarize(net)
    node = _binary_nodes(bm)[0]
    bm.graph.initializers[node.inputs[0]] = bm.graph.initializers[node.inputs[0]].astype(np.int32)
    with pytest.raises(KernelError, match=f"{node.label()}.*uint8"):
        Session(bm).run({"x": digits_images(2)})


def test_select_layers_lists_candidates_in_order(net):
    assert [t.node.name for t in select_layers(net, skip_first_last=False)] == [
        "conv1", "conv2", "conv3", "fc1", "fc2", "fc3"]


# -- straight-through fine-tuning ---------------------------------------------------------------
def test_ste_finetuning_recovers_accuracy_and_packs_what_it_trained():
    T = pytest.importorskip("training")
    from training.binarized_finetune import finetune_binarized, with_ste
    from training import nn
    from training.data import train_test_split

    d = load_digits()
    xtr, xte, ytr, yte = train_test_split((d.data / 16.0).astype(np.float32), d.target.astype(np.int64), seed=0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    model = net.to_model([None, 64])
    trainer = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=3e-3), num_threads=1)
    trainer.fit(xtr, ytr, epochs=8, batch_size=32)
    fp32 = trainer.forward

    def acc(m: Model) -> float:
        return float((Session(m).run({m.graph.feed_inputs()[0].name: xte})[0].argmax(1) == yte).mean())

    post = binarize(fp32, skip_first_last=False)
    tuned, history = finetune_binarized(fp32, xtr, ytr, epochs=6, lr=2e-3, skip_first_last=False, num_threads=1)
    assert binarized_layers(tuned) == binarized_layers(post) and len(binarized_layers(tuned)) == 3
    assert history["loss"][-1] < history["loss"][0]
    a32, a_post, a_tuned = acc(fp32), acc(post), acc(tuned)
    assert a_tuned > a_post  # reported: digits MLP, all three layers binary
    assert a_tuned > 0.8 and a32 > 0.9
    # the STE forward computes with exactly the weights that get packed
    name = fp32.graph.feed_inputs()[0].name
    ste = with_ste(fp32, skip_first_last=False)
    np.testing.assert_allclose(Session(ste).run({name: xte[:16]})[0], Session(post).run({name: xte[:16]})[0],
                               rtol=1e-5, atol=1e-5)


def test_saved_file_keeps_shapes_so_the_predictor_fuses(net, tmp_path):
    """onnx's load-time shape inference does not know our op: the file carries the decoded
    weights' types, so every shape stays known and the Conv epilogues still fuse."""
    path = tmp_path / "binary.onnx"
    save_model(binarize(net), path)
    p = Predictor(str(path))
    assert p.memory_plan(batch=2).unknown == []
    hist = p.model.graph.op_histogram()
    assert hist["edgelearn::FusedConv"] == 3 and "Conv" not in hist


def test_ste_gradient_is_straight_through():
    """d loss / d latent w equals d loss / d binary w (sign's true derivative would be 0)."""
    pytest.importorskip("training")
    from training.binarized_finetune import STE_OP
    from training.autograd import gradients
    from training.protocols import TRAIN_DOMAIN

    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    c = rng.standard_normal((3, 4)).astype(np.float32)
    b = GraphBuilder("ste", opset=17)
    xi = b.input("x", np.float32, [3, 6])
    wb = b.op(STE_OP, b.const(rng.standard_normal((6, 4)).astype(np.float32), name="w"), domain=TRAIN_DOMAIN, axis=1)
    b.op("ReduceSum", b.op("Mul", b.op("MatMul", xi, wb), b.const(c)), keepdims=0, outputs=["loss"])
    b.output("loss", np.float32, [])
    m = b.build()
    m.opset_imports[TRAIN_DOMAIN] = 1
    got = gradients(m, {"x": x}, of="loss", wrt=["w"])["w"]
    np.testing.assert_allclose(got, x.T @ c, rtol=1e-5, atol=1e-5)


def test_cli_binarize(net, tmp_path, capsys):
    from edgelearn.cli import main

    src, out = tmp_path / "net.onnx", tmp_path / "binary.onnx"
    save_model(net, src)
    x = digits_images(16)
    np.savez(tmp_path / "eval.npz", x=x, y=np.zeros(len(x), np.int64))
    assert main(["compress", str(src), "--binarize", "--eval", str(tmp_path / "eval.npz"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    saved = load_model(str(out))
    assert binarized_layers(saved) == binarized_layers(binarize(net)) and "binarized layers: " in text
    assert model_bytes(saved) < model_bytes(net)
    np.testing.assert_allclose(Predictor(saved).run({"x": x})[saved.graph.output_names[0]],
                               Predictor(binarize(net)).run({"x": x})[saved.graph.output_names[0]], rtol=1e-5)
