"""Distillation on sklearn digits: the loss composition against numpy, the teacher run once per
data set, a small student reaching a stated accuracy, and errors for bad settings."""
import numpy as np
import pytest

import training as T
from training import nn
from training.data import load_digits, train_test_split
from training.distill import TEACHER_INPUT, Distiller, distill
from training.errors import TrainingError


@pytest.fixture(scope="module")
def data():
    x, y = load_digits()
    return train_test_split(x, y, test_size=0.25, seed=0)  # xtr, xte, ytr, yte


def _mlp(hidden, classes=10, seed=0):
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, classes)).to_model([None, 64], seed=seed)


@pytest.fixture(scope="module")
def teacher(data):
    xtr, xte, ytr, yte = data
    t = T.Trainer(_mlp(64), loss=T.CrossEntropyLoss(), optimizer=T.Adam(lr=1e-2))
    t.fit(xtr, ytr, epochs=10, batch_size=32)
    assert t.evaluate(xte, yte)["accuracy"] > 0.95
    return t.graph.export_model()


def _log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_loss_is_alpha_t2_kl_plus_hard_cross_entropy(teacher, data):
    xtr, _, ytr, _ = data
    temp, alpha = 3.0, 0.3
    d = Distiller(teacher, _mlp(16, seed=1), temperature=temp, alpha=alpha)
    s, t = d.predict(xtr).astype(np.float64), d.teacher_logits(xtr).astype(np.float64)
    lt, ls = _log_softmax(t / temp), _log_softmax(s / temp)
    kl = np.mean(np.sum(np.exp(lt) * (lt - ls), axis=1))
    ce = -np.mean(_log_softmax(s)[np.arange(len(ytr)), ytr])
    expected = alpha * temp ** 2 * kl + (1 - alpha) * ce
    assert d.evaluate(xtr, ytr)["loss"] == pytest.approx(expected, rel=1e-5)
    assert kl > 0.01 and ce > 0.1  # both terms matter in this check


def test_student_learns_from_teacher_and_teacher_runs_once_per_data_set(teacher, data):
    xtr, xte, ytr, yte = data
    d = Distiller(teacher, _mlp(12, seed=2), temperature=4.0, alpha=0.7, optimizer=T.Adam(lr=1e-2))
    calls = []
    run = d.teacher.run
    d.teacher.run = lambda feeds: calls.append(len(next(iter(feeds.values())))) or run(feeds)
    h = d.fit(xtr, ytr, epochs=6, batch_size=32, validation=(xte, yte))
    d.fit(xtr, ytr, epochs=2, batch_size=32, validation=(xte, yte))
    assert sum(calls) == len(xtr) + len(xte)  # each set once, not once per epoch or per fit
    assert h["loss"][-1] < h["loss"][0]
    acc = d.evaluate(xte, yte)["accuracy"]
    assert acc > 0.9  # a 12-unit student of the 64-unit teacher (which scores > 0.95)
    agree = np.mean(d.predict(xte).argmax(1) == d.teacher_logits(xte).argmax(1))
    assert agree > 0.9


def test_distill_function_returns_trained_student(teacher, data):
    xtr, xte, ytr, yte = data
    student = _mlp(12, seed=3)
    trained, history = distill(teacher, student, xtr, ytr, temperature=2.0, alpha=0.5, epochs=3,
                               optimizer=T.Adam(lr=1e-2))
    assert len(history["loss"]) == 3
    w0, w1 = student.graph.initializers["0.weight"], trained.graph.initializers["0.weight"]
    assert not np.allclose(w0, w1)  # the student given is left as it was; the trained copy moved
    assert TEACHER_INPUT not in trained.graph.input_names


def test_bad_settings_raise_training_errors(teacher, data):
    xtr, _, ytr, _ = data
    with pytest.raises(TrainingError, match="alpha"):
        Distiller(teacher, _mlp(8), alpha=1.5)
    with pytest.raises(TrainingError, match="temperature"):
        Distiller(teacher, _mlp(8), temperature=0.0)
    with pytest.raises(TrainingError, match=r"shape \[.*, 10\].*\['N', 5\]"):
        Distiller(teacher, _mlp(8, classes=5)).teacher_logits(xtr[:4])
    with pytest.raises(TrainingError, match="transform"):
        Distiller(teacher, _mlp(8)).fit(xtr, ytr, transform=lambda *a: a)


def test_training_package_exposes_qat_and_distillation_lazily():
    import subprocess
    import sys

    import training as T
    from training.distill import Distiller
    from training.qat import convert_qat, prepare_qat

    assert (T.Distiller, T.prepare_qat, T.convert_qat) == (Distiller, prepare_qat, convert_qat)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        T.nope  # noqa: B018
    code = "import sys, training; print('training.qat' in sys.modules, 'training.distill' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]  # a plain training process does not import them
