"""Trainer end to end: fit/evaluate/predict, freezing, schedules, early stopping, best weights,
export to ONNX checked by onnx.checker and onnxruntime, the T.* API, the finetune CLI, accuracy."""
import numpy as np
import onnx
import pytest

import training as T
from inference import Config, Predictor
from inference.onnx_export import save_model
from training.data import GaussianNoise, RandomCrop, load_digits, load_mnist, train_test_split


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 10)) * 3
    y = rng.integers(0, 3, 240)
    x = (centers[y] + rng.normal(size=(240, 10))).astype(np.float32)
    return x[:180], y[:180], x[180:], y[180:]


def _mlp(seed=0):
    return T.nn.Sequential(T.nn.Linear(10, 16), T.nn.ReLU(), T.nn.Linear(16, 3)).to_model((None, 10), seed=seed)


def test_fit_evaluate_predict(blobs):
    x, y, xv, yv = blobs
    t = T.Trainer(_mlp(), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=0.01), num_threads=1)
    h = t.fit(x, y, epochs=4, batch_size=16, validation=(xv, yv))
    assert set(h) == {"loss", "accuracy", "lr", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 for v in h.values())
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_accuracy"][-1] > 0.9
    assert t.step == 4 * 12 and t.epoch == 4
    ev = t.evaluate(xv, yv)
    assert ev["loss"] == pytest.approx(h["val_loss"][-1]) and ev["accuracy"] == h["val_accuracy"][-1]
    pred = t.predict(xv, batch_size=7)
    assert pred.shape == (60, 3)
    assert np.mean(pred.argmax(1) == yv) == pytest.approx(ev["accuracy"])


def test_trainable_globs_freeze_the_rest(blobs):
    x, y, _, _ = blobs
    model = _mlp()
    before = {k: v.copy() for k, v in model.graph.initializers.items()}
    t = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.SGD(lr=0.1), trainable=["2.*"])
    t.fit(x, y, epochs=1, batch_size=32)
    assert t.graph.params == ["2.weight", "2.bias"]
    assert t.split is not None and t.split.frontier  # the frozen layer runs once, not every step
    live = t.forward.graph.initializers
    np.testing.assert_array_equal(live["0.weight"], before["0.weight"])
    assert not np.allclose(live["2.weight"], before["2.weight"])
    np.testing.assert_array_equal(model.graph.initializers["2.weight"], before["2.weight"])  # input untouched


@pytest.mark.parametrize("transform", [None, GaussianNoise(0.2)], ids=["precomputed", "per-batch"])
def test_frozen_prefix_cache_trains_the_same_weights(blobs, tmp_path, transform):
    x, y, xv, yv = blobs
    model = T.nn.Sequential(T.nn.Linear(10, 32), T.nn.ReLU(), T.nn.Linear(32, 16), T.nn.Tanh(),
                            T.nn.Dropout(0.1), T.nn.Linear(16, 3)).to_model((None, 10))
    runs = {}
    for cache in (True, False):
        t = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=0.01), trainable=["5.*"],
                      cache_frozen=cache, num_threads=1)
        assert (t.split is not None) == cache
        h = t.fit(x, y, epochs=2, batch_size=16, validation=(xv, yv), transform=transform)
        t.export(tmp_path / f"{cache}.onnx")
        runs[cache] = (t, h)
    (a, ha), (b, hb) = runs[True], runs[False]
    assert len(a.split.frontier) == 1 and a.split.head.graph.nodes[0].op_type == "Dropout"  # stays in training
    for k, v in b.graph.buffers().items():
        np.testing.assert_allclose(a.graph.buffers()[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(ha["val_loss"], hb["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(a.predict(xv), b.predict(xv), rtol=1e-5, atol=1e-6)
    exported = {c: T.load(tmp_path / f"{c}.onnx").graph.initializers for c in (True, False)}
    assert sorted(exported[True]) == sorted(exported[False])
    for k in exported[False]:
        np.testing.assert_allclose(exported[True][k], exported[False][k], rtol=1e-5, atol=1e-6)


def test_schedule_feeds_the_learning_rate_and_progress_bar(blobs, capsys):
    pytest.importorskip("tqdm")
    x, y, _, _ = blobs
    t = T.Trainer(_mlp(), loss=T.CrossEntropyLoss(), optimizer=T.SGD(lr=0.5),
                  schedule=T.StepLR(1, gamma=0.1, by_epoch=True))
    h = t.fit(x, y, epochs=3, batch_size=60, progress=True)
    assert h["lr"] == pytest.approx([0.5, 0.05, 0.005])
    assert "epoch 3/3" in capsys.readouterr().err


def test_accuracy_metric():
    assert T.accuracy(np.array([0, 2]), np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])) == 0.5
    assert T.accuracy(np.array([1, 0, 1]), np.array([[2.0], [-1.0], [-0.5]])) == pytest.approx(2 / 3)


def const_metric(y_true, y_pred):
    return 0.5


def test_early_stopping(blobs):
    x, y, xv, yv = blobs
    t = T.Trainer(_mlp(), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=0.01), metrics=[const_metric])
    h = t.fit(x, y, epochs=20, batch_size=60, validation=(xv, yv), monitor="val_const_metric", patience=2)
    assert len(h["loss"]) == 3  # best at epoch 1, then 2 epochs without improvement


def test_reduce_on_plateau_is_fed_the_monitored_metric(blobs):
    x, y, xv, yv = blobs
    t = T.Trainer(_mlp(), loss=T.CrossEntropyLoss(), optimizer=T.SGD(lr=0.4), metrics=[const_metric],
                  schedule=T.ReduceOnPlateau(factor=0.5, patience=0))
    h = t.fit(x, y, epochs=4, batch_size=60, validation=(xv, yv), monitor="val_const_metric")
    assert h["lr"] == pytest.approx([0.4, 0.4, 0.2, 0.1])  # no improvement after epoch 1: halve each epoch


def test_restore_best_weights(blobs):
    x, y, xv, yv = blobs

    class Record(T.Callback):
        def __init__(self):
            self.snapshots = []

        def on_epoch_end(self, trainer, epoch, logs):
            self.snapshots.append({k: v.copy() for k, v in trainer.graph.parameters().items()})

    rec = Record()
    t = T.Trainer(_mlp(), loss=T.CrossEntropyLoss(), optimizer=T.SGD(lr=3.0, momentum=0.9))  # erratic on purpose
    h = t.fit(x, y, epochs=6, batch_size=20, validation=(xv, yv), restore_best=True, callbacks=[rec])
    best = int(np.argmin(h["val_loss"]))
    for k, v in t.graph.parameters().items():
        np.testing.assert_array_equal(v, rec.snapshots[best][k])
    assert t.evaluate(xv, yv)["loss"] == pytest.approx(min(h["val_loss"]), rel=1e-6)


def test_export_checker_and_onnxruntime(tmp_path, blobs):
    ort = pytest.importorskip("onnxruntime")
    x, y, xv, _ = blobs
    model = T.nn.Sequential(T.nn.Conv2d(1, 4, 3, padding=1), T.nn.BatchNorm2d(4), T.nn.ReLU(), T.nn.Dropout(0.2),
                            T.nn.MaxPool2d(2), T.nn.Flatten(), T.nn.Linear(4 * 1 * 2, 3)).to_model((None, 1, 2, 5))
    t = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=0.01))
    t.fit(x.reshape(-1, 1, 2, 5), y, epochs=2, batch_size=32)
    path = tmp_path / "tuned.onnx"
    t.export(path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    xv4 = xv.reshape(-1, 1, 2, 5)
    ours = Predictor(Config(model_path=str(path))).run({"input": xv4})["output"]
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": xv4})[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours, t.predict(xv4), rtol=1e-5, atol=1e-6)
    assert np.any(T.load(path).graph.initializers["1.running_mean"] != 0)  # BN statistics were trained


def test_fine_tune_api_contract(tmp_path, blobs):
    x, y, xv, yv = blobs
    src = tmp_path / "model.onnx"
    base = T.nn.Sequential(T.nn.Linear(10, 16), T.nn.ReLU(), T.nn.Linear(16, 3)).to_model((None, 10))
    base.graph.initializers["fc.weight"] = base.graph.initializers.pop("2.weight")
    base.graph.initializers["fc.bias"] = base.graph.initializers.pop("2.bias")
    for n in base.graph.nodes:
        n.inputs = [{"2.weight": "fc.weight", "2.bias": "fc.bias"}.get(i, i) for i in n.inputs]
    save_model(base, src)
    model = T.load(str(src))
    trainer = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=1e-2), trainable=["fc*"])
    history = trainer.fit(x, y, epochs=3, batch_size=32, validation=(xv, yv))
    assert len(history["val_loss"]) == 3
    trainer.save_checkpoint(str(tmp_path / "ckpt.el"))
    trainer.load_checkpoint(str(tmp_path / "ckpt.el"))
    trainer.export(str(tmp_path / "tuned.onnx"))
    tuned = T.load(str(tmp_path / "tuned.onnx"))
    assert sorted(tuned.graph.initializers) == sorted(base.graph.initializers)
    assert not np.allclose(tuned.graph.initializers["fc.weight"], base.graph.initializers["fc.weight"])
    np.testing.assert_array_equal(tuned.graph.initializers["0.weight"], base.graph.initializers["0.weight"])


def test_distillation_with_teacher_logits_fed_as_extra(blobs):
    x, y, xv, yv = blobs
    teacher = T.Trainer(_mlp(1), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=0.02))
    teacher.fit(x, y, epochs=5, batch_size=32)
    logits = teacher.predict(x)
    loss = T.WeightedSum([(0.5, T.CrossEntropyLoss()), (0.5, T.KLDivLoss(2.0, teacher_input="teacher"))])
    student = T.Trainer(_mlp(2), loss=loss, optimizer=T.Adam(lr=0.02))
    h = student.fit(x, y, epochs=5, batch_size=32, extra={"teacher": logits},
                    validation=(xv, yv, {"teacher": teacher.predict(xv)}))
    assert h["loss"][-1] < h["loss"][0] and h["val_loss"][-1] < h["val_loss"][0]
    assert np.mean(student.predict(xv).argmax(1) == teacher.predict(xv).argmax(1)) > 0.9


def test_regression_with_l2_regularizer(blobs):
    x, _, _, _ = blobs
    w = np.random.default_rng(1).normal(size=(10, 1)).astype(np.float32)
    target = x @ w
    model = T.nn.Sequential(T.nn.Linear(10, 1)).to_model((None, 10))
    loss = T.WeightedSum([(1.0, T.MSELoss()), (1.0, T.L2Regularizer(1e-4, ["*.weight"]))])
    t = T.Trainer(model, loss=loss, optimizer=T.Adam(lr=0.05))
    h = t.fit(x, target, epochs=30, batch_size=30)
    assert h["loss"][-1] < 0.01 * h["loss"][0]
    np.testing.assert_allclose(t.graph.parameters()["0.weight"].T, w, atol=0.05)


def test_cli_finetune(tmp_path, blobs, capsys):
    from edgelearn.cli import main
    x, y, _, _ = blobs
    save_model(_mlp(), tmp_path / "m.onnx")
    np.savez(tmp_path / "train.npz", x=x, y=y)
    out = tmp_path / "tuned.onnx"
    rc = main(["finetune", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "train.npz"), "--trainable", "2.*",
               "--epochs", "2", "--lr", "0.01", "--val-split", "0.2", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "epoch 2:" in text and "val_accuracy" in text
    onnx.checker.check_model(onnx.load(str(out)))
    assert main(["finetune", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "nope.npz"), "-o", str(out)]) == 2
    args = ["finetune", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "train.npz"), "--epochs", "2",
            "--checkpoint", str(tmp_path / "c.el"), "-o", str(out)]
    assert main(args[:5] + ["1"] + args[6:]) == 0  # one epoch, checkpointed
    capsys.readouterr()
    assert main(args) == 0  # resumes and trains the second epoch only
    text = capsys.readouterr().out
    assert "resumed from" in text and "epoch 2:" in text


@pytest.mark.slow
def test_mlp_reaches_97_percent_on_digits():
    x, y = load_digits()
    xtr, xte, ytr, yte = train_test_split(x, y, 0.2, seed=0)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-3
    model = T.nn.Sequential(T.nn.Linear(64, 256), T.nn.ReLU(), T.nn.Linear(256, 256), T.nn.ReLU(),
                            T.nn.Linear(256, 10)).to_model((None, 64))
    t = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.SGD(lr=0.05, momentum=0.9, weight_decay=5e-4),
                  schedule=T.CosineLR(30, by_epoch=True), num_threads=1)
    t.fit((xtr - mu) / sd, ytr, epochs=30, batch_size=32, transform=GaussianNoise(0.3))
    acc = t.evaluate((xte - mu) / sd, yte)["accuracy"]
    assert acc >= 0.97, acc


@pytest.mark.slow
def test_cnn_reaches_97_percent_on_mnist_5000():
    x, y = load_mnist()
    xtr, xte, ytr, yte = train_test_split(x, y, 0.2, seed=0)
    nn = T.nn
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 7 * 7, 10)).to_model((None, 1, 28, 28))
    t = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.SGD(lr=0.05, momentum=0.9),
                  schedule=T.CosineLR(8, by_epoch=True), num_threads=1)
    t.fit(xtr, ytr, epochs=8, batch_size=32, transform=RandomCrop(28, padding=2))
    acc = t.evaluate(xte, yte)["accuracy"]
    assert acc >= 0.97, acc


def test_clip_norm_and_accumulation_through_trainer_match_torch(blobs):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    x, y, _, _ = blobs
    model = _mlp(5)
    ref = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    ref.load_state_dict({k: torch.tensor(v) for k, v in model.graph.initializers.items()})
    t = T.Trainer(model, loss=T.CrossEntropyLoss(), optimizer=T.SGD(lr=0.1, momentum=0.9, clip_norm=0.5, accumulate=2))
    t.fit(x[:64], y[:64], epochs=1, batch_size=16, shuffle=False)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for k in range(0, 64, 32):
        opt.zero_grad()
        for s in (k, k + 16):  # accumulate two micro-batches, each clipped on its own
            part = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in ref.parameters()]
            for p in ref.parameters():
                p.grad = None
            torch.nn.functional.cross_entropy(ref(torch.tensor(x[s:s + 16])), torch.tensor(y[s:s + 16])).backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
            for p, g in zip(ref.parameters(), part):
                p.grad = (p.grad + g)
        for p in ref.parameters():
            p.grad /= 2
        opt.step()
    for k, v in ref.state_dict().items():
        np.testing.assert_allclose(t.graph.parameters()[k], v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
