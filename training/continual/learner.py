"""The continual learner: drives a Trainer's step across a stream of tasks or samples.

It uses only the Trainer's public hooks: :meth:`~training.trainer.Trainer.train_on_batch` for
each step and :meth:`~training.trainer.Trainer.register_checkpoint_state` to keep the continual
state (position in the stream, the strategies' state, the caller's ``extras``) in the trainer's
own atomic checkpoint, next to the step graph's buffers (parameters, optimizer moments, EWC's
Fisher and anchor, LwF's gate).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from inference.ir import Model, TensorType
from training.continual.replay import Replay
from training.continual.strategy import ContinualError, Strategy
from training.errors import CheckpointError
from training.losses import CrossEntropyLoss, WeightedSum
from training.optim import Adam, FusedOptimizer
from training.protocols import Loss, StepBuilder
from training.trainer import Trainer

__all__ = ["ContinualLearner", "LrPolicy"]

STATE_NAME = "continual"           # the learner's entry among the trainer's checkpoint states
_MASK_INPUT = "continual.class_mask"
_STREAM = 1 << 20  # key component that separates streaming steps from epoch/batch steps
_EXTRAS = "extras"  # array prefix of the caller's extras in the checkpoint state (not a strategy name)


class _MaskedLoss:
    """The label loss on logits restricted to each sample's head (task-incremental learning): a
    mask input of 0 (allowed class) or -1e4 is added to the prediction first."""

    def __init__(self, loss: Loss):
        self.loss = loss

    def target_type(self, prediction: TensorType) -> TensorType:
        return getattr(self.loss, "target_type", lambda p: p)(prediction)

    def build(self, b: StepBuilder, prediction: str, target: str) -> str:
        t = b.type_of(prediction)
        mask = b.input(_MASK_INPUT, t.dtype, t.shape)
        return self.loss.build(b, b.op("Add", prediction, mask), target)


LrPolicy = Callable[[int], float]


class ContinualLearner:
    """Trains ``model`` over a stream of tasks or samples with the given strategies.

    ``heads``: for task-incremental learning, the classes of each task (a sample is trained and
    scored only among its task's classes); None: one head over all outputs. ``lr_decay``: the
    learning rate of task ``t`` is ``optimizer.lr * lr_decay ** t`` (or ``optimizer.lr *
    lr_decay(t)``). ``batch_size`` is the number of *new* samples per step (replay adds more).
    ``transform``: turns a batch of raw inputs into the model's (e.g. uint8 pixels to float32 in
    [0, 1]) right before the step, so a device keeps its data - and the replay buffer its
    samples - in the compact raw form; it must accept float32 too (replayed samples come back
    decoded to float32 in the raw range).
    """

    def __init__(self, model: Model, strategies: Sequence[Strategy] = (), *, loss: Loss | None = None,
                 optimizer: FusedOptimizer | None = None, trainable: Sequence[str] | str | None = None,
                 heads: Sequence[Sequence[int]] | None = None, lr_decay: float | LrPolicy = 1.0,
                 batch_size: int = 32, seed: int = 0, num_threads: int | None = None, cache_frozen: bool = True,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None):
        names = [s.name for s in strategies]
        if len(set(names)) != len(names):
            raise ContinualError(f"each strategy may be used once, got {names}")
        if _EXTRAS in names or any("::" in n for n in names):
            raise ContinualError(f"strategy names may not be {_EXTRAS!r} or hold '::', got {names}")
        self.strategies, self.seed, self.batch_size, self.lr_decay = list(strategies), seed, int(batch_size), lr_decay
        self.transform = transform
        base = loss or CrossEntropyLoss()
        self.label_loss: Loss = _MaskedLoss(base) if heads is not None else base
        terms = [t for s in self.strategies for t in s.loss_terms()]
        full = WeightedSum([(1.0, self.label_loss), *terms]) if terms else self.label_loss
        self.trainer = Trainer(model, full, optimizer or Adam(1e-3), trainable, seed=seed,
                               num_threads=num_threads, cache_frozen=cache_frozen)
        out = self.trainer.forward.graph.outputs[0].type
        self.n_outputs = int(out.shape[-1]) if isinstance(out, TensorType) and out.shape else 1
        self.heads = [list(h) for h in heads] if heads is not None else None
        self._head_mask = self._masks() if self.heads is not None else None
        self.task = 0                  # tasks completed
        self.position: tuple[int, int] | None = None  # (epoch, batch) reached inside the current task
        self.observed = 0              # samples given to observe() in the current task
        self.extras: dict[str, np.ndarray] = {}  # caller's arrays saved in the checkpoint (e.g. scores so far)
        self.on_task_end: list[Callable[["ContinualLearner"], None]] = []  # run before the end-of-task save
        for s in self.strategies:
            s.bind(self)
        self.trainer.register_checkpoint_state(STATE_NAME, self._get_state, self._set_state, self._check_state)

    # -- masks and feeds ---------------------------------------------------------------------
    def _masks(self) -> np.ndarray:
        """Row c: the additive mask of the head that class c belongs to."""
        masks = np.full((self.n_outputs, self.n_outputs), -1e4, np.float32)
        for head in self.heads:
            for c in head:
                masks[c, head] = 0.0
        return masks

    def label_feeds(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Inputs of the label loss besides prediction and target (the head mask)."""
        if self._head_mask is None:
            return {}
        return {_MASK_INPUT: self._head_mask[np.asarray(y, np.int64).reshape(-1)]}

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Raw inputs as the model takes them (``transform``); strategies see raw inputs."""
        return self.transform(x) if self.transform is not None else x

    def lr(self, task: int | None = None) -> float:
        t = self.task if task is None else task
        f = self.lr_decay(t) if callable(self.lr_decay) else self.lr_decay ** t
        return self.trainer.optimizer.lr * float(f)

    # -- training ----------------------------------------------------------------------------
    def _train_step(self, x: np.ndarray, y: np.ndarray, key: Sequence[int]) -> float:
        """One optimizer step on new samples (x, y) mixed by the strategies; returns the loss."""
        rng = np.random.default_rng([self.seed, *key])
        xb, yb = x, y
        for s in self.strategies:
            xb, yb = s.mix(self, xb, yb, rng)
        xb = self.prepare(xb)
        feeds: dict[str, np.ndarray] = dict(self.label_feeds(yb))
        for s in self.strategies:
            feeds.update(s.feeds(self, xb))
        loss = self.trainer.train_on_batch(xb, yb, feeds, lr=self.lr())
        for s in self.strategies:
            s.after_batch(self, x, y)
        return loss

    def _begin_task(self) -> None:
        self.position, self.observed = (0, 0), 0
        for s in self.strategies:
            s.before_task(self)

    def learn_task(self, x: np.ndarray, y: np.ndarray, epochs: int = 1, *, task: int | None = None,
                   checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 0,
                   max_steps: int | None = None) -> bool:
        """Train on one task's data for ``epochs`` epochs; True when the task is complete.

        ``task``: the index of this task in the stream. A task already learned (e.g. before a
        restart) is skipped, the one a checkpoint interrupted resumes at its saved batch.
        ``checkpoint``: saved every ``checkpoint_every`` steps and at the end of the task.
        ``max_steps``: stop (returning False) once the trainer has taken that many steps in total.
        """
        task = self.task if task is None else task
        if task < self.task:
            return True
        if task > self.task:
            raise ContinualError(f"task {task} given but only {self.task} tasks are learned: tasks come in order")
        x, y = np.asarray(x), np.asarray(y)
        if self.position is None:
            self._begin_task()
        epoch0, batch0 = self.position
        n_batches = -(-len(x) // self.batch_size)
        for e in range(epoch0, epochs):
            order = np.random.default_rng([self.seed, task, e]).permutation(len(x))
            for c in range(batch0 if e == epoch0 else 0, n_batches):
                if max_steps is not None and self.trainer.step >= max_steps:
                    if checkpoint:
                        self.save(checkpoint)
                    return False
                idx = order[c * self.batch_size:(c + 1) * self.batch_size]
                self._train_step(x[idx], y[idx], (task, e, c))
                self.position = (e, c + 1)
                if checkpoint and checkpoint_every and self.trainer.step % checkpoint_every == 0:
                    self.save(checkpoint)
        self.end_task(x, y)
        if checkpoint:
            self.save(checkpoint)
        return True

    def observe(self, x: np.ndarray, y: np.ndarray) -> float:
        """Learn from one sample or a small batch as it arrives (memory stays bounded: nothing is
        kept but what the strategies keep, e.g. the replay buffer); returns the loss."""
        x, y = np.asarray(x), np.asarray(y).reshape(-1)
        t = self.trainer.forward.graph.feed_inputs()[0].type
        rank = t.rank if isinstance(t, TensorType) and t.shape is not None else None
        if (x.ndim == rank - 1) if rank is not None else len(x) != len(y):  # one sample without its batch axis
            x = x[None]
        if self.position is None:
            self._begin_task()
        loss = self._train_step(x, y, (self.task, _STREAM, self.observed))
        self.observed += len(x)
        return loss

    def end_task(self, x: np.ndarray | None = None, y: np.ndarray | None = None) -> None:
        """Close the current task: EWC's Fisher, then the next task's learning rate (LwF takes its
        teacher when the next task starts). In a stream without the task's data, strategies that
        need it use the replay buffer's contents."""
        if x is None:
            replay = next((s for s in self.strategies if isinstance(s, Replay) and len(s.buffer)), None)
            if replay is not None:
                x, y = replay.buffer.contents()
        for s in self.strategies:
            s.after_task(self, x, y)
        self.task += 1
        self.position = None
        for fn in self.on_task_end:
            fn(self)

    # -- inference ---------------------------------------------------------------------------
    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The model's outputs for raw inputs ``x``."""
        if self.transform is None:
            return self.trainer.predict(x, batch_size)
        outs = [self.trainer.predict(self.prepare(x[s:s + batch_size]), batch_size) for s in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.empty((0, self.n_outputs), np.float32)

    def accuracy(self, x: np.ndarray, y: np.ndarray, classes: Sequence[int] | None = None) -> float:
        """Top-1 accuracy; ``classes`` restricts the choice (task-incremental scoring)."""
        scores = self.predict(x)
        if classes is not None:
            keep = np.full(scores.shape[1], -np.inf, np.float32)
            keep[list(classes)] = 0.0
            scores = scores + keep
        return float(np.mean(scores.argmax(1) == np.asarray(y).reshape(-1)))

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held by the continual state, measured from the arrays."""
        out = {"parameters": sum(a.nbytes for a in self.trainer.graph.parameters().values())}
        for s in self.strategies:
            out.update(s.memory_bytes(self))
        return out

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """The whole continual state in one atomically written, checksummed file: the trainer's
        checkpoint (step-graph buffers, step count, schedule) with the learner's registered state."""
        self.trainer.save_checkpoint(path)

    def load(self, path: str | os.PathLike) -> None:
        """Restore a :meth:`save`; the learner must be built the same way (model, strategies, options)."""
        self.trainer.load_checkpoint(path)

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {f"{_EXTRAS}::{k}": v for k, v in self.extras.items()}
        metas = []
        for s in self.strategies:
            a, m = s.state_dict()
            arrays.update({f"{s.name}::{k}": v for k, v in a.items()})
            metas.append({"name": s.name, "meta": m})
        return arrays, {"task": self.task, "position": self.position, "observed": self.observed, "strategies": metas}

    def _split(self, arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) + 2:]: v for k, v in arrays.items() if k.startswith(f"{prefix}::")}

    def _check_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        saved = [m["name"] for m in meta["strategies"]]
        if saved != [s.name for s in self.strategies]:
            raise CheckpointError(f"the continual checkpoint was written with strategies {saved}, "
                                  f"this learner has {[s.name for s in self.strategies]}")
        for s, m in zip(self.strategies, meta["strategies"]):
            s.check_state(self._split(arrays, s.name), m["meta"])

    def _set_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        for s, m in zip(self.strategies, meta["strategies"]):
            s.load_state_dict(self, self._split(arrays, s.name), m["meta"])
        self.extras = self._split(arrays, _EXTRAS)
        self.task, self.observed = int(meta["task"]), int(meta["observed"])
        self.position = None if meta["position"] is None else tuple(meta["position"])
