"""The training-step graph: losses/optimizers through the contracts, updates, modes, views."""
from __future__ import annotations

import numpy as np
import pytest

from inference.builder import GraphBuilder
from inference.errors import InputError
from inference.ir import TensorType
from inference.ops.registry import register
from inference.schema import FormalParam, OpSchema, register_schema
from training.errors import TrainableError, TrainingError
from training.graph import build_training_graph

TEST_DOMAIN = "edgelearn.test"


# --- tiny Loss / Optimizer implementations of the contracts ---------------------------------------

class MSE:
    def build(self, b, prediction, target):
        d = b.op("Sub", prediction, target)
        return b.op("ReduceMean", b.op("Mul", d, d), keepdims=0)


class FunctionalSGD:
    """new = p - lr * g as plain ops; the runner copies it into p (``assign``)."""

    def __init__(self, lr=None):
        self.lr = lr

    def emit_update(self, b, param, grad, lr):
        b.assign(param, b.op("Sub", param, b.op("Mul", grad, lr)))


@register("SgdInPlace", since=1, domain=TEST_DOMAIN)
def _sgd_in_place(p, g, lr):
    p -= lr * g  # mutates the parameter array itself
    return np.zeros((), np.float32)


register_schema(OpSchema("SgdInPlace", TEST_DOMAIN, 1, (FormalParam("p"), FormalParam("g"), FormalParam("lr")),
                         (FormalParam("done"),), {}, lambda node, types: [TensorType(1, ())]))


class InPlaceSGD:
    """One in-place update op per parameter; its unread output keeps it alive."""

    lr = 0.1

    def emit_update(self, b, param, grad, lr):
        b.op("SgdInPlace", param, grad, lr, domain=TEST_DOMAIN)


# --- models ---------------------------------------------------------------------------------------

def build_mlp(seed=0, frozen_transpose=False):
    """x[N,4] -> Gemm(w1,b1) -> Relu -> MatMul(w2) -> Add(b2) -> y[N,2]."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("mlp", opset=17)
    x = b.input("x", np.float32, ["N", 4])
    w1 = b.const(rng.normal(0, 0.5, (8, 4)).astype(np.float32), "w1")
    h = b.op("Relu", b.op("Gemm", x, w1, b.const(np.zeros(8, np.float32), "b1"), transB=1))
    w2 = b.const(rng.normal(0, 0.5, (8, 2)).astype(np.float32), "w2")
    if frozen_transpose:  # a frozen constant sub-expression that folding can precompute
        w2 = b.op("Transpose", b.op("Transpose", w2, perm=[1, 0]), perm=[1, 0])
    y = b.op("Add", b.op("MatMul", h, w2), b.const(np.zeros(2, np.float32), "b2"), outputs=["y"])
    b.output(y, np.float32, ["N", 2])
    return b.build()


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 2))).astype(np.float32)
    return {"x": x, "target": y}


# --- tests ------------------------------------------------------------------------------------------

def test_training_reduces_the_loss(data):
    tg = build_training_graph(build_mlp(), MSE(), optimizer=FunctionalSGD())
    first = tg.step(data, lr=0.1)
    for _ in range(80):
        last = tg.step(data, lr=0.1)
    assert last < 0.05 * first
    assert sorted(tg.params) == ["b1", "b2", "w1", "w2"]


def test_one_step_matches_torch(data):
    torch = pytest.importorskip("torch")
    model = build_mlp()
    init = {k: torch.tensor(v, requires_grad=True) for k, v in model.graph.initializers.items()}
    x, t = torch.tensor(data["x"]), torch.tensor(data["target"])
    y = torch.relu(x @ init["w1"].T + init["b1"]) @ init["w2"] + init["b2"]
    loss = ((y - t) ** 2).mean()
    loss.backward()
    tg = build_training_graph(model, MSE(), optimizer=FunctionalSGD())
    got = tg.step(data, lr=0.1)
    assert abs(got - loss.item()) < 1e-5
    for name, p in tg.parameters().items():
        want = (init[name] - 0.1 * init[name].grad).detach().numpy()
        assert np.allclose(p, want, atol=1e-6), name


def test_in_place_and_functional_updates_agree(data):
    a = build_training_graph(build_mlp(), MSE(), optimizer=FunctionalSGD())
    b = build_training_graph(build_mlp(), MSE(), optimizer=InPlaceSGD())
    for _ in range(5):
        la, lb = a.step(data, lr=0.1), b.step(data)  # b: default lr from the optimizer
        assert la == pytest.approx(lb, rel=1e-6)
    for name in a.params:
        assert np.allclose(a.parameters()[name], b.parameters()[name], atol=1e-6)
    assert any(n.op_type == "SgdInPlace" for n in b.model.graph.nodes)  # not removed as dead


def test_original_model_untouched_and_views_share_parameters(data):
    model = build_mlp()
    before = {k: v.copy() for k, v in model.graph.initializers.items()}
    tg = build_training_graph(model, MSE(), optimizer=FunctionalSGD())
    tg.step(data, lr=0.1)
    assert all(np.array_equal(model.graph.initializers[k], v) for k, v in before.items())
    assert tg.forward.graph.initializers["w1"] is tg.parameters()["w1"]
    exported = tg.export_model()
    assert exported.graph.initializers["w1"] is not tg.parameters()["w1"]
    assert np.array_equal(exported.graph.initializers["w1"], tg.parameters()["w1"])


def test_frozen_parameters_stay_and_patterns_select(data):
    tg = build_training_graph(build_mlp(), MSE(), trainable=["*2"], optimizer=FunctionalSGD())
    w1 = tg.model.graph.initializers["w1"].copy()
    w2 = tg.parameters()["w2"].copy()
    tg.step(data, lr=0.1)
    assert sorted(tg.params) == ["b2", "w2"]
    assert np.array_equal(tg.model.graph.initializers["w1"], w1)
    assert not np.array_equal(tg.parameters()["w2"], w2)


@pytest.mark.parametrize("trainable", [["nope*"], ["w9"], "x"])
def test_bad_trainable_selection_is_an_error(trainable):
    with pytest.raises(TrainableError):
        build_training_graph(build_mlp(), MSE(), trainable=trainable, optimizer=FunctionalSGD())


def test_missing_learning_rate_is_an_input_error(data):
    tg = build_training_graph(build_mlp(), MSE(), optimizer=FunctionalSGD())
    with pytest.raises(InputError, match="learning rate"):
        tg.step(data)


def test_trained_parameters_are_not_folded_frozen_ones_are(data):
    tg = build_training_graph(build_mlp(frozen_transpose=True), MSE(), trainable=["w1", "b1"],
                              optimizer=FunctionalSGD())
    assert not any(n.op_type == "Transpose" for n in tg.model.graph.nodes)  # frozen w2: folded
    tg2 = build_training_graph(build_mlp(frozen_transpose=True), MSE(), optimizer=FunctionalSGD())
    # trained w2: read live by the step (a pass may cancel the Transpose pair, never fold w2 into a constant)
    assert any("w2" in n.inputs for n in tg2.model.graph.nodes)
    assert not any(n != "w2" and a.shape == (8, 2) for n, a in tg2.model.graph.initializers.items())
    w = tg2.parameters()["w2"].copy()
    tg2.step(data, lr=0.1)
    assert not np.array_equal(w, tg2.parameters()["w2"])


def test_without_optimizer_gradients_are_outputs(data):
    from training.autograd import gradients

    model = build_mlp()
    tg = build_training_graph(model, MSE())
    tg.step(data, lr=0.0)
    ref = build_training_graph(model, MSE(), optimize=False)  # same graph, no passes
    want = gradients(ref.model, {**data, "lr": np.float32(0)}, of=ref.loss, wrt=["w1", "b2"])
    for name in ("w1", "b2"):
        assert np.allclose(tg.last_outputs[tg.grads[name]], want[name], atol=1e-6)


def test_evaluate_and_predict_run_inference_mode(data):
    tg = build_training_graph(build_mlp(), MSE(), optimizer=FunctionalSGD())
    tg.step(data, lr=0.1)
    (pred,) = tg.predict({"x": data["x"]})
    loss, pred2 = tg.evaluate(data)
    assert np.array_equal(pred, pred2)
    assert loss == pytest.approx(float(np.mean((pred - data["target"]) ** 2)), rel=1e-6)


def test_buffers_round_trip(data):
    tg = build_training_graph(build_mlp(), MSE(), optimizer=FunctionalSGD())
    saved = {k: v.copy() for k, v in tg.buffers().items()}
    tg.step(data, lr=0.1)
    tg.load_buffers(saved)
    assert all(np.array_equal(tg.buffers()[k], v) for k, v in saved.items())
    assert tg.forward.graph.initializers["w1"] is tg.parameters()["w1"]


def build_bn_dropout_model(opset=15):
    """x -> Dropout -> BatchNormalization -> Flatten -> Gemm(w): BN and Dropout before the trained layer."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("bn", opset=opset)
    x = b.input("x", np.float32, ["N", 3, 2, 2])
    d = b.op("Dropout", x, b.const(np.float32(0.5)), seed=3)
    bn = b.op("BatchNormalization", d, b.const(np.ones(3, np.float32), "scale"),
              b.const(np.zeros(3, np.float32), "bias"), b.const(np.zeros(3, np.float32), "mean"),
              b.const(np.ones(3, np.float32), "var"), momentum=0.5)
    y = b.op("Gemm", b.op("Flatten", bn), b.const(rng.normal(size=(12, 2)).astype(np.float32), "w"), outputs=["y"])
    b.output(y, np.float32, ["N", 2])
    return b.build()


def test_batchnorm_and_dropout_switch_modes():
    rng = np.random.default_rng(2)
    feeds = {"x": (rng.normal(size=(8, 3, 2, 2)) * 2 + 1).astype(np.float32),
             "target": rng.normal(size=(8, 2)).astype(np.float32)}
    tg = build_training_graph(build_bn_dropout_model(), MSE(), trainable=["w"], optimizer=FunctionalSGD())
    step_nodes = {n.op_type: n for n in tg.model.graph.nodes}
    assert step_nodes["BatchNormalization"].attrs["training_mode"] == 1
    assert "Dropout" not in step_nodes and step_nodes["SeededDropout"].inputs[2] == "dropout.step"
    assert set(tg.states) == {"mean", "var", "dropout.step"}
    fwd_nodes = {n.op_type: n for n in tg.forward.graph.nodes}
    assert "training_mode" not in fwd_nodes["BatchNormalization"].attrs
    p1 = tg.predict({"x": feeds["x"]})[0]
    tg.step(feeds, lr=0.0)  # lr 0: only the running statistics change
    mean = tg.buffers()["mean"]
    assert not np.allclose(mean, 0)  # updated by the training-mode BN ...
    assert tg.forward.graph.initializers["mean"] is mean  # ... and seen by the inference view
    p2 = tg.predict({"x": feeds["x"]})[0]
    assert not np.allclose(p1, p2)
    assert np.array_equal(p2, tg.predict({"x": feeds["x"]})[0])  # inference: no dropout noise
    assert int(tg.buffers()["dropout.step"]) == 1


@pytest.mark.parametrize("opset", [11, 15])
def test_dropout_masks_change_every_step_and_repeat_with_the_seed(opset):
    def build():
        b = GraphBuilder("drop", opset=opset)
        x = b.input("x", np.float32, ["N", 6])
        d = b.op("Dropout", x, ratio=0.5) if opset < 12 else b.op("Dropout", x, b.const(np.float32(0.5)))
        b.output(b.op("MatMul", d, b.const(np.ones((6, 1), np.float32), "w"), outputs=["y"]))
        return b.build()
    feeds = {"x": np.ones((4, 6), np.float32), "target": np.zeros((4, 1), np.float32)}
    runs = []
    for _ in range(2):
        tg = build_training_graph(build(), MSE(), optimizer=FunctionalSGD(), seed=7)
        preds = []
        for _ in range(3):
            tg.step(feeds, lr=0.0)
            preds.append(tg.last_outputs[tg.prediction].copy())
        runs.append(preds)
    assert not np.array_equal(runs[0][0], runs[0][1])  # a new mask each step
    assert all(np.array_equal(a, b) for a, b in zip(*runs))  # the same masks for the same seed
    assert set(np.unique(runs[0][0] / 2)) <= set(range(7))  # kept units scaled by 1 / (1 - 0.5)


def test_target_type_from_the_loss():
    class IndexTargetMSE(MSE):
        def target_type(self, prediction_type):
            return TensorType(7, ("N",))  # int64 class indices

        def build(self, b, prediction, target):
            assert b.type_of(target).elem_type == 7
            onehot = b.op("Cast", b.op("Equal", b.op("Unsqueeze", target, b.const(np.asarray([1], np.int64))),
                                       b.const(np.arange(2, dtype=np.int64))), to=1)
            return super().build(b, prediction, onehot)

    tg = build_training_graph(build_mlp(), IndexTargetMSE(), optimizer=FunctionalSGD(lr=0.1))
    loss = tg.step({"x": np.ones((3, 4), np.float32), "target": np.asarray([0, 1, 1])})
    assert np.isfinite(loss)


def test_optimizer_emit_updates_gets_every_pair_at_once(data):
    """An optimizer that needs all gradients (global-norm clipping) defines emit_updates."""

    class ClippedSGD(FunctionalSGD):
        def emit_update(self, b, param, grad, lr):
            raise AssertionError("emit_updates must be preferred")

        def emit_updates(self, b, pairs, lr):
            self.seen = [p for p, _ in pairs]
            sq = [b.op("ReduceSum", b.op("Mul", g, g), keepdims=0) for _, g in pairs]
            scale = b.op("Div", lr, b.op("Max", b.op("Sqrt", b.op("Sum", *sq)), b.const(np.float32(1))))
            for p, g in pairs:
                b.assign(p, b.op("Sub", p, b.op("Mul", g, scale)))

    opt = ClippedSGD()
    tg = build_training_graph(build_mlp(), MSE(), optimizer=opt)
    before = {k: v.copy() for k, v in tg.parameters().items()}
    tg.step(data, lr=0.5)
    assert sorted(opt.seen) == sorted(tg.params)
    step = np.sqrt(sum(float(np.sum((tg.parameters()[k] - v) ** 2)) for k, v in before.items()))
    assert step <= 0.5 + 1e-5  # the update's global norm is clipped to lr


def test_unknown_prediction_is_an_error():
    with pytest.raises(TrainingError, match="prediction"):
        build_training_graph(build_mlp(), MSE(), prediction="nope")


def test_relu_grad_fused_into_max_pool_grad_keeps_the_gradients():
    """Conv -> Relu -> MaxPool: the step graph folds the Relu's gradient into the pooling
    gradient (``through_relu``), and every parameter gradient equals the unfused graph's."""
    from collections import OrderedDict

    from training import nn

    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(2, 4, 3), relu=nn.ReLU(), pool=nn.MaxPool2d(2),
                                      flat=nn.Flatten(), fc=nn.Linear(4 * 3 * 3, 3))).to_model((None, 2, 8, 8))
    rng = np.random.default_rng(0)
    feeds = {"input": rng.standard_normal((5, 2, 8, 8)).astype(np.float32),
             "target": rng.standard_normal((5, 3)).astype(np.float32)}
    fused = build_training_graph(model, MSE())
    plain = build_training_graph(model, MSE(), optimize=False)
    pool_grads = [n for n in fused.model.graph.nodes if n.op_type == "MaxPoolGradByMatch"]
    assert [n.attrs.get("through_relu") for n in pool_grads] == [1]
    assert not any(n.op_type == "ReluGrad" for n in fused.model.graph.nodes)
    assert any(n.op_type == "ReluGrad" for n in plain.model.graph.nodes)
    fused.step(feeds, lr=0.0)
    plain.step(feeds, lr=0.0)
    for name in fused.params:
        np.testing.assert_allclose(fused.last_outputs[fused.grads[name]], plain.last_outputs[plain.grads[name]],
                                   rtol=1e-5, atol=1e-6)
