"""Pruning: exact magnitude masks (layer-wise vs global), the gradual schedule, masks kept through
real Trainer steps on sklearn digits, structured channel removal checked against the zeroed model
in onnxruntime, the patterns it refuses, and ``edgelearn compress --prune``."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import training as T
from compress.prune import (ChannelPruningError, GradualPruning, KeepMasks, PolynomialSparsity, PruningError,
                            apply_plan, finetune, magnitude_masks, plan_channels, prunable_weights,
                            prune_and_finetune, prune_channels, prune_model, prune_unstructured, sparsity)
from edgelearn.cli import main
from inference.builder import GraphBuilder
from inference.onnx_export import model_to_proto, save_model
from inference.onnx_import import load_model
from inference.session import Session
from training.data import load_digits, train_test_split

ort = pytest.importorskip("onnxruntime")


def digits_cnn(bn: bool = True, seed: int = 0):
    """Conv-BN-Relu-MaxPool, Conv-Relu-MaxPool, Flatten, Linear on 8x8 digits."""
    layers = [T.nn.Conv2d(1, 8, 3, padding=1)] + ([T.nn.BatchNorm2d(8)] if bn else []) + [
        T.nn.ReLU(), T.nn.MaxPool2d(2), T.nn.Conv2d(8, 16, 3, padding=1), T.nn.ReLU(), T.nn.MaxPool2d(2),
        T.nn.Flatten(), T.nn.Linear(16 * 4, 10)]
    return T.nn.Sequential(*layers).to_model([None, 1, 8, 8], seed=seed)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(images=True)
    return train_test_split(x, y, test_size=0.25, seed=0)


def _bn_stats(model, rng):
    """Non-trivial BatchNorm statistics, so zeroed vs removed channels would differ if mishandled."""
    g = model.graph
    for n in g.nodes:
        if n.op_type == "BatchNormalization":
            for name in n.inputs[1:5]:
                g.initializers[name] = rng.uniform(0.5, 1.5, g.initializers[name].shape).astype(np.float32)
    return model


def _ort(model, x):
    return ort.InferenceSession(model_to_proto(model).SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


# -- unstructured ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_layerwise_ratio_is_exact_per_layer(ratio):
    model = digits_cnn()
    pruned, masks = prune_unstructured(model, ratio, "layer")
    assert list(masks) == ["0.weight", "4.weight", "8.weight"]  # weights only: no bias, no BatchNorm
    for name, mask in masks.items():
        w = pruned.graph.initializers[name]
        assert int((w == 0).sum()) == int(round(ratio * w.size)) == int((~mask).sum())
        kept, cut = np.abs(model.graph.initializers[name][mask]), np.abs(model.graph.initializers[name][~mask])
        assert kept.min() >= cut.max()  # the smallest magnitudes went
    for name in ("0.bias", "1.weight", "1.running_var", "8.bias"):
        np.testing.assert_array_equal(pruned.graph.initializers[name], model.graph.initializers[name])
    assert sparsity(model)["total"] == 0.0  # the input model is untouched


def test_global_threshold_differs_from_layerwise():
    rng = np.random.default_rng(0)
    b = GraphBuilder("two", opset=17)
    x = b.input("input", np.float32, ["N", 32])
    sign = rng.choice([-1.0, 1.0], (2, 32, 32))  # disjoint magnitude ranges: 0.001-0.01 and 0.5-1
    small = (sign[0] * rng.uniform(0.001, 0.01, (32, 32))).astype(np.float32)
    large = (sign[1] * rng.uniform(0.5, 1.0, (32, 32))).astype(np.float32)
    h = b.op("Relu", b.op("MatMul", x, b.const(small, "small")))
    b.op("MatMul", h, b.const(large, "large"), outputs=["y"])
    b.output("y", np.float32, ["N", 32])
    model = b.build()
    glob = magnitude_masks(model, 0.5, "global")
    layer = magnitude_masks(model, 0.5, "layer")
    assert (~glob["small"]).all() and glob["large"].all()  # one threshold: the small layer goes first
    assert (~layer["small"]).sum() == (~layer["large"]).sum() == 512
    g75 = magnitude_masks(model, 0.75, "global")
    assert (~g75["small"]).all() and (~g75["large"]).sum() == 512
    mags = np.concatenate([np.abs(a[g75[n]]) for n, a in (("small", small), ("large", large))])
    cut = np.concatenate([np.abs(a[~g75[n]]) for n, a in (("small", small), ("large", large))])
    assert mags.min() >= cut.max()


def test_bad_options_raise():
    model = digits_cnn()
    with pytest.raises(PruningError, match="ratio"):
        magnitude_masks(model, 1.0)
    with pytest.raises(PruningError, match="scope"):
        magnitude_masks(model, 0.5, "channel")
    with pytest.raises(PruningError, match="nope"):
        magnitude_masks(model.graph.initializers, 0.5, names=["nope"])
    assert prunable_weights(model, exclude=["0.*", "Gemm*"]) == ["4.weight"]


def test_polynomial_schedule_values():
    s = PolynomialSparsity(0.8, begin_step=10, end_step=110, initial=0.1, frequency=10)
    assert s(0) == 0.0 and s(9) == 0.0
    assert s(10) == pytest.approx(0.1) and s(110) == s(500) == 0.8
    assert s(60) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5 ** 3)
    assert s(61) == s(69) == s(60)  # only every `frequency` steps
    values = [s(t) for t in range(10, 111)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    steps = np.diff([s(t) for t in range(10, 111, 10)])
    assert all(b <= a for a, b in zip(steps, steps[1:]))  # fast first, slow near the target
    with pytest.raises(PruningError):
        PolynomialSparsity(0.5, 10, 10)


# -- masks through real training ----------------------------------------------------------------
def test_masks_survive_trainer_steps(digits):
    xtr, _, ytr, _ = digits
    pruned, masks = prune_unstructured(digits_cnn(), 0.7, "global")
    trainer = T.Trainer(pruned, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=5e-3), num_threads=1)
    before = {k: v.copy() for k, v in trainer.graph.parameters().items()}
    history = finetune(trainer, xtr, ytr, masks, epochs=1, batch_size=64)
    assert trainer.step == int(np.ceil(len(xtr) / 64)) and np.isfinite(history["loss"][0])
    live = trainer.graph.parameters()
    for name, mask in masks.items():
        assert not live[name][~mask].any()
        assert not np.allclose(live[name][mask], before[name][mask])  # the kept weights did train
    assert sparsity(trainer.forward, list(masks))["total"] == pytest.approx(0.7, abs=1e-3)
    # control: the same fit without the callback refills the pruned weights
    bare = T.Trainer(prune_unstructured(digits_cnn(), 0.7, "global")[0], loss=T.CrossEntropyLoss(),
                     optimizer=T.Adam(lr=5e-3), num_threads=1)
    bare.fit(xtr, ytr, epochs=1, batch_size=64)
    assert bare.graph.parameters()["4.weight"][~masks["4.weight"]].any()


def test_prune_and_finetune_prunes_the_live_trainer(digits):
    xtr, _, ytr, _ = digits
    trainer = T.Trainer(digits_cnn(), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=5e-3), num_threads=1)
    trainer.fit(xtr[:256], ytr[:256], epochs=1, batch_size=64)
    masks = prune_and_finetune(trainer, xtr[:256], ytr[:256], 0.6, "layer", epochs=1, batch_size=64,
                               exclude=["8.*"])
    assert sorted(masks) == ["0.weight", "4.weight"]
    s = sparsity(trainer.forward)
    assert s["0.weight"] == pytest.approx(round(0.6 * 72) / 72) and s["4.weight"] == pytest.approx(0.6, abs=1e-3)
    assert s["8.weight"] == 0.0


def test_keep_masks_refuses_unpruned_frozen_weight(digits):
    xtr, _, ytr, _ = digits
    model = digits_cnn()
    masks = magnitude_masks(model, 0.5)  # computed but not applied to the model
    trainer = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.SGD(lr=0.1), trainable=["8.*"], num_threads=1)
    with pytest.raises(PruningError, match="0.weight.*frozen"):
        trainer.fit(xtr[:64], ytr[:64], epochs=1, batch_size=64, callbacks=[KeepMasks(masks)])


def test_gradual_pruning_follows_the_schedule(digits):
    xtr, _, ytr, _ = digits
    schedule = PolynomialSparsity(0.8, begin_step=2, end_step=12, frequency=2)
    pruner = GradualPruning(schedule, scope="layer")
    seen: list[tuple[int, float]] = []

    class Record(T.Callback):
        def on_step_end(self, trainer, step, loss):
            seen.append((step, sparsity(trainer.graph.parameters(), pruner.names)["4.weight"]))

    trainer = T.Trainer(digits_cnn(), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=5e-3), num_threads=1)
    trainer.fit(xtr[:640], ytr[:640], epochs=2, batch_size=64, callbacks=[pruner, Record()])
    assert pruner.names == ["0.weight", "4.weight", "8.weight"]
    size = trainer.graph.parameters()["4.weight"].size
    for step, value in seen:
        assert value == pytest.approx(round(schedule(step) * size) / size)
    assert seen[-1][1] == pytest.approx(0.8, abs=1e-3) and seen[0][1] == 0.0
    assert len({v for _, v in seen}) >= 5  # it really went up gradually


# -- structured ------------------------------------------------------------------------------------
def test_structured_pruning_shrinks_and_matches_zeroed_channels():
    model = _bn_stats(digits_cnn(), np.random.default_rng(3))
    plan = plan_channels(model, 0.5, "l1")
    assert [(c.channels, len(c.keep)) for c in plan.cuts] == [(8, 4), (16, 8)]
    w0 = model.graph.initializers["0.weight"]
    norms = np.abs(w0).reshape(8, -1).sum(1)
    assert set(plan.cuts[0].keep) == set(np.argsort(-norms)[:4])  # the largest L1 filters stay
    small, zeroed = apply_plan(model, plan), apply_plan(model, plan, "zero")
    shapes = {k: v.shape for k, v in small.graph.initializers.items()}
    assert shapes["0.weight"] == (4, 1, 3, 3) and shapes["0.bias"] == (4,) and shapes["1.running_var"] == (4,)
    assert shapes["4.weight"] == (8, 4, 3, 3) and shapes["8.weight"] == (10, 8 * 4)
    assert small.graph.parameter_count() < model.graph.parameter_count() / 2.5
    for m in (small, zeroed):
        onnx.checker.check_model(model_to_proto(m), full_check=True)
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    out_small, out_zero = _ort(small, x), _ort(zeroed, x)
    np.testing.assert_allclose(out_small, out_zero, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out_small, _ort(model, x), atol=1e-3)  # the cut is real
    np.testing.assert_allclose(Session(small).run({"input": x})[0], out_small, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [[0, -1], [-1, 64]], ids=["zero-minus-one", "explicit"])
def test_structured_through_reshape(shape):
    rng = np.random.default_rng(1)
    b = GraphBuilder("r", opset=17)
    x = b.input("input", np.float32, ["N", 2, 4, 4])
    h = b.op("Relu", b.op("Conv", x, b.const(rng.standard_normal((4, 2, 3, 3)).astype(np.float32)),
                          kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    flat = b.op("Reshape", h, b.const(np.asarray(shape, np.int64), "shape"))
    b.op("MatMul", flat, b.const(rng.standard_normal((64, 3)).astype(np.float32), "w"), outputs=["y"])
    b.output("y", np.float32, ["N", 3])
    model = b.build()
    plan = plan_channels(model, 0.5)
    small = apply_plan(model, plan)
    assert small.graph.initializers["w"].shape == (32, 3)
    assert small.graph.initializers["shape"].tolist() == (shape if shape[1] == -1 else [-1, 32])
    onnx.checker.check_model(model_to_proto(small), full_check=True)
    xv = rng.random((3, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_ort(small, xv), _ort(apply_plan(model, plan, "zero"), xv), rtol=1e-5, atol=1e-5)


def _residual():
    """conv_a -> relu -> conv_b + relu(conv_a) (residual Add) -> conv_c -> depthwise -> conv_d -> GAP -> Gemm."""
    rng = np.random.default_rng(2)
    b = GraphBuilder("res", opset=17)
    x = b.input("input", np.float32, ["N", 3, 8, 8])

    def conv(h, cin, cout, name, group=1):
        return b.op("Conv", h, b.const(rng.standard_normal((cout, cin // group, 3, 3)).astype(np.float32)),
                    kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group, name=name)

    a = b.op("Relu", conv(x, 3, 8, "conv_a"))
    s = b.op("Add", conv(a, 8, 8, "conv_b"), a, name="residual")
    d = conv(conv(conv(s, 8, 8, "conv_c"), 8, 8, "depthwise", group=8), 8, 8, "conv_d")
    h = b.op("Flatten", b.op("GlobalAveragePool", d))
    b.op("Gemm", h, b.const(rng.standard_normal((4, 8)).astype(np.float32)), transB=1, outputs=["y"])
    b.output("y", np.float32, ["N", 4])
    return b.build()


def test_structured_refuses_what_it_cannot_propagate():
    model = _residual()
    with pytest.raises(ChannelPruningError, match="conv_a.*Add node .residual. joins"):
        plan_channels(model, 0.5, layers=["conv_a"])
    with pytest.raises(ChannelPruningError, match="conv_c.*depthwise"):
        plan_channels(model, 0.5, layers=["conv_c"])
    with pytest.raises(ChannelPruningError, match="no Conv named"):
        plan_channels(model, 0.5, layers=["missing"])
    with pytest.raises(ChannelPruningError, match="criterion"):
        plan_channels(model, 0.5, "l3")
    plan = plan_channels(model, 0.5)  # automatic: cuts what it can, says why it kept the rest
    assert [c.conv for c in plan.cuts] == ["conv_d"]  # GAP -> Flatten -> Gemm is supported
    assert set(plan.skipped) == {"conv_a", "conv_b", "conv_c", "depthwise"} and "Add" in plan.skipped["conv_b"]
    xv = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_ort(apply_plan(model, plan), xv), _ort(apply_plan(model, plan, "zero"), xv),
                               rtol=1e-5, atol=1e-5)
    b = GraphBuilder("out", opset=17)  # a Conv whose output is the graph output cannot shrink
    x = b.input("input", np.float32, ["N", 1, 4, 4])
    b.op("Conv", x, b.const(np.ones((4, 1, 1, 1), np.float32)), kernel_shape=[1, 1], outputs=["y"])
    b.output("y", np.float32, ["N", 4, 4, 4])
    with pytest.raises(ChannelPruningError, match="graph output"):
        prune_channels(b.build(), 0.5)


def test_structured_model_finetunes_with_plain_trainer(digits):
    xtr, xte, ytr, yte = digits
    trainer = T.Trainer(digits_cnn(), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=5e-3), num_threads=1)
    trainer.fit(xtr, ytr, epochs=5, batch_size=64)
    dense = trainer.evaluate(xte, yte)["accuracy"]
    small = prune_model(trainer.forward, 0.5, structured=True)
    tuned = T.Trainer(small, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=5e-3), num_threads=1)
    before = tuned.evaluate(xte, yte)["accuracy"]
    tuned.fit(xtr, ytr, epochs=5, batch_size=64)
    after = tuned.evaluate(xte, yte)["accuracy"]
    print(f"digits CNN: dense {dense:.3f}, pruned {before:.3f}, fine-tuned {after:.3f}")
    assert dense > 0.9 and after > before + 0.2 and after >= dense - 0.05


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_prune(tmp_path, digits, capsys):
    _, xte, _, yte = digits
    src, data = tmp_path / "cnn.onnx", tmp_path / "eval.npz"
    save_model(digits_cnn(), src)
    np.savez(data, x=xte[:64], y=yte[:64])
    out = tmp_path / "sparse.onnx"
    assert main(["compress", str(src), "--prune", "0.5", "--eval", str(data), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "50.0 % zeros" in text and "accuracy:" in text
    assert sparsity(load_model(str(out)))["4.weight"] == 0.5
    small = tmp_path / "small.onnx"
    assert main(["compress", str(src), "--prune", "0.5", "--structured", "--eval", str(data), "-o", str(small)]) == 0
    assert "16 -> 8 channels" in capsys.readouterr().out
    onnx.checker.check_model(str(small), full_check=True)
    assert load_model(str(small)).graph.initializers["8.weight"].shape == (10, 32)
    assert main(["compress", str(src), "--structured", "-o", str(small)]) == 2


def test_structured_retypes_initializers_listed_as_inputs():
    """Old exporters list every initializer among the graph inputs: their declared shapes follow the cut."""
    from inference.ir import Value

    model = digits_cnn(bn=False)
    g = model.graph
    g.inputs += [Value(n, g.type_of(n)) for n in g.initializers]
    small = prune_channels(model, 0.25, "l2")
    assert g.inputs[1].type.shape == (8, 1, 3, 3)  # the input model keeps its declarations
    declared = {v.name: v.type.shape for v in small.graph.inputs if v.name in small.graph.initializers}
    assert declared["0.weight"] == (6, 1, 3, 3) and declared["3.weight"] == (12, 6, 3, 3)
    assert declared["7.weight"] == (10, 48)
    onnx.checker.check_model(model_to_proto(small), full_check=True)
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_ort(small, x), _ort(apply_plan(model, plan_channels(model, 0.25, "l2"), "zero"), x),
                               rtol=1e-5, atol=1e-5)
