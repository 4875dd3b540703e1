"""Continual learning: replay buffers within a byte budget, EWC's Fisher and penalty, LwF's frozen
teacher, task-incremental heads, streaming, lr between tasks, checkpoint and exact resume, the CLI.

Small MLPs on scikit-learn's 8x8 digits keep these fast; the MNIST numbers come from
``benchmarks/continual.py``.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import training as T
from training.checkpoint import load_checkpoint_file
from training.continual import (EWC, ContinualError, ContinualLearner, LwF, Replay, ReplayBuffer,
                                average_accuracy, average_forgetting)
from training.data import load_digits
from training.errors import CheckpointError, TrainingError
from inference.errors import EdgelearnError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits()
    tasks = [np.isin(y, [2 * t, 2 * t + 1]) for t in range(5)]
    return x, y, [(x[m], y[m]) for m in tasks]


def _mlp(seed=0, hidden=32, out=10):
    return T.nn.Sequential(T.nn.Linear(64, hidden), T.nn.ReLU(), T.nn.Linear(hidden, out)).to_model((None, 64), seed=seed)


def _learner(strategies=(), **kw):
    kw.setdefault("optimizer", T.Adam(3e-3))
    return ContinualLearner(_mlp(), list(strategies), batch_size=32, num_threads=1, **kw)


def _stream(learner, tasks, epochs=3):
    acc = np.zeros((len(tasks), len(tasks)))
    for i, (x, y) in enumerate(tasks):
        learner.learn_task(x, y, epochs)
        acc[i] = [learner.accuracy(xt, yt) for xt, yt in tasks]
    return acc


# -- replay buffer ---------------------------------------------------------------------------------
def test_errors_are_edgelearn_errors():
    assert issubclass(ContinualError, TrainingError) and issubclass(ContinualError, EdgelearnError)


@pytest.mark.parametrize("codec,per_sample", [("uint8", 64 + 8 + 4), ("fp16", 128 + 4), ("fp32", 256 + 4)])
def test_buffer_budget_in_bytes_is_what_is_allocated(codec, per_sample):
    assert ReplayBuffer.bytes_per_sample((64,), codec) == per_sample
    budget = 10_000
    buf = ReplayBuffer(budget, (64,), codec)
    assert buf.capacity == budget // per_sample
    assert buf.nbytes <= budget and budget - buf.nbytes < per_sample  # measured from the arrays
    before = buf.nbytes
    buf.add(np.random.default_rng(0).random((500, 64), np.float32), np.arange(500) % 10)
    assert buf.nbytes == before and len(buf) == buf.capacity


def test_buffer_too_small_and_bad_options():
    with pytest.raises(ContinualError, match="holds no"):
        ReplayBuffer(10, (64,))
    with pytest.raises(ContinualError, match="codec"):
        ReplayBuffer(1000, (64,), codec="int4")
    with pytest.raises(ContinualError, match="policy"):
        ReplayBuffer(1000, (64,), policy="fifo")


@pytest.mark.parametrize("codec,tol", [("uint8", 0.5 / 255 * 4), ("fp16", 1e-2), ("fp32", 0)])
def test_buffer_compression_roundtrip(codec, tol):
    rng = np.random.default_rng(1)
    x = (rng.random((20, 64)) * 4 - 2).astype(np.float32)  # any range: uint8 keeps a per-sample affine
    buf = ReplayBuffer.for_samples(20, (64,), codec)
    buf.add(x, np.arange(20))
    xs, ys = buf.contents()
    assert np.array_equal(ys, np.arange(20))
    assert np.abs(xs - x).max() <= tol + 1e-6


def test_reservoir_is_uniform_over_the_stream():
    buf = ReplayBuffer.for_samples(200, (1,), "fp32", seed=3)
    for start in range(0, 10_000, 100):  # 100 classes of 100 samples, in order
        buf.add(np.zeros((100, 1), np.float32), np.full(100, start // 100))
    counts = np.bincount(buf.labels[:len(buf)], minlength=100)
    assert buf.seen == 10_000 and len(buf) == 200
    assert counts[:50].sum() == pytest.approx(100, abs=30)  # first half of the stream ~ half the buffer


def test_class_balanced_buffer_keeps_rare_classes():
    buf = ReplayBuffer.for_samples(100, (1,), "fp32", policy="class_balanced")
    y = np.concatenate([np.zeros(900, int), np.ones(50, int), np.full(50, 2)])
    buf.add(np.zeros((1000, 1), np.float32), y)
    counts = buf.class_counts()  # a reservoir would keep ~90 zeros
    assert sorted(counts) == [0, 1, 2] and min(counts.values()) >= 30 and max(counts.values()) <= 36


def test_buffer_is_deterministic():
    def fill(seed):
        b = ReplayBuffer.for_samples(30, (2,), seed=seed)
        for i in range(10):
            b.add(np.full((25, 2), i, np.float32), np.full(25, i))
        return b.labels.copy()
    assert np.array_equal(fill(0), fill(0)) and not np.array_equal(fill(0), fill(1))


# -- metrics -----------------------------------------------------------------------------------------
def test_average_accuracy_and_forgetting():
    acc = np.array([[1.0, 0, 0], [0.5, 0.9, 0], [0.2, 0.6, 0.8]])
    assert average_accuracy(acc) == pytest.approx((0.2 + 0.6 + 0.8) / 3)
    assert average_forgetting(acc) == pytest.approx(((1.0 - 0.2) + (0.9 - 0.6)) / 2)


# -- strategies -------------------------------------------------------------------------------------
def test_finetune_forgets_and_replay_lwf_remember(digits):
    _, _, tasks = digits
    ft = _stream(ContinualLearner(_mlp(hidden=64), [], optimizer=T.Adam(3e-3), num_threads=1), tasks, 5)
    rl = _stream(ContinualLearner(_mlp(hidden=64), [Replay(ReplayBuffer.for_samples(100, (64,))), LwF()],
                                  optimizer=T.Adam(3e-3), num_threads=1), tasks, 5)
    assert average_accuracy(ft) < 0.3 and average_forgetting(ft) > 0.7  # only the last task survives
    assert average_accuracy(rl) > 0.6 and average_forgetting(rl) < 0.3


def test_replay_mixes_into_each_batch(digits):
    _, _, tasks = digits
    replay = Replay(ReplayBuffer.for_samples(50, (64,)), ratio=0.5)
    lr = _learner([replay])
    x, y = tasks[0]
    assert replay.mix(lr, x[:8], y[:8], np.random.default_rng(0))[0].shape == (8, 64)  # empty buffer: nothing
    lr.learn_task(x, y, 1)
    xb, yb = replay.mix(lr, x[:8], y[:8], np.random.default_rng(0))
    assert xb.shape == (12, 64) and set(yb[8:]) <= {0, 1}


def _linear_softmax_fisher(w, b, x, y):
    """Reference empirical Fisher of a linear softmax classifier: mean of squared (p - onehot) x^T."""
    z = x @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = p - np.eye(w.shape[0])[y]
    return np.mean(np.einsum("nc,nf->ncf", d, x) ** 2, 0), np.mean(d ** 2, 0)


def test_ewc_fisher_matches_reference_and_penalty_is_in_the_step(digits):
    x, y, _ = digits
    model = T.nn.Sequential(T.nn.Linear(64, 10)).to_model((None, 64))
    ewc = EWC(lam=50.0, fisher_samples=40)
    lr = ContinualLearner(model, [ewc], optimizer=T.SGD(0.1), batch_size=16, num_threads=1)
    assert {f"ewc.fisher::{p}" for p in ("0.weight", "0.bias")} <= set(lr.trainer.graph.states)
    params = lr.trainer.graph.parameters()
    w0, b0 = params["0.weight"].copy(), params["0.bias"].copy()
    fisher = ewc.fisher(lr, x[:40], y[:40])
    idx = np.random.default_rng([0, 0, 7]).permutation(40)
    fw, fb = _linear_softmax_fisher(w0, b0, x[:40][idx], y[:40][idx])
    np.testing.assert_allclose(fisher["0.weight"], fw, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(fisher["0.bias"], fb, rtol=1e-4, atol=1e-7)
    lr.end_task(x[:40], y[:40])
    live = lr.trainer.graph.model.graph.initializers
    np.testing.assert_array_equal(live["ewc.anchor::0.weight"], w0)
    # the penalty's gradient lam * F * (w - w*) is part of the fused step: with lr -> w moves by it
    params["0.weight"] += 1.0
    feeds = {"input": x[:0 + 1] * 0, lr.trainer.graph.target: y[:1]}
    before = params["0.weight"].copy()
    lr.trainer.graph.step(feeds, lr=1.0)
    moved = params["0.weight"] - before  # zero input: the label loss gives no weight gradient
    np.testing.assert_allclose(moved, -50.0 * fw * 1.0, rtol=1e-4, atol=1e-6)


def test_ewc_multi_task_anchor_is_exact():
    """sum_t F_t (w - w_t)^2 and F (w - m)^2 with F = sum F_t, m = sum F_t w_t / F have the same gradient."""
    rng = np.random.default_rng(0)
    f1, f2, w1, w2, w = (rng.random(6) for _ in range(5))
    f, m = f1 + f2, (f1 * w1 + f2 * w2) / (f1 + f2)
    np.testing.assert_allclose(2 * f * (w - m), 2 * f1 * (w - w1) + 2 * f2 * (w - w2))


def test_ewc_holds_weights_closer_than_finetune(digits):
    _, _, tasks = digits

    def drift(strategies):
        lr = _learner(strategies)
        lr.learn_task(*tasks[0], epochs=3)
        w = lr.trainer.graph.parameters()["0.weight"].copy()
        lr.learn_task(*tasks[1], epochs=3)
        return float(np.abs(lr.trainer.graph.parameters()["0.weight"] - w).mean()), lr.accuracy(*tasks[0])

    (d_ft, a_ft), (d_ewc, a_ewc) = drift([]), drift([EWC(lam=1e4)])
    assert d_ewc < 0.5 * d_ft and a_ewc > a_ft


def test_online_ewc_decays_old_fisher(digits):
    _, _, tasks = digits
    ewc = EWC(lam=10.0, online=True, gamma=0.5, fisher_samples=20)
    lr = _learner([ewc])
    lr.learn_task(*tasks[0], epochs=1)
    f1 = lr.trainer.graph.model.graph.initializers["ewc.fisher::0.weight"].copy()
    new = ewc.fisher(lr, *tasks[1])["0.weight"]
    lr.end_task(*tasks[1])
    np.testing.assert_allclose(lr.trainer.graph.model.graph.initializers["ewc.fisher::0.weight"], 0.5 * f1 + new,
                               rtol=1e-5, atol=1e-8)


def test_lwf_teacher_is_frozen_and_gated(digits):
    _, _, tasks = digits
    lwf = LwF(alpha=2.0, temperature=3.0)
    lr = _learner([lwf])
    gate = lr.trainer.graph.model.graph.initializers["lwf.weight"]
    lr.learn_task(*tasks[0], epochs=1)
    assert float(gate) == 0.0 and lwf.teacher is None
    x1 = tasks[1][0][:5]
    lr.learn_task(*tasks[1], epochs=1)
    assert float(gate) == 2.0
    feeds = lwf.feeds(lr, x1)
    teacher_out = feeds["lwf.teacher"]
    assert lwf.old == [0, 1]  # distilled: the classes the teacher knew; the others learn from labels
    assert feeds["lwf.mask"][0, :2].tolist() == [0, 0] and (feeds["lwf.mask"][0, 2:] < -1e3).all()
    assert not np.allclose(teacher_out, lr.predict(x1))  # the student moved, the teacher did not
    np.testing.assert_array_equal(lwf.feeds(lr, x1)["lwf.teacher"], teacher_out)


def test_task_incremental_heads(digits):
    _, _, tasks = digits
    heads = [[2 * t, 2 * t + 1] for t in range(5)]
    lr = ContinualLearner(_mlp(), [LwF()], heads=heads, optimizer=T.Adam(3e-3), batch_size=32, num_threads=1)
    for x, y in tasks:
        lr.learn_task(x, y, 3)
    accs = [lr.accuracy(x, y, classes=h) for (x, y), h in zip(tasks, heads)]
    assert min(accs) > 0.85 and np.mean(accs) > 0.9
    assert lr.label_feeds(np.array([3]))["continual.class_mask"][0, [2, 3]].tolist() == [0, 0]


def test_lr_changes_between_tasks(digits):
    lr = _learner(lr_decay=0.5)
    assert lr.lr() == pytest.approx(3e-3)
    lr.learn_task(*digits[2][0], epochs=1)
    assert lr.lr() == pytest.approx(1.5e-3)
    lr2 = _learner(lr_decay=lambda t: 1.0 / (1 + t))
    assert lr2.lr(task=3) == pytest.approx(3e-3 / 4)


def test_tasks_come_in_order(digits):
    lr = _learner()
    with pytest.raises(ContinualError, match="in order"):
        lr.learn_task(*digits[2][1], task=1)
    with pytest.raises(ContinualError, match="once"):
        _learner([LwF(), LwF()])


# -- streaming ---------------------------------------------------------------------------------------
def test_streaming_one_sample_at_a_time_with_bounded_memory(digits):
    _, _, tasks = digits
    replay = Replay(ReplayBuffer.for_samples(60, (64,)))
    lr = _learner([replay, EWC(lam=100.0, fisher_samples=20), LwF()])
    sizes = []
    for t in range(3):
        x, y = tasks[t]
        for i in range(0, 120):
            lr.observe(x[i], y[i:i + 1])  # one sample as it arrives
            sizes.append(sum(lr.memory_bytes().values()))
        lr.end_task()  # Fisher from the replay buffer, teacher snapshot at the next task's start
    assert lr.task == 3 and lr.trainer.step == 360
    assert len(set(sizes[130:])) <= 2  # constant once the teacher exists
    assert replay.buffer.nbytes <= 60 * ReplayBuffer.bytes_per_sample((64,))
    assert np.mean([lr.accuracy(*tasks[t]) for t in range(3)]) > 0.5


def test_end_task_without_data_needs_replay_for_ewc(digits):
    lr = _learner([EWC()])
    lr.observe(digits[2][0][0][:1], digits[2][0][1][:1])
    with pytest.raises(ContinualError, match="Fisher"):
        lr.end_task()


# -- checkpoints ----------------------------------------------------------------------------------
def _combo():
    return [Replay(ReplayBuffer.for_samples(50, (64,))), EWC(lam=100.0, fisher_samples=20), LwF()]


def _run(tasks, path=None, max_steps=None, learner=None):
    lr = learner or _learner(_combo())
    for i, (x, y) in enumerate(tasks[:3]):
        if not lr.learn_task(x, y, 2, task=i, checkpoint=path, checkpoint_every=5, max_steps=max_steps):
            return lr, False
    return lr, True


def test_resume_mid_stream_is_exact(digits, tmp_path):
    _, _, tasks = digits
    whole, done = _run(tasks)
    assert done
    path = tmp_path / "cl.ckpt"
    first, done = _run(tasks, path, max_steps=37)  # stops inside task 2
    assert not done and first.task == 1 and first.position is not None
    del first
    resumed = _learner(_combo())
    resumed.load(path)
    resumed, done = _run(tasks, path, learner=resumed)
    assert done and resumed.trainer.step == whole.trainer.step
    for name, a in whole.trainer.graph.buffers().items():
        np.testing.assert_array_equal(resumed.trainer.graph.buffers()[name], a, err_msg=name)
    np.testing.assert_array_equal(resumed.strategies[0].buffer.data, whole.strategies[0].buffer.data)
    assert resumed.accuracy(*tasks[0]) == whole.accuracy(*tasks[0])


def test_checkpoint_mismatch_and_corruption(digits, tmp_path):
    path = tmp_path / "cl.ckpt"
    lr = _learner(_combo())
    lr.learn_task(*digits[2][0], epochs=1, checkpoint=path)
    with pytest.raises(CheckpointError, match="strategies"):
        _learner([LwF()]).load(path)
    with pytest.raises(CheckpointError, match="replay buffer"):
        _learner([Replay(ReplayBuffer.for_samples(10, (64,))), EWC(lam=1.0), LwF()]).load(path)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        _learner(_combo()).load(path)
    plain = tmp_path / "trainer.ckpt"  # a Trainer's checkpoint without the learner's state
    T.Trainer(_mlp(), T.CrossEntropyLoss(), T.Adam(3e-3), num_threads=1).save_checkpoint(plain)
    with pytest.raises(CheckpointError, match="continual"):
        _learner(_combo()).load(plain)


def test_failed_load_changes_nothing(digits, tmp_path):
    """Every check runs before anything is restored: a learner survives a mismatched file intact."""
    path = tmp_path / "cl.ckpt"
    _learner(_combo()).learn_task(*digits[2][0], epochs=1, checkpoint=path)
    other = _learner([Replay(ReplayBuffer.for_samples(10, (64,))), EWC(lam=1.0), LwF()])
    before = {k: v.copy() for k, v in other.trainer.graph.buffers().items()}
    with pytest.raises(CheckpointError, match="replay buffer"):
        other.load(path)
    assert other.task == 0 and other.trainer.step == 0
    for k, v in other.trainer.graph.buffers().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_checkpoint_holds_the_continual_state(digits, tmp_path):
    path = tmp_path / "cl.ckpt"
    lr = _learner(_combo())
    lr.extras["note"] = np.arange(3)
    lr.learn_task(*digits[2][0], epochs=1, checkpoint=path)
    lr.learn_task(*digits[2][1], epochs=1, checkpoint=path, max_steps=lr.trainer.step + 2)
    arrays, meta = load_checkpoint_file(path)  # the trainer's file: buffers by name, the learner's state::continual
    assert {"state::continual::replay::data", "state::continual::lwf::0.weight", "ewc.fisher::0.weight",
            "lwf.weight", "0.weight", "state::continual::extras::note"} <= set(arrays)
    state = meta["states"]["continual"]
    assert state["task"] == 1 and state["position"] == [0, 2] and meta["step"] == lr.trainer.step


# -- personalization and CLI (MNIST) -------------------------------------------------------------------
@pytest.mark.slow
def test_personalization_raises_user_accuracy_within_margin():
    from training.continual_benchmarks import personalize

    r = personalize(epochs_pretrain=3, epochs_user=15)
    assert r.user_after > r.user_before + 0.02
    assert r.original_before - r.original_after <= r.margin


def test_cli_choices_match_the_benchmarks():
    from edgelearn.commands import continual as cmd
    from training import continual_benchmarks as cb

    assert cmd.SCENARIOS == cb.SCENARIOS and cmd.METHODS == cb.METHODS


@pytest.mark.slow
def test_cli_continual_runs_and_resumes(tmp_path):
    ck = tmp_path / "c.ckpt"
    base = [sys.executable, "-m", "edgelearn.cli", "continual", "--benchmark", "split-mnist", "--scenario", "class",
            "--strategy", "replay+lwf", "--epochs", "1", "--hidden", "32", "--checkpoint", str(ck)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(base + ["--max-steps", "60"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "stopped at --max-steps 60" in out.stdout and ck.exists()
    out = subprocess.run(base, env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "average accuracy" in out.stdout and "after task 5" in out.stdout and "after task 2" not in out.stdout
    whole = subprocess.run(base[:-2], env=env, capture_output=True, text=True, cwd=ROOT)
    final = lambda o: [l for l in o.splitlines() if l.startswith("average accuracy")]  # noqa: E731
    assert final(out.stdout) == final(whole.stdout)  # resumed == uninterrupted


def test_head_only_learner_with_raw_inputs(digits):
    """Frozen layers run once per batch (the trainer's frozen prefix), strategies see raw inputs."""
    _, _, tasks = digits
    raw = [((x * 16).astype(np.uint8), y) for x, y in tasks[:2]]  # the device's compact form
    replay = Replay(ReplayBuffer.for_samples(40, (64,)))
    lr = ContinualLearner(_mlp(), [replay, EWC(lam=10.0, fisher_samples=10), LwF()], trainable=["2.*"],
                          optimizer=T.Adam(1e-2), batch_size=16, num_threads=1,
                          transform=lambda x: (np.asarray(x, np.float32) / 16).astype(np.float32))
    assert lr.trainer.split is not None and lr.trainer.graph.params == ["2.weight", "2.bias"]
    frozen = lr.trainer.forward.graph.initializers["0.weight"].copy()
    for x, y in raw:
        lr.learn_task(x, y, 4)
    assert replay.buffer.decode(np.arange(len(replay.buffer))).max() > 1.5  # stored raw (0..16), not scaled
    np.testing.assert_array_equal(lr.trainer.forward.graph.initializers["0.weight"], frozen)
    both = np.concatenate([x for x, _ in raw]), np.concatenate([y for _, y in raw])
    assert lr.accuracy(*both) > 0.7  # 4 classes through a frozen random layer
